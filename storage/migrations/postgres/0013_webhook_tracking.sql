-- Open and click events reach webhooks (README "Webhooks"): the recipient's feedback send-log line
-- of an open or click (0009: JSON event {"type", "ip", "user_agent", "link", ...}) enqueues an
-- `open`/`click` event through webhook_enqueue (0012), in the same transaction, for the accounts
-- with an enabled webhook that wants it. The link of a click is the event's reason (the body's
-- `message`). The account is the recipient's (send_log has none). Unsubscribe events already come
-- from the suppressions triggers of 0012: not repeated here.
CREATE FUNCTION send_log_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ev json := NEW.event::json;
BEGIN
    PERFORM webhook_enqueue(r.account_id, ev->>'type', NEW.email_id, NEW.recipient, NULL, NULL,
                            ev->>'link', NEW.at)
    FROM recipients r
    WHERE r.email_id = NEW.email_id AND r.recipient = NEW.recipient;
    RETURN NULL;
END
$$;

-- the event column is only ever written by codec.event_json (valid JSON)
CREATE TRIGGER send_log_webhook_insert AFTER INSERT ON send_log
    FOR EACH ROW WHEN (NEW.kind = 'feedback' AND NEW.event IS NOT NULL
                       AND (NEW.event::json->>'type') IN ('open', 'click'))
    EXECUTE FUNCTION send_log_webhook();
