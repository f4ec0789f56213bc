-- mailrelay named queries: the common SQL subset of SQLite (>= 3.35) and PostgreSQL.
-- Parameters are :name. Times are integer epoch milliseconds. List parameters are JSON text
-- on SQLite (json_each) and arrays on PostgreSQL (see queries.postgres.sql).
-- Queries whose first word is not SELECT are writes (SQLite sends them to the writer thread).

-- ---------------------------------------------------------------- migrations

-- name: health.ping
-- the readiness probe: the database answers a trivial query
SELECT 1

-- name: migration.lock
-- serialise concurrent `migrate` runs (postgres: advisory lock; sqlite: the write lock suffices)
SELECT 1

-- name: migration.table_exists
SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'

-- name: migration.ensure_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    checksum    TEXT    NOT NULL,
    applied_at  BIGINT  NOT NULL
)

-- name: migration.applied
SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version

-- name: migration.record
INSERT INTO schema_migrations (version, name, checksum, applied_at)
VALUES (:version, :name, :checksum, :applied_at)

-- ---------------------------------------------------------------- accounts

-- name: account.ensure
INSERT INTO accounts (name, created_at) VALUES (:name, :created_at)
ON CONFLICT (name) DO UPDATE SET name = excluded.name
RETURNING id, name, created_at

-- name: account.get_by_name
SELECT id, name, created_at FROM accounts WHERE name = :name

-- name: account.get_by_id
SELECT id, name, created_at FROM accounts WHERE id = :id

-- name: account.list
SELECT id, name, created_at FROM accounts ORDER BY id

-- name: stats.day
-- template: {where} is filled only by storage/search.py (stats_where); :tz shifts UTC hours into
-- the caller's days. Reads the counters the recipients triggers keep, never the recipients.
SELECT (hour + :tz) / 24 AS day, api_user, domain, label, status, sub_status, sum(n) AS n
FROM status_stats
WHERE {where}
GROUP BY 1, 2, 3, 4, 5, 6
HAVING sum(n) <> 0
ORDER BY 1, 2, 3, 4, 5, 6

-- name: stats.compact
-- SQLite's triggers update status_stats directly: nothing to compact (PostgreSQL moves its deltas)
SELECT 0 * :batch

-- name: label.insert
INSERT INTO labels (account_id, name, created_at, updated_at) VALUES (:account_id, :name, :now, :now)
ON CONFLICT (account_id, name) DO NOTHING
RETURNING label_id, account_id, name, created_at, updated_at

-- name: label.get
SELECT label_id, account_id, name, created_at, updated_at FROM labels
WHERE label_id = :label_id AND account_id = :account_id

-- name: label.get_by_name
SELECT label_id, account_id, name, created_at, updated_at FROM labels
WHERE account_id = :account_id AND name = :name

-- name: label.list
-- :pattern is a LIKE pattern of the lower-cased name, its wildcards escaped with a backslash
SELECT label_id, account_id, name, created_at, updated_at FROM labels
WHERE account_id = :account_id AND lower(name) LIKE :pattern ESCAPE '\'
ORDER BY label_id LIMIT :limit OFFSET :offset

-- name: label.count
SELECT count(*) FROM labels WHERE account_id = :account_id AND lower(name) LIKE :pattern ESCAPE '\'

-- name: label.rename
UPDATE labels SET name = :name, updated_at = :now WHERE label_id = :label_id AND account_id = :account_id
RETURNING label_id, account_id, name, created_at, updated_at

-- name: label.delete
DELETE FROM labels WHERE label_id = :label_id AND account_id = :account_id

-- name: send_request.claim
-- a new request_id, or one whose first request expired (older than :expired_before) or was
-- abandoned unanswered (a claim older than :stale_before): this request now owns it
INSERT INTO send_requests (api_user, request_id, created_at, response) VALUES (:api_user, :request_id, :now, NULL)
ON CONFLICT (api_user, request_id) DO UPDATE SET created_at = excluded.created_at, response = NULL
WHERE send_requests.created_at < :expired_before
   OR (send_requests.response IS NULL AND send_requests.created_at < :stale_before)
RETURNING created_at

-- name: send_request.get
SELECT created_at, response FROM send_requests WHERE api_user = :api_user AND request_id = :request_id

-- name: send_request.complete
UPDATE send_requests SET response = :response WHERE api_user = :api_user AND request_id = :request_id

