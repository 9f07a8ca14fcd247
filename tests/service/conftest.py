"""Fixtures for the service tests: tiny real bundles exported once per session, apps built on them,
and image bytes in every format the service accepts.

The bundles come from the real exporter (`training.export.export_bundle`) so the service is
tested against the contract as training writes it. Tests may import torch and training;
the service itself never does.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.main import create_app
from service.runtime import wanted_providers
from service.settings import Settings

CLASSES = ["adeno", "normal", "polyp"]
SIZE = 32  # input size of the tiny bundles (H = W)
# What a session that names no provider gets on this host: CUDA first where this onnxruntime offers it.
HOST_PROVIDERS = wanted_providers(Settings())
TEMPERATURE = 1.5


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    """A store with `tiny_cls/1` (classification, resnet20, 3 classes) and `tiny_emb/1` (embedding).

    Returns the store path and the eager networks, so tests can compare the service with PyTorch.
    """
    torch = pytest.importorskip("torch")
    from models import create_model
    from training.export import export_bundle

    store = tmp_path_factory.mktemp("store")
    torch.manual_seed(0)
    cls = create_model("resnet20", num_classes=len(CLASSES)).eval()
    emb = create_model("resnet20", num_classes=len(CLASSES)).eval()
    export_bundle(cls, store, "tiny_cls", classes=CLASSES, input_size=(SIZE, SIZE), temperature=TEMPERATURE,
                  metrics={"test": {"accuracy": 0.5}})
    export_bundle(emb, store, "tiny_emb", classes=CLASSES, task="embedding", input_size=(SIZE, SIZE))
    return {"store": store, "cls": cls, "emb": emb}


@pytest.fixture()
def store_copy(bundles, tmp_path) -> Path:
    """A private copy of the bundle store that a test may damage."""
    dst = tmp_path / "store"
    shutil.copytree(bundles["store"], dst)
    return dst


def make_settings(store: Path, state_dir: Path, **overrides) -> Settings:
    return Settings(model_store=store, state_dir=state_dir, **overrides)


def make_app(store: Path, state_dir: Path, **overrides):
    return create_app(make_settings(store, state_dir, **overrides))


def reference_probabilities(net, arrays: list[np.ndarray]) -> np.ndarray:
    """softmax(logits / T) from the eager network, preprocessed here independently of the service."""
    import torch

    mean = np.asarray(net.pretrained_cfg["mean"], dtype=np.float32)
    std = np.asarray(net.pretrained_cfg["std"], dtype=np.float32)
    x = np.stack([((a.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1) for a in arrays])
    with torch.no_grad():
        logits = net(torch.from_numpy(x))
    return torch.softmax(logits / TEMPERATURE, dim=1).numpy()


def reference_embeddings(net, arrays: list[np.ndarray]) -> np.ndarray:
    import torch

    mean = np.asarray(net.pretrained_cfg["mean"], dtype=np.float32)
    std = np.asarray(net.pretrained_cfg["std"], dtype=np.float32)
    x = np.stack([((a.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1) for a in arrays])
    with torch.no_grad():
        return net.embed(torch.from_numpy(x)).numpy()


def random_rgb(seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def encode(arr_or_img, fmt: str = "PNG", **kwargs) -> bytes:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def edit_manifest(bundle: Path, edit) -> None:
    """Change a bundle's manifest in place: `edit` mutates the parsed dict (the hashes are not updated)."""
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The JSON error body every 4xx carries: status, code, a message."""
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert err["status"] == status and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


def png(arr: np.ndarray) -> bytes:
    return encode(arr, "PNG")


@pytest.fixture()
def app_factory(bundles, tmp_path):
    """Build an app on the shared tiny store with a fresh state dir; keyword arguments override settings."""

    def factory(**overrides):
        overrides.setdefault("max_wait_ms", 2.0)
        state = overrides.pop("state_dir", tmp_path / "state")
        store = overrides.pop("model_store", bundles["store"])
        return make_app(store, state, **overrides)

    return factory
