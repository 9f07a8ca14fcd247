"""verify_bundle: a good bundle passes; each kind of tampering is refused with a message naming it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import models
from training.export import export_bundle
from training.verify import BundleError, sha256_file, verify_bundle

SIZE = 64
CLASSES = ["adenocarcinoma", "normal", "polyp"]


def _tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.create_model("resnet18", num_classes=len(CLASSES), widths=(8, 8, 16, 16)).eval()


@pytest.fixture(scope="module")
def source_bundle(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    model = _tiny()
    split = tmp_path_factory.mktemp("run") / "split.json"
    split.write_text(json.dumps({"description": "specimen-disjoint test", "files": []}))
    bundle = export_bundle(model, tmp_path_factory.mktemp("store"), "tiny", classes=CLASSES,
                           input_size=(SIZE, SIZE), temperature=1.7, files=[split])
    return bundle, model


@pytest.fixture
def bundle(source_bundle, tmp_path) -> Path:
    """A private copy at <tmp>/tiny/1 that a test may damage."""
    dest = tmp_path / "tiny" / "1"
    shutil.copytree(source_bundle[0], dest)
    return dest


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _write_manifest(bundle: Path, manifest: dict) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_good_bundle_passes_with_parity(bundle, source_bundle):
    report = verify_bundle(bundle, source_bundle[1])
    assert report["files_checked"] == 3  # model.onnx, gradcam.onnx, split.json
    assert report["batch_sizes_run"] == [1, 3]
    assert report["parity"]["probabilities_max_abs_diff"] <= 1e-4
    assert report["parity"]["gradcam_max_abs_diff"] <= 1e-3


def test_dynamic_batch_and_calibrated_probabilities(bundle, source_bundle):
    model = source_bundle[1]
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    assert sorted(names) == ["embedding", "features", "logits", "probabilities"]
    for batch in (1, 3):
        x = torch.randn(batch, 3, SIZE, SIZE)
        out = dict(zip(names, sess.run(None, {"image": x.numpy()}), strict=True))
        with torch.no_grad():
            expected = torch.softmax(model(x) / 1.7, dim=1).numpy()
        assert out["probabilities"].shape == (batch, len(CLASSES))
        assert np.abs(out["probabilities"] - expected).max() < 1e-4
        assert out["features"].shape[0] == batch and out["embedding"].shape == (batch, 16)


def test_changed_byte_names_the_file(bundle):
    data = bytearray((bundle / "gradcam.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "gradcam.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"sha256 mismatch for 'gradcam.onnx'"):
        verify_bundle(bundle)


def test_missing_file_is_named(bundle):
    (bundle / "split.json").unlink()
    with pytest.raises(BundleError, match=r"missing file 'split.json'"):
        verify_bundle(bundle)


def test_unlisted_file_is_named(bundle):
    (bundle / "notes.txt").write_text("not part of the bundle")
    with pytest.raises(BundleError, match=r"extra file 'notes.txt'"):
        verify_bundle(bundle)


def test_unparsable_manifest(bundle):
    text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(BundleError, match="not readable JSON"):
        verify_bundle(bundle)


def test_missing_manifest(bundle):
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match="missing file manifest.json"):
        verify_bundle(bundle)


def test_graph_inputs_not_matching_manifest(bundle):
    # a real graph with the wrong interface: the classify graph in place of gradcam.onnx, re-hashed
    shutil.copyfile(bundle / "model.onnx", bundle / "gradcam.onnx")
    manifest = _manifest(bundle)
    manifest["files"]["gradcam.onnx"] = sha256_file(bundle / "gradcam.onnx")
    _write_manifest(bundle, manifest)
    with pytest.raises(BundleError, match=r"graph 'gradcam' inputs do not match the manifest"):
        verify_bundle(bundle)


def test_manifest_dims_not_matching_graph(bundle):
    manifest = _manifest(bundle)
    manifest["graphs"]["classify"]["outputs"]["embedding"]["dims"] = [-1, 999]
    manifest["embedding"]["dim"] = 999  # consistent with itself, not with the graph
    _write_manifest(bundle, manifest)
    with pytest.raises(BundleError, match=r"graph 'classify' outputs do not match the manifest"):
        verify_bundle(bundle)


def test_name_and_version_must_match_path(bundle, tmp_path):
    moved = tmp_path / "tiny" / "2"
    bundle.rename(moved)
    with pytest.raises(BundleError, match="version 1 differs from directory 2"):
        verify_bundle(moved)
    renamed = tmp_path / "other" / "1"
    renamed.parent.mkdir()
    moved.rename(renamed)
    with pytest.raises(BundleError, match="name 'tiny' differs from directory 'other'"):
        verify_bundle(renamed)


def test_leading_zero_version_is_refused(bundle, tmp_path):
    moved = tmp_path / "tiny" / "01"
    bundle.rename(moved)
    with pytest.raises(BundleError, match="leading zero"):
        verify_bundle(moved)


def test_parity_fails_against_a_different_network(bundle):
    with pytest.raises(BundleError, match="parity"):
        verify_bundle(bundle, _tiny(seed=1))
