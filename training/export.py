"""Export a trained network as a bundle: `<store>/<name>/<version>/` per docs/contracts.md section 2.

A bundle holds `model.onnx` (image -> probabilities, logits, embedding, features), `gradcam.onnx`
(features, target_class -> gradcam; the head with its backward pass traced, see gradcam.py),
any extra files (the split), and `manifest.json` with the sha256 of each. Grad-CAM is its own
graph so that classifying never pays for it.

The bundle is built in a hidden staging directory beside its final place, verified there
(hashes, graph signatures, a run at batch 1 and 3, parity with the eager network), and only
then renamed into place; a bundle that fails verification is removed and never published.
Manifests are immutable once written (their hashes are what the service trusts), so every
metric, Grad-CAM localisation included, must be measured before export and passed in.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from models.layers import global_avg

from .gradcam import trace_gradcam
from .verify import FORMAT_VERSION, MANIFEST, TASKS, BundleError, sha256_file, verify_bundle

CLASSIFY_FILE = "model.onnx"
GRADCAM_FILE = "gradcam.onnx"
# fields export owns; extra_manifest may add others (split, recipe, training, ...) but not these
RESERVED = frozenset({"format_version", "name", "version", "task", "classes", "input", "preprocessing",
                      "temperature", "embedding", "graphs", "exported_at", "opset", "files"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION_RE = re.compile(r"^[1-9][0-9]*$")
# example batch for tracing: 2, because torch.export specialises a dimension seen as 0 or 1
_TRACE_BATCH = 2


class ClassifyGraph(nn.Module):
    """image -> (probabilities, logits, embedding, features), or (embedding, features) for an embedding bundle.

    Each output is asked of the network through its public interface, so networks whose
    `forward` is not `head(features(x))` (gated_fusion's fused logits) export as they run;
    the exporter's optimiser merges the repeated backbone computations into one.
    """

    def __init__(self, model: nn.Module, temperature: float, task: str):
        super().__init__()
        self.model = model
        self.temperature = float(temperature)
        self.task = task
        self.derived = _derives_from_features(model)

    def forward(self, image: torch.Tensor):
        features = self.model.features(image)
        if self.derived:
            # tracing the backbone once instead of three times halves the export time
            embedding = global_avg(features)
            logits = self.model.head(features) if self.task == "classification" else None
        else:
            embedding = self.model.embed(image)
            logits = self.model(image) if self.task == "classification" else None
        if self.task == "embedding":
            return embedding, features
        return torch.softmax(logits / self.temperature, dim=1), logits, embedding, features


def _derives_from_features(model: nn.Module) -> bool:
    """True when forward is head(features(x)) and embed is the spatial mean of features(x).

    That holds for every network that keeps the interface's default `forward` and `embed`
    (models._base.Network); a network that overrides either (gated_fusion) is asked separately.
    """
    from models._base import Network

    cls = type(model)
    return isinstance(model, Network) and cls.forward is Network.forward and cls.embed is Network.embed


def next_version(model_dir: Path) -> int:
    """One more than the highest version directory under `model_dir` (1 when there is none)."""
    if not model_dir.is_dir():
        return 1
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)]
    return max(versions, default=0) + 1


def _export_onnx(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
                 opset: int) -> None:
    module.eval()  # the wrappers themselves; the network was put in eval mode by the caller
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = {n: {0: batch} for n in input_names}
    try:
        program = torch.onnx.export(module, args, input_names=input_names, output_names=output_names,
                                    dynamic_shapes=dynamic, dynamo=True, external_data=False,
                                    opset_version=opset, verbose=False)
    except Exception as exc:  # the exporter raises many types; say which graph failed and why
        raise RuntimeError(f"ONNX export of {path.name} failed: {type(exc).__name__}: {exc}") from exc
    program.save(str(path), external_data=False)


def _jsonable(value):
    """numpy and torch scalars in metrics become plain numbers; anything else is a caller's error."""
    if hasattr(value, "item") and getattr(value, "ndim", getattr(value, "dim", lambda: 1)) in (0,):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"manifest value of type {type(value).__name__} is not JSON serialisable")


def _tensor_spec(t: torch.Tensor) -> dict:
    return {"dtype": str(t.dtype).removeprefix("torch."), "dims": [-1, *t.shape[1:]]}


