"""An int8 variant of a classification bundle, and how far it drifts from the fp32 one.

ONNX Runtime static quantization (`quantize_static`, QDQ format, per-channel int8 weights,
uint8 activations, MinMax calibration) of the compute-heavy ops only (Conv, Gemm, MatMul):
softmax and the outputs stay float, so probabilities keep their resolution. Calibration
images come from the bundle's training split (its split.json) when the bundle has one, else
from specimens held apart from the evaluation images (the patient/specimen rule of
`bundle.datasets`, the one training splits by). The result is a complete bundle
(`<name>_int8/<version>/`, gradcam.onnx copied) whose classify graph states its quantization and
the parity tolerance it was accepted under, with the parity measured against the fp32 graph
before publication. It is built in a staging directory, checked by the bundle contract and only
then renamed into place; an existing bundle is never removed (bundles are immutable): the same
quantization of the same source is reused, anything else there is an error. It is measured
beside the fp32 bundle on accuracy, Grad-CAM parity and raw speed.
"""
from __future__ import annotations

import json
import tempfile
import zlib
from pathlib import Path

import numpy as np

from bundle import BundleError, sha256_file, staging, validate_bundle
from bundle.datasets import group_of, is_image, resolve_dataset
from service.imaging import decode_image, preprocess
from service.runtime import ModelRuntime
from service.settings import Settings
from service.store import Bundle, load_bundle

from . import raw
from .derived import publish_copy
from .fp16 import float_weights

QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]
METHOD = "onnxruntime quantize_static, QDQ, MinMax"
# What an int8 classify graph may drift from its fp32 source on the held-out images and still be
# published: probabilities within 0.1 anywhere, the same top-1 class on 90% of the images.
TOLERANCE = {"probabilities_max_abs": 0.1, "top1_agreement_min": 0.9}


def _group(path: Path) -> str:
    """Specimen or patient id (18842D folds into 18842), by the rule training splits by."""
    return group_of(path.name)


def labelled_images(bundle: Bundle, data_dir: Path) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]], str]:
    """(calibration, evaluation) images with class indices, and where they came from."""
    classes = list(bundle.classes)
    split_file = bundle.path / "split.json"
    if split_file.is_file():
        doc = json.loads(split_file.read_text(encoding="utf-8"))
        # format 2 names its dataset; format 1 recorded the trainer's root, whose last part is the name
        root = resolve_dataset(doc.get("dataset") or Path(doc["root"]).name, data_dir)
        parts: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
        for f in doc["files"]:
            if f["split"] in parts and f["class"] in classes:
                parts[f["split"]].append((root / f["path"], classes.index(f["class"])))
        if parts["train"] and parts["test"] and all(p.is_file() for p, _ in parts["test"][:5]):
            return parts["train"], parts["test"], f"the bundle's split ({root}): train for calibration, test for accuracy"
    for folder in sorted(p for p in Path(data_dir).iterdir() if p.is_dir()):
        if all((folder / c).is_dir() for c in classes):
            calib, evaluation = [], []
            for i, c in enumerate(classes):
                for p in sorted(q for q in (folder / c).iterdir() if is_image(q)):
                    # One specimen in five is held out for evaluation; no specimen is on both sides.
                    (evaluation if zlib.crc32(_group(p).encode()) % 5 == 0 else calib).append((p, i))
            return calib, evaluation, f"{folder}: specimens split 4:1 by a hash of the id (the bundle has no split)"
    raise FileNotFoundError(f"no split file in {bundle.path} and no folder of {data_dir} has the classes {classes}")


