"""The HTTP data API (aiohttp): see ``relay/http/app.py``."""
