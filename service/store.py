"""The model store: find bundles at `<store>/<name>/<version>/` and check them against the contract.

The contract is the `bundle` package (docs/contracts.md section 2): `load_bundle` runs its one
validation, and a bundle that fails raises `BundleError` with a reason; `discover` collects those
reasons so that startup can log them and serve the rest. Graph inputs and outputs are checked
against the manifest once a session exists (runtime.py, with the same package's `check_io`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundle import BundleError, Manifest, candidate_dirs, sha256_file, validate_bundle

log = logging.getLogger("histoserve.store")

__all__ = ["Bundle", "BundleError", "Preprocessing", "discover", "load_bundle", "sha256_file"]


@dataclass(frozen=True)
class Preprocessing:
    resize: tuple[int, int]  # (H, W)
    interpolation: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class Bundle:
    name: str
    version: int
    path: Path
    task: str
    classes: tuple[str, ...]
    input_size: tuple[int, int]  # (H, W)
    preprocessing: Preprocessing
    temperature: float
    embedding_distance: str
    embedding_temperature: float
    embedding_parts: dict[str, list[int]]  # named slices of the embedding an adapter may read alone
    graphs: dict[str, dict[str, Any]]  # the graphs of the bundle's task (contract TASKS)
    manifest: dict[str, Any] = field(repr=False)  # manifest.json as written
    spec: Manifest | None = field(default=None, repr=False, compare=False)  # the same, typed

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def model_file(self) -> Path:
        return self.path / self.graphs["classify"]["file"]

    @property
    def gradcam_file(self) -> Path | None:
        graph = self.graphs.get("gradcam")
        return self.path / graph["file"] if graph else None

    @property
    def has_embedding(self) -> bool:
        return "embedding" in self.graphs["classify"]["outputs"]


def load_bundle(path: Path) -> Bundle:
    """Read and check one bundle directory; raise BundleError saying why it is refused."""
    valid = validate_bundle(Path(path))
    m = valid.manifest
    pre = m.preprocessing
    return Bundle(
        name=m.name, version=m.version, path=valid.path, task=m.task, classes=tuple(m.classes),
        input_size=m.input_size,
        preprocessing=Preprocessing(tuple(pre.resize or m.input_size), pre.interpolation, float(pre.scale),
                                    tuple(pre.mean), tuple(pre.std)),
        temperature=float(m.temperature), embedding_distance=m.embedding.distance,
        embedding_temperature=float(m.embedding.temperature), embedding_parts=dict(m.embedding.parts or {}),
        # A format-1 embedding bundle may carry a gradcam.onnx: not part of its task, so never opened.
        graphs={k: g.model_dump(mode="json", exclude_none=True) for k, g in m.served_graphs().items()},
        manifest=valid.raw, spec=m,
    )


def discover(store: Path) -> tuple[list[Bundle], list[tuple[Path, str]]]:
    """Every bundle under `store`, sorted by (name, version), and every refused path with its reason."""
    bundles: list[Bundle] = []
    refused: list[tuple[Path, str]] = []
    for version_dir in candidate_dirs(Path(store)):
        try:
            bundles.append(load_bundle(version_dir))
        except BundleError as e:
            refused.append((version_dir, str(e)))
    bundles.sort(key=lambda b: (b.name, b.version))
    return bundles, refused


DEFAULTS_FILE = "defaults.json"


def store_defaults(store: Path) -> dict[str, str]:
    """The store's own choice of default models, `<store>/defaults.json`: {"classification": ref,
    "embedding": ref}. A missing file means no choice; a broken one is logged and ignored."""
    path = Path(store) / DEFAULTS_FILE
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        log.warning("ignoring %s: %s", path, e)
        return {}
    return {k: v for k, v in doc.items() if k in ("classification", "embedding") and isinstance(v, str) and v}
