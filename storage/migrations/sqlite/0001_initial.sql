-- mailrelay initial schema (SQLite). Times are INTEGER epoch milliseconds (UTC).

CREATE TABLE accounts (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_users (
    name        TEXT    PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts (id),
    key_hash    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) WITHOUT ROWID;
CREATE INDEX api_users_account ON api_users (account_id, name);

CREATE TABLE messages (
    email_id      TEXT    PRIMARY KEY,
    account_id    INTEGER NOT NULL,
    api_user      TEXT    NOT NULL,
    sender        TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    label         TEXT,
    email_type    TEXT,
    size          INTEGER NOT NULL,
    request_time  INTEGER NOT NULL,
    request_ip    TEXT    NOT NULL,
    node          TEXT    NOT NULL DEFAULT ''
) WITHOUT ROWID;

-- One row per (message, recipient): the status the search returns. Denormalised on purpose so
-- the search never joins.
CREATE TABLE recipients (
    email_id      TEXT    NOT NULL,
    recipient     TEXT    NOT NULL,
    account_id    INTEGER NOT NULL,
    api_user      TEXT    NOT NULL,
    sender        TEXT    NOT NULL,
    domain        TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    label         TEXT,
    email_type    TEXT,
    request_time  INTEGER NOT NULL,
    request_ip    TEXT    NOT NULL,
    status        INTEGER NOT NULL,
    sub_status    INTEGER,
    reason        TEXT    NOT NULL DEFAULT '',
    send_time     INTEGER,
    send_ip       TEXT,
    mx_host       TEXT,
    mx_ip         TEXT,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (email_id, recipient)
) WITHOUT ROWID;
CREATE INDEX recipients_search ON recipients (account_id, request_time DESC, email_id DESC, recipient);
CREATE INDEX recipients_recipient ON recipients (recipient, request_time DESC);
CREATE INDEX recipients_domain ON recipients (account_id, domain, request_time DESC);
CREATE INDEX recipients_status ON recipients (account_id, status, request_time DESC);
CREATE INDEX recipients_time ON recipients (request_time DESC, email_id DESC, recipient);

CREATE TABLE send_log (
    id           INTEGER PRIMARY KEY,
    email_id     TEXT    NOT NULL,
    recipient    TEXT    NOT NULL,
    at           INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    code         INTEGER,
    enhanced     TEXT,
    text         TEXT    NOT NULL DEFAULT '',
    mx_host      TEXT,
    mx_ip        TEXT,
    duration_ms  INTEGER,
    rule         TEXT
);
CREATE INDEX send_log_rcpt ON send_log (email_id, recipient, id);
-- one submission line per (recipient, kind, time): makes re-recording a submission idempotent with
-- a plain ON CONFLICT DO NOTHING (a later policy re-check line has a later time, so it is kept)
CREATE UNIQUE INDEX send_log_once ON send_log (email_id, recipient, kind, at)
    WHERE kind IN ('accepted', 'policy');

-- The five suppression lists in one table. The primary key (account_id, value, ...) makes
-- SuppressionRepo.hits one index lookup: WHERE account_id = ? AND value IN (address, domain).
CREATE TABLE suppressions (
    account_id   INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    value        TEXT    NOT NULL,
    api_user     TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    hit_count    INTEGER NOT NULL DEFAULT 1,
    reason_code  INTEGER,
    reason       TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (account_id, value, kind, api_user)
) WITHOUT ROWID;
CREATE INDEX suppressions_list ON suppressions (account_id, kind, created_at, value, api_user);
