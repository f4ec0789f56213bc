"""The error every service raises for bad input or a refused action, and the one text check.

Each front end shows it its own way: the HTTP API as ``{"code": status, "message": message}``,
the console as a page (or a form's error line) with the same message.
"""

from __future__ import annotations


class ApiError(Exception):
    """Raised by services, validators and handlers; ``status`` is the HTTP status it answers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def unstorable(text: str) -> str | None:
    """What in ``text`` no database text column (nor a UTF-8 response) can hold, or None.

    NUL: PostgreSQL text refuses it. A lone surrogate (JSON ``"\\ud800"``, or an undecodable byte
    in a URL): it is not a character at all, so it cannot be encoded to UTF-8 for storage or for
    the answer."""
    if "\x00" in text:
        return "a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate or undecodable byte (not a Unicode character)"
    return None
