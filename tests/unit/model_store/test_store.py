"""ModelStore on an in-memory container. tests/integration/models/test_store_azurite.py runs these same
tests against Azurite by overriding the `store` fixture."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from functions.http import status_of
from model_store.errors import (
    ConcurrentUpdate,
    IntegrityError,
    ModelAlreadyExists,
    ModelNotFound,
    NothingToRevert,
    VersionNotFound,
)
from model_store.store import ModelStore, sha256_hex
from tests.unit.fakes import FakeContainer

ONNX = b"\x08\x07fake-onnx-bytes"


@pytest.fixture
def store() -> ModelStore:
    return ModelStore(FakeContainer())  # type: ignore[arg-type]


def _model(store: ModelStore, name: str = "M1") -> None:
    store.create_config(name, {"trainingPeriod": "2y", "autoRetrain": False})


def test_config_create_get_list_and_duplicate(store):
    _model(store, "B")
    _model(store, "A")
    assert store.get_config("A")["name"] == "A"
    assert [c["name"] for c in store.list_configs()] == ["A", "B"]
    with pytest.raises(ModelAlreadyExists) as err:
        _model(store, "A")
    assert status_of(err.value) == 409


def test_missing_or_unsafe_names_are_404(store):
    with pytest.raises(ModelNotFound):
        store.get_config("Nope")
    for bad in ("has space", "../etc", "", "x/y"):
        with pytest.raises(ModelNotFound) as err:
            store.get_config(bad)
        assert status_of(err.value) == 404


def test_save_config_with_stale_etag_is_412(store):
    _model(store)
    doc, etag = store.get_config_with_etag("M1")
    store.save_config("M1", dict(doc, autoRetrain=True), etag=etag)
    with pytest.raises(ConcurrentUpdate) as err:
        store.save_config("M1", dict(doc, autoRetrain=False), etag=etag)
    assert status_of(err.value) == 412
    assert store.get_config("M1")["autoRetrain"] is True


def test_update_config_and_set_status_merge(store):
    _model(store)
    store.set_status("M1", status="training", jobId="j1")
    doc = store.update_config("M1", lambda d: d.update(autoRetrain=True))
    assert doc["status"] == "training" and doc["jobId"] == "j1" and doc["autoRetrain"] is True


def test_versions_are_numbered_immutable_and_hashed(store):
    _model(store)
    assert store.save_version("M1", ONNX, {"metrics": {"auc": 0.8}}) == 1
    assert store.save_version("M1", ONNX + b"2", {"metrics": {"auc": 0.9}}) == 2
    assert store.versions("M1") == [1, 2]
    meta = store.get_meta("M1", 2)
    assert meta["sha256"] == sha256_hex(ONNX + b"2")
    assert meta["version"] == 2 and meta["metrics"]["auc"] == 0.9
    loaded = store.load_version("M1", 1)
    assert loaded.onnx == ONNX and loaded.meta["version"] == 1
    names = store.container.list_blob_names(name_starts_with="")  # type: ignore[attr-defined]
    assert all(n.endswith((".json", ".onnx")) for n in names), names  # never a pickle


def test_concurrent_trainings_never_share_a_number(store):
    _model(store)
    got: list[int] = []
    lock = threading.Lock()

    def train(i: int) -> None:
        v = store.save_version("M1", ONNX + bytes([i]), {"i": i})
        with lock:
            got.append(v)

    threads = [threading.Thread(target=train, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for v in got:  # each meta belongs to the bytes stored under its number
        loaded = store.load_version("M1", v)
        assert loaded.onnx == ONNX + bytes([loaded.meta["i"]])


def test_a_claimed_but_unfinished_version_is_skipped_and_hidden(store):
    _model(store)
    store.container.upload_blob("versions/M1/0001/model.onnx", b"half", overwrite=False)
    assert store.versions("M1") == []
    assert store.save_version("M1", ONNX, {}) == 2
    assert store.versions("M1") == [2]


def test_tampered_model_fails_its_sha256_check(store):
    _model(store)
    store.save_version("M1", ONNX, {})
    store.container.upload_blob("versions/M1/0001/model.onnx", b"evil", overwrite=True)
    with pytest.raises(IntegrityError) as err:
        store.load_version("M1", 1)
    assert status_of(err.value) == 500 and err.value.code == "ModelIntegrityError"
    store.publish("M1", 1)
    with pytest.raises(IntegrityError):
        store.load_published("M1")


def test_missing_version_and_model(store):
    _model(store)
    with pytest.raises(VersionNotFound) as err:
        store.get_meta("M1", 3)
    assert status_of(err.value) == 404
    with pytest.raises(VersionNotFound):
        store.publish("M1")  # nothing trained yet
    with pytest.raises(ModelNotFound):
        store.get_meta("Other", 1)
    with pytest.raises(VersionNotFound):
        store.get_meta("M1", 0)
    with pytest.raises(VersionNotFound) as err:
        store.load_published("M1")
    assert err.value.code == "NotPublished"


def test_publish_defaults_to_latest_and_remembers_previous(store):
    _model(store)
    for _ in range(3):
        store.save_version("M1", ONNX, {})
    alias = store.publish("M1", 1)
    assert alias["published"] == 1 and alias["previous"] is None
    alias = store.publish("M1")
    assert alias["published"] == 3 and alias["previous"] == 1
    with pytest.raises(VersionNotFound):
        store.publish("M1", 9)
    assert store.get_alias("M1")["published"] == 3


def test_revert_discards_only_an_unpublished_retrain(store):
    _model(store)
    store.save_version("M1", ONNX, {})
    with pytest.raises(NothingToRevert) as err:
        store.revert("M1")  # one version, nothing published: nothing to revert
    assert status_of(err.value) == 409
    store.publish("M1")
    with pytest.raises(NothingToRevert):
        store.revert("M1")  # published is the latest
    store.save_version("M1", ONNX, {})
    assert store.unpublished_retrains("M1") == [2]
    result = store.revert("M1")
    assert result["revertedVersions"] == [2] and result["published"] == 1
    assert store.latest_version("M1") == 1 and store.versions("M1") == [1, 2]
    with pytest.raises(NothingToRevert):
        store.revert("M1")
    assert store.publish("M1", 2)["reverted"] == []  # an explicit publish brings it back


def test_revert_before_first_publish_keeps_the_first_training(store):
    _model(store)
    store.save_version("M1", ONNX, {})
    store.save_version("M1", ONNX, {})
    assert store.revert("M1")["revertedVersions"] == [2]
    assert store.latest_version("M1") == 1


def test_audit_log_records_and_filters(store):
    _model(store)
    times = iter(dt.datetime(2025, 1, 1, 12, 0, s, tzinfo=dt.UTC) for s in range(10))
    store.clock = lambda: next(times)
    store.audit("create", actor="alice", model="M1", detail={"force": False})
    store.audit("publish", actor="bob", model="M2", version=3)
    store.audit("delete", actor="alice", model="M1", outcome="refused", detail="AutoRetrainOn")
    log = store.audit_log("M1")
    assert [e["action"] for e in log] == ["delete", "create"]
    assert log[0]["outcome"] == "refused" and log[0]["actor"] == "alice"
    assert log[0]["at"].startswith("2025-01-01")
    assert store.audit_log()[1]["version"] == 3
    assert len(store.audit_log(limit=1)) == 1


def test_delete_model_removes_everything_but_the_audit(store):
    _model(store)
    store.save_version("M1", ONNX, {})
    store.publish("M1")
    store.audit("publish", actor="a", model="M1", version=1)
    assert store.delete_model("M1") == 4
    with pytest.raises(ModelNotFound):
        store.get_config("M1")
    assert store.versions("M1") == [] and store.get_alias("M1")["published"] is None
    assert store.audit_log("M1")
    with pytest.raises(ModelNotFound):
        store.delete_model("M1")


def test_refusals_are_counted_per_hour_not_appended_per_request(store):
    _model(store)
    times = iter(dt.datetime(2025, 1, 1, 12, m, 0, tzinfo=dt.UTC) for m in range(59))
    store.clock = lambda: next(times)
    for i in range(40):  # a client repeating a bad request
        store.audit("delete", actor=f"a{i % 12}", model="M1", outcome="refused", detail={"code": "AutoRetrainOn"})
    for i in range(5):  # refusals naming models that do not exist never create their own prefixes
        store.audit("edit", actor="x", model=f"Nope{i}", outcome="refused", detail={"code": "ModelNotFound"})
    names = [n for n in store.blobs.list("audit/")]
    assert len(names) == 2, names  # was: 45 records, one per request
    [summary] = store.audit_log("M1")
    assert summary["count"] == 40 and summary["outcome"] == "refused" and len(summary["actors"]) == 10
    assert summary["at"] == "2025-01-01T12:00:00Z" and summary["lastAt"] == "2025-01-01T12:39:00Z"
    unknown = store.audit_log()[0]
    assert unknown["model"] is None and unknown["count"] == 5 and len(unknown["requestedModels"]) == 5


def test_the_audit_log_is_paged_and_reads_only_the_page(store):
    _model(store)
    times = iter(dt.datetime(2025, 1, 1, 12, 0, s, tzinfo=dt.UTC) for s in range(30))
    store.clock = lambda: next(times)
    for i in range(25):
        store.audit("publish", actor="a", model="M1", version=i)
    reads = []
    real = store.blobs.read
    store.blobs.read = lambda path: reads.append(path) or real(path)  # type: ignore[method-assign]
    first = store.audit_page("M1", limit=10)
    assert [e["version"] for e in first["entries"]] == list(range(24, 14, -1)) and len(reads) == 10
    second = store.audit_page("M1", limit=10, before=first["next"])
    third = store.audit_page("M1", limit=10, before=second["next"])
    assert [e["version"] for e in third["entries"]] == [4, 3, 2, 1, 0] and third["next"] is None
