-- Open and click events reach webhooks (README "Webhooks"): the recipient's feedback send-log line
-- of an open or click (0009: JSON event {"type", "ip", "user_agent", "link", ...}) enqueues an
-- `open`/`click` event in the same transaction, like the triggers of 0012, for the accounts with an
-- enabled webhook that wants it. The link of a click is the event's reason (the body's `message`).
-- The account is the recipient's (send_log has none). Unsubscribe events already come from the
-- suppressions triggers of 0012: not repeated here.
CREATE TRIGGER send_log_webhook_insert AFTER INSERT ON send_log
WHEN NEW.kind = 'feedback' AND NEW.event IS NOT NULL
 AND json_valid(NEW.event) AND json_extract(NEW.event, '$.type') IN ('open', 'click')
BEGIN
    INSERT INTO webhook_outbox (webhook_id, event, email_id, recipient, reason, at)
    SELECT w.id, json_extract(NEW.event, '$.type'), NEW.email_id, NEW.recipient,
           COALESCE(json_extract(NEW.event, '$.link'), ''), NEW.at
    FROM recipients r
    JOIN webhooks w ON w.account_id = r.account_id AND w.disabled_at IS NULL
                   AND w.events LIKE '%,' || json_extract(NEW.event, '$.type') || ',%'
    WHERE r.email_id = NEW.email_id AND r.recipient = NEW.recipient;
END;
