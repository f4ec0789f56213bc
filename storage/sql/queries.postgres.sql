-- PostgreSQL overrides of queries.sql (same names). List parameters are arrays here; bulk
-- inserts are "columnar": one statement with one array per column (see storage/queries.py).

-- name: migration.lock
SELECT pg_advisory_xact_lock(7274655143)

-- name: migration.table_exists
SELECT count(*) FROM pg_catalog.pg_tables
WHERE schemaname = current_schema() AND tablename = 'schema_migrations'

-- name: suppression.upsert
-- mode: columnar
INSERT INTO suppressions
    (account_id, kind, value, api_user, created_at, expires_at, hit_count, reason_code, reason)
SELECT * FROM unnest(
    :account_id::bigint[], :kind::text[], :value::text[], :api_user::text[], :created_at::bigint[],
    :expires_at::bigint[], :hit_count::integer[], :reason_code::integer[], :reason::text[])
ON CONFLICT (account_id, value, kind, api_user) DO UPDATE SET
    created_at = excluded.created_at,
    expires_at = excluded.expires_at,
    reason_code = excluded.reason_code,
    reason = excluded.reason

-- name: suppression.delete
DELETE FROM suppressions
WHERE account_id = :account_id AND kind = :kind AND api_user = :api_user
  AND value = ANY(:values::text[])

-- name: suppression.delete_any_user
DELETE FROM suppressions
WHERE account_id = :account_id AND kind = :kind AND value = ANY(:values::text[])

-- name: message.insert
-- mode: columnar
INSERT INTO messages
    (email_id, account_id, api_user, sender, subject, label, email_type, size, request_time,
     request_ip, node, message_id, custom_args)
SELECT * FROM unnest(
    :email_id::text[], :account_id::bigint[], :api_user::text[], :sender::text[], :subject::text[],
    :label::text[], :email_type::text[], :size::bigint[], :request_time::bigint[],
    :request_ip::text[], :node::text[], :message_id::text[], :custom_args::text[])
ON CONFLICT (email_id) DO NOTHING

-- name: recipient.insert
-- mode: columnar
INSERT INTO recipients
    (email_id, recipient, account_id, api_user, sender, domain, subject, label, email_type,
     request_time, request_ip, status, sub_status, reason, updated_at)
SELECT * FROM unnest(
    :email_id::text[], :recipient::text[], :account_id::bigint[], :api_user::text[], :sender::text[],
    :domain::text[], :subject::text[], :label::text[], :email_type::text[], :request_time::bigint[],
    :request_ip::text[], :status::integer[], :sub_status::integer[], :reason::text[],
    :updated_at::bigint[])
ON CONFLICT (email_id, recipient) DO NOTHING

-- name: log.insert_first
-- mode: columnar
INSERT INTO send_log
    (email_id, recipient, at, kind, code, enhanced, text, mx_host, mx_ip, duration_ms, rule)
SELECT * FROM unnest(
    :email_id::text[], :recipient::text[], :at::bigint[], :kind::text[], :code::integer[],
    :enhanced::text[], :text::text[], :mx_host::text[], :mx_ip::text[], :duration_ms::integer[],
    :rule::text[])
ON CONFLICT DO NOTHING

-- name: message.known
SELECT email_id FROM messages WHERE email_id = ANY(:email_ids::text[])

-- name: log.for_pairs
SELECT l.email_id, l.recipient, l.at, l.kind, l.code, l.enhanced, l.text, l.mx_host, l.mx_ip,
       l.duration_ms, l.rule, l.event
FROM send_log l
JOIN unnest(:email_ids::text[], :recipients::text[]) AS p (email_id, recipient)
  ON l.email_id = p.email_id AND l.recipient = p.recipient
ORDER BY l.email_id, l.recipient, l.id

-- name: export.claim
-- several nodes poll the same table: SKIP LOCKED hands each queued task to exactly one of them
UPDATE exports SET status = 'running', started_at = :now, finished_at = NULL, node = :node,
       attempts = attempts + 1, rows_done = 0, rows_total = NULL, file_size = NULL, error = ''
WHERE id = (SELECT id FROM exports WHERE status = 'queued' ORDER BY created_at, id LIMIT 1
            FOR UPDATE SKIP LOCKED)
  AND status = 'queued'
RETURNING id, account_id, kind, filter, status, created_at, started_at, finished_at, rows_done, rows_total,
          file_size, attempts, node, error, expired_at

-- name: synthetic.recipients
-- generate_series: the recursive CTE of queries.sql is several times slower at 10M rows
WITH g AS (SELECT i, (i * 7) % 10 AS d, (i * 40503) % 100 AS h, :end_ms::bigint - (i * :span_ms::bigint) / :total::bigint AS t
           FROM generate_series(:first::bigint, :first::bigint + :count::bigint - 1) AS i)
INSERT INTO recipients
    (email_id, recipient, account_id, api_user, sender, domain, subject, label, email_type,
     request_time, request_ip, status, sub_status, reason, send_time, send_ip, mx_host, mx_ip, updated_at)
