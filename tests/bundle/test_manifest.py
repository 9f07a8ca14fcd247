"""The one contract: what a manifest must hold, which graphs a task carries, and the rooms for what comes next."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bundle import TASKS, BundleError, Manifest, parse_manifest, validate_bundle

from .conftest import manifest_dict


def test_a_good_manifest_parses_with_its_free_fields_kept():
    m = parse_manifest(manifest_dict())
    assert m.task == "classification" and m.input_size == (16, 16) and set(m.served_graphs()) == {"classify", "gradcam"}
    assert m.model_extra["metrics"] == {"test": {"accuracy": 0.5}}  # free-form fields pass through


def _broken(edit, task="classification", format_version=2):
    m = manifest_dict(task, format_version)
    edit(m)
    return m


@pytest.mark.parametrize("edit,reason", [
    (lambda m: m.update(format_version=3), "format_version 3 is not one of"),
    (lambda m: m.update(task="segmentation"), "task: Input should be"),
    (lambda m: m.update(version=0), "version: Input should be greater than or equal to 1"),
    (lambda m: m.update(version=True), "version: Input should be a valid integer"),
    (lambda m: m.update(version=10**9), "version: Input should be less than or equal to"),
    (lambda m: m.update(name="x" * 129), "name: String should match pattern"),
    (lambda m: m.update(name="../up"), "name: String should match pattern"),
    (lambda m: m.update(classes=["a", "a", "b"]), "classes must be unique"),
    (lambda m: m.update(temperature=0), "temperature: Input should be greater than 0"),
    (lambda m: m["preprocessing"].update(std=[0.2, 0.0, 0.2]), "std must be positive"),
    (lambda m: m["preprocessing"].update(mean=[float("nan"), 0, 0]), "finite number"),
    (lambda m: m["preprocessing"].update(resize=[8, 8]), "differs from input dims"),
    (lambda m: m["input"].update(dims=[1, 16, 16]), r"input.dims must be \[3, H, W\]"),
    (lambda m: m["files"].update({"model.onnx": "abc"}), "must be 64 hex digits"),
    (lambda m: m.pop("graphs"), "graphs: Field required"),
    (lambda m: m["graphs"].pop("classify"), "graphs.classify is missing"),
    (lambda m: m["graphs"]["classify"]["outputs"].pop("logits"), "outputs for task 'classification' must be"),
    (lambda m: m["graphs"]["classify"]["outputs"]["probabilities"].update(dims=[-1, 2]), "columns for 3 classes"),
    (lambda m: m["graphs"]["gradcam"]["outputs"]["gradcam"].update(dims=[-1, 8, 8]), r"are not \[-1, 16, 16\]"),
    (lambda m: m["graphs"]["gradcam"]["inputs"]["features"].update(dims=[-1, 4, 2, 2]), "features dims differ"),
    (lambda m: m["graphs"]["classify"].update(file="elsewhere.onnx"), "is not among the bundle files"),
    (lambda m: m["embedding"].update(distance="manhattan"), "embedding.distance"),
    (lambda m: m.update(classes=["only"]), "needs at least 2 classes"),
    (lambda m: m.update(training={"data": "/home/someone/data/ebhi_seg"}), r"absolute paths in \['training.data'\]"),
    (lambda m: m["graphs"]["classify"].update(test_time_augmentation={"views": ["hflip", "identity"]}),
     "views must start with 'identity'"),
    (lambda m: m["graphs"]["classify"].update(test_time_augmentation={"views": ["identity", "rot90"]}),
     "views.1: Input should be"),
    (lambda m: m["graphs"]["gradcam"].update(test_time_augmentation={"views": ["identity", "hflip"]}),
     "only the classify graph averages views"),
])
def test_each_broken_rule_is_refused_with_its_reason(edit, reason):
    with pytest.raises(BundleError, match=reason):
        parse_manifest(_broken(edit))


def test_embedding_bundles_carry_their_graphs_only():
    parse_manifest(manifest_dict("embedding"))  # model.onnx alone
    with_cam = manifest_dict("embedding", gradcam=True)
    with pytest.raises(BundleError, match=r"carries graphs \['classify'\], not \['gradcam'\]"):
        parse_manifest(with_cam)
    # Format 1 (the committed bundles) exported a Grad-CAM for every task: read, but never served.
    legacy = parse_manifest({**with_cam, "format_version": 1})
    assert set(legacy.graphs) == {"classify", "gradcam"} and set(legacy.served_graphs()) == {"classify"}
    assert TASKS["embedding"].graphs == ("classify",) and TASKS["embedding"].min_classes == 1
    parse_manifest({**manifest_dict("embedding"), "classes": ["seen"]})


def test_format_1_allows_absolute_paths_format_2_does_not():
    m = manifest_dict(format_version=1)
    m["split"] = {"train": {"root": "/work/shared/data/ebhi_seg"}}
    parse_manifest(m)
    with pytest.raises(BundleError, match="split.train.root"):
        parse_manifest({**m, "format_version": 2})
    parse_manifest({**m, "format_version": 2, "split": {"train": {"dataset": "ebhi_seg", "file": "split.json"}}})


def test_room_for_pixel_size_multi_stage_embeddings_quantized_and_averaging_graphs():
    m = manifest_dict()
    m["pixel_size_um"] = {"x": 0.5, "y": 0.52, "estimated": True, "source": "200x objective, dataset README"}
    m["embedding"].update(stages=["layer3", "layer4"], pooling="mean+concat", description="two stages, pooled")
    m["graphs"]["classify"]["quantization"] = {
        "precision": "int8", "source": "toy/1", "method": "onnxruntime quantize_static QDQ MinMax",
        "tolerance": {"probabilities_max_abs": 0.05, "top1_agreement_min": 0.95},
        "measured": {"probabilities_max_abs": 0.01, "top1_agreement": 0.99},
    }
    m["graphs"]["classify"]["test_time_augmentation"] = {"views": ["identity", "rot180"], "chosen_on": "val"}
    parsed = parse_manifest(m)
    assert parsed.graphs["classify"].test_time_augmentation.views == ["identity", "rot180"]
    assert parsed.pixel_size_um.x == 0.5 and parsed.pixel_size_um.estimated is True
    assert parsed.embedding.stages == ["layer3", "layer4"]
    assert parsed.graphs["classify"].quantization.tolerance.top1_agreement_min == 0.95

    drifted = json.loads(json.dumps(m))
    drifted["graphs"]["classify"]["quantization"]["measured"]["top1_agreement"] = 0.9
    with pytest.raises(BundleError, match=r"breaks the stated tolerance on \['top1_agreement_min'\]"):
        parse_manifest(drifted)
    half = json.loads(json.dumps(m))  # a float16-weight embedding: bounded by the embedding's cosine
    half["graphs"]["classify"]["quantization"].update(
        precision="float16", tolerance={"embedding_cosine_min": 0.999}, measured={"embedding_cosine_min": 0.99})
    with pytest.raises(BundleError, match=r"breaks the stated tolerance on \['embedding_cosine_min'\]"):
        parse_manifest(half)
    unbounded = json.loads(json.dumps(m))
    unbounded["graphs"]["classify"]["quantization"]["tolerance"] = {}
    with pytest.raises(BundleError, match="must bound at least one"):
        parse_manifest(unbounded)
    for bad in ({"x": 0, "y": 1, "estimated": False, "source": "s"}, {"x": 1, "y": 1, "estimated": "yes", "source": "s"}):
        with pytest.raises(BundleError, match="pixel_size_um"):
            parse_manifest({**m, "pixel_size_um": bad})


def test_hashes_compare_case_insensitively_and_name_the_file(make_bundle):
    path = make_bundle()
    raw = json.loads((path / "manifest.json").read_text())
    raw["files"] = {k: v.upper() for k, v in raw["files"].items()}
    (path / "manifest.json").write_text(json.dumps(raw))
    assert validate_bundle(path).manifest.name == "toy"
    (path / "model.onnx").write_bytes(b"changed")
    with pytest.raises(BundleError, match="sha256 mismatch for 'model.onnx'"):
        validate_bundle(path)


def test_directory_rules(make_bundle, tmp_path):
    path = make_bundle()
    (path / "notes.txt").write_text("x")
    with pytest.raises(BundleError, match="extra file 'notes.txt'"):
        validate_bundle(path)
    (path / "notes.txt").unlink()
    (path / "gradcam.onnx").unlink()
    with pytest.raises(BundleError, match="missing file 'gradcam.onnx'"):
        validate_bundle(path)
    zero = make_bundle(version="01")
    with pytest.raises(BundleError, match="leading zero"):
        validate_bundle(zero)
    other = make_bundle(name="other")
    with pytest.raises(BundleError, match="name 'toy' differs from directory 'other'"):
        validate_bundle(other)
    assert validate_bundle(other, name="toy", version=1).ref == "toy/1"  # a staging directory
    (path.parent / "1" / "manifest.json").write_text('{"format_version": NaN}')
    with pytest.raises(BundleError, match="not readable JSON"):
        validate_bundle(path)


def test_the_contract_imports_no_torch_service_or_training():
    code = ("import sys, bundle; bad = [m for m in ('torch', 'models', 'training', 'service', 'onnxruntime') "
            "if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert Manifest.model_fields["format_version"].is_required()
