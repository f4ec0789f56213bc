"""Delivery: scheduled queues per (API_USER, domain), site queues per MX host set, SMTP client."""
