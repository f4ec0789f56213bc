-- Labels of an account (EngageLab's /v1/labels): a numeric label_id for a name. Mail carries the
-- name (X-Label header), so deleting or renaming a label never rewrites status records.
CREATE TABLE labels (
    label_id    INTEGER PRIMARY KEY,
    account_id  INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (account_id, name)
);

-- Delivery statistics (EngageLab's /v1/stats_day), kept by the database itself: the triggers
-- below change the counts in the same transaction as the recipient row they count, so they are
-- never ahead of or behind the statuses, and a query reads aggregates instead of recipients.
-- SQLite has one writer at a time, so the triggers update the counters directly (PostgreSQL
-- appends deltas instead, to keep concurrent writers from deadlocking on the counters).
-- One count per request hour (UTC; a whole-hour time_zone regroups hours into its days), account,
-- API_USER, receiving domain, label ('' none) and current status / sub-status (0 none).
CREATE TABLE status_stats (
    account_id  INTEGER NOT NULL,
    hour        INTEGER NOT NULL,  -- request_time in whole hours since the epoch
    api_user    TEXT    NOT NULL,
    domain      TEXT    NOT NULL,
    label       TEXT    NOT NULL,
    status      INTEGER NOT NULL,
    sub_status  INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (account_id, hour, api_user, domain, label, status, sub_status)
) WITHOUT ROWID;

INSERT INTO status_stats (account_id, hour, api_user, domain, label, status, sub_status, n)
SELECT account_id, request_time / 3600000, api_user, domain, COALESCE(label, ''), status, COALESCE(sub_status, 0),
       count(*)
FROM recipients
GROUP BY 1, 2, 3, 4, 5, 6, 7;

CREATE TRIGGER recipients_stats_insert AFTER INSERT ON recipients
BEGIN
    INSERT INTO status_stats (account_id, hour, api_user, domain, label, status, sub_status, n)
    VALUES (NEW.account_id, NEW.request_time / 3600000, NEW.api_user, NEW.domain, COALESCE(NEW.label, ''),
            NEW.status, COALESCE(NEW.sub_status, 0), 1)
    ON CONFLICT (account_id, hour, api_user, domain, label, status, sub_status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER recipients_stats_update AFTER UPDATE OF status, sub_status ON recipients
WHEN OLD.status IS NOT NEW.status OR OLD.sub_status IS NOT NEW.sub_status
BEGIN
    UPDATE status_stats SET n = n - 1
    WHERE account_id = OLD.account_id AND hour = OLD.request_time / 3600000 AND api_user = OLD.api_user
      AND domain = OLD.domain AND label = COALESCE(OLD.label, '') AND status = OLD.status
      AND sub_status = COALESCE(OLD.sub_status, 0);
    INSERT INTO status_stats (account_id, hour, api_user, domain, label, status, sub_status, n)
    VALUES (NEW.account_id, NEW.request_time / 3600000, NEW.api_user, NEW.domain, COALESCE(NEW.label, ''),
            NEW.status, COALESCE(NEW.sub_status, 0), 1)
    ON CONFLICT (account_id, hour, api_user, domain, label, status, sub_status) DO UPDATE SET n = n + 1;
END;
