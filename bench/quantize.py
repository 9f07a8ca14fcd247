"""An int8 variant of a classification bundle, and how far it drifts from the fp32 one.

ONNX Runtime static quantization (`quantize_static`, QDQ format, per-channel int8 weights,
uint8 activations, MinMax calibration) of the compute-heavy ops only (Conv, Gemm, MatMul):
softmax and the outputs stay float, so probabilities keep their resolution. Calibration
images come from the bundle's training split (its split.json) when the bundle has one, else
from specimens held apart from the evaluation images. The result is a complete bundle
(`<name>_int8/<version>/`, gradcam.onnx copied, manifest rehashed) that the service loads
like any other; it is measured beside the fp32 bundle on accuracy, Grad-CAM parity and raw speed.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

from service.imaging import decode_image, preprocess
from service.runtime import ModelRuntime
from service.settings import Settings
from service.store import Bundle, load_bundle

from . import raw

QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _group(path: Path) -> str:
    """Specimen or patient id from an EBHI-Seg (`GT2001837-1-...`) or BreakHis (`A_29960CD_...`) name."""
    stem = path.stem
    if "-" in stem:
        return stem.split("-", 1)[0]
    parts = stem.split("_")
    return parts[1] if len(parts) > 2 else stem


def labelled_images(bundle: Bundle, data_dir: Path) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]], str]:
    """(calibration, evaluation) images with class indices, and where they came from."""
    classes = list(bundle.classes)
    split_file = bundle.path / "split.json"
    if split_file.is_file():
        doc = json.loads(split_file.read_text(encoding="utf-8"))
        root = Path(data_dir) / Path(doc["root"]).name  # the split records the trainer's absolute root
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
                for p in sorted(q for q in (folder / c).iterdir() if q.suffix.lower() in SUFFIXES):
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


def quantize_bundle(bundle: Bundle, calibration: np.ndarray, out_store: Path, note: str) -> Bundle:
    """Write `<out_store>/<name>_int8/<version>/` and return it loaded through the service's checks."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = f"{bundle.name}_int8"
    final = Path(out_store) / name / str(bundle.version)
    if final.exists():
        shutil.rmtree(final)
    final.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        # ORT's symbolic shape inference trips on the dynamo graph; ONNX's own inference is enough here.
        quant_pre_process(str(bundle.model_file), str(prepped), skip_symbolic_shape=True)
        quantize_static(str(prepped), str(final / "model.onnx"), _Reader(calibration), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=QUANTIZED_OPS, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    for f in bundle.path.iterdir():
        if f.is_file() and f.name not in ("model.onnx", "manifest.json"):
            shutil.copyfile(f, final / f.name)
    manifest = json.loads((bundle.path / "manifest.json").read_text(encoding="utf-8"))
    manifest.update(
        name=name,
        quantization={"from": bundle.ref, "method": "onnxruntime quantize_static, QDQ, MinMax",
                      "ops": QUANTIZED_OPS, "weights": "int8 per channel", "activations": "uint8",
                      "calibration_images": int(len(calibration)), "calibration_source": note},
        metrics={},  # the fp32 metrics do not describe this graph; the benchmark reports its own
        files={f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(final.iterdir()) if f.is_file()},
    )
    (final / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return load_bundle(final)


def _balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    recalls = [float(np.mean(pred[truth == c] == c)) for c in np.unique(truth)]
    return float(np.mean(recalls))


def compare(bundle: Bundle, data_dir: Path, settings: Settings, out_store: Path, *, calibration_images: int,
            eval_images: int, cam_images: int, seconds: float, samples) -> dict:
    calib_items, eval_items, note = labelled_images(bundle, data_dir)
    calib_items, eval_items = _spread(calib_items, calibration_images), _spread(eval_items, eval_images)
    int8 = quantize_bundle(bundle, _tensors(bundle, calib_items, settings), out_store, note)
    fp32_rt, int8_rt = ModelRuntime(bundle, settings), ModelRuntime(int8, settings)
    x, truth = _tensors(bundle, eval_items, settings), np.array([c for _, c in eval_items])
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
