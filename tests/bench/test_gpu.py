"""bench.gpu: a CUDA check that cannot pass where there is no CUDA, and whose comparison sees a drift."""
import json

import numpy as np
import onnxruntime as ort
import pytest

from bench import gpu
from bench.images import load_samples
from service.store import load_bundle


def test_without_cuda_the_check_fails_and_says_why(tiny_store, tmp_path):
    if gpu.CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA: the check runs for real here")
    assert gpu.main(["--store", str(tiny_store), "--results-dir", str(tmp_path)]) == 1
    (result,) = [json.loads(p.read_text()) for p in tmp_path.glob("gpu-parity-*.json")]
    assert "bundles" not in result and gpu.CUDA in result["problems"][0]


def test_a_session_that_fell_back_fails(tiny_store, ebhi_dir):
    if gpu.CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA: no fallback to show")
    samples = [s.data for s in load_samples(ebhi_dir.parent, 1)]
    entry = gpu.check(load_bundle(tiny_store / "tiny_cbam" / "1"), samples, tiny_store)
    assert entry["passed"] is False and "fell back to CPUExecutionProvider" in entry["problems"][0]


def test_the_comparison_measures_every_output_and_the_maps(tiny_store, ebhi_dir, monkeypatch):
    """Both sides on the CPU, one of them nudged: the drift shows in the measured figures and breaks the bound."""
    monkeypatch.setattr(gpu, "CUDA", "CPUExecutionProvider")
    bundle = load_bundle(tiny_store / "tiny_cbam" / "1")
    samples = [s.data for s in load_samples(ebhi_dir.parent, 2)]
    same = gpu.check(bundle, samples, tiny_store)
    assert same["passed"] and same["measured"]["probabilities_max_abs"] == 0.0
    assert same["measured"]["images"] == 12 and "gradcam_max_abs" in same["measured"]
    real_outputs = gpu.outputs
    calls = []

    def nudged(runtime, images):  # the second call is the "GPU" side
        out = real_outputs(runtime, images)
        calls.append(1)
        if len(calls) == 2:
            out["probabilities"] = out["probabilities"] + np.float32(0.02)
        return out

    monkeypatch.setattr(gpu, "outputs", nudged)
    drifted = gpu.check(bundle, samples, tiny_store)
    assert not drifted["passed"] and drifted["problems"] == ["breaks probabilities_max_abs"]
    assert drifted["measured"]["probabilities_max_abs"] == pytest.approx(0.02, abs=1e-6)