SELECT 'S' || lpad(to_hex(i / 2), 10, '0'),
       'u' || ((i * 2654435761) % 3000000) || '@' || dom,
       CASE WHEN i % 2 = 0 THEN :first_account::bigint ELSE :first_account::bigint + 1 + (i / 2) % (:accounts::bigint - 1) END,
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
ON CONFLICT (email_id, recipient) DO NOTHING

-- name: synthetic.suppressions
INSERT INTO suppressions
    (account_id, kind, value, api_user, created_at, expires_at, hit_count, reason_code, reason)
SELECT :first_account::bigint + (i % :accounts::bigint),
       CASE i % 5 WHEN 0 THEN 'complaint' WHEN 1 THEN 'bounce' WHEN 2 THEN 'block' WHEN 3 THEN 'unsubscribe'
                  ELSE 'no-interception' END,
       's' || i || '@d' || (i % 1000) || '.example',
       CASE WHEN i % 3 = 0 THEN 'app' || (i % 5) ELSE 'all' END,
       :now_ms::bigint - i, CASE WHEN i % 5 = 1 THEN :now_ms::bigint + 2592000000 END, 1,
       CASE WHEN i % 5 = 3 THEN (i % 4)::integer END, 'synthetic'
FROM generate_series(:first::bigint, :first::bigint + :count::bigint - 1) AS i
ON CONFLICT DO NOTHING

-- name: synthetic.analyze
-- VACUUM too: sets the visibility map, as autovacuum would soon after a bulk load, so counts
-- can be answered from the indexes alone
VACUUM ANALYZE

-- name: stats.day
-- template: {where} is filled only by storage/search.py (stats_where); the compacted counts plus
-- the deltas not compacted yet
SELECT (hour + :tz) / 24 AS day, api_user, domain, label, status, sub_status, sum(n) AS n
FROM (SELECT hour, api_user, domain, label, status, sub_status, n FROM status_stats WHERE {where}
      UNION ALL
      SELECT hour, api_user, domain, label, status, sub_status, n FROM status_stats_delta WHERE {where}) AS c
GROUP BY 1, 2, 3, 4, 5, 6
HAVING sum(n) <> 0
ORDER BY 1, 2, 3, 4, 5, 6

-- name: stats.compact
-- moves at most :batch deltas into the counters in one statement: the deleted rows are exactly
-- the ones added (another node compacting at once skips them), in key order (no deadlock between
-- two compactors); answers how many counters it wrote
WITH moved AS (
    DELETE FROM status_stats_delta
    WHERE ctid = ANY(ARRAY(SELECT ctid FROM status_stats_delta LIMIT :batch))
    RETURNING account_id, hour, api_user, domain, label, status, sub_status, n
), written AS (
    INSERT INTO status_stats (account_id, hour, api_user, domain, label, status, sub_status, n)
    SELECT account_id, hour, api_user, domain, label, status, sub_status, sum(n)
    FROM moved
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ORDER BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (account_id, hour, api_user, domain, label, status, sub_status)
    DO UPDATE SET n = status_stats.n + EXCLUDED.n
    RETURNING 1
)
SELECT count(*) FROM written

-- name: webhook.claim
-- several nodes poll the outbox: SKIP LOCKED hands each event to one of them; the outer guard
-- re-checks the lease on the row's latest version
UPDATE webhook_outbox SET claimed_by = :node, claimed_until = :until, attempts = attempts + 1
WHERE id IN (
    SELECT o.id FROM webhook_outbox o
    WHERE o.webhook_id = :webhook_id AND (o.claimed_until IS NULL OR o.claimed_until < :now)
      AND NOT EXISTS (SELECT 1 FROM webhook_outbox p
                      WHERE p.webhook_id = o.webhook_id AND p.recipient = o.recipient AND p.id < o.id)
    ORDER BY o.id LIMIT :limit
    FOR UPDATE SKIP LOCKED)
  AND (claimed_until IS NULL OR claimed_until < :now)
RETURNING id, webhook_id, event, email_id, recipient, status, sub_status, reason, at, attempts

-- name: webhook.event_details
SELECT o.id, r.api_user, r.sender, r.subject, r.label,
       (SELECT m.custom_args FROM messages m WHERE m.email_id = o.email_id) AS custom_args,
       -- an open's or click's send-log line (0013): the ip, user agent and link of the body
       (SELECT l.event FROM send_log l
        WHERE o.event IN ('open', 'click') AND l.email_id = o.email_id AND l.recipient = o.recipient
          AND l.at = o.at AND l.kind = 'feedback' AND l.rule = o.event
        ORDER BY l.id LIMIT 1) AS tracking
FROM webhook_outbox o JOIN recipients r ON r.email_id = o.email_id AND r.recipient = o.recipient
WHERE o.id = ANY(:ids::bigint[])

-- name: webhook.ack
DELETE FROM webhook_outbox WHERE id = ANY(:ids::bigint[])

-- name: webhook.release
UPDATE webhook_outbox SET claimed_by = NULL, claimed_until = NULL WHERE id = ANY(:ids::bigint[])

-- name: webhook.unclaim
UPDATE webhook_outbox SET claimed_by = NULL, claimed_until = NULL, attempts = attempts - 1
WHERE id = ANY(:ids::bigint[])
