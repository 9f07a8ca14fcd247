"""The model store: find bundles at `<store>/<name>/<version>/` and check them against the contract.

docs/contracts.md section 2 is the format. A bundle that fails a check raises `BundleError`
with a reason; `discover` collects those reasons so that startup can log them and serve the rest.
Graph inputs and outputs are checked against the manifest once a session exists (runtime.py).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Triton's rule: versions are numeric directories that do not start with 0.
VERSION_DIR = re.compile(r"^[1-9][0-9]{0,8}$")
NAME_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
TASKS = ("classification", "embedding")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
DISTANCES = ("squared_euclidean", "euclidean", "cosine")


class BundleError(ValueError):
    """A bundle that does not follow the contract; the message says which rule it breaks."""


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
    graphs: dict[str, dict[str, Any]]
    manifest: dict[str, Any] = field(repr=False)

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
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.graphs["classify"]["outputs"])

    @property
    def has_embedding(self) -> bool:
        return "embedding" in self.graphs["classify"]["outputs"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise BundleError(reason)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_files(path: Path, files: Any) -> None:
    _require(isinstance(files, dict) and files, "manifest 'files' must be a non-empty object")
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} - {"manifest.json"}
    listed = set(files)
    missing, extra = sorted(listed - present), sorted(present - listed)
    _require(not missing, f"files listed in the manifest are missing: {missing}")
    _require(not extra, f"files not listed in the manifest: {extra}")
    for rel, expected in sorted(files.items()):
        _require(isinstance(expected, str), f"sha256 of {rel} must be a string")
        actual = sha256_file(path / rel)
        _require(actual == expected.lower(), f"sha256 mismatch for {rel}: manifest {expected}, file {actual}")


def _check_graph(graphs: dict, key: str, files: dict) -> None:
    graph = graphs[key]
    _require(isinstance(graph, dict), f"graphs.{key} must be an object")
    _require(graph.get("file") in files, f"graphs.{key}.file {graph.get('file')!r} is not among the bundle files")
    for side in ("inputs", "outputs"):
        tensors = graph.get(side)
        _require(isinstance(tensors, dict) and tensors, f"graphs.{key}.{side} must be a non-empty object")
        for tname, spec in tensors.items():
            _require(isinstance(spec, dict) and isinstance(spec.get("dtype"), str)
                     and isinstance(spec.get("dims"), list)
                     and all(isinstance(d, int) and not isinstance(d, bool) for d in spec["dims"]),
                     f"graphs.{key}.{side}.{tname} needs a dtype and integer dims")


def _preprocessing(pre: Any, input_size: tuple[int, int]) -> Preprocessing:
    _require(isinstance(pre, dict), "manifest 'preprocessing' must be an object")
    resize = pre.get("resize", list(input_size))
    _require(isinstance(resize, list) and len(resize) == 2 and all(isinstance(v, int) and v > 0 for v in resize),
             "preprocessing.resize must be [H, W] positive integers")
    _require(tuple(resize) == input_size, f"preprocessing.resize {resize} differs from input dims {list(input_size)}")
    interpolation = pre.get("interpolation", "bilinear")
    _require(interpolation in INTERPOLATIONS, f"preprocessing.interpolation must be one of {INTERPOLATIONS}")
    scale = pre.get("scale", 1 / 255)
    _require(_number(scale) and scale > 0, "preprocessing.scale must be a positive number")
    mean, std = pre.get("mean"), pre.get("std")
    for label, values in (("mean", mean), ("std", std)):
        _require(isinstance(values, list) and len(values) == 3 and all(_number(v) for v in values),
                 f"preprocessing.{label} must be three numbers")
    _require(all(v > 0 for v in std), "preprocessing.std must be positive")
    return Preprocessing(tuple(resize), interpolation, float(scale), tuple(map(float, mean)), tuple(map(float, std)))


def load_bundle(path: Path) -> Bundle:
    """Read and check one bundle directory; raise BundleError saying why it is refused."""
    path = Path(path)
    name, version_dir = path.parent.name, path.name
    _require(NAME_DIR.match(name) is not None, f"model directory name {name!r} is not a valid name")
    _require(VERSION_DIR.match(version_dir) is not None, f"version directory {version_dir!r} is not an integer >= 1")
    manifest_path = path / "manifest.json"
    _require(manifest_path.is_file(), "manifest.json is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"manifest.json is not readable JSON: {e}") from e
    _require(isinstance(manifest, dict), "manifest.json must hold a JSON object")
    _require(manifest.get("format_version") == 1, f"unsupported format_version {manifest.get('format_version')!r}")
    _require(manifest.get("name") == name, f"manifest name {manifest.get('name')!r} differs from directory {name!r}")
    _require(manifest.get("version") == int(version_dir),
             f"manifest version {manifest.get('version')!r} differs from directory {version_dir!r}")
    task = manifest.get("task")
    _require(task in TASKS, f"task must be one of {TASKS}, got {task!r}")

    classes = manifest.get("classes")
    _require(isinstance(classes, list) and all(isinstance(c, str) and c for c in classes),
             "classes must be a list of non-empty strings")
    _require(len(set(classes)) == len(classes), "classes must be unique")
    if task == "classification":
        _require(len(classes) >= 2, "a classification bundle needs at least two classes")

    spec = manifest.get("input")
    _require(isinstance(spec, dict), "manifest 'input' must be an object")
    dims = spec.get("dims")
    _require(isinstance(dims, list) and len(dims) == 3 and dims[0] == 3
             and all(isinstance(d, int) and d > 0 for d in dims), "input.dims must be [3, H, W]")
    _require(spec.get("name", "image") == "image", "the input tensor must be named 'image'")
    input_size = (dims[1], dims[2])
    preprocessing = _preprocessing(manifest.get("preprocessing"), input_size)

    temperature = manifest.get("temperature", 1.0)
    _require(_number(temperature) and temperature > 0, "temperature must be a positive number")
    embedding = manifest.get("embedding") or {}
    _require(isinstance(embedding, dict), "manifest 'embedding' must be an object")
    distance = embedding.get("distance", "squared_euclidean")
    _require(distance in DISTANCES, f"embedding.distance must be one of {DISTANCES}")
    emb_temperature = embedding.get("temperature", 1.0)
    _require(_number(emb_temperature) and emb_temperature > 0, "embedding.temperature must be a positive number")

    files = manifest.get("files")
    _check_files(path, files)
    graphs = manifest.get("graphs")
    _require(isinstance(graphs, dict) and "classify" in graphs, "graphs.classify is missing")
    _check_graph(graphs, "classify", files)
    outputs = graphs["classify"]["outputs"]
    _require("image" in graphs["classify"]["inputs"], "graphs.classify has no 'image' input")
    required = ("probabilities", "logits", "embedding", "features") if task == "classification" \
        else ("embedding", "features")
    missing = [o for o in required if o not in outputs]
    _require(not missing, f"graphs.classify lacks outputs {missing} required for task {task!r}")
    if task == "classification":
        _require(outputs["probabilities"]["dims"][-1] == len(classes),
                 f"probabilities has {outputs['probabilities']['dims'][-1]} columns for {len(classes)} classes")
    if "gradcam" in graphs:
        _check_graph(graphs, "gradcam", files)
        gradcam = graphs["gradcam"]
        _require(set(gradcam["inputs"]) == {"features", "target_class"} and "gradcam" in gradcam["outputs"],
                 "graphs.gradcam must map features, target_class -> gradcam")

    return Bundle(
        name=name, version=int(version_dir), path=path, task=task, classes=tuple(classes),
        input_size=input_size, preprocessing=preprocessing, temperature=float(temperature),
        embedding_distance=distance, embedding_temperature=float(emb_temperature),
        graphs=graphs, manifest=manifest,
    )


def discover(store: Path) -> tuple[list[Bundle], list[tuple[Path, str]]]:
    """Every bundle under `store`, sorted by (name, version), and every refused path with its reason."""
    store = Path(store)
    bundles: list[Bundle] = []
    refused: list[tuple[Path, str]] = []
    if not store.is_dir():
        return bundles, refused
    for model_dir in sorted(p for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                bundles.append(load_bundle(version_dir))
            except BundleError as e:
                refused.append((version_dir, str(e)))
    bundles.sort(key=lambda b: (b.name, b.version))
    return bundles, refused
