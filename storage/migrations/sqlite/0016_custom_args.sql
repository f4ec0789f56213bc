-- A message's custom_args (README "Webhooks"): the customer's own fields, given to
-- POST /v1/mail/send(_mime) as `custom_args` or over SMTP as X-Mailrelay-Custom-Args. Compact JSON
-- of an object of at most 1 KB (checked by relay/custom_args.py before it is written); NULL: none.
-- Every webhook event of the message's recipients carries it.
ALTER TABLE messages ADD COLUMN custom_args TEXT;

-- How a webhook's POSTs are signed (README "Webhooks"): 'body' (HMAC-SHA256 of the timestamp and
-- the body, the default) or 'engagelab' (of the timestamp only, as EngageLab's documentation says,
-- for receivers written against it).
ALTER TABLE webhooks ADD COLUMN signature TEXT NOT NULL DEFAULT 'body';
