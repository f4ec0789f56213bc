# Customer tooling matches these strings; never reformat. Pinned by tests/unit/policies/test_reasons.py
"""The exact reason texts of the inline suppression policies (SPEC §3).

The irregular spacing and punctuation are copied byte for byte from the spec on purpose. Never
compose these strings elsewhere (no f-strings, no ``.format``): import the constant.
"""

from __future__ import annotations

from typing import Final

REASON_FORMAT_ERROR: Final = "Format Error"
REASON_COMPLAINT: Final = "Blacklist:complaint (worker:address in complaint list)"
REASON_BLOCK: Final = "Blacklist: Block:(worker:address in block list)"
REASON_BOUNCE: Final = "Blacklist: Bounce(worker:address in bounce list)"
REASON_UNSUBSCRIBE: Final = "unsubscribe"
