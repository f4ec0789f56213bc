"""The feedback parser over the Sisimai-derived corpus (tests/fixtures/feedback), scored as the
corpus README describes.

- Headline: grouped cross-validation (one sending-software/provider family held out at a time;
  see ``fb_scoring``), printed in the terminal summary with the whole-corpus fit under it.
- Per-sample expectations: every field of every sample must equal its label, except the
  differences reviewed in ``corpus_exceptions.toml`` (each with its reason). An unlisted
  difference fails and is listed; so does a listed one that no longer happens (the file stays
  exact), so an improvement or a regression is always seen — there is no accuracy floor to hide in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fb_scoring import FIXTURES, SUMMARY, grouped_cv, load_exceptions, load_labels, score

from relay.commands.feedback import classify_file


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, object]]:
    return {label["file"]: classify_file(str(FIXTURES / label["file"])) for label in load_labels()}


def _lookup(results: dict[str, dict[str, object]]):  # type: ignore[no-untyped-def]
    return lambda p: results[str(Path(p).relative_to(FIXTURES))]


def test_grouped_cross_validation_headline(results: dict[str, dict[str, object]]) -> None:
    cv = grouped_cv(_lookup(results))
    fit = score(_lookup(results))
    SUMMARY[:] = [*cv.headline().splitlines(), *fit.table().splitlines()]
    print("\n" + "\n".join(SUMMARY))
    assert len(cv.folds) >= 60  # every family is held out once
    # the held-out figures are the per-sample expectations summed: they agree with the fit
    assert cv.micro("category") == (fit.right["category"], fit.total["category"])


def test_every_sample_matches_its_label_or_a_reviewed_exception(results: dict[str, dict[str, object]]) -> None:
    exceptions = load_exceptions()
    found = {(d.sample, d.field): d for d in score(_lookup(results)).misses}
    unexpected = [str(d) for key, d in sorted(found.items()) if key not in exceptions
                  or exceptions[key]["got"] != d.got]
    stale = [f"{s}: {f} (listed: got {e['got']}, label {e['label']})" for (s, f), e in sorted(exceptions.items())
             if (s, f) not in found]
    assert not unexpected and not stale, (
        "differences from the labels not in corpus_exceptions.toml:\n  " + "\n  ".join(unexpected)
        + "\nexceptions that no longer happen (remove them):\n  " + "\n  ".join(stale))


def test_exceptions_name_real_samples_and_fields() -> None:
    stems = {Path(label["file"]).stem for label in load_labels()}
    for (sample, field_name), item in load_exceptions().items():
        assert sample in stems, sample
        assert field_name in ("kind", "recipient", "status", "smtp_code", "class", "category"), field_name
        assert len(item["reason"]) > 30, f"{sample}: say why the label is wrong or why we accept the miss"


def test_every_sample_has_fixture_and_license() -> None:
    labels = load_labels()
    assert len(labels) == 236
    assert (FIXTURES / "LICENSE-sisimai.txt").is_file()
    for label in labels:
        assert (FIXTURES / label["file"]).is_file(), label["file"]


def test_json_shape(results: dict[str, dict[str, object]]) -> None:
    keys = {"file", "kind", "recipient", "status", "smtp_code", "class", "category", "sub_status", "rule",
            "truncated", "dropped"}
    for obj in results.values():
        assert keys <= set(obj)
        json.dumps(obj)
        if obj["class"] == "soft_bounce":
            assert obj["category"] is not None and 503 <= int(obj["sub_status"]) <= 509  # type: ignore[call-overload]
        else:
            assert obj["category"] is None and obj["sub_status"] is None


def test_autoreplies_and_successes_are_not_bounces(results: dict[str, dict[str, object]]) -> None:
    for label in load_labels():
        if label["sisimai_reason"] in ("vacation", "delivered") or label["source"] == "not-bounce":
            assert results[label["file"]]["class"] is None, label["file"]
