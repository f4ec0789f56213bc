"""The named-query loader (backend-free)."""

from __future__ import annotations

import pytest

from storage.queries import DIALECTS, QueryError, build_queries, load_queries, parse, to_positional

BASE = """
-- name: a.get
-- description lines are dropped
SELECT x FROM t WHERE id = :id AND y = :y AND z = :id

-- name: a.put
INSERT INTO t (id, note) VALUES (:id, ':not_a_param')
"""


def test_shipped_queries_load_for_every_dialect() -> None:
    names = {d: load_queries(d).names() for d in DIALECTS}
    assert names["sqlite"] == names["postgres"]
    assert "suppression.hits" in names["sqlite"]


def test_positional_rewrite_keeps_casts_and_literals() -> None:
    sql, params = to_positional("SELECT :a::bigint[], ':b', :c, :a FROM t WHERE s = 'it''s :x'")
    assert sql == "SELECT $1::bigint[], ':b', $2, $1 FROM t WHERE s = 'it''s :x'"
    assert params == ("a", "c")


def test_dialects() -> None:
    pg = build_queries("postgres", BASE, {})
    assert pg["a.get"].sql == "SELECT x FROM t WHERE id = $1 AND y = $2 AND z = $1"
    assert pg["a.get"].args({"y": 2, "id": 1, "extra": 0}) == [1, 2]
    assert not pg["a.get"].write and pg["a.put"].write
    assert pg["a.put"].params == ("id",)
    lite = build_queries("sqlite", BASE, {})
    assert lite["a.get"].sql.startswith("SELECT x FROM t WHERE id = :id")
    with pytest.raises(QueryError, match="missing parameter 'y'"):
        pg["a.get"].args({"id": 1})
    with pytest.raises(QueryError, match="unknown query"):
        lite["nope"]


def test_override_replaces_only_its_dialect() -> None:
    over = "-- name: a.get\n-- mode: columnar\nSELECT unnest(:id::int[])\n"
    pg = build_queries("postgres", BASE, {"postgres": over})
    assert pg["a.get"].sql == "SELECT unnest($1::int[])" and pg["a.get"].columnar
    lite = build_queries("sqlite", BASE, {"postgres": over})
    assert "unnest" not in lite["a.get"].sql


def test_override_of_unknown_query_fails_at_load() -> None:
    with pytest.raises(QueryError, match=r"queries\.sqlite\.sql overrides unknown queries: a\.gte"):
        build_queries("postgres", BASE, {"sqlite": "-- name: a.gte\nSELECT 1\n"})


def test_malformed_files() -> None:
    with pytest.raises(QueryError, match="defined twice"):
        parse("-- name: q\nSELECT 1\n-- name: q\nSELECT 2\n")
    with pytest.raises(QueryError, match="before the first"):
        parse("SELECT 1\n-- name: q\nSELECT 2\n")
    with pytest.raises(QueryError, match="empty"):
        parse("-- name: q\n-- only a comment\n")


def test_search_template_render_is_cached() -> None:
    q = load_queries("postgres")
    one = q.render("status.search", "account_id = :f_account_id")
    assert one is q.render("status.search", "account_id = :f_account_id")
    assert one.params[0] == "f_account_id" and "{where}" not in one.sql
    with pytest.raises(QueryError, match="not a search template"):
        q.render("suppression.hits", "1 = 1")
