"""DataverseClient over a fake transport: paging, every error class, retries, token refresh, $batch."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest
import requests

from connectors.auth import StaticTokenProvider
from connectors.dataverse import (
    DataverseAuthError,
    DataverseBadRequest,
    DataverseClient,
    DataverseConflict,
    DataverseError,
    DataverseNotFound,
    DataverseProtocolError,
    DataverseServerError,
    DataverseThrottled,
    DataverseUnavailable,
)
from connectors.dataverse_batch import BatchOp
from connectors.dataverse_errors import parse_retry_after

API = "https://org.example.com/api/data/v9.2/"


def resp(status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None):
    r = requests.Response()
    r.status_code = status
    r.headers.update(headers or {})
    if raw is not None:
        r._content = raw
    elif body is not None:
        r._content = json.dumps(body).encode()
        r.headers.setdefault("Content-Type", "application/json")
    else:
        r._content = b""
    return r


class FakeSession:
    """Answers requests from a script of responses (or exceptions); records what was sent."""

    def __init__(self, script: list[Any] | Callable[[str, str, dict], Any]):
        self.script = script
        self.sent: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kw: Any) -> requests.Response:
        self.sent.append({"method": method, "url": url, **kw})
        item = self.script(method, url, kw) if callable(self.script) else self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item


def client(script: Any, **kw: Any) -> tuple[DataverseClient, FakeSession, list[float], StaticTokenProvider]:
    session = FakeSession(script)
    waits: list[float] = []
    tokens = StaticTokenProvider("tok")
    c = DataverseClient(
        "https://org.example.com",
        tokens,
        session=session,
        sleep=waits.append,  # type: ignore[arg-type]
        rng=random.Random(1),
        **kw,
    )
    return c, session, waits, tokens


def err(status: int, code: str = "0x80040217", message: str = "boom", **headers: str) -> requests.Response:
    return resp(status, {"error": {"code": code, "message": message}}, {"x-ms-service-request-id": "rq-1", **headers})


def test_paging_follows_next_links_and_sends_select_filter_prefer() -> None:
    c, s, _, _ = client(
        [
            resp(
                200,
                {
                    "value": [{"accountid": "1"}, {"accountid": "2"}],
                    "@odata.nextLink": API + "accounts?$skiptoken=a",
                },
            ),
            resp(200, {"value": [{"accountid": "3"}], "@odata.nextLink": API + "accounts?$skiptoken=b"}),
            resp(200, {"value": [], "@odata.deltaLink": API + "accounts?$deltatoken=9"}),
        ]
    )
    pages = c.iter_pages("accounts", select=["accountid", "name"], page_size=2, track_changes=True)
    first = next(pages)  # lazy: one request per page
    assert [r["accountid"] for r in first.rows] == ["1", "2"] and len(s.sent) == 1
    rest = list(pages)
    assert [r["accountid"] for p in rest for r in p.rows] == ["3"]
    assert rest[-1].delta_link == API + "accounts?$deltatoken=9"
    assert s.sent[0]["url"] == API + "accounts"
    assert s.sent[0]["params"] == {"$select": "accountid,name"}
    assert s.sent[0]["headers"]["Prefer"] == "odata.maxpagesize=2,odata.track-changes"
    assert s.sent[0]["headers"]["Authorization"] == "Bearer tok"
    assert s.sent[1]["url"].endswith("$skiptoken=a") and s.sent[1]["params"] is None


def test_delta_pages_split_deleted_entities() -> None:
    c, _, _, _ = client(
        [
            resp(
                200,
                {
                    "value": [
                        {"accountid": "1", "name": "x"},
                        {
                            "@odata.context": API + "$metadata#accounts/$deletedEntity",
                            "id": "2",
                            "reason": "deleted",
                        },
                    ],
                    "@odata.deltaLink": API + "accounts?$deltatoken=10",
                },
            )
        ]
    )
    (page,) = list(c.iter_delta(API + "accounts?$deltatoken=9"))
    assert page.rows == [{"accountid": "1", "name": "x"}] and page.deleted_ids == ["2"]
    assert page.delta_link.endswith("deltatoken=10")


def test_track_changes_refuses_filter() -> None:
    c, _, _, _ = client([])
    with pytest.raises(ValueError):
        list(c.iter_pages("accounts", filter="name eq 'a'", track_changes=True))


def test_repeated_next_link_is_a_protocol_error() -> None:
    loop = API + "accounts?$skiptoken=same"
    c, _, _, _ = client(
        [resp(200, {"value": [], "@odata.nextLink": loop}), resp(200, {"value": [], "@odata.nextLink": loop})]
    )
    with pytest.raises(DataverseProtocolError):
        list(c.iter_pages("accounts"))


@pytest.mark.parametrize(
    "status,cls",
    [
        (400, DataverseBadRequest),
        (401, DataverseAuthError),
        (403, DataverseAuthError),
        (404, DataverseNotFound),
        (409, DataverseConflict),
        (412, DataverseConflict),
        (500, DataverseServerError),
        (405, DataverseError),
    ],
)
def test_error_classes_carry_status_code_message_request_id(status: int, cls: type) -> None:
    c, s, waits, _ = client([err(status)] * 3)
    with pytest.raises(cls) as info:
        c.get("accounts(00000000-0000-0000-0000-000000000001)")
    e = info.value
    assert (e.status, e.code, e.message, e.request_id) == (status, "0x80040217", "boom", "rq-1")
    assert waits == []  # none of these is retried (401 only refreshes the token once)
    assert len(s.sent) == (2 if status == 401 else 1)


def test_non_json_error_body_still_typed() -> None:
    c, _, _, _ = client([resp(400, raw=b"<html>bad</html>")])
    with pytest.raises(DataverseBadRequest) as info:
        c.get("x")
    assert info.value.code == "" and "bad" in info.value.message


def test_429_waits_exactly_retry_after_then_succeeds() -> None:
    c, s, waits, _ = client(
        [
            err(429, "0x80072322", "limit", **{"Retry-After": "7"}),
            err(429, "0x80072322", **{"Retry-After": "2"}),
            resp(200, {"value": []}),
        ]
    )
    assert c.get("accounts") == {"value": []}
    assert waits == [7.0, 2.0] and c.stats["retry_after_waits"] == [7.0, 2.0] and c.stats["throttled"] == 2


def test_429_exhausted_raises_throttled_with_retry_after() -> None:
    c, s, waits, _ = client([err(429, "0x80072322", **{"Retry-After": "1"})] * 4, max_retries=3)
    with pytest.raises(DataverseThrottled) as info:
        c.get("accounts")
    assert info.value.retry_after == 1.0 and len(s.sent) == 4 and waits == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("status", [502, 503, 504])
def test_5xx_gateway_errors_back_off_with_jitter(status: int) -> None:
    c, s, waits, _ = client([err(status), err(status), err(status), resp(200, {"ok": 1})], backoff_base=1.0)
    assert c.get("x") == {"ok": 1}
    assert len(waits) == 3
    for attempt, w in enumerate(waits):
        assert 0 <= w <= 2**attempt  # full jitter within the exponential cap
    assert len(set(waits)) == 3


def test_dropped_connections_are_retried_then_reported() -> None:
    c, s, waits, _ = client([requests.ConnectionError("reset"), resp(200, {"ok": 1})])
    assert c.get("x") == {"ok": 1} and len(waits) == 1 and c.stats["dropped"] == 1
    c2, _, _, _ = client([requests.ConnectionError("reset")] * 3, max_retries=2)
    with pytest.raises(DataverseUnavailable) as info:
        c2.get("x")
    assert info.value.status == 503 and info.value.code == "ConnectionFailed"


def test_dropped_connection_on_create_is_not_retried() -> None:
    c, s, waits, _ = client([requests.ConnectionError("reset"), resp(204)])
    with pytest.raises(DataverseUnavailable):
        c.create("accounts", {"name": "x"})
    assert len(s.sent) == 1


def test_401_invalidates_the_token_once() -> None:
    c, s, _, tokens = client([err(401, "0x80044302"), resp(200, {"UserId": "u"})])
    assert c.who_am_i() == {"UserId": "u"} and tokens.invalidations == 1
    c2, _, _, tokens2 = client([err(401)] * 3)
    with pytest.raises(DataverseAuthError):
        c2.get("WhoAmI")
    assert tokens2.invalidations == 1


def test_retry_after_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after("3") == 3.0


def test_upsert_quotes_alternate_key_values() -> None:
    c, s, _, _ = client([resp(204)])
    c.upsert(
        "msdyn_predictivescores",
        {"msdyn_entityid": "a') or (x eq 'b", "msdyn_entitytype": "opportunity"},
        {"msdyn_score": 5},
    )
    assert s.sent[0]["url"] == (
        API + "msdyn_predictivescores(msdyn_entityid='a''%29%20or%20%28x%20eq%20''b',msdyn_entitytype='opportunity')"
    )
    assert s.sent[0]["method"] == "PATCH" and "If-Match" not in s.sent[0]["headers"]


def _batch_response(parts: list[tuple[int, str]]) -> requests.Response:
    chunks = []
    for status, body in parts:
        chunks.append(
            "--batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
            f"\r\nHTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\r\n{body}\r\n"
        )
    raw = ("".join(chunks) + "--batchresponse_1--\r\n").encode()
    return resp(200, raw=raw, headers={"Content-Type": "multipart/mixed; boundary=batchresponse_1"})


def test_batch_splits_at_1000_and_reports_each_part() -> None:
    def answer(method: str, url: str, kw: dict) -> requests.Response:
        body = kw["data"].decode()
        n = body.count("Content-Type: application/http")
        assert "\r\n" in body and "Prefer" in kw["headers"]
        return _batch_response([(204, "")] * (n - 1) + [(400, '{"error":{"code":"0x80044331","message":"bad"}}')])

    c, s, _, _ = client(answer)
    ops = [
        BatchOp.upsert(
            "msdyn_predictivescores",
            {"msdyn_entityid": str(i), "msdyn_entitytype": "opportunity"},
            {"msdyn_score": i},
        )
        for i in range(1500)
    ]
    results = c.batch(ops)
    assert len(s.sent) == 2 and len(results) == 1500
    assert [r.index for r in results] == list(range(1500))
    failed = [r for r in results if not r.ok]
    assert [r.index for r in failed] == [999, 1499]
    assert failed[0].error is not None and failed[0].error.code == "0x80044331" and failed[0].status == 400


def test_atomic_batch_uses_one_change_set_and_marks_unexecuted() -> None:
    def answer(method: str, url: str, kw: dict) -> requests.Response:
        assert "changeset_" in kw["data"].decode() and "Prefer" not in kw["headers"]
        r = _batch_response([(400, '{"error":{"code":"0x0","message":"no"}}')])
        r.status_code = 400
        return r

    c, _, _, _ = client(answer)
    results = c.batch(
        [BatchOp.create("accounts", {"name": "a"}), BatchOp.create("accounts", {"name": "b"})], atomic=True
    )
    assert [r.status for r in results] == [400, 0] and results[1].error.code == "NotExecuted"
