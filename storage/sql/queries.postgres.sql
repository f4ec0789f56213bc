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
     request_ip, node, message_id)
SELECT * FROM unnest(
    :email_id::text[], :account_id::bigint[], :api_user::text[], :sender::text[], :subject::text[],
    :label::text[], :email_type::text[], :size::bigint[], :request_time::bigint[],
    :request_ip::text[], :node::text[], :message_id::text[])
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
       l.duration_ms, l.rule
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