-- name: send_request.release
DELETE FROM send_requests WHERE api_user = :api_user AND request_id = :request_id AND response IS NULL

-- name: send_request.purge
DELETE FROM send_requests WHERE created_at < :before

-- name: api_user.insert
INSERT INTO api_users (name, account_id, key_hash, created_at)
VALUES (:name, :account_id, :key_hash, :created_at)
ON CONFLICT (name) DO NOTHING
RETURNING name

-- name: api_user.get
SELECT u.name, u.account_id, a.name AS account_name, u.key_hash, u.created_at, u.revoked_at
FROM api_users u JOIN accounts a ON a.id = u.account_id
WHERE u.name = :name

-- name: api_user.list
SELECT u.name, u.account_id, a.name AS account_name, u.key_hash, u.created_at, u.revoked_at
FROM api_users u JOIN accounts a ON a.id = u.account_id
ORDER BY u.account_id, u.name

-- name: api_user.list_by_account
SELECT u.name, u.account_id, a.name AS account_name, u.key_hash, u.created_at, u.revoked_at
FROM api_users u JOIN accounts a ON a.id = u.account_id
WHERE u.account_id = :account_id
ORDER BY u.name

-- name: api_user.revoke
UPDATE api_users SET revoked_at = :revoked_at WHERE name = :name AND revoked_at IS NULL

-- name: api_user.set_key
UPDATE api_users SET key_hash = :key_hash WHERE name = :name AND revoked_at IS NULL

-- ---------------------------------------------------------------- suppression lists

-- name: suppression.hits
-- the RCPT-time lookup: one probe of the primary key per value (address, domain)
SELECT kind, value, expires_at
FROM suppressions
WHERE account_id = :account_id
  AND value IN (:address, :domain)
  AND api_user IN (:api_user, 'all')
  AND (expires_at IS NULL OR expires_at > :now)

-- name: suppression.upsert
INSERT INTO suppressions
    (account_id, kind, value, api_user, created_at, expires_at, hit_count, reason_code, reason)
VALUES
    (:account_id, :kind, :value, :api_user, :created_at, :expires_at, :hit_count, :reason_code, :reason)
ON CONFLICT (account_id, value, kind, api_user) DO UPDATE SET
    created_at = excluded.created_at,
    expires_at = excluded.expires_at,
    reason_code = excluded.reason_code,
    reason = excluded.reason

-- name: suppression.get
SELECT account_id, kind, value, api_user, created_at, expires_at, hit_count, reason_code, reason
FROM suppressions
WHERE account_id = :account_id AND value = :value AND kind = :kind AND api_user = :api_user

-- name: suppression.bump
-- optimistic increment: only applies if hit_count is still what the caller read (:expected)
INSERT INTO suppressions
    (account_id, kind, value, api_user, created_at, expires_at, hit_count, reason_code, reason)
VALUES
    (:account_id, :kind, :value, :api_user, :now, :expires_at, :hit_count, NULL, :reason)
ON CONFLICT (account_id, value, kind, api_user) DO UPDATE SET
    hit_count = excluded.hit_count,
    expires_at = excluded.expires_at,
    created_at = excluded.created_at,
    reason = excluded.reason
WHERE suppressions.hit_count = :expected
RETURNING account_id, kind, value, api_user, created_at, expires_at, hit_count, reason_code, reason

-- name: suppression.delete
DELETE FROM suppressions
WHERE account_id = :account_id AND kind = :kind AND api_user = :api_user
  AND value IN (SELECT value FROM json_each(:values))

-- name: suppression.delete_any_user
DELETE FROM suppressions
WHERE account_id = :account_id AND kind = :kind
  AND value IN (SELECT value FROM json_each(:values))

-- name: suppression.list
SELECT account_id, kind, value, api_user, created_at, expires_at, hit_count, reason_code, reason
FROM suppressions
WHERE account_id = :account_id AND kind = :kind AND created_at >= :start AND created_at < :end
      AND (CAST(:api_user AS TEXT) IS NULL OR api_user = :api_user)
ORDER BY created_at DESC, value DESC, api_user DESC
LIMIT :limit OFFSET :offset

-- name: suppression.count
SELECT count(*) FROM (
    SELECT 1 FROM suppressions
    WHERE account_id = :account_id AND kind = :kind AND created_at >= :start AND created_at < :end
      AND (CAST(:api_user AS TEXT) IS NULL OR api_user = :api_user)
    LIMIT :cap
) AS t

