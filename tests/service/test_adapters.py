"""Prototype maths, leave-one-out accuracy, atomic persistence without pickle, the versioned format and
older adapter files, support-set limits."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.adapters import (
    ADAPTER_FORMAT,
    ADAPTER_ID,
    FileAdapterStore,
    distances,
    leave_one_out_accuracy,
    new_adapter,
    prototypes,
    softmax_neg,
)
from service.deps import check_support
from service.errors import ServiceError


def _adapter(seed=0, labels=("a", "a", "b", "b")):
    emb = np.random.default_rng(seed).normal(size=(len(labels), 4)).astype(np.float32)
    return new_adapter(name="n", model="m", version=1, embeddings=emb, labels=list(labels),
                       distance="squared_euclidean", temperature=2.0)


def test_prototypes_and_distances():
    emb = np.array([[0, 0], [2, 0], [10, 10], [12, 10]], dtype=np.float32)
    classes, protos = prototypes(emb, ["x", "x", "y", "y"])
    assert classes == ["x", "y"]
    np.testing.assert_allclose(protos, [[1, 0], [11, 10]])
    q = np.array([[1, 1]], dtype=np.float32)
    np.testing.assert_allclose(distances(q, protos, "squared_euclidean"), [[1, 181]], rtol=1e-6)
    np.testing.assert_allclose(distances(q, protos, "euclidean"), [[1, np.sqrt(181)]], rtol=1e-6)
    p = softmax_neg(np.array([[1.0, 3.0]]), temperature=2.0)
    np.testing.assert_allclose(p, [[1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))]], rtol=1e-6)


def test_leave_one_out():
    emb = np.array([[0.0], [1.0], [10.0], [11.0]])
    assert leave_one_out_accuracy(emb, ["x", "x", "y", "y"], "squared_euclidean") == 1.0
    # Swapped labels: each held-out point is nearer the other class's remaining point.
    assert leave_one_out_accuracy(emb, ["x", "y", "x", "y"], "squared_euclidean") == 0.0
    assert leave_one_out_accuracy(emb[:2], ["x", "y"], "squared_euclidean") is None  # 1 shot each


def test_ids_are_random_and_not_from_input():
    a, b = _adapter(), _adapter()
    assert a.id != b.id and len(a.id) >= 20 and a.name == "n"
    assert ADAPTER_ID.fullmatch(a.id)


def test_store_round_trip_and_atomic_files(tmp_path):
    store = FileAdapterStore(tmp_path)
    store.load()
    a = _adapter()
    store.save(a)
    files = sorted(p.name for p in (tmp_path / "adapters").iterdir())
    assert files == [f"{a.id}.npz"]
    again = FileAdapterStore(tmp_path)
    assert again.load() == []
    b = again.get(a.id)
    assert b.meta() == a.meta()
    np.testing.assert_array_equal(b.prototypes, a.prototypes)
    assert again.delete(a.id) and not again.delete(a.id)
    assert list((tmp_path / "adapters").iterdir()) == []


def test_damaged_partial_and_pickled_files_are_skipped(tmp_path, caplog):
    store = FileAdapterStore(tmp_path)
    store.load()
    good = _adapter()
    store.save(good)
    d = tmp_path / "adapters"
    raw = (d / f"{good.id}.npz").read_bytes()
    (d / f".tmp-{'p' * 22}-x.npz").write_bytes(raw[:100])  # a writer killed mid-write
    (d / f"{'t' * 22}.npz").write_bytes(raw[: len(raw) // 2])  # truncated
    (d / f"{'j' * 22}.npz").write_bytes(b"not a zip at all")
    buf = io.BytesIO()
    np.savez(buf, prototypes=np.zeros((2, 4)), meta=np.array([{"evil": "pickle"}], dtype=object))
    (d / f"{'k' * 22}.npz").write_bytes(buf.getvalue())  # an object array needs pickle: refused
    renamed = d / f"{'r' * 22}.npz"
    renamed.write_bytes(raw)  # a valid adapter under another id's name
    fresh = FileAdapterStore(tmp_path)
    with caplog.at_level("WARNING", logger="histoserve.adapters"):
        skipped = fresh.load()
    assert [a.id for a in fresh.all()] == [good.id]
    assert len(skipped) == 5
    assert not (d / f".tmp-{'p' * 22}-x.npz").exists()
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 5


LIMITS = dict(max_classes=3, max_shots=2, label_max_length=8, label_pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.+-]*$")


@pytest.mark.parametrize("labels,n_files,name,message", [
    (["a", "a"], 2, None, "at least 2"),
    (["a", "b"], 3, None, "3 files but 2 labels"),
    ([], 0, None, "no images"),
    (["a", "b", "c", "d"], 4, None, "limit is 3"),
    (["a", "a", "a", "b"], 4, None, "at most 2 shots"),
    (["a/b", "c"], 2, None, "must be 1..8"),
    (["a" * 9, "c"], 2, None, "must be 1..8"),
    (["a", "b"], 2, "../etc", "must be 1..8"),
])
def test_support_limits(labels, n_files, name, message):
    with pytest.raises(ServiceError, match=message) as e:
        check_support(labels, n_files, name, **LIMITS)
    assert e.value.status == 422


def test_support_comma_separated():
    assert check_support(["a,b,a"], 3, None, **LIMITS) == ["a", "b", "a"]


def _rewrite(path, **arrays):
    with np.load(path, allow_pickle=False) as data:
        current = {k: data[k] for k in data.files}
    current.update(arrays)
    for k in [k for k, v in current.items() if v is None]:
        del current[k]
    buf = io.BytesIO()
    np.savez(buf, **current)
    path.write_bytes(buf.getvalue())


DATA = Path(__file__).parent / "data"
# Written by the service before this format: without a header (format 0), and format 1 (header, prototype head).
LEGACY = {"legacyformat0aaaaaaaaa": "legacy", "legacyformat1bbbbbbbbb": "format one"}


def test_format_header_and_newer_formats(tmp_path):
    store = FileAdapterStore(tmp_path)
    store.load()
    current, newer = _adapter(1), _adapter(2)
    store.save(current)
    store.save(newer)
    d = tmp_path / "adapters"
    with np.load(d / f"{current.id}.npz", allow_pickle=False) as data:
        header = json.loads(data["header"].tobytes().decode())
        meta = json.loads(data["meta"].tobytes().decode())
        names = set(data.files)
    assert header == {"format": 2, "head": current.head}  # the whole embedding: still readable by format-2 servers
    assert "head" not in meta and meta["selection"]["chosen"] == current.head
    assert names == {"meta", "header", "prototypes", *(f"head.{k}" for k in current.head_arrays)}
    _rewrite(d / f"{newer.id}.npz", header=np.frombuffer(
        json.dumps({"format": ADAPTER_FORMAT + 1, "head": "prototype"}).encode(), dtype=np.uint8))
    fresh = FileAdapterStore(tmp_path)
    skipped = fresh.load()
    assert [a.id for a in fresh.all()] == [current.id]
    assert fresh.get(current.id).meta() == current.meta()
    for k, v in current.head_arrays.items():
        np.testing.assert_array_equal(fresh.get(current.id).head_arrays[k], v)
    assert [(p.stem, "newer" in why) for p, why in skipped] == [(newer.id, True)]


def test_adapters_in_the_older_formats_still_load_and_classify_as_before(tmp_path):
    d = tmp_path / "adapters"
    d.mkdir()
    for adapter_id in LEGACY:
        shutil.copy(DATA / f"{adapter_id}.npz", d / f"{adapter_id}.npz")
    store = FileAdapterStore(tmp_path)
    assert store.load() == []
    emb = np.load(DATA / "legacy_support_embeddings.npy")
    q = np.random.default_rng(3).normal(size=(4, emb.shape[1])).astype(np.float32)
    for adapter_id, support in (("legacyformat0aaaaaaaaa", emb), ("legacyformat1bbbbbbbbb", emb[::-1])):
        a = store.get(adapter_id)
        assert a.name == LEGACY[adapter_id] and a.head == "prototype" and a.classes == ["tumour", "stroma"]
        assert a.selection is None and a.out_of_support is None and a.bundle_sha256 is None
        means = np.stack([support[:3].mean(0), support[3:].mean(0)])
        np.testing.assert_allclose(a.prototypes, means, rtol=1e-6)
        np.testing.assert_allclose(a.classify(q), softmax_neg(distances(q, means, "squared_euclidean"), 1.0),
                                   rtol=1e-5)
        flags, nearest = a.outside(q)
        assert flags == [None] * 4 and len(nearest) == 4  # no threshold was calibrated for them
        store.save(a)  # re-saved, it is a current-format file that still reads the same
        again = FileAdapterStore(tmp_path)
        again.load()
        np.testing.assert_allclose(again.get(adapter_id).classify(q), a.classify(q), rtol=1e-6)


def test_head_arrays_that_do_not_fit_are_refused(tmp_path):
    store = FileAdapterStore(tmp_path)
    store.load()
    a = new_adapter(name=None, model="m", version=1, embeddings=np.random.default_rng(4).normal(size=(6, 4)),
                    labels=["a", "a", "b", "b", "c", "c"], distance="squared_euclidean", temperature=1.0,
                    head="logistic")
    store.save(a)
    path = tmp_path / "adapters" / f"{a.id}.npz"
    _rewrite(path, **{"head.weights": np.zeros((2, 4), dtype=np.float32)})
    fresh = FileAdapterStore(tmp_path)
    skipped = fresh.load()
    assert fresh.all() == [] and "weights" in skipped[0][1]


def _two_part_support(shots=4, seed=5):
    """Embeddings of 6 values: the first 3 separate the classes, the last 3 are noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], shots)
    signal = np.eye(3)[y] * 3.0 + rng.normal(scale=0.3, size=(len(y), 3))
    return np.hstack([signal, rng.normal(scale=4.0, size=(len(y), 3))]).astype(np.float32), [str(k) for k in y]


