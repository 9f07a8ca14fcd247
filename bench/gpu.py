"""Every bundle of a store on CUDA against the same bundle on the CPU, through the service's own runtime
(IOBinding on CUDA, as the service runs it), on the real EBHI-Seg images the benchmark uses.

    python -m bench.gpu [--store model_store] [--data-dir ../shared/data] [--per-class 16]

For each bundle: the providers ONNX Runtime really gave each session (a CUDA session that fell back to
the CPU is a failure, not a pass), every output of the classify graph compared in `TOLERANCE`'s terms,
and the Grad-CAM graph's maps on each side's own features. `TOLERANCE` is the one a float16 copy must
meet against its fp32 source (bench.fp16), with a bound on the Grad-CAM maps beside it: a GPU may drift
from the CPU no further than the contract lets a lighter copy drift. Writes
bench/results/gpu-parity-<timestamp>.json; exits 1 when ONNX Runtime offers no CUDA or a bundle fails.
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bundle import Tolerance
from service.imaging import decode_image, preprocess
from service.runtime import ModelRuntime
from service.settings import Settings
from service.store import Bundle, discover

from .fp16 import TOLERANCE as COPY_TOLERANCE
from .fp16 import compare
from .images import REPO_ROOT, default_data_dir, load_samples
from .report import command_line, write_results

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
GRADCAM_MAX_ABS = 0.02  # maps are in [0, 1]
TOLERANCE = {task: Tolerance(**bounds, gradcam_max_abs=GRADCAM_MAX_ABS) for task, bounds in COPY_TOLERANCE.items()}
BATCH = 8


def outputs(runtime: ModelRuntime, images: np.ndarray) -> dict[str, np.ndarray]:
    chunks = [runtime.run(images[i : i + BATCH]) for i in range(0, len(images), BATCH)]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def gradcam_maps(runtime: ModelRuntime, features: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.concatenate([runtime.gradcam(features[i : i + BATCH], target[i : i + BATCH])
                           for i in range(0, len(features), BATCH)])


def check(bundle: Bundle, samples: list[bytes], store: Path) -> dict:
    max_pixels = Settings(model_store=store).max_image_pixels
    images = np.stack([preprocess(decode_image(data, max_pixels=max_pixels), bundle.preprocessing) for data in samples])
    cpu = ModelRuntime(bundle, Settings(model_store=store, providers=[CPU]))
    gpu = ModelRuntime(bundle, Settings(model_store=store, providers=[CUDA, CPU]))
    sessions = {"classify": gpu.session.get_providers()}
    if gpu.gradcam_session is not None:
        sessions["gradcam"] = gpu.gradcam_session.get_providers()
    entry = {"bundle": bundle.ref, "task": bundle.task, "cuda_sessions": sessions,
             "io_binding": gpu.io_binding_device}
    fell_back = [k for k, providers in sessions.items() if providers[0] != CUDA]
    if fell_back:
        return {**entry, "passed": False, "problems": [f"{k} session fell back to {sessions[k][0]}" for k in fell_back]}
    a, b = outputs(cpu, images), outputs(gpu, images)
    task = "classification" if bundle.task == "classification" else "embedding"
    measured = compare(a, b, task)
    if gpu.gradcam_session is not None:
        target = a["probabilities"].argmax(1).astype(np.int64) if "probabilities" in a else np.zeros(len(images), np.int64)
        measured["gradcam_max_abs"] = float(np.max(np.abs(gradcam_maps(cpu, a["features"], target)
                                                          - gradcam_maps(gpu, b["features"], target))))
    broken = TOLERANCE[task].broken_by(measured)
    return {**entry, "measured": measured, "tolerance": TOLERANCE[task].model_dump(exclude_none=True),
            "passed": not broken, "problems": [f"breaks {k}" for k in broken]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=None, help="default: the service's, HISTOSERVE_MODEL_STORE or model_store/")
    p.add_argument("--data-dir", type=Path, default=None, help="folder holding ebhi_seg/ (default: ../shared/data)")
    p.add_argument("--per-class", type=int, default=16, help="images of each EBHI-Seg class (as the benchmark)")
    p.add_argument("--results-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    args = p.parse_args(argv)
    store = args.store or Settings().model_store
    result = {"command": command_line("bench.gpu", argv), "onnxruntime": ort.__version__,
              "available_providers": ort.get_available_providers(), "device": ort.get_device(),
              "host": platform.node(), "timestamp": dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")}
    if CUDA not in result["available_providers"]:
        result["problems"] = [f"this onnxruntime offers no {CUDA}: install the gpu extra on a host with CUDA 13"]
    else:
        samples = [s.data for s in load_samples(args.data_dir or default_data_dir(), args.per_class)]
        bundles, refused = discover(store)
        result["refused"] = [f"{path}: {why}" for path, why in refused]
        result["bundles"] = [check(b, samples, store) for b in bundles]
        result["problems"] = [f"{e['bundle']}: {q}" for e in result["bundles"] for q in e["problems"]]
    write_results(args.results_dir, f"gpu-parity-{result['timestamp']}.json", result)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
