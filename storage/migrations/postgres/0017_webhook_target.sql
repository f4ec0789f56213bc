-- The `target` webhook event (README "Webhooks"; EngageLab's "Email request successful"): a
-- recipient accepted for delivery, i.e. a recipients row inserted still sending (18), enqueues one
-- `target` event in the same transaction, like the triggers of 0012, for the accounts with an
-- enabled webhook that asks for it (rows inserted already invalid get `invalid` from 0012 instead).
-- Order: the row is committed before delivery is handed the message (relay/intake.py), so this
-- event's outbox id is below that of any delivered/deferred/... event of the recipient, and the
-- claim never sends a recipient's later event before its earlier one was acknowledged. A replayed
-- submission (ON CONFLICT DO NOTHING) inserts no row, hence no second `target`.
--
-- Unlike 0012's row triggers this one fires for every accepted recipient (the accept path, where
-- recipient.insert writes a whole group commit in one statement): a statement trigger reading the
-- inserted rows (a transition table) does one set-wise INSERT ... SELECT per statement, the same
-- rows as webhook_enqueue would write, instead of a PL/pgSQL call and lookup per recipient.
CREATE FUNCTION recipients_webhook_target() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_outbox (webhook_id, event, email_id, recipient, status, sub_status, reason, at)
    SELECT w.id, 'target', n.email_id, n.recipient, n.status, n.sub_status, COALESCE(n.reason, ''), n.updated_at
    FROM inserted_recipients n
    JOIN webhooks w ON w.account_id = n.account_id AND w.disabled_at IS NULL AND w.events LIKE '%,target,%'
    WHERE n.status = 18;
    RETURN NULL;
END
$$;

CREATE TRIGGER recipients_webhook_target AFTER INSERT ON recipients
    REFERENCING NEW TABLE AS inserted_recipients
    FOR EACH STATEMENT EXECUTE FUNCTION recipients_webhook_target();
