"""The int8 variant: a bundle the service's own checks accept, compared with fp32 on real images."""
import json

import pytest

from bench.images import load_samples
from bench.quantize import compare, labelled_images
from service.settings import Settings
from service.store import load_bundle


@pytest.mark.slow
def test_int8_bundle_is_servable_and_compared(tiny_store, ebhi_dir, tmp_path):
    pytest.importorskip("onnx")
    bundle = load_bundle(tiny_store / "tiny_cbam" / "1")
    settings = Settings(model_store=tiny_store)
    result = compare(bundle, ebhi_dir.parent, settings, tmp_path / "int8", calibration_images=6, eval_images=12,
                     cam_images=3, seconds=0.05, samples=load_samples(ebhi_dir.parent, 1))
    int8 = load_bundle(tmp_path / "int8" / "tiny_cbam_int8" / "1")  # hashes, names and graphs check out
    manifest = json.loads((int8.path / "manifest.json").read_text())
    assert manifest["quantization"]["from"] == "tiny_cbam/1"
    assert manifest["quantization"]["calibration_images"] == 6
    assert result["eval_images"] == 12 and 0.0 <= result["top1_agreement"] <= 1.0
    for tag in ("fp32", "int8"):
        assert 0.0 <= result["balanced_accuracy"][tag] <= 1.0
        assert result["raw"][tag]["best_images_per_s"] > 0
    assert result["gradcam"]["images"] == 3 and result["gradcam"]["max_abs_diff"] <= 1.0
    # Graph outputs stay float: quantizing never changes what the service reads.
    assert int8.graphs == bundle.graphs


def test_calibration_and_evaluation_specimens_never_overlap(tiny_store, ebhi_dir):
    from bench.quantize import _group

    calib, evaluation, note = labelled_images(load_bundle(tiny_store / "tiny_cbam" / "1"), ebhi_dir.parent)
    assert calib and evaluation and "hash" in note
    assert not {_group(p) for p, _ in calib} & {_group(p) for p, _ in evaluation}
