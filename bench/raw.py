"""The limit: ONNX Runtime alone on the bundle's own graph, with the service's session options.

The sessions come from `service.runtime.ModelRuntime` built from the same `Settings` the
service subprocess reads, so graph, optimisation level, providers and thread counts are the
service's. Decoding and resizing (`service.imaging`, the service's own code) are timed
separately, per image on one thread, because that is the work each upload adds.
"""
from __future__ import annotations

import time

import numpy as np

from service.imaging import decode_image, preprocess
from service.runtime import ModelRuntime
from service.settings import Settings
from service.store import Bundle

from .images import Sample
from .stats import summarize_ms


def _timed(fn, seconds: float, min_runs: int) -> list[float]:
    """Call `fn` until `seconds` have passed and at least `min_runs` calls were made; each call's duration."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def batch_sizes(max_batch: int) -> list[int]:
    """1, the powers of two below the batcher's maximum, and the maximum itself."""
    sizes, n = [], 1
    while n < max_batch:
        sizes.append(n)
        n *= 2
    return [*sizes, max_batch]


def decode_times(bundle: Bundle, samples: list[Sample], settings: Settings, seconds: float) -> list[float]:
    """Per-image seconds of decode + resize + normalise, cycling over the samples."""
    i = 0

    def one() -> None:
        nonlocal i
        s = samples[i % len(samples)]
        i += 1
        preprocess(decode_image(s.data, max_pixels=settings.max_image_pixels, filename=s.path.name),
                   bundle.preprocessing)

    return _timed(one, seconds, min_runs=len(samples))


def measure(bundle: Bundle, samples: list[Sample], settings: Settings, *, seconds: float,
            min_runs: int = 5, ways: int = 5, shots: int = 5) -> dict:
    """Raw figures for one bundle: per batch size, decode, and embedding a ways x shots support set."""
    runtime = ModelRuntime(bundle, settings)
    tensors = [preprocess(decode_image(s.data, max_pixels=settings.max_image_pixels), bundle.preprocessing)
               for s in samples]
    max_batch = settings.max_batch_size
    batches = {}
    for n in batch_sizes(max_batch):
        x = np.stack([tensors[k % len(tensors)] for k in range(n)])
        runtime.run(x)  # first call at a new shape allocates; not part of the figure
        times = _timed(lambda x=x: runtime.run(x), seconds, min_runs)
        batches[str(n)] = {"batch": n, "calls": len(times), "images_per_s": n * len(times) / sum(times),
                           "latency": summarize_ms(times)}
    best = max(batches.values(), key=lambda b: b["images_per_s"])
    decode = summarize_ms(decode_times(bundle, samples, settings, seconds))
    decode_mean_s = decode["mean_ms"] / 1000
    result = {
        "provider": runtime.provider, "providers": runtime.providers,
        "intra_op_threads": settings.intra_op_threads, "inter_op_threads": settings.inter_op_threads,
        "graph_optimization_level": settings.graph_optimization_level,
        "batches": batches, "max_batch": max_batch, "best_batch": best["batch"],
        "best_images_per_s": best["images_per_s"], "decode": decode,
        # Decode and inference one after the other: the work one image costs on this machine.
        "best_images_per_s_with_decode": 1.0 / (1.0 / best["images_per_s"] + decode_mean_s),
        "batch1_p50_plus_decode_p50_ms": batches["1"]["latency"]["p50_ms"] + decode["p50_ms"],
    }
    if runtime.gradcam_session is not None:
        # The Grad-CAM head alone at batch 1: what /gradcam adds to a classify call.
        feats = runtime.run(np.stack(tensors[:1]))["features"]
        target = np.zeros(1, dtype=np.int64)
        result["gradcam_head"] = summarize_ms(_timed(lambda: runtime.gradcam(feats, target), seconds, min_runs))
    if bundle.has_embedding:
        result["embed_support_set"] = _embed_support(runtime, bundle, samples, settings, seconds, ways * shots)
    return result


def _embed_support(runtime: ModelRuntime, bundle: Bundle, samples: list[Sample], settings: Settings,
                   seconds: float, count: int) -> dict:
    """Decode `count` images and embed them at the batcher's max batch: what /adapt must at least cost."""
    chosen = [samples[k % len(samples)] for k in range(count)]
    step = settings.max_batch_size

    def one() -> None:
        x = [preprocess(decode_image(s.data, max_pixels=settings.max_image_pixels), bundle.preprocessing)
             for s in chosen]
        for start in range(0, count, step):
            runtime.run(np.stack(x[start : start + step]))

    one()
    times = _timed(one, seconds, min_runs=3)
    return {"images": count, "chunk": step, "latency": summarize_ms(times)}
