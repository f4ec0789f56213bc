"""Labels as filters: a ``label_id`` names one of the account's labels (status search, stats)."""

from __future__ import annotations

from aiohttp import web

from relay.service.access import SERVICES_KEY


async def label_filter(request: web.Request, account_id: int | None, raw: str | None) -> str | None:
    """The label text a ``label_id`` filter stands for: the name of that label of the account, else
    the text itself."""
    if raw is None or account_id is None or not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return raw
    label = await request.app[SERVICES_KEY].storage.labels.get(account_id, int(raw))
    return label.name if label is not None else raw