def _check_args(name: str, task: str, classes: Sequence[str], temperature: float, opset: int,
                extra_manifest: Mapping | None, files: Sequence | None) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"bundle name {name!r} must be letters, digits, '_', '.', '-' and not start with a dot")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not classes or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct non-empty strings, got {classes!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if opset < 18:
        raise ValueError(f"opset must be 18 or newer (dynamo exporter), got {opset}")
    clash = RESERVED & set(extra_manifest or {})
    if clash:
        raise ValueError(f"extra_manifest may not set fields export writes: {sorted(clash)}")
    names = [Path(f).name for f in files or ()]
    if len(set(names)) != len(names) or {CLASSIFY_FILE, GRADCAM_FILE, MANIFEST} & set(names):
        raise ValueError(f"extra files must have distinct names other than the bundle's own: {names}")


def export_bundle(model: nn.Module, store, name: str, *, classes: Sequence[str], task: str = "classification",
                  input_size: Sequence[int] | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, temperature: float = 1.0, metrics: Mapping | None = None,
                  extra_manifest: Mapping | None = None, version: int | None = None,
                  files: Sequence | None = None, opset: int = 18) -> Path:
    """Write, verify and publish `<store>/<name>/<version>/`; return its path.

    input_size (H, W), mean and std default to `model.pretrained_cfg`. `temperature` is the
    calibration fitted on validation; it is applied inside model.onnx. `files` are copied into
    the bundle (by base name) and hashed. Raises `BundleError` (and leaves nothing behind) when
    verification fails, `FileExistsError` when the version is taken.
    """
    classes = list(classes)
    _check_args(name, task, classes, temperature, opset, extra_manifest, files)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    if input_size is None:
        if "input_size" not in cfg:
            raise ValueError("input_size not given and model.pretrained_cfg has no input_size")
        input_size = cfg["input_size"][1:]
    height, width = (int(s) for s in input_size)
    mean = [float(v) for v in (mean if mean is not None else cfg["mean"])]
    std = [float(v) for v in (std if std is not None else cfg["std"])]
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std must be 3 values each, std > 0; got {mean}, {std}")

    model_dir = Path(store) / name
    if version is None:
        version = next_version(model_dir)
    elif not (isinstance(version, int) and version >= 1):
        raise ValueError(f"version must be an integer >= 1, got {version!r}")
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"bundle {final} already exists: bundles are immutable, pick another version")

    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f".staging-{version}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    was_training = model.training
    model.eval()
    try:
        example = torch.zeros(_TRACE_BATCH, 3, height, width)
        with torch.no_grad():
            features = model.features(example)
            embedding = model.embed(example)
            logits = model(example) if task == "classification" else None
        if logits is not None and logits.shape[1] != len(classes):
            raise ValueError(f"the network has {logits.shape[1]} outputs but {len(classes)} classes were given")

        classify_outputs = {"embedding": _tensor_spec(embedding), "features": _tensor_spec(features)}
        if logits is not None:
            classify_outputs = {"probabilities": _tensor_spec(logits), "logits": _tensor_spec(logits),
                                **classify_outputs}
        _export_onnx(ClassifyGraph(model, temperature, task), (example,), staging / CLASSIFY_FILE,
                     ["image"], list(classify_outputs), opset)
        graphs = {"classify": {"file": CLASSIFY_FILE,
                               "inputs": {"image": {"dtype": "float32", "dims": [-1, 3, height, width]}},
                               "outputs": classify_outputs}}

        cam_graph = trace_gradcam(model, (height, width), batch=_TRACE_BATCH)
        _export_onnx(cam_graph, (features, torch.zeros(_TRACE_BATCH, dtype=torch.long)), staging / GRADCAM_FILE,
                     ["features", "target_class"], ["gradcam"], opset)
        graphs["gradcam"] = {"file": GRADCAM_FILE,
                             "inputs": {"features": _tensor_spec(features),
                                        "target_class": {"dtype": "int64", "dims": [-1]}},
                             "outputs": {"gradcam": {"dtype": "float32", "dims": [-1, height, width]}},
                             "layer": "features", "method": "autograd traced with make_fx"}

        for f in files or ():
            shutil.copyfile(f, staging / Path(f).name)

        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": version,
            "task": task,
            "architecture": cfg.get("architecture", type(model).__name__),
            "model_args": {**cfg.get("model_args", {}), "num_classes": cfg.get("num_classes", len(classes))},
            "classes": classes,
            "input": {"name": "image", "dtype": "float32", "dims": [3, height, width], "layout": "NCHW",
                      "color": "RGB"},
            "preprocessing": {"resize": [height, width], "interpolation": "bilinear", "scale": 1.0 / 255.0,
                              "mean": mean, "std": std},
            "temperature": float(temperature),
            "embedding": {"dim": int(embedding.shape[1]), "distance": "squared_euclidean", "temperature": 1.0},
            "graphs": graphs,
            "metrics": dict(metrics or {}),
            **dict(extra_manifest or {}),
            "exported_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "opset": opset,
            "files": {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_jsonable) + "\n", encoding="utf-8")

        verify_bundle(staging, model, name=name, version=version)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        model.train(was_training)
    return final


__all__ = ["BundleError", "ClassifyGraph", "export_bundle", "next_version"]
