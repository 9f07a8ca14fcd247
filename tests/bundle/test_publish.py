"""Staging and publication: a bundle appears whole or not at all, and a published version is never replaced."""
from __future__ import annotations

import json

import pytest

from bundle import BundleError, next_version, publish, staging, validate_bundle, write_manifest

from .conftest import manifest_dict


def _stage(staged, manifest):
    for graph in manifest["graphs"].values():
        (staged / graph["file"]).write_bytes(b"graph")
    write_manifest(staged, manifest)


def test_publish_validates_then_renames(tmp_path):
    store = tmp_path / "store"
    with staging(store, "toy", 1) as staged:
        assert staged.name.startswith(".staging-1-")
        _stage(staged, manifest_dict())
        final = publish(staged, store, "toy", 1)
    assert final == store / "toy" / "1" and not staged.exists()
    assert validate_bundle(final).manifest.files.keys() == {"model.onnx", "gradcam.onnx"}
    assert [p.name for p in (store / "toy").iterdir()] == ["1"]
    assert next_version(store / "toy") == 2
    with pytest.raises(FileExistsError, match="immutable"), staging(store, "toy", 1):
        pass


def test_a_bundle_that_fails_is_never_published(tmp_path):
    store = tmp_path / "store"
    with pytest.raises(BundleError, match="columns for 3 classes"), staging(store, "toy", 1) as staged:
        m = manifest_dict()
        m["graphs"]["classify"]["outputs"]["probabilities"]["dims"] = [-1, 2]
        _stage(staged, m)
        publish(staged, store, "toy", 1)
    assert list((store / "toy").iterdir()) == []  # the staging directory is gone too


def test_an_extra_check_can_refuse(tmp_path):
    store = tmp_path / "store"

    def refuse(valid):
        raise BundleError(f"{valid.ref}: refused by the caller")

    with pytest.raises(BundleError, match="refused by the caller"), staging(store, "toy", 3) as staged:
        _stage(staged, manifest_dict() | {"version": 3})
        publish(staged, store, "toy", 3, check=refuse)
    assert not (store / "toy" / "3").exists()


def test_write_manifest_hashes_every_file_and_refuses_nan(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.bin").write_bytes(b"x")
    written = write_manifest(tmp_path, {"name": "n"})
    assert list(written["files"]) == ["sub/x.bin"]
    assert json.loads((tmp_path / "manifest.json").read_text())["files"] == written["files"]
    import numpy as np

    written = write_manifest(tmp_path, {"auc": float("nan"), "acc": np.float32(0.5), "n": np.int64(3),
                                        "inf": [float("inf")], "when": object()}, default=lambda o: "obj")
    assert {k: written[k] for k in ("auc", "acc", "n", "inf", "when")} == {
        "auc": None, "acc": 0.5, "n": 3, "inf": [None], "when": "obj"}
    assert "NaN" not in (tmp_path / "manifest.json").read_text()
