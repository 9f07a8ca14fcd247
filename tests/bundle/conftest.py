"""A synthetic bundle directory per test: the contract's checks read files and JSON, never run a graph."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bundle import hash_files

CLASSES = ["a", "b", "c"]


def manifest_dict(task: str = "classification", format_version: int = 2, gradcam: bool | None = None) -> dict:
    gradcam = task == "classification" if gradcam is None else gradcam
    outputs = {"embedding": {"dtype": "float32", "dims": [-1, 8]},
               "features": {"dtype": "float32", "dims": [-1, 8, 2, 2]}}
    if task == "classification":
        outputs = {"probabilities": {"dtype": "float32", "dims": [-1, 3]},
                   "logits": {"dtype": "float32", "dims": [-1, 3]}, **outputs}
    graphs = {"classify": {"file": "model.onnx", "inputs": {"image": {"dtype": "float32", "dims": [-1, 3, 16, 16]}},
                           "outputs": outputs}}
    if gradcam:
        graphs["gradcam"] = {"file": "gradcam.onnx",
                             "inputs": {"features": {"dtype": "float32", "dims": [-1, 8, 2, 2]},
                                        "target_class": {"dtype": "int64", "dims": [-1]}},
                             "outputs": {"gradcam": {"dtype": "float32", "dims": [-1, 16, 16]}}, "layer": "features"}
    return {
        "format_version": format_version, "name": "toy", "version": 1, "task": task, "architecture": "toy",
        "model_args": {"num_classes": 3}, "classes": list(CLASSES),
        "input": {"name": "image", "dtype": "float32", "dims": [3, 16, 16], "layout": "NCHW", "color": "RGB"},
        "preprocessing": {"resize": [16, 16], "interpolation": "bilinear", "scale": 1 / 255,
                          "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "temperature": 1.0, "embedding": {"dim": 8, "distance": "squared_euclidean", "temperature": 1.0},
        "graphs": graphs, "metrics": {"test": {"accuracy": 0.5}}, "opset": 18,
        "files": {g["file"]: "0" * 64 for g in graphs.values()},
    }


def write_bundle(root: Path, manifest: dict, name: str | None = None, version: str | None = None) -> Path:
    """`<root>/<name>/<version>/` with a dummy file per graph, hashed into the manifest as written."""
    manifest = copy.deepcopy(manifest)
    path = Path(root) / (name or manifest["name"]) / (version or str(manifest["version"]))
    path.mkdir(parents=True)
    for graph in manifest["graphs"].values():
        (path / graph["file"]).write_bytes(f"graph {graph['file']}".encode())
    manifest["files"] = hash_files(path)
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture
def make_bundle(tmp_path):
    def make(manifest: dict | None = None, **kwargs) -> Path:
        return write_bundle(tmp_path / "store", manifest or manifest_dict(), **kwargs)

    return make
