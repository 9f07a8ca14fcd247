"""Verify a bundle: manifest, file hashes, graph signatures, a run of every graph, and parity with PyTorch.

The bundle format is docs/contracts.md section 2. The service runs the same structural checks
(it cannot run the parity check: it has no torch); this module is the training side's gate,
run by `export_bundle` before a bundle is published and by `python -m training verify`.

Every failure raises `BundleError` with a message that names the file or field at fault.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
TASKS = ("classification", "embedding")
REQUIRED_KEYS = ("format_version", "name", "version", "task", "architecture", "classes", "input",
                 "preprocessing", "temperature", "graphs", "files")
# the tensors each graph must carry, by task (contracts.md section 2)
CLASSIFY_OUTPUTS = {
    "classification": ("probabilities", "logits", "embedding", "features"),
    "embedding": ("embedding", "features"),
}
GRADCAM_INPUTS = ("features", "target_class")
GRADCAM_OUTPUTS = ("gradcam",)
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(double)": "float64",
               "tensor(int32)": "int32", "tensor(float16)": "float16"}
_VERSION_RE = re.compile(r"^[1-9][0-9]*$")
PARITY_SEED = 0
PARITY_BATCH = 3
# logits, embedding, features: max abs diff relative to the tensor's largest value. The contract
# bounds probabilities and Grad-CAM; this catches a wrong graph (errors of the tensor's own scale)
# while allowing float32 drift: a random 110-layer CBAM network drifts 0.6% of its feature scale.
RAW_RTOL = 1e-2


class BundleError(Exception):
    """A bundle that must not be served; the message says which file or field is wrong."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(bundle_dir: Path) -> dict:
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: missing file {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: manifest does not parse as JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: manifest must be a JSON object, got {type(manifest).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{path}: manifest lacks required field(s) {missing}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise BundleError(f"{path}: format_version {manifest['format_version']!r} is not {FORMAT_VERSION}")
    if manifest["task"] not in TASKS:
        raise BundleError(f"{path}: task {manifest['task']!r} is not one of {TASKS}")
    return manifest


def check_location(bundle_dir: Path, manifest: dict, name: str | None = None, version: int | None = None) -> None:
    """The manifest's name and version equal the directory names (or the expected ones, for a staging dir)."""
    bundle_dir = Path(bundle_dir)
    if name is None:
        name = bundle_dir.resolve().parent.name
    if version is None:
        if not _VERSION_RE.match(bundle_dir.resolve().name):
            raise BundleError(f"{bundle_dir}: version directory {bundle_dir.name!r} is not an integer >= 1 without a leading zero")
        version = int(bundle_dir.resolve().name)
    if manifest["name"] != name:
        raise BundleError(f"{bundle_dir}: manifest name {manifest['name']!r} does not match the directory name {name!r}")
    if type(manifest["version"]) is not int or manifest["version"] != version:
        raise BundleError(f"{bundle_dir}: manifest version {manifest['version']!r} does not match the version directory {version}")


def check_files(bundle_dir: Path, manifest: dict) -> int:
    """Every file but manifest.json is listed with its sha256, and nothing else is there. Returns the count."""
    bundle_dir = Path(bundle_dir)
    listed = manifest["files"]
    if not isinstance(listed, dict):
        raise BundleError(f"{bundle_dir}: manifest 'files' must map file names to sha256")
    present = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()} - {MANIFEST}
    for rel in sorted(set(listed) - present):
        raise BundleError(f"{bundle_dir}: missing file {rel!r} (listed in the manifest)")
    for rel in sorted(present - set(listed)):
        raise BundleError(f"{bundle_dir}: extra file {rel!r} not listed in the manifest")
    for rel, expected in sorted(listed.items()):
        actual = sha256_file(bundle_dir / rel)
        if actual != expected:
            raise BundleError(f"{bundle_dir}: wrong sha256 for {rel!r}: manifest says {expected}, file has {actual}")
    return len(listed)


def _check_contract(manifest: dict) -> None:
    """The manifest's graph section names the tensors the contract requires, with consistent dims."""
    graphs = manifest["graphs"]
    if not isinstance(graphs, dict) or "classify" not in graphs:
        raise BundleError("manifest: graphs must contain 'classify'")
    for key, spec in graphs.items():
        for field in ("file", "inputs", "outputs"):
            if field not in spec:
                raise BundleError(f"manifest: graphs.{key} lacks {field!r}")
    classify = graphs["classify"]
    dims = manifest["input"]["dims"]
    if list(classify["inputs"]) != ["image"] or classify["inputs"]["image"]["dims"] != [-1, *dims]:
        raise BundleError(f"manifest: graphs.classify.inputs must be exactly image [-1, *{dims}], "
                          f"got {classify['inputs']}")
    want = CLASSIFY_OUTPUTS[manifest["task"]]
    if sorted(classify["outputs"]) != sorted(want):
        raise BundleError(f"manifest: graphs.classify.outputs for task {manifest['task']!r} must be {list(want)}, "
                          f"got {sorted(classify['outputs'])}")
    if manifest["task"] == "classification":
        n = len(manifest["classes"])
        for out in ("probabilities", "logits"):
            if classify["outputs"][out]["dims"] != [-1, n]:
                raise BundleError(f"manifest: {out} dims {classify['outputs'][out]['dims']} do not match "
                                  f"{n} classes")
    if "gradcam" in graphs:
        cam = graphs["gradcam"]
        if sorted(cam["inputs"]) != sorted(GRADCAM_INPUTS) or list(cam["outputs"]) != list(GRADCAM_OUTPUTS):
            raise BundleError(f"manifest: graphs.gradcam must map {list(GRADCAM_INPUTS)} -> {list(GRADCAM_OUTPUTS)}")
        if cam["inputs"]["features"]["dims"] != classify["outputs"]["features"]["dims"]:
            raise BundleError("manifest: gradcam features dims differ from the classify graph's features")
        if cam["outputs"]["gradcam"]["dims"] != [-1, *dims[1:]]:
            raise BundleError(f"manifest: gradcam dims {cam['outputs']['gradcam']['dims']} are not [-1, H, W] "
                              f"of the input {dims}")


def _signature(args) -> dict:
    return {a.name: {"dtype": _ORT_DTYPES.get(a.type, a.type),
                     "dims": [d if isinstance(d, int) else -1 for d in a.shape]} for a in args}


def _session_options():
    """One thread, no spinning: verify runs tiny batches, and idle ORT threads spinning beside
    the eager PyTorch parity run would only steal its CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def open_graphs(bundle_dir: Path, manifest: dict) -> dict:
    """ONNX Runtime sessions per graph, after checking each graph's inputs/outputs against the manifest."""
    import onnx
    import onnxruntime as ort

    sessions = {}
    for key, spec in manifest["graphs"].items():
        path = Path(bundle_dir) / spec["file"]
        if spec["file"] not in manifest["files"]:
            raise BundleError(f"{path}: graph {key!r} file is not listed (hashed) in the manifest")
        try:
            proto = onnx.load(str(path), load_external_data=False)
            sess = ort.InferenceSession(str(path), _session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnx and ORT raise several unrelated types for a corrupt file
            raise BundleError(f"{path}: graph {key!r} does not load ({type(exc).__name__}: {exc})") from exc
        opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if opset < 18 or ("opset" in manifest and opset != manifest["opset"]):
            raise BundleError(f"{path}: opset {opset} (manifest says {manifest.get('opset')}, contract needs >= 18)")
        for side, args in (("inputs", sess.get_inputs()), ("outputs", sess.get_outputs())):
            actual = _signature(args)
            if actual != spec[side]:
                raise BundleError(f"{path}: graph {key!r} {side} do not match the manifest: "
                                  f"graph has {actual}, manifest says {spec[side]}")
        sessions[key] = sess
    return sessions


def _run_all(sessions: dict, images: np.ndarray, targets: np.ndarray | None) -> dict:
    classify = sessions["classify"]
    names = [o.name for o in classify.get_outputs()]
    outs = dict(zip(names, classify.run(None, {"image": images}), strict=True))
    if "gradcam" in sessions:
        if targets is None:
            targets = (outs["logits"].argmax(1) if "logits" in outs else np.zeros(len(images))).astype(np.int64)
        outs["gradcam"] = sessions["gradcam"].run(None, {"features": outs["features"], "target_class": targets})[0]
        outs["target_class"] = targets
    return outs


def _check_run(manifest: dict, outs: dict, batch: int) -> None:
    """Shapes per the manifest with the batch filled in; probabilities sum to 1; maps lie in [0, 1]."""
    for key, spec in manifest["graphs"].items():
        for name, tspec in spec["outputs"].items():
            want = [batch if d == -1 else d for d in tspec["dims"]]
            if list(outs[name].shape) != want:
                raise BundleError(f"graph {key!r} output {name!r} has shape {list(outs[name].shape)} at batch {batch}, "
                                  f"expected {want}")
            if not np.isfinite(outs[name]).all():
                raise BundleError(f"graph {key!r} output {name!r} is not finite at batch {batch}")
    if "probabilities" in outs and not np.allclose(outs["probabilities"].sum(1), 1.0, atol=1e-4):
        raise BundleError("probabilities do not sum to 1")
    if "gradcam" in outs and (outs["gradcam"].min() < 0 or outs["gradcam"].max() > 1):
        raise BundleError(f"gradcam values leave [0, 1]: [{outs['gradcam'].min()}, {outs['gradcam'].max()}]")


def _parity(model, manifest: dict, images: np.ndarray, outs: dict, atol_probs: float, atol_cam: float) -> dict:
    """Compare the ONNX outputs with the eager network on the same images; raise beyond tolerance."""
    import torch

    from .gradcam import gradcam_reference

    x = torch.from_numpy(images)
    temperature = float(manifest["temperature"])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = {"features": model.features(x), "embedding": model.embed(x)}
            if "logits" in outs:
                ref["logits"] = model(x)
                ref["probabilities"] = torch.softmax(ref["logits"] / temperature, dim=1)
        if "gradcam" in outs:
            ref["gradcam"] = gradcam_reference(model, x, torch.from_numpy(outs["target_class"]))
    finally:
        model.train(was_training)
    report = {}
    for name, value in ref.items():
        diff = float(np.abs(outs[name] - value.numpy()).max())
        report[f"{name}_max_abs_diff"] = diff
        if name == "probabilities":
            ok = diff <= atol_probs
        elif name == "gradcam":
            ok = diff <= atol_cam
        else:
            # raw tensors are unbounded and float32 error grows with depth and scale (a 110-layer
            # network reaches 1e2..1e7): compare with the tensor's own scale, not element by element
            ok = diff <= RAW_RTOL * max(1.0, float(np.abs(value.numpy()).max()))
        if not ok:
            tol = atol_probs if name == "probabilities" else atol_cam if name == "gradcam" else f"{RAW_RTOL} x scale"
            raise BundleError(f"parity: ONNX {name!r} differs from eager PyTorch by {diff:.3g} (tolerance {tol})")
    return report


def verify_bundle(bundle_dir, model=None, *, atol_probs: float = 1e-4, atol_cam: float = 1e-3,
                  name: str | None = None, version: int | None = None) -> dict:
    """Check a bundle end to end and return a report; raise `BundleError` naming the first problem.

    Checks: manifest parses and has the contract's fields; name/version match the path (or the
    given `name`/`version`, which export uses while the bundle sits in a staging directory);
    every file's sha256, with no file missing or unlisted; each graph's inputs/outputs equal the
    manifest's; the graphs run at batch 1 and 3 with the right shapes; with `model`, parity with
    eager PyTorch (probabilities within `atol_probs`, Grad-CAM within `atol_cam` of autograd).
    """
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: not a bundle directory")
    manifest = read_manifest(bundle_dir)
    check_location(bundle_dir, manifest, name, version)
    n_files = check_files(bundle_dir, manifest)
    _check_contract(manifest)
    sessions = open_graphs(bundle_dir, manifest)

    rng = np.random.default_rng(PARITY_SEED)
    dims = manifest["input"]["dims"]
    report = {"bundle": str(bundle_dir), "name": manifest["name"], "version": manifest["version"],
              "task": manifest["task"], "files_checked": n_files, "graphs": sorted(sessions)}
    for batch in (1, PARITY_BATCH):
        images = rng.standard_normal((batch, *dims)).astype(np.float32)
        outs = _run_all(sessions, images, None)
        _check_run(manifest, outs, batch)
    report["batch_sizes_run"] = [1, PARITY_BATCH]
    if model is not None:
        # the last batch again, explaining a class other than the predicted one too
        parity = _parity(model, manifest, images, outs, atol_probs, atol_cam)
        if "gradcam" in sessions:
            other = (outs["target_class"] + 1) % max(1, len(manifest["classes"]))
            outs2 = _run_all(sessions, images, other.astype(np.int64))
            parity["gradcam_other_class_max_abs_diff"] = _parity(
                model, manifest, images, {"gradcam": outs2["gradcam"], "target_class": outs2["target_class"],
                                          "features": outs2["features"], "embedding": outs2["embedding"]},
                atol_probs, atol_cam)["gradcam_max_abs_diff"]
        report["parity"] = parity
    return report
