"""Export a trained network as a bundle: `<store>/<name>/<version>/`, in the `bundle` package's format.

A bundle holds `model.onnx` (image -> probabilities, logits, embedding, features; an embedding
bundle: embedding, features), for a classification bundle `gradcam.onnx` (features, target_class
-> gradcam; the head with its backward pass traced, see gradcam.py), any extra files (the split),
and `manifest.json` with the sha256 of each. A bundle carries the graphs its task needs
(`bundle.TASKS`) and nothing else. Grad-CAM is its own graph so that classifying never pays for it.

The bundle is built in a hidden staging directory beside its final place (`bundle.staging`),
verified there (the contract's checks, a run at batch 1 and 3, parity with the eager network),
and only then renamed into place (`bundle.publish`); a bundle that fails is removed, never published.
Manifests are immutable once written (their hashes are what the service trusts), so every
metric, Grad-CAM localisation included, must be measured before export and passed in.
"""
from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from bundle import (
    CLASSIFY_FILE,
    FORMAT_VERSION,
    GRADCAM_FILE,
    MANIFEST,
    NAME_RE,
    TASKS,
    BundleError,
    OutOfDistribution,
    PixelSize,
    next_version,
    portable,
    publish,
    staging,
    write_manifest,
)
from models.layers import global_avg

from .gradcam import trace_gradcam
from .verify import verify_bundle

# fields export owns; extra_manifest may add others (split, recipe, training, ...) but not these
RESERVED = frozenset({"format_version", "name", "version", "task", "architecture", "model_args", "classes",
                      "input", "preprocessing", "temperature", "embedding", "pixel_size_um", "graphs",
                      "exported_at", "opset", "files", "out_of_distribution"})
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
        self.weighted = _pools_with_weights(model, task)

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
            return (embedding, features, self.model.pool_weights(image)) if self.weighted else (embedding, features)
        return torch.softmax(logits / self.temperature, dim=1), logits, embedding, features


def _pools_with_weights(model: nn.Module, task: str) -> bool:
    """True for an embedding network whose embedding pools `features` with weights (a taught pooling attention):
    its bundle also outputs those weights."""
    return task == "embedding" and getattr(model, "pool_attn", None) is not None


