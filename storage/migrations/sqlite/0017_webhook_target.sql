-- The `target` webhook event (README "Webhooks"; EngageLab's "Email request successful"): a
-- recipient accepted for delivery, i.e. a recipients row inserted still sending (18), enqueues one
-- `target` event in the same transaction, like the triggers of 0012, for the accounts with an
-- enabled webhook that asks for it (rows inserted already invalid get `invalid` from 0012 instead).
-- Order: the row is committed before delivery is handed the message (relay/intake.py), so this
-- event's outbox id is below that of any delivered/deferred/... event of the recipient, and the
-- claim never sends a recipient's later event before its earlier one was acknowledged. A replayed
-- submission (ON CONFLICT DO NOTHING) inserts no row, hence no second `target`.
CREATE TRIGGER recipients_webhook_target AFTER INSERT ON recipients
WHEN NEW.status = 18
BEGIN
    INSERT INTO webhook_outbox (webhook_id, event, email_id, recipient, status, sub_status, reason, at)
    SELECT w.id, 'target', NEW.email_id, NEW.recipient, NEW.status, NEW.sub_status, NEW.reason, NEW.updated_at
    FROM webhooks w
    WHERE w.account_id = NEW.account_id AND w.disabled_at IS NULL AND w.events LIKE '%,target,%';
END;
