-- Event webhooks (README "Webhooks"): an account's endpoints and the durable outbox of their events.
--
-- The outbox is written by the triggers below, in the same transaction as the change they report
-- (a status update, a complaint or unsubscribe entry), so an event exists exactly when its change
-- was committed: a crash can lose neither. Only accounts with an enabled webhook that wants the
-- event get rows (one indexed lookup in webhooks per change otherwise). A sender task on each node
-- claims due rows, POSTs them and deletes them once acknowledged.
CREATE TABLE webhooks (
    id               INTEGER PRIMARY KEY,
    account_id       INTEGER NOT NULL,
    url              TEXT    NOT NULL,
    events           TEXT    NOT NULL,  -- ',delivered,open,': the wanted event names, comma-framed
    secret           TEXT    NOT NULL,
    batch            INTEGER NOT NULL DEFAULT 1,  -- events per POST (1: EngageLab's single object)
    created_at       INTEGER NOT NULL,
    retry_at         INTEGER,           -- endpoint back-off: nothing is sent before this time
    failures         INTEGER NOT NULL DEFAULT 0,  -- consecutive failed POSTs
    failing_since    INTEGER,
    last_error       TEXT    NOT NULL DEFAULT '',
    last_attempt_at  INTEGER,
    last_success_at  INTEGER,
    sent             INTEGER NOT NULL DEFAULT 0,  -- events acknowledged
    disabled_at      INTEGER,
    disabled_reason  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX webhooks_account ON webhooks (account_id);

CREATE TABLE webhook_outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the order of events
    webhook_id   INTEGER NOT NULL,
    event        TEXT    NOT NULL,
    email_id     TEXT    NOT NULL,  -- '' for list events (complaint, unsubscribe)
    recipient    TEXT    NOT NULL,
    status       INTEGER,
    sub_status   INTEGER,
    reason       TEXT    NOT NULL DEFAULT '',
    at           INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    claimed_by   TEXT,
    claimed_until INTEGER
);
-- the claim walks one endpoint's events in order (never another endpoint's backlog); the
-- per-recipient order check looks for an earlier event of the same recipient
CREATE INDEX webhook_outbox_hook ON webhook_outbox (webhook_id, id);
CREATE INDEX webhook_outbox_rcpt ON webhook_outbox (webhook_id, recipient, id);

-- The last attempts of each endpoint (webhooks show, GET /v1/webhooks/{id}).
CREATE TABLE webhook_attempts (
    id           INTEGER PRIMARY KEY,
    webhook_id   INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    events       INTEGER NOT NULL,
    http_status  INTEGER,
    error        TEXT    NOT NULL DEFAULT '',
    duration_ms  INTEGER NOT NULL
);
CREATE INDEX webhook_attempts_hook ON webhook_attempts (webhook_id, id);

-- One trigger set per source table. A new source (e.g. recipient-facing open/click events) adds
-- its own trigger in a later migration with this same INSERT ... SELECT FROM webhooks body.
-- Status changes: delivered (1), soft_bounce (5), invalid (4) when the status or sub-status
-- changes; deferred when a recipient still sending (18) gets a new attempt or reason.
CREATE TRIGGER recipients_webhook_update AFTER UPDATE OF status, sub_status, reason, send_time ON recipients
WHEN (NEW.status <> 18 AND (OLD.status IS NOT NEW.status OR OLD.sub_status IS NOT NEW.sub_status))
  OR (NEW.status = 18 AND (OLD.send_time IS NOT NEW.send_time OR OLD.reason IS NOT NEW.reason))
BEGIN
    INSERT INTO webhook_outbox (webhook_id, event, email_id, recipient, status, sub_status, reason, at)
    SELECT w.id, e.event, NEW.email_id, NEW.recipient, NEW.status, NEW.sub_status, NEW.reason, NEW.updated_at
    FROM (SELECT CASE NEW.status WHEN 1 THEN 'delivered' WHEN 5 THEN 'soft_bounce' WHEN 4 THEN 'invalid'
                                 ELSE 'deferred' END AS event) AS e
    JOIN webhooks w ON w.account_id = NEW.account_id AND w.disabled_at IS NULL
                   AND w.events LIKE '%,' || e.event || ',%';
END;

-- a recipient stopped by a policy at submission is inserted already invalid
CREATE TRIGGER recipients_webhook_insert AFTER INSERT ON recipients
WHEN NEW.status <> 18
BEGIN
    INSERT INTO webhook_outbox (webhook_id, event, email_id, recipient, status, sub_status, reason, at)
    SELECT w.id, 'invalid', NEW.email_id, NEW.recipient, NEW.status, NEW.sub_status, NEW.reason, NEW.updated_at
    FROM webhooks w
    WHERE w.account_id = NEW.account_id AND w.disabled_at IS NULL AND w.events LIKE '%,invalid,%';
END;

-- complaint ('report') and unsubscribe list entries: new ones, and renewed ones (an upsert that
-- gives an existing entry a new time)
CREATE TRIGGER suppressions_webhook_insert AFTER INSERT ON suppressions
WHEN NEW.kind IN ('complaint', 'unsubscribe')
BEGIN
    INSERT INTO webhook_outbox (webhook_id, event, email_id, recipient, reason, at)
    SELECT w.id, CASE NEW.kind WHEN 'complaint' THEN 'report' ELSE 'unsubscribe' END, '', NEW.value,
           NEW.reason, NEW.created_at
    FROM webhooks w
    WHERE w.account_id = NEW.account_id AND w.disabled_at IS NULL
      AND w.events LIKE '%,' || CASE NEW.kind WHEN 'complaint' THEN 'report' ELSE 'unsubscribe' END || ',%';
END;

CREATE TRIGGER suppressions_webhook_update AFTER UPDATE OF created_at ON suppressions
WHEN NEW.kind IN ('complaint', 'unsubscribe') AND NEW.created_at > OLD.created_at
BEGIN
    INSERT INTO webhook_outbox (webhook_id, event, email_id, recipient, reason, at)
    SELECT w.id, CASE NEW.kind WHEN 'complaint' THEN 'report' ELSE 'unsubscribe' END, '', NEW.value,
           NEW.reason, NEW.created_at
    FROM webhooks w
    WHERE w.account_id = NEW.account_id AND w.disabled_at IS NULL
      AND w.events LIKE '%,' || CASE NEW.kind WHEN 'complaint' THEN 'report' ELSE 'unsubscribe' END || ',%';
END;