def _spread(items: list, n: int) -> list:
    step = max(1, len(items) // n)
    return items[::step][:n]


def _tensors(bundle: Bundle, items: list[tuple[Path, int]], settings: Settings) -> np.ndarray:
    return np.stack([preprocess(decode_image(p.read_bytes(), max_pixels=settings.max_image_pixels),
                                bundle.preprocessing) for p, _ in items])


class _Reader:
    """The CalibrationDataReader protocol: one batch-1 feed dict per call, None when done."""

    def __init__(self, images: np.ndarray):
        self._it = iter(images)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {"image": x[None]}


def _parity(fp32: Path, int8: Path, images: np.ndarray) -> dict[str, float]:
    """The int8 classify graph against its fp32 source on `images`, batch 1 (ORT on CPU, one thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sessions = [ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in (fp32, int8)]
    probs = [np.concatenate([s.run(["probabilities"], {"image": x[None]})[0] for x in images]) for s in sessions]
    return {"probabilities_max_abs": float(np.max(np.abs(probs[0] - probs[1]))),
            "top1_agreement": float(np.mean(probs[0].argmax(1) == probs[1].argmax(1))), "images": float(len(images))}


def quantize_bundle(bundle: Bundle, calibration: np.ndarray, out_store: Path, note: str,
                    evaluation: np.ndarray | None = None, tolerance: dict | None = None) -> Bundle:
    """Write `<out_store>/<name>_int8/<version>/` and return it loaded through the service's checks.

    Parity with the fp32 graph is measured on `evaluation` (default: the calibration images) and
    written into the manifest beside `tolerance`; a graph outside it is refused (BundleError), never
    published. An existing bundle at that place is returned when it is this quantization of this
    source (same source hash, method and calibration count), else FileExistsError.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name, version = f"{bundle.name}_int8", bundle.version
    source_sha = sha256_file(bundle.model_file)
    final = Path(out_store) / name / str(version)
    if final.exists():
        existing = validate_bundle(final).manifest.graphs["classify"].quantization
        if (existing is not None and existing.source_sha256 == source_sha and existing.method == METHOD
                and existing.model_extra.get("calibration_images") == int(len(calibration))):
            return load_bundle(final)
        raise FileExistsError(f"{final} exists and is not this quantization of {bundle.ref}: bundles are "
                              "immutable; remove it by hand or pass another --out store")
    with staging(out_store, name, version) as staged:
        with tempfile.TemporaryDirectory() as tmp:
            widened, prepped = Path(tmp) / "float32.onnx", Path(tmp) / "prepped.onnx"
            # float16-weight bundles (bench.fp16) feed their weights through Casts, where the quantizer would
            # take them for activations (per tensor, calibrated): give it the float32 initializers back.
            float_weights(bundle.model_file, widened)
            # ORT's symbolic shape inference trips on the dynamo graph; ONNX's own inference is enough here.
            quant_pre_process(str(widened), str(prepped), skip_symbolic_shape=True)
            quantize_static(str(prepped), str(staged / "model.onnx"), _Reader(calibration),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=QUANTIZED_OPS, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        measured = _parity(bundle.model_file, staged / "model.onnx",
                           evaluation if evaluation is not None else calibration)
        quantization = {
            "precision": "int8", "source": bundle.ref, "source_sha256": source_sha, "method": METHOD,
            "ops": QUANTIZED_OPS, "weights": "int8 per channel", "activations": "uint8",
            "calibration_images": int(len(calibration)), "calibration_source": note,
            "tolerance": dict(tolerance or TOLERANCE), "measured": measured,
        }
        # metrics={}: the fp32 metrics do not describe this graph; the benchmark reports its own
        publish_copy(bundle, staged, out_store, name, version, quantization, graphs=bundle.graphs, metrics={})
    return load_bundle(final)


def _balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    recalls = [float(np.mean(pred[truth == c] == c)) for c in np.unique(truth)]
    return float(np.mean(recalls))


def compare(bundle: Bundle, data_dir: Path, settings: Settings, out_store: Path, *, calibration_images: int,
            eval_images: int, cam_images: int, seconds: float, samples, tolerance: dict | None = None) -> dict:
    calib_items, eval_items, note = labelled_images(bundle, data_dir)
    calib_items, eval_items = _spread(calib_items, calibration_images), _spread(eval_items, eval_images)
    x, truth = _tensors(bundle, eval_items, settings), np.array([c for _, c in eval_items])
    try:
        int8 = quantize_bundle(bundle, _tensors(bundle, calib_items, settings), out_store, note, evaluation=x,
                               tolerance=tolerance)
    except BundleError as e:  # outside its tolerance: not published, and said so
        return {"bundle": f"{bundle.name}_int8/{bundle.version}", "source": note, "refused": str(e),
                "servable": False}
    fp32_rt, int8_rt = ModelRuntime(bundle, settings), ModelRuntime(int8, settings)
    step = settings.max_batch_size
    outs = {}
    for tag, rt in (("fp32", fp32_rt), ("int8", int8_rt)):
        chunks = [rt.run(x[i : i + step]) for i in range(0, len(x), step)]
        outs[tag] = {k: np.concatenate([c[k] for c in chunks]) for k in ("probabilities", "features")}
    pred = {t: o["probabilities"].argmax(1) for t, o in outs.items()}
    result = {"bundle": int8.ref, "path": str(int8.path), "source": note, "calibration_images": len(calib_items),
              "eval_images": len(eval_items),
              "accuracy": {t: float(np.mean(pred[t] == truth)) for t in pred},
              "balanced_accuracy": {t: _balanced_accuracy(pred[t], truth) for t in pred},
              "top1_agreement": float(np.mean(pred["fp32"] == pred["int8"])),
              "max_abs_probability_diff": float(np.max(np.abs(outs["fp32"]["probabilities"]
                                                              - outs["int8"]["probabilities"])))}
    if fp32_rt.gradcam_session is not None:
        n = min(cam_images, len(x))
        target = pred["fp32"][:n].astype(np.int64)
        cams = {t: np.concatenate([fp32_rt.gradcam(outs[t]["features"][i : i + 1], target[i : i + 1])
                                   for i in range(n)]) for t in outs}
        a, b = cams["fp32"].reshape(n, -1), cams["int8"].reshape(n, -1)
        corr = [float(np.corrcoef(u, v)[0, 1]) for u, v in zip(a, b, strict=True) if u.std() > 0 and v.std() > 0]
        result["gradcam"] = {"images": n, "mean_abs_diff": float(np.mean(np.abs(a - b))),
                             "max_abs_diff": float(np.max(np.abs(a - b))),
                             "mean_pearson": float(np.mean(corr)) if corr else None}
    result["raw"] = {t: raw.measure(b, samples, settings, seconds=seconds) for t, b in (("fp32", bundle),
                                                                                      ("int8", int8))}
    speedup = result["raw"]["int8"]["best_images_per_s"] / result["raw"]["fp32"]["best_images_per_s"]
    drop = result["balanced_accuracy"]["fp32"] - result["balanced_accuracy"]["int8"]
    result["speedup_best_batch"] = speedup
    result["servable"] = bool(drop <= 0.01 and speedup > 1.0)
    return result


def compare_all(bundles: list[Bundle], samples, data_dir: Path, settings: Settings, plan, out_store: Path) -> dict:
    quick = plan.mode == "quick"
    results = {}
    for b in bundles:
        if b.task != "classification":
            continue
        results[b.ref] = compare(b, data_dir, settings, out_store, calibration_images=8 if quick else 64,
                                 eval_images=12 if quick else 300, cam_images=4 if quick else 32,
                                 seconds=plan.raw_seconds, samples=samples)
    return results


__all__ = ["compare", "compare_all", "labelled_images", "quantize_bundle"]
