"""connectors.dataverse_bulk with a scripted client (no server): the capability read and its cache, the
UpsertMultiple targets, bisection of refused requests, the $batch fallback and the parallelism bound."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from connectors.dataverse import DataverseBadRequest, DataverseError, DataverseNotFound, DataverseServerError
from connectors.dataverse_bulk import supports_message, upsert_rows


@dataclass
class Scripted:
    """Answers like the Web API: a target whose msdyn_score is negative is refused, as the whole request."""

    bulk: bool = True
    dop_hint: int | None = None
    message_cache: dict[tuple[str, str], bool] = field(default_factory=dict)
    gets: list[tuple[str, Any]] = field(default_factory=list)
    posts: list[list[dict[str, Any]]] = field(default_factory=list)
    batches: list[list[Any]] = field(default_factory=list)
    in_flight: int = 0
    most: int = 0
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    get_error: DataverseError | None = None
    post_error: DataverseError | None = None

    def get(self, path: str, params: Any = None, headers: Any = None) -> Any:
        self.gets.append((path, params))
        if self.get_error is not None:
            raise self.get_error
        return {"value": [{"sdkmessagefilterid": "1"}] if self.bulk else []}

    def request(self, method: str, path: str, *, json_body: Any = None, idempotent: bool | None = None) -> Any:
        assert method == "POST" and idempotent is True
        assert path == "msdyn_predictivescores/Microsoft.Dynamics.CRM.UpsertMultiple"
        with self.lock:
            self.posts.append(json_body["Targets"])
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(self.delay)
            if self.post_error is not None:
                raise self.post_error
            if any(t["msdyn_score"] < 0 for t in json_body["Targets"]):
                raise DataverseBadRequest(400, "0x80044331", "A validation error occurred. msdyn_score")
        finally:
            with self.lock:
                self.in_flight -= 1

    def batch(self, operations: Any, *, continue_on_error: bool = True) -> list[Any]:
        self.batches.append(list(operations))
        out = []
        for op in operations:
            s = op.body["msdyn_score"]
            status = 204 if s >= 0 else (400 if s == -1 else 503)
            err = None if status == 204 else DataverseError(status, "0x1", f"refused {status}")
            out.append(SimpleNamespace(ok=status == 204, status=status, error=err))
        return out


def _rows(n: int, bad: tuple[int, ...] = ()) -> list[tuple[dict[str, str], dict[str, Any]]]:
    out = []
    for i in range(n):
        key = {"msdyn_entityid": f"id{i}", "msdyn_entitytype": "opportunity"}
        out.append((key, {"msdyn_entityid": f"id{i}", "msdyn_score": -1 if i in bad else i % 100}))
    return out


def _write(client: Scripted, rows: Any, **kw: Any) -> Any:
    return upsert_rows(
        client, "msdyn_predictivescores", "msdyn_predictivescore", rows, max_parallelism=kw.pop("cap", 8), **kw
    )


def test_upsert_multiple_targets_carry_type_and_key_and_the_capability_is_read_once() -> None:
    c = Scripted()
    out = _write(c, _rows(2500))
    assert (out.method, out.requests, out.failures, out.transient) == ("UpsertMultiple", 3, [], [])
    assert [len(p) for p in c.posts] == [1000, 1000, 500]
    first = c.posts[0][0]
    assert first["@odata.type"] == "Microsoft.Dynamics.CRM.msdyn_predictivescore"
    assert first["@odata.id"] == "msdyn_predictivescores(msdyn_entityid='id0',msdyn_entitytype='opportunity')"
    _write(c, _rows(3))
    assert len(c.gets) == 1, "cached on the client"
    path, params = c.gets[0]
    assert path == "sdkmessagefilters"
    assert (
        params["$filter"]
        == "(sdkmessageid/name eq 'UpsertMultiple') and (primaryobjecttypecode eq 'msdyn_predictivescore')"
    )


def test_one_bad_row_is_found_by_bisection_and_the_other_999_are_written() -> None:
    c = Scripted()
    out = _write(c, _rows(1000, bad=(637,)))
    assert [(f.index, f.status, f.code) for f in out.failures] == [(637, 400, "0x80044331")]
    assert out.requests == 1 + 2 * 10, "two requests per halving, ten halvings of 1,000"
    sent_ok = {t["msdyn_entityid"] for p in c.posts if all(t["msdyn_score"] >= 0 for t in p) for t in p}
    assert sent_ok == {f"id{i}" for i in range(1000) if i != 637}


def test_several_bad_rows_and_errors_that_splitting_cannot_fix() -> None:
    out = _write(Scripted(), _rows(100, bad=(0, 50, 99)))
    assert [f.index for f in out.failures] == [0, 50, 99]
    c = Scripted(post_error=DataverseServerError(503, "", "busy"))
    with pytest.raises(DataverseServerError):
        _write(c, _rows(10))
    assert len(c.posts) == 1, "a transient error is not split (the client already retried it)"


def test_the_batch_fallback_reports_refused_and_transient_rows() -> None:
    c = Scripted(bulk=False)
    rows = _rows(1200)
    rows[3][1]["msdyn_score"] = -1
    rows[1100][1]["msdyn_score"] = -2
    out = _write(c, rows)
    assert out.method == "$batch" and out.requests == 2 and [len(b) for b in c.batches] == [1000, 200]
    assert [(f.index, f.status) for f in out.failures] == [(3, 400)]
    assert [(f.index, f.status) for f in out.transient] == [(1100, 503)]
    assert c.batches[0][0].method == "PATCH" and "msdyn_entityid='id0'" in c.batches[0][0].path


@pytest.mark.parametrize(("hint", "cap", "expected"), [(None, 8, 1), (4, 8, 4), (16, 3, 3), (4, 1, 1)])
def test_parallelism_is_the_hint_capped_by_the_setting(hint: int | None, cap: int, expected: int) -> None:
    c = Scripted(dop_hint=hint, delay=0.05)
    out = _write(c, _rows(8000), cap=cap)
    assert out.parallelism == expected and c.most == expected and out.requests == 8


def test_an_unreadable_capability_means_batch_and_other_errors_propagate() -> None:
    c = Scripted(get_error=DataverseNotFound(404, "0x8006088a", "Resource not found for the segment"))
    assert supports_message(c, "msdyn_predictivescore", "UpsertMultiple") is False
    c = Scripted(get_error=DataverseServerError(503, "", "busy"))
    with pytest.raises(DataverseServerError):
        supports_message(c, "msdyn_predictivescore", "UpsertMultiple")
    assert not c.message_cache, "a transient failure is not cached"
    assert _write(Scripted(), []).requests == 0
