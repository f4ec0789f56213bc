"""SyntaxPolicy: the first check of the chain (SPEC §3 "address syntax invalid").

What it does: parses the raw recipient with :func:`policies.address.parse_address` and answers
either the parsed :class:`Address` or a REJECT invalid/format error (404) ``Format Error`` with the
parser's detail.

Guarantees: pure, no I/O. It runs before any storage lookup, so a malformed recipient costs
nothing. Its shape differs from :class:`policies.base.Policy` on purpose: every later unit needs a
parsed address, and this is the unit that produces it.
"""

from __future__ import annotations

from policies.address import Address, FormatError, parse_address
from policies.base import RecipientContext, Verdict
from policies.reasons import REASON_FORMAT_ERROR
from storage.records import SubStatus


class SyntaxPolicy:
    name = "syntax"

    def decide(self, ctx: RecipientContext) -> Address | Verdict:
        parsed = parse_address(ctx.raw_recipient, ctx.smtputf8)
        if isinstance(parsed, FormatError):
            return Verdict.reject(self.name, SubStatus.FORMAT_ERROR, REASON_FORMAT_ERROR, parsed.detail)
        return parsed
