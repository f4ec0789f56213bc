"""Pins the five reason texts of SPEC §3 byte for byte: customer tooling matches them."""

from __future__ import annotations

import policies
from policies import reasons


def test_reason_strings_are_byte_exact() -> None:
    assert reasons.REASON_FORMAT_ERROR.encode() == b"Format Error"
    assert reasons.REASON_COMPLAINT.encode() == b"Blacklist:complaint (worker:address in complaint list)"
    assert reasons.REASON_BLOCK.encode() == b"Blacklist: Block:(worker:address in block list)"
    assert reasons.REASON_BOUNCE.encode() == b"Blacklist: Bounce(worker:address in bounce list)"
    assert reasons.REASON_UNSUBSCRIBE.encode() == b"unsubscribe"


def test_reasons_module_holds_only_these_constants() -> None:
    public = {name for name in vars(reasons) if name.isupper()}
    assert public == {
        "REASON_FORMAT_ERROR",
        "REASON_COMPLAINT",
        "REASON_BLOCK",
        "REASON_BOUNCE",
        "REASON_UNSUBSCRIBE",
    }


def test_package_reexports_the_same_objects() -> None:
    assert policies.REASON_COMPLAINT is reasons.REASON_COMPLAINT
    assert policies.REASON_BLOCK is reasons.REASON_BLOCK
    assert policies.REASON_BOUNCE is reasons.REASON_BOUNCE
