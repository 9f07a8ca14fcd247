"""The limit: ONNX Runtime alone on the bundle's own graph, with the service's session options.

The sessions come from `service.runtime.ModelRuntime` built from the same `Settings` the
service subprocess reads, so graph, optimisation level, providers and thread counts are the
service's, and `concurrent_batches` threads call it at once as the batcher's workers do. When
those settings are not ONNX Runtime's defaults (its own thread count, one caller), the defaults
are timed too, and the reference the service is held to is the better of the two at each
figure: the most images/s, the fastest batch-1 call. Decoding and resizing (`service.imaging`,
the service's own code) are timed separately, per image on one thread, because that is the work
each upload adds.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from service.imaging import decode_image, preprocess
from service.runtime import ModelRuntime, pads_batches
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


def _streams(fn, streams: int, seconds: float, min_runs: int) -> tuple[list[float], float]:
    """`fn` called in `streams` threads at once (as the batcher's workers call ORT); per-call seconds of
    all of them, and the wall time."""
    times: list[list[float]] = [[] for _ in range(streams)]
    threads = [threading.Thread(target=lambda k=k: times[k].extend(_timed(fn, seconds, min_runs)))
               for k in range(streams)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [t for per in times for t in per], time.perf_counter() - started


def batch_table(runtime: ModelRuntime, tensors: list[np.ndarray], max_batch: int, streams: int, *,
                seconds: float, min_runs: int) -> dict:
    """Images/s and per-call latency at each batch size, `streams` callers at once."""
    batches = {}
    for n in batch_sizes(max_batch):
        x = np.stack([tensors[k % len(tensors)] for k in range(n)])
        runtime.run(x)  # first call at a new shape allocates; not part of the figure
        if streams == 1:
            times = _timed(lambda x=x: runtime.run(x), seconds, min_runs)
            wall = sum(times)
        else:
            times, wall = _streams(lambda x=x: runtime.run(x), streams, seconds, min_runs)
        batches[str(n)] = {"batch": n, "calls": len(times), "images_per_s": n * len(times) / wall,
                           "latency": summarize_ms(times)}
    return batches


def measure(bundle: Bundle, samples: list[Sample], settings: Settings, *, seconds: float,
            min_runs: int = 5, ways: int = 5, shots: int = 5) -> dict:
    """Raw figures for one bundle: per batch size, decode, and embedding a ways x shots support set."""
    runtime = ModelRuntime(bundle, settings)
    tensors = [preprocess(decode_image(s.data, max_pixels=settings.max_image_pixels), bundle.preprocessing)
               for s in samples]
    max_batch = settings.max_batch_size
    streams = settings.concurrent_batches
    batches = batch_table(runtime, tensors, max_batch, streams, seconds=seconds, min_runs=min_runs)
    tables, runtimes = [batches], [runtime]
    defaults = None
    if streams != 1 or settings.intra_op_threads != 0:
        default_settings = settings.model_copy(update={"concurrent_batches": 1, "intra_op_threads": 0})
        runtimes.append(ModelRuntime(bundle, default_settings))
        defaults = batch_table(runtimes[-1], tensors, max_batch, 1, seconds=seconds, min_runs=min_runs)
        tables.append(defaults)
    best = max((b for table in tables for b in table.values()), key=lambda b: b["images_per_s"])
    batch1_p50 = min(table["1"]["latency"]["p50_ms"] for table in tables)
    decode = summarize_ms(decode_times(bundle, samples, settings, seconds))
    decode_mean_s = decode["mean_ms"] / 1000
    result = {
        "provider": runtime.provider, "providers": runtime.providers,
        "intra_op_threads": settings.intra_op_threads, "inter_op_threads": settings.inter_op_threads,
        "concurrent_batches": streams, "graph_optimization_level": settings.graph_optimization_level,
        "batches": batches, "ort_defaults_batches": defaults, "max_batch": max_batch,
        "best_batch": best["batch"], "best_from": "ORT defaults" if defaults and best in defaults.values()
        else "service settings", "best_images_per_s": best["images_per_s"], "decode": decode,
        # Decode and inference one after the other: the work one image costs on this machine.
        "best_images_per_s_with_decode": 1.0 / (1.0 / best["images_per_s"] + decode_mean_s),
        "batch1_p50_plus_decode_p50_ms": batch1_p50 + decode["p50_ms"],
    }
    if runtime.gradcam_session is not None:
        # The Grad-CAM head alone at batch 1: what /gradcam adds to a classify call.
        feats = runtime.run(np.stack(tensors[:1]))["features"]
        target = np.zeros(1, dtype=np.int64)
        result["gradcam_head"] = summarize_ms(_timed(lambda: runtime.gradcam(feats, target), seconds, min_runs))
    if bundle.has_embedding:  # the faster of the two sessions, as for the batch tables
        result["embed_support_set"] = min(
            (_embed_support(r, bundle, samples, settings, seconds, ways * shots) for r in runtimes),
            key=lambda e: e["latency"]["p50_ms"])
    return result


def _embed_support(runtime: ModelRuntime, bundle: Bundle, samples: list[Sample], settings: Settings,
                   seconds: float, count: int) -> dict:
    """Decode `count` images and embed them at the batcher's max batch, the last chunk padded to it where the
    service pads: what /adapt must at least cost."""
    chosen = [samples[k % len(samples)] for k in range(count)]
    step = settings.max_batch_size
    pad = pads_batches(settings, runtime.provider)

    def one() -> None:
        x = [preprocess(decode_image(s.data, max_pixels=settings.max_image_pixels), bundle.preprocessing)
             for s in chosen]
        for start in range(0, count, step):
            chunk = np.stack(x[start : start + step])
            if pad and len(chunk) < step:
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            runtime.run(chunk)

    one()
    times = _timed(one, seconds, min_runs=3)
    return {"images": count, "chunk": step, "padded": pad, "latency": summarize_ms(times)}
