"""Moved to :mod:`relay.service.params` (shared by the HTTP API and the console); kept importable here for
code written against the old path."""

from relay.service.params import (
    MAX_LIST,
    MAX_TEXT,
    body_int,
    body_text,
    body_time,
    body_values,
    enum_list,
    integer,
    months_later,
    parse_day,
    parse_time,
    text,
    text_list,
    time_param,
)

__all__ = [
    "MAX_LIST",
    "MAX_TEXT",
    "body_int",
    "body_text",
    "body_time",
    "body_values",
    "enum_list",
    "integer",
    "months_later",
    "parse_day",
    "parse_time",
    "text",
    "text_list",
    "time_param",
]