-- name: suppression.list_value
SELECT account_id, kind, value, api_user, created_at, expires_at, hit_count, reason_code, reason
FROM suppressions
WHERE account_id = :account_id AND value = :value AND kind = :kind
  AND created_at >= :start AND created_at < :end
      AND (CAST(:api_user AS TEXT) IS NULL OR api_user = :api_user)
ORDER BY created_at DESC, value DESC, api_user DESC
LIMIT :limit OFFSET :offset

-- name: suppression.count_value
SELECT count(*) FROM suppressions
WHERE account_id = :account_id AND value = :value AND kind = :kind
  AND created_at >= :start AND created_at < :end
      AND (CAST(:api_user AS TEXT) IS NULL OR api_user = :api_user)

-- ---------------------------------------------------------------- statuses

-- name: message.insert
INSERT INTO messages
    (email_id, account_id, api_user, sender, subject, label, email_type, size, request_time,
     request_ip, node, message_id, custom_args)
VALUES
    (:email_id, :account_id, :api_user, :sender, :subject, :label, :email_type, :size, :request_time,
     :request_ip, :node, :message_id, :custom_args)
ON CONFLICT (email_id) DO NOTHING

-- name: message.by_message_id
-- bounce matching when a forwarder rewrote the return path
SELECT email_id, account_id FROM messages WHERE message_id = :message_id ORDER BY email_id LIMIT 10

-- name: feedback.mark_seen
-- changes one row only the first time a key is seen (the same feedback twice counts once)
INSERT INTO feedback_seen (key, seen_at) VALUES (:key, :seen_at)
ON CONFLICT (key) DO NOTHING

-- name: unclassified.upsert
-- the review loop (0014): one more sighting of a normalised text; the newest sample is kept
INSERT INTO unclassified (source, text, sample, rule, code, enhanced, count, first_seen, last_seen)
VALUES (:source, :text, :sample, :rule, :code, :enhanced, :count, :first_seen, :last_seen)
ON CONFLICT (source, text) DO UPDATE SET
    count = unclassified.count + excluded.count,
    first_seen = CASE WHEN excluded.first_seen < unclassified.first_seen
                      THEN excluded.first_seen ELSE unclassified.first_seen END,
    sample = CASE WHEN excluded.last_seen >= unclassified.last_seen THEN excluded.sample ELSE unclassified.sample END,
    rule = CASE WHEN excluded.last_seen >= unclassified.last_seen THEN excluded.rule ELSE unclassified.rule END,
    code = CASE WHEN excluded.last_seen >= unclassified.last_seen THEN excluded.code ELSE unclassified.code END,
    enhanced = CASE WHEN excluded.last_seen >= unclassified.last_seen
                    THEN excluded.enhanced ELSE unclassified.enhanced END,
    last_seen = CASE WHEN excluded.last_seen > unclassified.last_seen
                     THEN excluded.last_seen ELSE unclassified.last_seen END

-- name: unclassified.example
-- an example message, only while the text has fewer than :cap
INSERT INTO unclassified_examples (source, text, email_id, recipient)
SELECT :source, :text, :email_id, :recipient
WHERE (SELECT count(*) FROM unclassified_examples WHERE source = :source AND text = :text) < :cap
ON CONFLICT DO NOTHING

-- name: unclassified.list
SELECT u.source, u.text, u.sample, u.rule, u.code, u.enhanced, u.count, u.first_seen, u.last_seen,
       e.email_id, e.recipient
FROM (SELECT * FROM unclassified
      WHERE (:source = '' OR source = :source) AND last_seen >= :since
      ORDER BY count DESC, last_seen DESC, source, text LIMIT :limit) u
LEFT JOIN unclassified_examples e ON e.source = u.source AND e.text = u.text
ORDER BY u.count DESC, u.last_seen DESC, u.source, u.text, e.email_id, e.recipient

-- name: unclassified.delete
DELETE FROM unclassified WHERE source = :source AND text = :text

-- name: unclassified.delete_examples
DELETE FROM unclassified_examples WHERE source = :source AND text = :text

