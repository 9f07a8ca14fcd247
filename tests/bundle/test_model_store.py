"""Every bundle committed under model_store/ passes the one contract, graphs included, and the service loads it."""
from __future__ import annotations

from pathlib import Path

import pytest

from bundle import FORMAT_VERSION, SUPPORTED_FORMATS, candidate_dirs, check_io, validate_bundle

STORE = Path(__file__).resolve().parents[2] / "model_store"
COMMITTED = list(candidate_dirs(STORE))


def test_the_committed_store_is_not_empty():
    assert len(COMMITTED) >= 3, f"expected the default bundles under {STORE}"


@pytest.mark.parametrize("path", COMMITTED, ids=[f"{p.parent.name}/{p.name}" for p in COMMITTED])
def test_committed_bundle_follows_the_contract(path):
    ort = pytest.importorskip("onnxruntime")
    valid = validate_bundle(path)
    m = valid.manifest
    assert m.format_version in SUPPORTED_FORMATS and m.format_version <= FORMAT_VERSION
    for key, graph in m.served_graphs().items():
        session = ort.InferenceSession(str(path / graph.file), providers=["CPUExecutionProvider"])
        check_io(session, graph, key)


@pytest.mark.parametrize("path", COMMITTED, ids=[f"{p.parent.name}/{p.name}" for p in COMMITTED])
def test_committed_bundle_loads_in_the_service(path):
    pytest.importorskip("onnxruntime")
    from service.runtime import ModelRuntime
    from service.settings import Settings
    from service.store import load_bundle

    bundle = load_bundle(path)
    runtime = ModelRuntime(bundle, Settings(model_store=STORE))
    # an embedding bundle's format-1 gradcam.onnx is part of no task: never opened
    assert (runtime.gradcam_session is not None) == (bundle.task == "classification")
