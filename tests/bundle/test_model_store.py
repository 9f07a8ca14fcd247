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


def test_served_breakhis_classifier_tests_on_three_benign_patients():
    """The served benign/malignant bundle's held-out test split holds at least 3 of BreakHis's 10 benign
    patients, and no patient is on two sides of its split."""
    import json

    latest = max((p for p in COMMITTED if p.parent.name == "breakhis_efficientnet_lite0_probe"),
                 key=lambda p: int(p.name))
    files = json.loads((latest / "split.json").read_text())["files"]
    sides: dict[str, set[str]] = {}
    for f in files:
        sides.setdefault(f["group"], set()).add(f["split"])
    assert all(len(s) == 1 for s in sides.values()), "a patient on two sides of the split"
    benign_test = {f["group"] for f in files if f["split"] == "test" and f["class"] == "benign"}
    assert len(benign_test) >= 3, f"{latest.name}: {len(benign_test)} benign test patients"