def _derives_from_features(model: nn.Module) -> bool:
    """True when forward is head(features(x)) and embed is the spatial mean of features(x).

    That holds for every network that keeps the interface's default `forward` and `embed`
    (models._base.Network); a network that overrides either (gated_fusion) is asked separately.
    """
    from models._base import Network

    cls = type(model)
    return isinstance(model, Network) and cls.forward is Network.forward and cls.embed is Network.embed


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
    if not NAME_RE.match(name):
        raise ValueError(f"bundle name {name!r} must be 1..128 letters, digits, '_', '.', '-', "
                         "not starting with '.', '_' or '-'")
    if task not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)}, got {task!r}")
    if not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes) \
            or len(classes) < TASKS[task].min_classes:
        raise ValueError(f"classes must be at least {TASKS[task].min_classes} distinct non-empty strings for a "
                         f"{task} bundle, got {classes!r}")
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
                  files: Sequence | None = None, opset: int = 18, model_args: Mapping | None = None,
                  embedding: Mapping | None = None, pixel_size_um: Mapping | None = None,
                  out_of_distribution: Mapping | None = None) -> Path:
    """Write, verify and publish `<store>/<name>/<version>/`; return its path.

    input_size (H, W), mean and std default to `model.pretrained_cfg`. `temperature` is the
    calibration fitted on validation; it is applied inside model.onnx. `model_args` (what
    `models.create_model` needs to rebuild the network) default to the pretrained_cfg's, with
    `num_classes` the number of `classes`. `embedding` adds to the manifest's embedding section
    (`stages`, `pooling`, `description`, `distance`); `pixel_size_um` is the physical size of one
    input pixel (`bundle.PixelSize`). `out_of_distribution` is the flag's score and threshold, calibrated
    on validation images (`bundle.ood.calibrate`; classification only). `files` are copied into the
    bundle (by base name) and hashed.
    Raises `BundleError` (and leaves nothing behind) when verification fails, `FileExistsError`
    when the version is taken.
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

    if pixel_size_um is not None:
        pixel_size_um = PixelSize.model_validate(dict(pixel_size_um)).model_dump()
    if out_of_distribution is not None:
        if task != "classification":
            raise ValueError(f"out_of_distribution scores class logits: a {task} bundle has none")
        out_of_distribution = OutOfDistribution.model_validate(dict(out_of_distribution)).model_dump(
            exclude_none=True)
    if version is None:
        version = next_version(Path(store) / name)
    elif not (isinstance(version, int) and version >= 1):
        raise ValueError(f"version must be an integer >= 1, got {version!r}")

    was_training = model.training
    model.eval()
    try:
        with staging(store, name, version) as staged:
            manifest = _write_graphs(model, staged, task=task, classes=classes, size=(height, width),
                                     temperature=temperature, opset=opset)
            for f in files or ():
                shutil.copyfile(f, staged / Path(f).name)
            embedding_dim = manifest["graphs"]["classify"]["outputs"]["embedding"]["dims"][1]
            parts = model.embedding_parts() if hasattr(model, "embedding_parts") else {}
            manifest = {
                "format_version": FORMAT_VERSION,
                "name": name,
                "version": version,
                "task": task,
                "architecture": cfg.get("architecture", type(model).__name__),
                "model_args": {**cfg.get("model_args", {}), "num_classes": len(classes), **dict(model_args or {})},
                "classes": classes,
                "input": {"name": "image", "dtype": "float32", "dims": [3, height, width], "layout": "NCHW",
                          "color": "RGB"},
                "preprocessing": {"resize": [height, width], "interpolation": "bilinear", "scale": 1.0 / 255.0,
                                  "mean": mean, "std": std},
                "temperature": float(temperature),
                "embedding": {"dim": int(embedding_dim), "distance": "squared_euclidean", "temperature": 1.0,
                              **({"parts": {k: list(v) for k, v in parts.items()}} if parts else {}),
                              **dict(embedding or {})},
                **({"pixel_size_um": pixel_size_um} if pixel_size_um is not None else {}),
                **({"out_of_distribution": out_of_distribution} if out_of_distribution is not None else {}),
                "graphs": manifest["graphs"],
                "metrics": portable(dict(metrics or {})),
                **portable(dict(extra_manifest or {})),
                "exported_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "opset": opset,
            }
            write_manifest(staged, manifest, default=_jsonable)
            verify_bundle(staged, model, name=name, version=version)
            return publish(staged, store, name, version)
    finally:
        model.train(was_training)


def _write_graphs(model: nn.Module, staged: Path, *, task: str, classes: list[str], size: tuple[int, int],
                  temperature: float, opset: int) -> dict:
    """Trace the task's graphs into `staged`; return {"graphs": their manifest section}."""
    height, width = size
    example = torch.zeros(_TRACE_BATCH, 3, height, width)
    with torch.no_grad():
        features = model.features(example)
        embedding = model.embed(example)
        logits = model(example) if task == "classification" else None
    if logits is not None and logits.shape[1] != len(classes):
        raise ValueError(f"the network has {logits.shape[1]} outputs but {len(classes)} classes were given")

    classify_outputs = {"embedding": _tensor_spec(embedding), "features": _tensor_spec(features)}
    if _pools_with_weights(model, task):
        with torch.no_grad():
            classify_outputs["pool_weights"] = _tensor_spec(model.pool_weights(example))
    if logits is not None:
        classify_outputs = {"probabilities": _tensor_spec(logits), "logits": _tensor_spec(logits),
                            **classify_outputs}
    _export_onnx(ClassifyGraph(model, temperature, task), (example,), staged / CLASSIFY_FILE,
                 ["image"], list(classify_outputs), opset)
    graphs = {"classify": {"file": CLASSIFY_FILE,
                           "inputs": {"image": {"dtype": "float32", "dims": [-1, 3, height, width]}},
                           "outputs": classify_outputs}}
    if "gradcam" in TASKS[task].graphs:
        cam_graph = trace_gradcam(model, (height, width), batch=_TRACE_BATCH)
        _export_onnx(cam_graph, (features, torch.zeros(_TRACE_BATCH, dtype=torch.long)), staged / GRADCAM_FILE,
                     ["features", "target_class"], ["gradcam"], opset)
        graphs["gradcam"] = {"file": GRADCAM_FILE,
                             "inputs": {"features": _tensor_spec(features),
                                        "target_class": {"dtype": "int64", "dims": [-1]}},
                             "outputs": {"gradcam": {"dtype": "float32", "dims": [-1, height, width]}},
                             "layer": "features", "method": "autograd traced with make_fx"}
    return {"graphs": graphs}


__all__ = ["RESERVED", "BundleError", "ClassifyGraph", "export_bundle", "next_version"]