def test_the_embedding_part_with_the_better_leave_one_out_accuracy_is_chosen_and_used(tmp_path):
    emb, labels = _two_part_support()
    parts = {"signal": [0, 3], "noise": [3, 6]}
    a = new_adapter(name=None, model="m", version=1, embeddings=emb, labels=labels, distance="squared_euclidean",
                    temperature=1.0, parts=parts)
    assert a.embedding_part == "signal" and a.embedding_slice == [0, 3] and a.scorer.dim == 3
    record = a.selection["embedding_part"]
    assert record["chosen"] == "signal" and set(record["accuracy"]) == {"whole", "signal", "noise"}
    assert record["accuracy"]["signal"] == 1.0 > record["accuracy"]["noise"]
    # only the chosen columns count: changing the others changes nothing
    q = emb[:3].copy()
    moved = q.copy()
    moved[:, 3:] += 100.0
    np.testing.assert_allclose(a.classify(q), a.classify(moved))
    assert a.outside(q)[1] == a.outside(moved)[1]
    # format 3 on disk, read back the same
    store = FileAdapterStore(tmp_path)
    store.load()
    store.save(a)
    with np.load(tmp_path / "adapters" / f"{a.id}.npz", allow_pickle=False) as data:
        assert json.loads(data["header"].tobytes().decode())["format"] == ADAPTER_FORMAT == 3
    fresh = FileAdapterStore(tmp_path)
    assert fresh.load() == [] and fresh.get(a.id).meta() == a.meta()
    np.testing.assert_allclose(fresh.get(a.id).classify(moved), a.classify(q))


