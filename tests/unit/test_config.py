"""Config loading is strict, and the example config documents every key with its default."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from relay.config import Config, ConfigError, config_from_dict, iter_keys, load_config, parse_duration
from relay.config_render import render_config, toml_value

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "mailrelay.toml.example"


def test_example_is_the_rendered_default() -> None:
    assert EXAMPLE.read_text() == render_config({}), "regenerate deploy/mailrelay.toml.example"


def test_example_lists_every_key_with_its_default_and_a_description() -> None:
    text = EXAMPLE.read_text()
    lines = text.splitlines()
    for key, default in iter_keys():
        name = key.split(".", 1)[1]
        line = f"# {name} = {toml_value(default)}"
        assert line in lines, f"{key} missing from the example"
        i = lines.index(line)
        assert lines[i - 1].startswith("# ") and "(default: " in lines[i - 1], f"{key} has no description"


def test_uncommented_example_parses_to_the_defaults(tmp_path: Path) -> None:
    uncommented = "\n".join(
        ln[2:] if ln.startswith("# ") and " = " in ln and not ln.startswith("# NOTE") and "(default:" not in ln
        else ln for ln in EXAMPLE.read_text().splitlines()
    )
    data = tomllib.loads(uncommented)
    cfg = config_from_dict(data, home=tmp_path)
    assert cfg == Config(home=tmp_path)


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    p = tmp_path / "mailrelay.toml"
    p.write_text('[smtp]\nlisten = "127.0.0.1:2525"\nlsten = "x"\n')
    with pytest.raises(ConfigError, match=r"smtp\.lsten"):
        load_config(p)


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        ('[limits]\nmax_recipients = 50\n', "max_recipients"),
        ('[limits]\nmax_recipients = "100"\n', "expected an integer"),
        ('[smtp]\nlisten = "nohostport"\n', "HOST:PORT"),
        ('[limits]\ncommand_timeout = "5 minutes"\n', "duration"),
        ('[spool]\nfsync = 1\n', "true or false"),
        ("[node\n", "mailrelay.toml"),
    ],
)
def test_bad_values_are_rejected(tmp_path: Path, toml: str, match: str) -> None:
    p = tmp_path / "mailrelay.toml"
    p.write_text(toml)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_render_with_settings_round_trips(tmp_path: Path) -> None:
    text = render_config({"smtp.listen": "127.0.0.1:2600", "feedback.domains": ["fb.example"]},
                         {"smtp.listen": "set by a test"})
    p = tmp_path / "mailrelay.toml"
    p.write_text(text)
    cfg = load_config(p)
    assert cfg.smtp.listen == "127.0.0.1:2600"
    assert cfg.feedback.domains == ("fb.example",)
    assert "# NOTE: set by a test" in text


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("2h", 7200), ("3d", 259200),
                                               ("250ms", 0.25), (12, 12), ("1.5", 1.5)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("overrides, message", [
    ({"http": {"search_per_minute": 0}}, "http.search_per_minute"),
    ({"http": {"exports_per_minute": -1}}, "http.exports_per_minute"),
    ({"http": {"search_per_minute": 10**20}}, "http.search_per_minute"),
    ({"http": {"request_timeout": "soon"}}, "http.request_timeout"),
    ({"http": {"request_timeout": "0s"}}, "http.request_timeout"),
])
def test_http_limits_are_validated(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(overrides, Path("."))
