"""Verify a bundle: the contract's checks, a run of every graph, and parity with PyTorch.

The contract is the `bundle` package (docs/contracts.md section 2): its `validate_bundle` and
`check_io` are the checks the service runs too; this module adds what needs the graphs run and
torch (parity), and is the training side's gate, run by `export_bundle` before a bundle is
published and by `python -m training verify`.

Every failure raises `BundleError` with a message that names the file or field at fault.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bundle import (
    FORMAT_VERSION,
    MANIFEST,
    TASKS,
    BundleError,
    ValidBundle,
    check_io,
    read_manifest,
    sha256_file,
    validate_bundle,
)

__all__ = ["FORMAT_VERSION", "MANIFEST", "TASKS", "BundleError", "open_graphs", "read_manifest", "sha256_file",
           "verify_bundle"]

PARITY_SEED = 0
PARITY_BATCH = 3
# logits, embedding, features: max abs diff relative to the tensor's largest value. The contract
# bounds probabilities and Grad-CAM; this catches a wrong graph (errors of the tensor's own scale)
# while allowing float32 drift: a random 110-layer CBAM network drifts 0.6% of its feature scale.
RAW_RTOL = 1e-2


def _session_options():
    """One thread, no spinning: verify runs tiny batches, and idle ORT threads spinning beside
    the eager PyTorch parity run would only steal its CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def open_graphs(valid: ValidBundle) -> dict:
    """ONNX Runtime sessions per graph of the bundle's task, each checked against the manifest (check_io)."""
    import onnx
    import onnxruntime as ort

    manifest = valid.manifest
    sessions = {}
    for key, spec in manifest.served_graphs().items():
        path = valid.path / spec.file
        try:
            proto = onnx.load(str(path), load_external_data=False)
            sess = ort.InferenceSession(str(path), _session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnx and ORT raise several unrelated types for a corrupt file
            raise BundleError(f"{path}: graph {key!r} does not load ({type(exc).__name__}: {exc})") from exc
        opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if opset < 18 or (manifest.opset is not None and opset != manifest.opset):
            raise BundleError(f"{path}: opset {opset} (manifest says {manifest.opset}, contract needs >= 18)")
        try:
            check_io(sess, spec, key)
        except BundleError as exc:
            raise BundleError(f"{path}: {exc}") from None
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
    for key, spec in manifest.served_graphs().items():
        for name, tspec in spec.outputs.items():
            want = [batch if d == -1 else d for d in tspec.dims]
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
    temperature = float(manifest.temperature)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = {"features": model.features(x), "embedding": model.embed(x)}
            if "pool_weights" in outs:
                ref["pool_weights"] = model.pool_weights(x)
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
    valid = validate_bundle(Path(bundle_dir), name=name, version=version)
    manifest = valid.manifest
    sessions = open_graphs(valid)

    rng = np.random.default_rng(PARITY_SEED)
    dims = manifest.input.dims
    report = {"bundle": str(bundle_dir), "name": manifest.name, "version": manifest.version,
              "format_version": manifest.format_version, "task": manifest.task,
              "files_checked": len(manifest.files), "graphs": sorted(sessions)}
    for batch in (1, PARITY_BATCH):
        images = rng.standard_normal((batch, *dims)).astype(np.float32)
        outs = _run_all(sessions, images, None)
        _check_run(manifest, outs, batch)
    report["batch_sizes_run"] = [1, PARITY_BATCH]
    if model is not None:
        # the last batch again, explaining a class other than the predicted one too
        parity = _parity(model, manifest, images, outs, atol_probs, atol_cam)
        if "gradcam" in sessions:
            other = (outs["target_class"] + 1) % max(1, len(manifest.classes))
            outs2 = _run_all(sessions, images, other.astype(np.int64))
            parity["gradcam_other_class_max_abs_diff"] = _parity(
                model, manifest, images, {"gradcam": outs2["gradcam"], "target_class": outs2["target_class"],
                                          "features": outs2["features"], "embedding": outs2["embedding"]},
                atol_probs, atol_cam)["gradcam_max_abs_diff"]
        report["parity"] = parity
    return report
