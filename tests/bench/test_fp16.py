"""The float16-weight copy: half the bytes, the same arithmetic, published only within its tolerance."""
import json

import numpy as np
import pytest

from bench import fp16
from bundle import BundleError, sha256_file
from service.runtime import ModelRuntime
from service.settings import Settings
from service.store import load_bundle


def test_float16_copy_is_half_the_size_servable_and_measured(tiny_store, ebhi_dir, tmp_path):
    pytest.importorskip("onnx")
    source = load_bundle(tiny_store / "tiny_cbam" / "1")
    assert fp16.main([str(source.path), "--store", str(tmp_path / "store"), "--name", "tiny_half",
                      "--image-dir", str(ebhi_dir), "--images", "8"]) == 0
    copy = load_bundle(tmp_path / "store" / "tiny_half" / "1")  # hashes, graphs and tolerance check out
    # a tiny network keeps many tensors under MIN_ELEMENTS in float32; a full-size one halves (14 -> 7 MB)
    assert copy.model_file.stat().st_size < 0.75 * source.model_file.stat().st_size
    quant = json.loads((copy.path / "manifest.json").read_text())["graphs"]["classify"]["quantization"]
    assert quant["precision"] == "float16" and quant["source"] == "tiny_cbam/1"
    assert quant["source_sha256"] == sha256_file(source.model_file) and quant["measured"]["images"] == 8
    # what the service computes from the copy stays within float16 rounding of the weights
    settings = Settings(model_store=tmp_path / "store", intra_op_threads=1)
    x = np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    a, b = ModelRuntime(source, settings).run(x), ModelRuntime(copy, settings).run(x)
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-3)
    assert (copy.graphs["classify"]["inputs"], copy.graphs["classify"]["outputs"]) == (
        source.graphs["classify"]["inputs"], source.graphs["classify"]["outputs"])


def test_a_copy_outside_its_tolerance_is_not_published(tiny_store, tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    source = load_bundle(tiny_store / "tiny_cbam" / "1")
    monkeypatch.setitem(fp16.TOLERANCE, "classification", {"probabilities_max_abs": 0.0})
    x = np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    with pytest.raises(BundleError, match="breaks the stated tolerance"):
        fp16.half_bundle(source, x, tmp_path / "store", "tiny_half")
    assert not (tmp_path / "store" / "tiny_half" / "1").exists()


def test_float_weights_undoes_the_float16_storage_exactly(tiny_store, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, numpy_helper

    source = load_bundle(tiny_store / "tiny_cbam" / "1").model_file
    half, widened = tmp_path / "half.onnx", tmp_path / "float.onnx"
    converted = fp16.half_weights(source, half)
    assert converted > 0 and fp16.float_weights(half, widened) == converted
    graph = onnx.load(str(widened)).graph
    assert not any(i.data_type == TensorProto.FLOAT16 for i in graph.initializer)
    assert not any(n.op_type == "Cast" for n in graph.node)
    # each weight under its source name, as the casts computed it: float16-rounded where half_weights stored it so
    original = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(source)).graph.initializer}
    for init in graph.initializer:
        want = original[init.name]
        if want.dtype == np.float32 and want.size >= fp16.MIN_ELEMENTS:
            want = want.astype(np.float16).astype(np.float32)
        assert np.array_equal(numpy_helper.to_array(init), want), init.name