def test_one_shot_per_class_keeps_the_whole_embedding_and_says_why():
    emb, labels = _two_part_support(shots=1)
    a = new_adapter(name=None, model="m", version=1, embeddings=emb, labels=labels, distance="squared_euclidean",
                    temperature=1.0, parts={"signal": [0, 3], "noise": [3, 6]})
    assert a.embedding_part is None and a.embedding_slice is None and a.scorer.dim == 6
    assert a.selection["embedding_part"]["chosen"] == "whole" and "one shot" in a.selection["embedding_part"]["why"]


def test_an_embedding_part_that_does_not_fit_its_head_is_refused(tmp_path):
    emb, labels = _two_part_support()
    a = new_adapter(name=None, model="m", version=1, embeddings=emb, labels=labels, distance="squared_euclidean",
                    temperature=1.0, parts={"signal": [0, 3]})
    store = FileAdapterStore(tmp_path)
    store.load()
    store.save(a)
    path = tmp_path / "adapters" / f"{a.id}.npz"
    meta = {**a.meta(), "embedding_slice": [0, 4]}
    meta.pop("head")
    _rewrite(path, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    fresh = FileAdapterStore(tmp_path)
    skipped = fresh.load()
    assert fresh.all() == [] and "embedding part" in skipped[0][1]
