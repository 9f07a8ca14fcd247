"""Settings: the HISTOSERVE_ prefix, defaults, and validators that reject unsafe values."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import REPO_ROOT, Settings


def test_defaults(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("HISTOSERVE_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert s.model_store == REPO_ROOT / "model_store"
    assert s.default_model is None and s.default_embedding_model is None and s.api_key is None
    assert (s.host, s.port, s.max_batch_size) == ("127.0.0.1", 8000, 2)


def test_environment_with_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("HISTOSERVE_MODEL_STORE", str(tmp_path))
    monkeypatch.setenv("HISTOSERVE_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("HISTOSERVE_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("HISTOSERVE_DEFAULT_MODEL", "ebhi_cbam_resnet18/2")
    monkeypatch.setenv("MAX_BATCH_SIZE", "99")  # without the prefix: ignored
    s = Settings()
    assert s.model_store == tmp_path and s.max_batch_size == 4
    assert s.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert s.default_model == "ebhi_cbam_resnet18/2"


@pytest.mark.parametrize("field,value", [
    ("port", 0), ("max_batch_size", 0), ("max_wait_ms", -1), ("max_queue", 0), ("max_upload_bytes", 10),
    ("providers", "TensorrtExecutionProvider"), ("providers", ""), ("api_key", "short"),
    ("api_key", "changethis"), ("host", "example.com"), ("default_model", "../etc/passwd"),
    ("label_pattern", ".*"), ("label_pattern", "(unclosed"), ("graph_optimization_level", "max"),
    ("adapter_max_classes", 1),
])
def test_unsafe_values_are_rejected(field, value):
    with pytest.raises(ValidationError):
        Settings(**{field: value})


def test_cross_field_rules():
    with pytest.raises(ValidationError, match="require_cuda"):
        Settings(require_cuda=True, providers=["CPUExecutionProvider"])
    with pytest.raises(ValidationError, match="max_queue"):
        Settings(max_queue=4, max_files=8)
    assert Settings(api_key="x" * 16).api_key.get_secret_value() == "x" * 16
