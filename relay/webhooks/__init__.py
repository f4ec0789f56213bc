"""Event webhooks: the per-node sender that empties the database's outbox (``sender.py``), the
body and signature of a POST (``payload.py``). Independent of the mail's path (smtp, delivery,
feedback, http): events reach it only through the outbox the database's triggers fill."""
