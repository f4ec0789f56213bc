"""The recipient-facing HTTP listener (``[web] listen``): unsubscribe, open pixel, click redirect.

Its users are anonymous recipients on the internet, so it is a listener of its own, separate from
the data API, and it serves only what the signed tokens in our mail name (relay/tokens.py).
"""