-- name: unclassified.decided
-- final records (invalid, soft bounce) changed since :since, each with the send-log line that
-- decided it (its last line that is not an open/click event), keyset-paged by (email_id, recipient)
SELECT r.email_id, r.recipient, r.account_id, r.status, r.sub_status, r.reason, r.mx_host,
       l.kind, l.code, l.enhanced, l.text, l.rule
FROM recipients r
JOIN send_log l ON l.id = (SELECT max(s.id) FROM send_log s
                           WHERE s.email_id = r.email_id AND s.recipient = r.recipient AND s.event IS NULL)
WHERE r.updated_at >= :since AND r.status IN (4, 5)
  AND (r.email_id > :after_email OR (r.email_id = :after_email AND r.recipient > :after_rcpt))
ORDER BY r.email_id, r.recipient
LIMIT :limit

-- name: recipient.insert
INSERT INTO recipients
    (email_id, recipient, account_id, api_user, sender, domain, subject, label, email_type,
     request_time, request_ip, status, sub_status, reason, updated_at)
VALUES
    (:email_id, :recipient, :account_id, :api_user, :sender, :domain, :subject, :label, :email_type,
     :request_time, :request_ip, :status, :sub_status, :reason, :updated_at)
ON CONFLICT (email_id, recipient) DO NOTHING

-- name: log.insert_first
-- the submission log line; idempotent through the partial unique index send_log_once
INSERT INTO send_log
    (email_id, recipient, at, kind, code, enhanced, text, mx_host, mx_ip, duration_ms, rule)
VALUES
    (:email_id, :recipient, :at, :kind, :code, :enhanced, :text, :mx_host, :mx_ip, :duration_ms, :rule)
ON CONFLICT DO NOTHING

-- name: log.insert
-- a later log line; only for a recipient that exists (an exact duplicate line is dropped)
INSERT INTO send_log
    (email_id, recipient, at, kind, code, enhanced, text, mx_host, mx_ip, duration_ms, rule, event)
SELECT CAST(:email_id AS TEXT), CAST(:recipient AS TEXT), CAST(:at AS BIGINT), CAST(:kind AS TEXT),
       CAST(:code AS INTEGER), CAST(:enhanced AS TEXT), CAST(:text AS TEXT), CAST(:mx_host AS TEXT),
       CAST(:mx_ip AS TEXT), CAST(:duration_ms AS INTEGER), CAST(:rule AS TEXT), CAST(:event AS TEXT)
WHERE EXISTS (SELECT 1 FROM recipients r WHERE r.email_id = :email_id AND r.recipient = :recipient)
ON CONFLICT DO NOTHING

-- name: status.update
UPDATE recipients SET
    status = :status,
    sub_status = :sub_status,
    reason = :reason,
    updated_at = :updated_at,
    send_time = COALESCE(:send_time, send_time),
    send_ip = COALESCE(:send_ip, send_ip),
    mx_host = COALESCE(:mx_host, mx_host),
    mx_ip = COALESCE(:mx_ip, mx_ip)
WHERE email_id = :email_id AND recipient = :recipient

-- name: message.known
SELECT email_id FROM messages WHERE email_id IN (SELECT value FROM json_each(:email_ids))

-- name: status.search
-- template: {where} is filled only by storage/search.py from its fixed fragment vocabulary (which
-- includes the keyset condition "after this row"); the order is the keyset indexes' order, scanned
-- backwards, so pages and exports never sort the window
SELECT email_id, recipient, account_id, api_user, sender, domain, subject, label, email_type,
       request_time, request_ip, status, sub_status, reason, send_time, send_ip, mx_host, mx_ip,
       updated_at
FROM recipients
WHERE {where}
ORDER BY request_time DESC, email_id DESC, recipient DESC
LIMIT :limit OFFSET :offset

