"""ModelRuntime: sessions for a bundle's task graphs, checked against the manifest by the contract's check_io."""
from __future__ import annotations

import numpy as np
import pytest

from bundle import sha256_file
from service.runtime import ModelRuntime, provider_options
from service.settings import Settings
from service.store import BundleError, load_bundle
from tests.service.conftest import CLASSES, HOST_PROVIDERS, SIZE, edit_manifest


def test_runs_every_output_of_the_classify_graph(bundles):
    rt = ModelRuntime(load_bundle(bundles["store"] / "tiny_cls" / "1"), Settings())
    out = rt.run(np.zeros((2, 3, SIZE, SIZE), dtype=np.float32))
    assert sorted(out) == ["embedding", "features", "logits", "probabilities"]
    assert out["probabilities"].shape == (2, len(CLASSES))
    np.testing.assert_allclose(out["probabilities"].sum(1), 1.0, atol=1e-5)
    assert rt.providers == HOST_PROVIDERS  # what was asked for is what ORT gave, no silent fallback
    maps = rt.gradcam(out["features"], np.array([0, 2], dtype=np.int64))
    assert maps.shape == (2, SIZE, SIZE) and 0.0 <= maps.min() and maps.max() <= 1.0


def test_an_embedding_bundle_has_no_gradcam_session(bundles):
    rt = ModelRuntime(load_bundle(bundles["store"] / "tiny_emb" / "1"), Settings())
    assert rt.gradcam_session is None
    assert sorted(rt.run(np.zeros((1, 3, SIZE, SIZE), dtype=np.float32))) == ["embedding", "features"]
    with pytest.raises(RuntimeError, match="no gradcam graph"):
        rt.gradcam(np.zeros((1, 1, 1, 1), dtype=np.float32), np.zeros(1, dtype=np.int64))


def test_a_dtype_the_graph_does_not_have_is_refused(store_copy):
    bundle = store_copy / "tiny_cls" / "1"
    edit_manifest(bundle, lambda m: m["graphs"]["classify"]["outputs"]["logits"].update(dtype="float16"))
    with pytest.raises(BundleError, match=r"graph 'classify' outputs do not match the manifest \(logits\)"):
        ModelRuntime(load_bundle(bundle), Settings())


def test_a_graph_onnx_runtime_cannot_read_is_refused(store_copy):
    bundle = store_copy / "tiny_cls" / "1"
    (bundle / "model.onnx").write_bytes(b"not an onnx graph")
    edit_manifest(bundle, lambda m: m["files"].update({"model.onnx": sha256_file(bundle / "model.onnx")}))
    with pytest.raises(BundleError, match="ONNX Runtime cannot load the graph"):
        ModelRuntime(load_bundle(bundle), Settings())


@pytest.mark.parametrize(("env", "spin", "stop"), [({}, "0", "0"),
                                                   ({"allow_spinning": True, "force_spinning_stop": True}, "1", "1")])
def test_spinning_settings_reach_the_session_options(env, spin, stop):
    from service.runtime import _session_options

    options = _session_options(Settings(**env))
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == spin
    assert options.get_session_config_entry("session.force_spinning_stop") == stop


def test_cuda_gets_its_settings_and_the_cpu_none():
    """Heuristic conv search and no TF32 unless set: ORT's own defaults re-benchmark every new batch size
    and move outputs off the CPU's (bench.gpu on an H200)."""
    cuda = "CUDAExecutionProvider"
    assert provider_options(Settings(providers=[cuda, "CPUExecutionProvider"])) == [
        (cuda, {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}), "CPUExecutionProvider"]
    tuned = Settings(providers=[cuda], cuda_conv_algo_search="EXHAUSTIVE", cuda_tf32=True)
    assert provider_options(tuned) == [(cuda, {"cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": "1"})]
    assert provider_options(Settings(providers=["CPUExecutionProvider"])) == ["CPUExecutionProvider"]
