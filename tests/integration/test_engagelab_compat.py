"""mailrelay as an existing EngageLab client sees it (SQLite and PostgreSQL).

Every call below is one EngageLab documents (docs/email/rest-api: delivery-response, Complaints,
Blocks, Bounces, Unsubscribes, No_interceptions, email-label; checked against the pages on
engagelab.com), made with the documented parameter names, separators and defaults; each answer is
checked field by field: name, JSON type and format. Data comes from ``test_http_api.seed``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from storage.records import Status
from tests.integration.test_http_api import ADMIN, NOW, Api, basic

TODAY = NOW.date()
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")
PLAIN = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")  # blocks, no_interceptions
ZONED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$")  # complaints, bounces, unsubscribes, labels
NULL = type(None)

Spec = dict[str, Any]  # field -> a type, a tuple of types, or a compiled pattern (a string matching it)


def check(row: dict[str, Any], spec: Spec, *, exact: bool = False) -> None:
    """Every field of ``spec`` is there with its type or format (``exact``: and no other field)."""
    for name, want in spec.items():
        assert name in row, (name, row)
        value = row[name]
        if isinstance(want, re.Pattern):
            assert isinstance(value, str) and want.match(value), (name, value)
        else:
            assert isinstance(value, want) and not (want is int and isinstance(value, bool)), (name, value)
    if exact:
        assert set(row) == set(spec), sorted(set(row) ^ set(spec))


async def get(api: Api, path: str, **params: str) -> dict[str, Any]:
    status, body = await api.call("GET", path, api.a, params=params)
    assert status == 200, body
    check(body, {"result": list, "count": int, "total": int})
    assert body["count"] == len(body["result"])
    return body


STATUS_RECORD: Spec = {
    "email": str, "email_id": str, "api_user": str, "status": int, "status_desc": str,
    "sub_status": (int, NULL), "sub_status_desc": (str, NULL), "request_time": ISO, "update_time": ISO,
    "response_message": str,
}


# region /v1/email_status

async def test_email_status_record_fields(api: Api) -> None:
    # Source: docs/email/rest-api/delivery-response (the record's fields)
    body = await get(api, "/v1/email_status", send_date=(NOW - timedelta(hours=1)).date().isoformat())
    rows = {r["email"]: r for r in body["result"]}
    assert body["total"] >= 2 and {"one@example.com", "two@example.org"} <= set(rows)
    for r in body["result"]:
        check(r, STATUS_RECORD)
        assert r["email_id"] == f"{r['message_id']}${r['email']}"  # per recipient, EngageLab's form
    one, two = rows["one@example.com"], rows["two@example.org"]
    assert (one["status"], one["status_desc"], one["sub_status"], one["sub_status_desc"]) == (
        5, "Soft bounce", 506, "Soft bounce: not exist")
    assert one["response_message"] == "user unknown" and one["api_user"] == "app1"
    assert one["update_time"] > one["request_time"]
    assert (two["status"], two["status_desc"], two["sub_status"]) == (4, "Invalid email", 401)
    assert two["sub_status_desc"] == "Invalid email: blacklist"


async def test_email_status_documented_parameters(api: Api) -> None:
    # Source: docs/email/rest-api/delivery-response (offset, limit 0-100 default 100, send_date, email, email_ids
    #   'a;b;c', api_user, domain_name, label_id, status, sub_status 'a;b;c' overriding status)
    body = await get(api, "/v1/email_status")
    everything = body["total"]
    assert everything == 3 and body["count"] == 3  # default limit 100 (ours was 10)
    # email_ids separated by ';' (and still ','): message ids and per-recipient ids alike
    for sep in (";", ","):
        body = await get(api, "/v1/email_status", email_ids=f"01AAA{sep}01AAB")
        assert sorted(r["email"] for r in body["result"]) == ["one@example.com", "three@example.com",
                                                              "two@example.org"]
    body = await get(api, "/v1/email_status", email_ids="01AAA$two@example.org;01AAB")
    assert sorted(r["email_id"] for r in body["result"]) == ["01AAA$two@example.org", "01AAB$three@example.com"]
    # sub_status: a ';' list, and status is then ignored (status=1 would match nothing)
    body = await get(api, "/v1/email_status", sub_status="401;506", status="1")
    assert sorted(r["sub_status"] for r in body["result"]) == [401, 506]
    body = await get(api, "/v1/email_status", status="5;4")
    assert sorted(r["status"] for r in body["result"]) == [4, 5]
    # send_date is one day; with email it covers that day and the 29 after it
    three_days_ago = (NOW - timedelta(days=3)).date()
    before = (three_days_ago - timedelta(days=2)).isoformat()
    assert (await get(api, "/v1/email_status", send_date=three_days_ago.isoformat()))["total"] == 1
    assert (await get(api, "/v1/email_status", send_date=before))["total"] == 0
    body = await get(api, "/v1/email_status", send_date=before, email="three@example.com")
    assert [r["email_id"] for r in body["result"]] == ["01AAB$three@example.com"]
    # limit 0..100 (0: the count only), offset
    body = await get(api, "/v1/email_status", limit="0")
    assert body["result"] == [] and body["count"] == 0 and body["total"] == everything
    assert body["next_cursor"] is None
    first = await get(api, "/v1/email_status", limit="1")
    second = await get(api, "/v1/email_status", limit="1", offset="1")
    assert first["result"][0]["email_id"] != second["result"][0]["email_id"]
    assert (await api.call("GET", "/v1/email_status", api.a, params={"limit": "101"}))[0] == 400
    # api_user, domain_name, label_id
    assert (await get(api, "/v1/email_status", api_user="app1"))["total"] == 3
    body = await get(api, "/v1/email_status", domain_name="example.org")
    assert [r["email"] for r in body["result"]] == ["two@example.org"]
    assert (await get(api, "/v1/email_status", label_id="promo"))["total"] == 2


async def test_message_by_per_recipient_id(api: Api) -> None:
    # Source: docs/email/webhook/webhook (email_ids are MESSAGE_ID$recipient in its example)
    status, body = await api.call("GET", "/v1/messages/01AAA$two@example.org", api.a)
    assert status == 200 and [r["email_id"] for r in body["result"]] == ["01AAA$two@example.org"]
    check(body["result"][0], STATUS_RECORD)
    _, body = await api.call("GET", "/v1/messages/01AAA", api.a)
    assert sorted(r["email_id"] for r in body["result"]) == ["01AAA$one@example.com", "01AAA$two@example.org"]
    assert (await api.call("GET", "/v1/messages/01AAA$nobody@example.org", api.a))[0] == 404
    assert (await api.call("GET", "/v1/messages/01BBB$one@example.com", api.a))[0] == 404  # another account's
# endregion


# region the five lists

async def test_complaints(api: Api) -> None:
    # Source: docs/email/rest-api/Complaints
    body = await get(api, "/v1/complaints", start_date=TODAY.isoformat(), end_date=TODAY.isoformat(),
                     email="c@example.com", offset="0", limit="90")
    assert body["total"] == 1
    row = body["result"][0]
    check(row, {"email": str, "reason": str, "complaint_time": ZONED, "expire_time": ZONED})
    assert row["email"] == "c@example.com" and row["reason"] == "abuse"
    assert row["complaint_time"] == f"{NOW:%Y-%m-%dT%H:%M:%S}+0000"
    assert row["expire_time"] == f"{NOW + timedelta(days=180):%Y-%m-%dT%H:%M:%S}+0000"
    yesterday = (TODAY - timedelta(days=1)).isoformat()
    assert (await get(api, "/v1/complaints", start_date=yesterday, end_date=yesterday))["total"] == 0


async def test_bounces(api: Api) -> None:
    # Source: docs/email/rest-api/Bounces
    body = await get(api, "/v1/bounces", email="gone@example.com")
    row = body["result"][0]
    check(row, {"email": str, "reason": str, "bounce_time": ZONED, "expire_time": ZONED})
    assert row["bounce_time"] == f"{NOW:%Y-%m-%dT%H:%M:%S}+0000" and row["reason"] == "5.1.1 user unknown"


async def test_blocks(api: Api) -> None:
    # Source: docs/email/rest-api/Blocks
    status, body = await api.call("POST", "/v1/blocks", api.a, json={
        "email_or_domain": ["11@gmail.example", "hotmail.example"], "api_user": "app1"})
    assert status == 200 and body == {"count": 2}
    body = await get(api, "/v1/blocks", start_date=TODAY.isoformat(), end_date=TODAY.isoformat(),
                     offset="0", limit="1")
    assert body["total"] == 3 and body["count"] == 1
    body = await get(api, "/v1/blocks", api_user="app1")
    spec = {"block_id": int, "api_user": str, "email_or_domain": str, "create_time": PLAIN,
            "expire_time": (str, NULL)}
    for row in body["result"]:
        check(row, spec)
        assert row["expire_time"] is None  # never expires
    ids = {r["email_or_domain"]: r["block_id"] for r in body["result"]}
    assert len(set(ids.values())) == 2 and all(0 < v < 2**53 for v in ids.values())
    again = await get(api, "/v1/blocks", email_or_domain="hotmail.example")
    assert again["result"][0]["block_id"] == ids["hotmail.example"]  # stable
    # a period of more than 3 months is refused
    status, body = await api.call("GET", "/v1/blocks", api.a, params={"start_date": "2026-01-01",
                                                                      "end_date": "2026-04-01"})
    assert status == 400 and "3 months" in body["message"]
    assert (await get(api, "/v1/blocks", start_date="2026-01-01", end_date="2026-03-31"))["count"] >= 0
    status, body = await api.call("DELETE", "/v1/blocks", api.a,
                                  params={"email_or_domain": "11@gmail.example;hotmail.example"})
    assert status == 200 and body["count"] == 2


async def test_unsubscribes(api: Api) -> None:
    # Source: docs/email/rest-api/Unsubscribes
    status, body = await api.call("POST", "/v1/unsubscribes", api.a, json={"email": "bye@example.com",
                                                                          "api_user": "app1", "type": 3})
    assert status == 200 and body == {"count": 1}
    body = await get(api, "/v1/unsubscribes", start_date=TODAY.isoformat(), end_date=TODAY.isoformat(),
                     offset="0", limit="30")
    assert body["total"] == 2
    for row in body["result"]:
        check(row, {"email": str, "api_user": str, "type": int, "unsubscribe_time": ZONED,
                    "expire_time": (str, NULL)})
    row = next(r for r in body["result"] if r["email"] == "bye@example.com")
    assert (row["type"], row["api_user"], row["expire_time"]) == (3, "app1", None)
    # with an email the period is ignored (EngageLab's rule); otherwise at most 3 months
    body = await get(api, "/v1/unsubscribes", email="bye@example.com", start_date="2020-01-01",
                     end_date="2020-01-02")
    assert body["total"] == 1
    assert (await api.call("GET", "/v1/unsubscribes", api.a, params={"start_date": "2026-01-01",
                                                                     "end_date": "2026-06-01"}))[0] == 400
    status, body = await api.call("DELETE", "/v1/unsubscribes", api.a, params={"email": "bye@example.com"})
    assert status == 200 and body["count"] == 1


async def test_no_interceptions(api: Api) -> None:
    # Source: docs/email/rest-api/No_interceptions
    status, _ = await api.call("POST", "/v1/no_interceptions", api.a, json={"email_or_domain": "wbw@hotmail.example"})
    assert status == 200
    body = await get(api, "/v1/no_interceptions", start_date=TODAY.isoformat(), end_date=TODAY.isoformat())
    assert body["total"] == 2
    for row in body["result"]:
        check(row, {"api_user": str, "email_or_domain": str, "create_time": PLAIN}, exact=True)
    status, body = await api.call("DELETE", "/v1/no_interceptions", api.a,
                                  params={"email_or_domain": "wbw@hotmail.example"})
    assert status == 200 and body["count"] == 1


@pytest.mark.parametrize("path", ["/v1/complaints", "/v1/blocks", "/v1/bounces", "/v1/unsubscribes",
                                  "/v1/no_interceptions"])
async def test_list_defaults_and_bad_dates(api: Api, path: str) -> None:
    # Source: the five list pages (limit default 100, start_date/end_date yyyy-MM-dd)
    body = await get(api, path)  # EngageLab's default limit is 100
    assert body["count"] == body["total"] == 1
    body = await get(api, path, limit="0")
    assert body["result"] == [] and body["total"] == 1
    for params, word in (({"start_date": "2026-13-01"}, "start_date"), ({"end_date": "tomorrow"}, "end_date"),
                         ({"start_date": "2026-02-02", "end_date": "2026-02-01"}, "end_date"),
                         ({"start_date": "2026-02-01", "start_time": "2026-02-01"}, "not both"),
                         ({"limit": "101"}, "limit")):
        status, err = await api.call("GET", path, api.a, params=params)
        assert status == 400 and word in err["message"], (params, err)
# endregion


# region labels

async def test_labels(api: Api) -> None:
    # Source: docs/email/rest-api/email-label
    created = []
    for name in ("promo", "edm-news", "EDM-spring"):
        status, body = await api.call("POST", "/v1/labels", api.a, json={"label_name": name})
        assert status == 200, body
        check(body, {"label_id": int, "label_name": str, "create_time": ZONED, "update_time": ZONED}, exact=True)
        created.append(body)
    assert (await api.call("POST", "/v1/labels", api.a, json={"label_name": "promo"}))[0] == 409
    body = await get(api, "/v1/labels", label_name="edm", offset="0", limit="100")  # fuzzy, any case
    assert [x["label_name"] for x in body["result"]] == ["edm-news", "EDM-spring"] and body["total"] == 2
    assert (await get(api, "/v1/labels", limit="1", offset="1"))["result"][0]["label_name"] == "edm-news"
    # label_id in a status search: the mail whose X-Label is that label's name
    promo = created[0]["label_id"]
    body = await get(api, "/v1/email_status", label_id=str(promo))
    assert body["total"] == 2 and {r["label"] for r in body["result"]} == {"promo"}
    status, body = await api.call("PUT", f"/v1/labels/{promo}", api.a, json={"label_name": "spring"})
    assert status == 200 and body["label_name"] == "spring" and body["label_id"] == promo
    assert (await get(api, "/v1/email_status", label_id=str(promo)))["total"] == 0  # mail keeps its name
    status, body = await api.call("DELETE", f"/v1/labels/{promo}", api.a)
    assert status == 200 and body == {"count": 1}
    assert (await api.call("DELETE", f"/v1/labels/{promo}", api.a))[0] == 404
    assert (await get(api, "/v1/labels"))["total"] == 2
    status, body = await api.call("POST", "/v1/labels", api.a, json={"label_name": "x", "label_id": 5})
    assert status == 400 and body["message"].startswith("label_id: unknown field")
# endregion


# region statistics

STATS_ROW: Spec = {"send_date": re.compile(r"^\d{4}-\d\d-\d\d$"), "api_user": (str, NULL), "domain": (str, NULL),
                   "label_id": (int, NULL), "label_name": (str, NULL), "targets": int, "sent": int, "delivered": int,
                   "soft_bounce": int, "invalid": int, "sending": int, "sub_status": dict}


async def test_stats_day(api: Api) -> None:
    # Source: docs/email/rest-api/statistics
    hour_ago = (NOW - timedelta(hours=1))
    day, three = hour_ago.date().isoformat(), (NOW - timedelta(days=3)).date().isoformat()
    _, label = await api.call("POST", "/v1/labels", api.a, json={"label_name": "promo"})
    body = await get(api, "/v1/stats_day", start_date=three, end_date=day)
    for row in body["result"]:
        check(row, STATS_ROW, exact=True)
    rows = {(r["send_date"], r["domain"]): r for r in body["result"]}
    promo = rows[(day, "example.com")]  # 01AAA to one@example.com: soft bounce 506 now
    assert (promo["api_user"], promo["label_id"], promo["label_name"]) == ("app1", label["label_id"], "promo")
    assert (promo["targets"], promo["sent"], promo["delivered"], promo["soft_bounce"]) == (1, 1, 0, 1)
    assert promo["sub_status"] == {"506": 1}
    blocked = rows[(day, "example.org")]
    assert (blocked["targets"], blocked["invalid"], blocked["sent"], blocked["sub_status"]) == (1, 1, 0, {"401": 1})
    old = rows[(three, "example.com")]
    assert (old["targets"], old["sending"], old["label_id"], old["label_name"]) == (1, 1, None, None)
    # a status change shows at once: the counters move in the storage's own transaction
    await api.relay.storage.statuses.update_status("01AAB", "three@example.com", Status.DELIVERED, None, "250 ok")
    body = await get(api, "/v1/stats_day", start_date=three, end_date=three)
    assert [(r["delivered"], r["sending"]) for r in body["result"]] == [(1, 0)]
    # the filters (';' lists; label_ids by id) and aggregate_by
    body = await get(api, "/v1/stats_day", start_date=three, end_date=day, label_ids=str(label["label_id"]),
                     domain_names="example.com;example.net", api_users="app1")
    assert [(r["send_date"], r["domain"]) for r in body["result"]] == [(day, "example.com")]
    body = await get(api, "/v1/stats_day", start_date=three, end_date=day, aggregate_by="1")
    assert [(r["send_date"], r["targets"], r["api_user"], r["domain"]) for r in body["result"]] == [
        (three, 1, None, None), (day, 2, None, None)]
    for row in body["result"]:
        check(row, STATS_ROW, exact=True)
    # whole-hour time zones regroup the days; anything else is a clear 400
    east = await get(api, "/v1/stats_day", start_date=three, end_date=(NOW + timedelta(days=1)).date().isoformat(),
                     time_zone="+14", aggregate_by="1")
    assert sum(r["targets"] for r in east["result"]) == 3
    for params, word in (({"start_date": day}, "end_date"), ({"start_date": "2026-01-01", "end_date": "2026-04-01"},
                                                             "3 months"),
                         ({"start_date": day, "end_date": day, "time_zone": "+5:30"}, "time_zone"),
                         ({"start_date": day, "end_date": day, "aggregate_by": "2"}, "aggregate_by"),
                         ({"start_date": day, "end_date": day, "api_user_list": "app1"}, "api_user_list")):
        status, err = await api.call("GET", "/v1/stats_day", api.a, params=params)
        assert status == 400 and word in err["message"], (params, err)
# endregion


# region errors and unknown names

async def test_unknown_parameters_and_fields_are_named(api: Api) -> None:
    # Source: issue #11 §1 (every documented name, nothing silently ignored)
    status, body = await api.call("GET", "/v1/email_status", api.a, params={"emial": "x@example.com"})
    assert status == 400 and body["message"].startswith("emial: unknown parameter")
    status, body = await api.call("GET", "/v1/blocks", api.a, params={"start": "2026-01-01"})
    assert status == 400 and "start: unknown parameter" in body["message"] and "start_date" in body["message"]
    # the reported case: reason_code was silently stored as type 0
    status, body = await api.call("POST", "/v1/unsubscribes", api.a, json={"email": "rc@example.com",
                                                                          "reason_code": 2})
    assert status == 400 and body["message"].startswith("reason_code: unknown field")
    assert (await get(api, "/v1/unsubscribes", email="rc@example.com"))["total"] == 0  # nothing stored
    status, body = await api.call("POST", "/v1/blocks", api.a, json={"email_or_domain": "x.example", "ttl": 5})
    assert status == 400 and "ttl: unknown field" in body["message"]
    status, body = await api.call("DELETE", "/v1/blocks", api.a, params={"email": "x@example.com"})
    assert status == 400 and "email: unknown parameter" in body["message"]
    status, body = await api.call("GET", "/v1/email_status?%FF%00=1", api.a)  # not UTF-8, a NUL
    assert status == 400 and "unknown parameter" in body["message"]


async def test_authentication_failure_is_code_30000(api: Api) -> None:
    # Source: docs/email/rest-api/delivery-response and the list pages' error example (401, code 30000)
    for headers in ({}, basic("app1", "wrong-key")):
        status, body = await api.call("GET", "/v1/email_status", headers)
        assert status == 401 and body["code"] == 30000 and body["message"].startswith("Authentication failed.")
    status, doc = await api.call("GET", "/openapi.json")
    assert {"http_status": 401, "code": 30000} in [
        {k: c[k] for k in ("http_status", "code")} for c in doc["info"]["x-error-codes"]]
    assert "| 401 | 30000 |" in doc["info"]["description"]


async def test_api_users_of_the_own_account(api: Api) -> None:
    # Source: docs/email/rest-api (API_USER list)
    status, body = await api.call("GET", "/v1/api_users", api.a)
    assert status == 200 and [u["api_user"] for u in body["result"]] == ["app1"]
    check(body["result"][0], {"api_user": str, "account": str, "active": bool})
    _, body = await api.call("GET", "/v1/api_users", ADMIN)
    assert {"app1", "b1"} <= {u["api_user"] for u in body["result"]}  # operators: every account
# endregion


# region sending and event callbacks

SEND_ANSWER: Spec = {"email_ids": list, "request_id": (str, NULL), "refused": list}
CALLBACK: Spec = {"server": str, "message_id": str, "from": str, "subject": str, "to": str, "itime": int,
                  "custom_args": dict, "status": dict, "event_id": int, "webhook_id": int}


async def test_mail_send_takes_the_documented_body(api: Api) -> None:
    # Source: docs/email/rest-api/deliverlies (request parameters, Body, attachments; custom_args <= 1KB,
    #   request_id <= 128 characters, cc/bcc only with send_mode 1, dynamic_vars)
    body = {"from": "support<news@acme.example>", "to": ["xjm@example.com", "xjm2@example.com"],
            "body": {"reply_to": ["help@acme.example"], "subject": "Hi %name%",
                     "content": {"html": "<p>Hi %name%</p>", "text": "Hi %name%", "preview_text": "preview"},
                     "vars": {"name": ["Ann", "Bob"]}, "label_name": "promo", "headers": {"X-Campaign": "spring"},
                     "attachments": [{"content": "JVBERi0xLjQK", "filename": "a.pdf"}],
                     "settings": {"send_mode": 0, "return_email_id": True, "sandbox": False}},
            "custom_args": {"order": "1042"}, "request_id": "req-compat-1"}
    status, answer = await api.call("POST", "/v1/mail/send", api.a, json=body)
    assert status == 200, answer
    check(answer, SEND_ANSWER, exact=True)
    assert [i.split("$")[1] for i in answer["email_ids"]] == ["xjm@example.com", "xjm2@example.com"]
    assert answer["request_id"] == "req-compat-1" and answer["refused"] == []
    one = {**body, "request_id": "req-compat-2",
           "body": {**body["body"], "cc": ["c@example.com"], "bcc": ["d@example.com"], "vars": {"name": "All"},
                    "settings": {"send_mode": 1}}}
    status, answer = await api.call("POST", "/v1/mail/send", api.a, json=one)
    assert status == 200 and len({i.split("$")[0] for i in answer["email_ids"]}) == 1, answer  # one message
    for change, message in (
            ({"dynamic_vars": {"name": "x"}}, "body.dynamic_vars: dynamic templates are not supported"),
            ({"cc": ["c@example.com"]}, "body.cc: only with settings.send_mode 1"),
            ({"settings": {"send_mode": 2}}, "body.settings.send_mode: 0 (a message per to recipient)")):
        status, answer = await api.call("POST", "/v1/mail/send", api.a, json={**body, "request_id": None,
                                                                            "body": {**body["body"], **change}})
        assert status == 400 and answer["message"].startswith(message), answer
    status, answer = await api.call("POST", "/v1/mail/send", api.a, json={**body, "request_id": "r" * 129})
    assert status == 400 and answer["message"] == "request_id: longer than 128 characters"
    status, answer = await api.call("POST", "/v1/mail/send", api.a, json={**body, "custom_args": {"k": "v" * 1100}})
    assert status == 400 and answer["message"].startswith("custom_args: ")


async def test_event_callbacks_carry_the_documented_fields(api: Api) -> None:
    # Source: docs/email/webhook/webhook (request headers X-WebHook-Timestamp, X-WebHook-AppKey "email",
    #   X-WebHook-Signature = hex HmacSHA256 of the timestamp keyed with the key; request body message_id,
    #   from, subject, to, server, itime, custom_args, status {message_status, status_data})
    from tests.helpers.webhook_receiver import Receiver

    receiver = Receiver()
    await receiver.start()
    try:
        secret = "compat-secret-0123456789"
        status, hook = await api.call("POST", "/v1/webhooks", api.a, json={
            "url": receiver.url, "events": ["invalid"], "secret": secret, "signature": "engagelab"})
        assert status == 201
        receiver.secrets[hook["id"]] = secret
        receiver.timestamp_only.add(hook["id"])  # verified exactly as the page says
        from storage.records import ListKind, SuppressionEntry
        await api.relay.storage.suppressions.add([SuppressionEntry(account_id=api.relay.account_id,
                                                                   kind=ListKind.BLOCK, value="cb@example.com")])
        status, answer = await api.call("POST", "/v1/mail/send", api.a, json={
            "from": "news@acme.example", "to": ["cb@example.com"], "custom_args": {"order": "7"},
            "body": {"subject": "S", "content": {"text": "t"}}})
        assert status == 200 and answer["email_ids"] == [], answer
        await receiver.wait_for(1, 30)
        assert receiver.bad_signatures == 0
        event = receiver.events[0]
        check(event, CALLBACK, exact=True)
        assert event["server"] == "email" and event["to"] == "cb@example.com" and event["from"] == "news@acme.example"
        assert event["custom_args"] == {"order": "7"} and event["itime"] > 1_600_000_000_000  # milliseconds
        assert event["status"]["message_status"] == "invalid"
        data = event["status"]["status_data"]
        assert data["email_id"] == answer["refused"][0]["email_id"] == f"{event['message_id']}$cb@example.com"
        assert data["api_user"] == "app1" and data["status"] == int(Status.INVALID)
    finally:
        await receiver.stop()


async def test_webhooks_api_parameters(api: Api) -> None:
    # Source: docs/email/rest-api/WebHooks (GET /v1/webhooks: api_user, offset, limit [0-100] default 100;
    #   {"result": [...], "count", "total"})
    for n in range(3):
        status, _ = await api.call("POST", "/v1/webhooks", api.a, json={"url": f"https://hooks.example.com/{n}"})
        assert status == 201
    body = await get(api, "/v1/webhooks", api_user="app1", offset="1", limit="1")
    assert body["total"] == 3 and [h["url"] for h in body["result"]] == ["https://hooks.example.com/1"]
    check(body["result"][0], {"id": int, "url": str, "events": list, "signature": str, "state": str})
    assert (await get(api, "/v1/webhooks", limit="0"))["result"] == []
    status, answer = await api.call("GET", "/v1/webhooks", api.a, params={"limit": "101"})
    assert status == 400 and answer["message"].startswith("limit:")
# endregion