-- name: status.search_oldest
-- the same search oldest first (the console's "oldest first"): the keyset indexes scanned forwards,
-- {where} carrying the keyset condition "after this row" in that order
SELECT email_id, recipient, account_id, api_user, sender, domain, subject, label, email_type,
       request_time, request_ip, status, sub_status, reason, send_time, send_ip, mx_host, mx_ip,
       updated_at
FROM recipients
WHERE {where}
ORDER BY request_time, email_id, recipient
LIMIT :limit OFFSET :offset

-- name: status.count
SELECT count(*) FROM (SELECT 1 FROM recipients WHERE {where} LIMIT :cap) AS t

-- name: log.for_pairs
-- the send logs of one result page: :pairs is a list of [email_id, recipient] (PostgreSQL takes
-- :email_ids and :recipients, parallel lists). One pass over the list, one index lookup per pair:
-- joining two json_each lists on their keys instead costs N x N for a page of N records.
SELECT l.email_id, l.recipient, l.at, l.kind, l.code, l.enhanced, l.text, l.mx_host, l.mx_ip,
       l.duration_ms, l.rule, l.event
FROM (SELECT json_extract(value, '$[0]') AS email_id, json_extract(value, '$[1]') AS recipient
      FROM json_each(:pairs)) p
JOIN send_log l ON l.email_id = p.email_id AND l.recipient = p.recipient
ORDER BY l.email_id, l.recipient, l.id

-- name: status.count_all
-- template: an exact count (exports: the progress denominator)
SELECT count(*) FROM recipients WHERE {where}

-- ---------------------------------------------------------------- exports

-- name: export.insert
INSERT INTO exports (id, account_id, kind, filter, status, created_at)
VALUES (:id, :account_id, :kind, :filter, 'queued', :created_at)

-- name: export.get
SELECT id, account_id, kind, filter, status, created_at, started_at, finished_at, rows_done, rows_total,
       file_size, attempts, node, error, expired_at
FROM exports WHERE id = :id

-- name: export.list_by_account
SELECT id, account_id, kind, filter, status, created_at, started_at, finished_at, rows_done, rows_total,
       file_size, attempts, node, error, expired_at
FROM exports WHERE account_id = :account_id
ORDER BY created_at DESC, id DESC
LIMIT :limit OFFSET :offset

-- name: export.count_by_account
SELECT count(*) FROM exports WHERE account_id = :account_id

-- name: export.list_all
SELECT id, account_id, kind, filter, status, created_at, started_at, finished_at, rows_done, rows_total,
       file_size, attempts, node, error, expired_at
FROM exports
ORDER BY created_at DESC, id DESC
LIMIT :limit OFFSET :offset

-- name: export.count_all
SELECT count(*) FROM exports

-- name: export.claim
-- the oldest queued task becomes this node's; the status guard makes a double claim impossible
-- (SQLite has one writer; PostgreSQL overrides this with FOR UPDATE SKIP LOCKED)
UPDATE exports SET status = 'running', started_at = :now, finished_at = NULL, node = :node,
       attempts = attempts + 1, rows_done = 0, rows_total = NULL, file_size = NULL, error = ''
WHERE id = (SELECT id FROM exports WHERE status = 'queued' ORDER BY created_at, id LIMIT 1)
  AND status = 'queued'
RETURNING id, account_id, kind, filter, status, created_at, started_at, finished_at, rows_done, rows_total,
          file_size, attempts, node, error, expired_at

-- name: export.progress
UPDATE exports SET rows_done = :rows_done, rows_total = :rows_total
WHERE id = :id AND status = 'running' AND node = :node

-- name: export.finish
UPDATE exports SET status = 'succeeded', finished_at = :now, rows_done = :rows_done,
       rows_total = :rows_done, file_size = :file_size
WHERE id = :id AND status = 'running' AND node = :node

-- name: export.fail
UPDATE exports SET status = 'failed', finished_at = :now, error = :error
WHERE id = :id AND status = 'running' AND node = :node

-- name: export.fail_running
-- start-up recovery: tasks this node was running when it stopped
UPDATE exports SET status = 'failed', finished_at = :now, error = :error
WHERE status = 'running' AND node = :node

-- name: export.retry
UPDATE exports SET status = 'queued', started_at = NULL, finished_at = NULL, rows_done = 0,
       rows_total = NULL, file_size = NULL, error = '', node = '', expired_at = NULL
WHERE id = :id AND status = 'failed'

-- name: export.expired
-- finished tasks whose file is past its retention and not yet deleted
SELECT id, account_id, kind, filter, status, created_at, started_at, finished_at, rows_done, rows_total,
       file_size, attempts, node, error, expired_at
FROM exports
WHERE status = 'succeeded' AND expired_at IS NULL AND finished_at < :before AND node = :node
ORDER BY finished_at
LIMIT :limit

-- name: export.mark_expired
UPDATE exports SET expired_at = :now WHERE id = :id AND expired_at IS NULL

-- ---------------------------------------------------------------- synthetic data (bench/ only)
-- Deterministic filler for the data-API benchmarks (storage/synthetic.py): row i of a range
-- [:first, :first + :count) is a pure function of i, so a run is reproducible and resumable.

-- name: synthetic.recipients
INSERT INTO recipients
    (email_id, recipient, account_id, api_user, sender, domain, subject, label, email_type,
     request_time, request_ip, status, sub_status, reason, send_time, send_ip, mx_host, mx_ip, updated_at)
WITH RECURSIVE seq(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < :first + :count),
g AS (SELECT i, (i * 7) % 10 AS d, (i * 40503) % 100 AS h, :end_ms - (i * :span_ms) / :total AS t FROM seq)
SELECT printf('S%010x', i / 2),
       'u' || ((i * 2654435761) % 3000000) || '@' || dom,
       CASE WHEN i % 2 = 0 THEN :first_account ELSE :first_account + 1 + (i / 2) % (:accounts - 1) END,
       'app' || (i % 5), 'news@shop.example', dom, 'Weekly news ' || ((i / 2) % 1000),
       CASE WHEN i % 4 = 0 THEN 'promo' || (i % 7) END,
       CASE WHEN i % 4 = 0 THEN 'marketing' ELSE 'transactional' END,
       t, '192.0.2.1', st,
       CASE st WHEN 5 THEN 503 + 2 * (i % 4) WHEN 4 THEN 401 + (i % 9) END,
       CASE st WHEN 1 THEN '250 2.0.0 ok' WHEN 5 THEN 'bounce: mailbox unavailable' WHEN 4 THEN '550 5.1.1 user unknown' ELSE '' END,
       CASE WHEN st <> 18 THEN t + 2000 END, '203.0.113.7', 'mx.' || dom, '127.0.0.2', t + 2000
FROM (SELECT i, t,
             CASE WHEN d < 3 THEN 'gmail.com' WHEN d = 3 THEN 'yahoo.com' WHEN d = 4 THEN 'outlook.com'
                  WHEN d = 5 THEN 'qq.com' ELSE 'd' || ((i * 31) % 5000) || '.example' END AS dom,
             CASE WHEN h < 90 THEN 1 WHEN h < 94 THEN 5 WHEN h < 97 THEN 4 ELSE 18 END AS st
      FROM g) AS x
WHERE true
ON CONFLICT (email_id, recipient) DO NOTHING

-- name: synthetic.send_log
-- the submission line of every synthetic recipient in one request_time range
INSERT INTO send_log (email_id, recipient, at, kind, code, enhanced, text)
SELECT email_id, recipient, request_time, 'accepted', NULL, NULL, ''
FROM recipients WHERE request_time >= :lo AND request_time < :hi
ON CONFLICT DO NOTHING

-- name: synthetic.suppressions
INSERT INTO suppressions
    (account_id, kind, value, api_user, created_at, expires_at, hit_count, reason_code, reason)
WITH RECURSIVE seq(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < :first + :count)
SELECT :first_account + (i % :accounts),
       CASE i % 5 WHEN 0 THEN 'complaint' WHEN 1 THEN 'bounce' WHEN 2 THEN 'block' WHEN 3 THEN 'unsubscribe'
                  ELSE 'no-interception' END,
       's' || i || '@d' || (i % 1000) || '.example',
       CASE WHEN i % 3 = 0 THEN 'app' || (i % 5) ELSE 'all' END,
       :now_ms - i, CASE WHEN i % 5 = 1 THEN :now_ms + 2592000000 END, 1,
       CASE WHEN i % 5 = 3 THEN i % 4 END, 'synthetic'
FROM seq
WHERE true
ON CONFLICT DO NOTHING

-- name: synthetic.recipients_count
SELECT count(*) FROM recipients

-- name: synthetic.suppressions_count
SELECT count(*) FROM suppressions

-- name: synthetic.analyze
ANALYZE

-- ---------------------------------------------------------------- DKIM keys

-- name: dkim.insert
INSERT INTO dkim_keys (domain, selector, algorithm, private_key, public_key, account_id, created_at)
VALUES (:domain, :selector, :algorithm, :private_key, :public_key, :account_id, :created_at)
ON CONFLICT (domain, selector) DO NOTHING
RETURNING domain

-- name: dkim.list
SELECT k.domain, k.selector, k.algorithm, k.private_key, k.public_key, k.account_id, k.created_at,
       a.name AS account_name
FROM dkim_keys k LEFT JOIN accounts a ON a.id = k.account_id
ORDER BY k.created_at DESC, k.domain, k.selector

-- name: dkim.list_domain
SELECT k.domain, k.selector, k.algorithm, k.private_key, k.public_key, k.account_id, k.created_at,
       a.name AS account_name
FROM dkim_keys k LEFT JOIN accounts a ON a.id = k.account_id
WHERE k.domain = :domain
ORDER BY k.created_at DESC, k.selector

-- name: dkim.delete
DELETE FROM dkim_keys WHERE domain = :domain AND selector = :selector

-- ---------------------------------------------------------------- account settings

-- name: settings.get
SELECT list_unsubscribe, track_opens, track_clicks FROM account_settings WHERE account_id = :account_id

-- name: settings.put
INSERT INTO account_settings (account_id, list_unsubscribe, track_opens, track_clicks, updated_at)
VALUES (:account_id, :list_unsubscribe, :track_opens, :track_clicks, :updated_at)
ON CONFLICT (account_id) DO UPDATE SET list_unsubscribe = excluded.list_unsubscribe,
    track_opens = excluded.track_opens, track_clicks = excluded.track_clicks, updated_at = excluded.updated_at

-- name: user_settings.get
SELECT list_unsubscribe, track_opens, track_clicks FROM api_user_settings WHERE api_user = :api_user

-- name: user_settings.list
SELECT api_user, list_unsubscribe, track_opens, track_clicks FROM api_user_settings ORDER BY api_user

-- name: user_settings.put
INSERT INTO api_user_settings (api_user, list_unsubscribe, track_opens, track_clicks, updated_at)
VALUES (:api_user, :list_unsubscribe, :track_opens, :track_clicks, :updated_at)
ON CONFLICT (api_user) DO UPDATE SET list_unsubscribe = excluded.list_unsubscribe,
    track_opens = excluded.track_opens, track_clicks = excluded.track_clicks, updated_at = excluded.updated_at

-- ---------------------------------------------------------------- event webhooks (storage/webhooks.py)

-- name: webhook.insert
INSERT INTO webhooks (account_id, url, events, secret, batch, created_at, signature)
VALUES (:account_id, :url, :events, :secret, :batch, :created_at, :signature)
RETURNING id

-- name: webhook.get
SELECT w.id, w.account_id, a.name AS account_name, w.url, w.events, w.secret, w.batch, w.created_at, w.retry_at,
       w.failures, w.failing_since, w.last_error, w.last_attempt_at, w.last_success_at, w.sent, w.disabled_at,
       w.disabled_reason, w.signature,
       (SELECT count(*) FROM webhook_outbox o WHERE o.webhook_id = w.id) AS pending
FROM webhooks w LEFT JOIN accounts a ON a.id = w.account_id
WHERE w.id = :id

-- name: webhook.list
-- :account_id NULL: every account (operators)
SELECT w.id, w.account_id, a.name AS account_name, w.url, w.events, w.secret, w.batch, w.created_at, w.retry_at,
       w.failures, w.failing_since, w.last_error, w.last_attempt_at, w.last_success_at, w.sent, w.disabled_at,
       w.disabled_reason, w.signature,
       (SELECT count(*) FROM webhook_outbox o WHERE o.webhook_id = w.id) AS pending
FROM webhooks w LEFT JOIN accounts a ON a.id = w.account_id
WHERE CAST(:account_id AS BIGINT) IS NULL OR w.account_id = :account_id
ORDER BY w.id

-- name: webhook.delete
DELETE FROM webhooks WHERE id = :id

-- name: webhook.delete_outbox
DELETE FROM webhook_outbox WHERE webhook_id = :id

-- name: webhook.delete_attempts
DELETE FROM webhook_attempts WHERE webhook_id = :id

-- name: webhook.enable
-- the backlog kept while it was disabled is sent again
UPDATE webhooks SET disabled_at = NULL, disabled_reason = '', failures = 0, failing_since = NULL, retry_at = NULL
WHERE id = :id

-- name: webhook.due_hooks
-- endpoints that are enabled, not backing off, and have an event nobody holds
SELECT w.id FROM webhooks w
WHERE w.disabled_at IS NULL AND (w.retry_at IS NULL OR w.retry_at <= :now)
  AND EXISTS (SELECT 1 FROM webhook_outbox o
              WHERE o.webhook_id = w.id AND (o.claimed_until IS NULL OR o.claimed_until < :now))
ORDER BY w.id

-- name: webhook.claim
-- one endpoint's oldest events, at most one per recipient: a recipient's later event waits until
-- the earlier one is acknowledged (deleted). A claim is a lease: a node that dies loses it at
-- :until and the events go again. Only this endpoint's rows are walked (webhook_outbox_hook).
-- (SQLite has one writer; PostgreSQL overrides this with FOR UPDATE SKIP LOCKED)
UPDATE webhook_outbox SET claimed_by = :node, claimed_until = :until, attempts = attempts + 1
WHERE id IN (
    SELECT o.id FROM webhook_outbox o
    WHERE o.webhook_id = :webhook_id AND (o.claimed_until IS NULL OR o.claimed_until < :now)
      AND NOT EXISTS (SELECT 1 FROM webhook_outbox p
                      WHERE p.webhook_id = o.webhook_id AND p.recipient = o.recipient AND p.id < o.id)
    ORDER BY o.id LIMIT :limit)
RETURNING id, webhook_id, event, email_id, recipient, status, sub_status, reason, at, attempts

-- name: webhook.event_details
-- what the body says of the message (events of list entries have no message: no row)
SELECT o.id, r.api_user, r.sender, r.subject, r.label,
       (SELECT m.custom_args FROM messages m WHERE m.email_id = o.email_id) AS custom_args,
       -- an open's or click's send-log line (0013): the ip, user agent and link of the body
       (SELECT l.event FROM send_log l
        WHERE o.event IN ('open', 'click') AND l.email_id = o.email_id AND l.recipient = o.recipient
          AND l.at = o.at AND l.kind = 'feedback' AND l.rule = o.event
        ORDER BY l.id LIMIT 1) AS tracking
FROM webhook_outbox o JOIN recipients r ON r.email_id = o.email_id AND r.recipient = o.recipient
WHERE o.id IN (SELECT value FROM json_each(:ids))

-- name: webhook.ack
DELETE FROM webhook_outbox WHERE id IN (SELECT value FROM json_each(:ids))

-- name: webhook.release
UPDATE webhook_outbox SET claimed_by = NULL, claimed_until = NULL WHERE id IN (SELECT value FROM json_each(:ids))

-- name: webhook.unclaim
-- claimed events given back unsent: the claim does not count as an attempt
UPDATE webhook_outbox SET claimed_by = NULL, claimed_until = NULL, attempts = attempts - 1
WHERE id IN (SELECT value FROM json_each(:ids))

-- name: webhook.release_node
-- start-up: the events this node had claimed when it stopped go again at once
UPDATE webhook_outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = :node

-- name: webhook.succeeded
UPDATE webhooks SET failures = 0, failing_since = NULL, retry_at = NULL, last_attempt_at = :now,
                    last_success_at = :now, sent = sent + :n
WHERE id = :id

-- name: webhook.failed
-- an endpoint failing since before :disable_before is disabled (its backlog is kept)
UPDATE webhooks SET
    failures = failures + 1, failing_since = COALESCE(failing_since, :now), last_error = :error,
    last_attempt_at = :now, retry_at = :retry_at,
    disabled_at = CASE WHEN disabled_at IS NULL AND COALESCE(failing_since, :now) <= :disable_before
                       THEN :now ELSE disabled_at END,
    disabled_reason = CASE WHEN disabled_at IS NULL AND COALESCE(failing_since, :now) <= :disable_before
                           THEN :reason ELSE disabled_reason END
WHERE id = :id

-- name: webhook.attempt_insert
INSERT INTO webhook_attempts (webhook_id, at, events, http_status, error, duration_ms)
VALUES (:id, :at, :events, :http_status, :error, :duration_ms)

-- name: webhook.attempt_prune
-- keeps the last :keep attempts of the endpoint
DELETE FROM webhook_attempts
WHERE webhook_id = :id
  AND id <= (SELECT id FROM webhook_attempts WHERE webhook_id = :id ORDER BY id DESC LIMIT 1 OFFSET :keep)

-- name: webhook.attempts
SELECT id, webhook_id, at, events, http_status, error, duration_ms FROM webhook_attempts
WHERE webhook_id = :id ORDER BY id DESC LIMIT :limit

-- name: webhook.outbox_count
SELECT count(*) FROM webhook_outbox
