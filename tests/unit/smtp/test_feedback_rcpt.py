"""The feedback listener's RCPT rule (issue #13 item 6): only what we issued or publish."""

from __future__ import annotations

import pytest

from relay import verp
from relay.smtp.feedback import FeedbackMailboxes, accepted_recipient

SECRET = b"k" * 32
FB = "fb.example.net"
EMAIL_ID = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
ACCEPT = FeedbackMailboxes.build([FB.upper(), "fb2.example.net"], ["fbl", "arf@fb2.example.net"], [SECRET])


def test_signed_return_path_is_accepted_and_a_forged_one_refused() -> None:
    good = verp.encode(EMAIL_ID, "user@example.com", FB, SECRET)
    assert accepted_recipient(ACCEPT, good)
    assert accepted_recipient(ACCEPT, good.upper().replace(FB.upper(), FB))  # any letter case
    local, _, _ = good.partition("@")
    assert not accepted_recipient(ACCEPT, f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{FB}")
    assert not accepted_recipient(ACCEPT, verp.encode(EMAIL_ID, "user@example.com", FB, b"other-key"))
    assert not accepted_recipient(ACCEPT, verp.encode(EMAIL_ID, "user@example.com", "elsewhere.example", SECRET))
    assert not accepted_recipient(FeedbackMailboxes.build([FB]), good)  # no key: no return path verifies


@pytest.mark.parametrize("address", [f"postmaster@{FB}", f"Abuse@{FB}", f"fbl@{FB}", "fbl@fb2.example.net",
                                     "arf@fb2.example.net", "POSTMASTER@FB2.EXAMPLE.NET"])
def test_published_mailboxes_are_accepted(address: str) -> None:
    assert accepted_recipient(ACCEPT, address)


@pytest.mark.parametrize("address", [
    f"arf@{FB}",  # configured for the other domain only
    f"bounces@{FB}", f"x@sub.{FB}", "postmaster@elsewhere.example", f'"postmaster"@{FB}',
    f"postmaster%elsewhere.example@{FB}", f"elsewhere.example!postmaster@{FB}", f"user%x@{FB}", f"x!user@{FB}",
    f"{'a' * 65}@{FB}", f"@{FB}", "postmaster", f"post master@{FB}", f"postmaster.@{FB}",
])
def test_everything_else_is_refused(address: str) -> None:
    assert not accepted_recipient(ACCEPT, address)


def test_64_octet_local_part_is_the_limit() -> None:
    box = FeedbackMailboxes.build([FB], ["a" * 64, "b" * 65])
    assert accepted_recipient(box, f"{'a' * 64}@{FB}")
    assert not accepted_recipient(box, f"{'b' * 65}@{FB}")
