"""Bundle discovery and the contract checks: each broken rule refuses the bundle with its reason."""
from __future__ import annotations

import shutil

import pytest

from service.runtime import ModelRuntime
from service.settings import Settings
from service.store import BundleError, discover, load_bundle, sha256_file
from tests.service.conftest import edit_manifest


def test_exported_bundles_load(bundles):
    found, refused = discover(bundles["store"])
    assert [(b.name, b.version, b.task) for b in found] == [("tiny_cls", 1, "classification"),
                                                            ("tiny_emb", 1, "embedding")]
    assert refused == []
    assert found[0].gradcam_file.name == "gradcam.onnx" and found[1].has_embedding


def _case_hash(b):
    (b / "model.onnx").write_bytes((b / "model.onnx").read_bytes() + b"\0")


def _case_extra(b):
    (b / "notes.txt").write_text("x")


def _case_missing(b):
    (b / "gradcam.onnx").unlink()


def _case_name(b):
    edit_manifest(b, lambda m: m.update(name="other"))


def _case_version(b):
    edit_manifest(b, lambda m: m.update(version=2))


def _case_json(b):
    (b / "manifest.json").write_text("{not json")


def _case_task(b):
    edit_manifest(b, lambda m: m.update(task="segmentation"))


def _case_std(b):
    edit_manifest(b, lambda m: m["preprocessing"].update(std=[0.2, 0.0, 0.2]))


def _case_classes(b):
    edit_manifest(b, lambda m: m.update(classes=["a", "b"]))


@pytest.mark.parametrize("damage,reason", [
    (_case_hash, "sha256 mismatch"), (_case_extra, "not listed"), (_case_missing, "missing"),
    (_case_name, "differs from directory"), (_case_version, "differs from directory"),
    (_case_json, "not readable JSON"), (_case_task, "task: Input should be"), (_case_std, "std must be positive"),
    (_case_classes, "columns for 2 classes"),
])
def test_broken_bundles_are_refused_with_a_reason(store_copy, damage, reason):
    bundle = store_copy / "tiny_cls" / "1"
    damage(bundle)
    with pytest.raises(BundleError, match=reason):
        load_bundle(bundle)
    found, refused = discover(store_copy)
    assert [b.name for b in found] == ["tiny_emb"]
    assert len(refused) == 1 and reason.split()[0] in refused[0][1]


def test_version_directories_follow_triton_rules(store_copy):
    shutil.copytree(store_copy / "tiny_cls" / "1", store_copy / "tiny_cls" / "01")
    _, refused = discover(store_copy)
    assert [p.name for p, _ in refused] == ["01"]


def test_graph_signature_must_match_the_manifest(store_copy):
    bundle = store_copy / "tiny_cls" / "1"

    def edit(m):
        m["graphs"]["classify"]["outputs"]["embedding"].update(dims=[-1, 999])
        m["embedding"]["dim"] = 999

    edit_manifest(bundle, edit)
    b = load_bundle(bundle)  # the manifest alone is consistent...
    with pytest.raises(BundleError, match=r"graph 'classify' outputs do not match the manifest \(embedding\)"):
        ModelRuntime(b, Settings())
    assert sha256_file(bundle / "model.onnx") == b.manifest["files"]["model.onnx"]
