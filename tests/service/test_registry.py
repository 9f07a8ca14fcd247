"""The registry: lookups by name and name/version, task checks as domain errors, readiness for defaults."""
from __future__ import annotations

import pytest

from service.errors import ServiceError
from service.metrics import Metrics
from service.registry import LookupFailed, ModelNotFound, ModelRegistry, WrongTask
from service.settings import Settings


def _registry(store, **settings) -> ModelRegistry:
    registry = ModelRegistry(Settings(model_store=store, **settings), Metrics())
    registry.load()
    return registry


@pytest.fixture(scope="module")
def loaded(bundles):
    return _registry(bundles["store"])


def test_lookup_by_name_and_version(loaded):
    assert loaded.refs() == ["tiny_cls/1", "tiny_emb/1"]
    assert loaded.resolve("tiny_cls").bundle.ref == "tiny_cls/1" == loaded.resolve("tiny_cls/1").bundle.ref
    assert loaded.classifier(None).bundle.name == "tiny_cls" and loaded.embedder(None).bundle.name == "tiny_emb"
    # a classification bundle has an embedding output too: /adapt may use it
    assert loaded.embedder("tiny_cls").bundle.name == "tiny_cls"


@pytest.mark.parametrize("call,kind,code", [
    (lambda r: r.resolve("nope"), ModelNotFound, "model_not_found"),
    (lambda r: r.resolve("tiny_cls/2"), ModelNotFound, "model_not_found"),
    (lambda r: r.resolve("../x"), ModelNotFound, "model_not_found"),
    (lambda r: r.classifier("tiny_emb"), WrongTask, "not_a_classifier"),
])
def test_failed_lookups_are_domain_errors_not_http(loaded, call, kind, code):
    with pytest.raises(kind) as e:
        call(loaded)
    assert e.value.code == code and not isinstance(e.value, ServiceError)
    assert isinstance(e.value, LookupFailed)


def test_ready_means_the_defaults_can_be_served(bundles, store_copy, tmp_path):
    assert _registry(bundles["store"]).unready_reasons() == []
    assert _registry(bundles["store"], default_model="tiny_cls/1",
                     default_embedding_model="tiny_emb").unready_reasons() == []
    empty = _registry(tmp_path / "empty")
    assert [r.split(" from ")[0] for r in empty.unready_reasons()] == ["no bundle loaded"]
    # a default that is not there, or cannot do its job
    reasons = _registry(bundles["store"], default_model="tiny_emb", default_embedding_model="gone").unready_reasons()
    assert len(reasons) == 2 and "embedding bundle" in reasons[0] and "'gone' is not loaded" in reasons[1]
    # a refused bundle that is no default leaves the replica ready, and is reported
    (store_copy / "tiny_emb" / "1" / "model.onnx").write_bytes(b"damaged")
    damaged = _registry(store_copy, default_model="tiny_cls")
    assert damaged.unready_reasons() == [] and len(damaged.refused) == 1
    damaged_default = _registry(store_copy, default_embedding_model="tiny_emb")
    assert "tiny_emb" in damaged_default.unready_reasons()[0]


def test_the_store_names_its_default_models_unless_the_settings_do(tmp_path):
    import json

    from service.metrics import Metrics
    from service.registry import ModelRegistry
    from service.settings import Settings

    (tmp_path / "defaults.json").write_text(json.dumps({"classification": "b_model", "embedding": "e/2"}))
    registry = ModelRegistry(Settings(model_store=tmp_path), Metrics())
    assert (registry.default_model, registry.default_embedding_model) == ("b_model", "e/2")
    registry = ModelRegistry(Settings(model_store=tmp_path, default_model="a_model"), Metrics())
    assert registry.default_model == "a_model"
    (tmp_path / "defaults.json").write_text("[not json")
    assert ModelRegistry(Settings(model_store=tmp_path), Metrics()).default_model is None


@pytest.mark.parametrize("pad,expected", [("always", True), ("never", False), ("auto", False)])
def test_padding_follows_the_setting_and_auto_pads_only_on_cuda(bundles, pad, expected, monkeypatch):
    registry = _registry(bundles["store"], pad_batches=pad, max_batch_size=4,
                         providers=["CPUExecutionProvider"])  # auto: this CPU session pads nothing
    runs = []
    model = registry.resolve("tiny_cls")
    real_run = model.runtime.run
    monkeypatch.setattr(model.runtime, "run", lambda x: runs.append(len(x)) or real_run(x))
    registry.warm_up()
    assert model.batcher.pad_to_max is expected
    assert runs == ([4] if expected else [1, 2, 3, 4])  # warm-up runs only the sizes the batcher will run
