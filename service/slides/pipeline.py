"""One slide, start to finish: open, find tissue, tile at the model's resolution, classify, write results.

The HTTP jobs (jobs.py) and the CLI (`python -m service.slides`) both call `run_slide`; they differ only
in the `TileClassifier` they pass: the service's goes through the model's micro-batcher at background
priority, the CLI's calls ONNX Runtime directly. Tiles are read and preprocessed in a worker thread one
batch ahead of the batch being classified, so reading and inference overlap.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..batching import Overloaded
from ..imaging import preprocess
from ..store import Preprocessing
from . import outputs
from .reader import Slide, SlideError, SlideInfo
from .resolution import ModelResolution, model_resolution
from .tiling import build_grid, choose_level, tile_size_px
from .tissue import tissue_mask

log = logging.getLogger("histoserve.slides")

Infer = Callable[[list[np.ndarray]], Awaitable[np.ndarray]]  # preprocessed tiles -> (N, K) probabilities
Progress = Callable[[int, int], None]  # (tiles done, tiles total)

# Slide work off the event loop runs in its own threads, at a lower CPU priority (Linux niceness is per
# thread): on a small machine, decoding tiles must not take the cores from interactive requests.
READ_NICENESS = 10


def _lower_priority() -> None:
    with contextlib.suppress(AttributeError, OSError, PermissionError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), READ_NICENESS)


_READERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="slide-read", initializer=_lower_priority)


async def _in_reader(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(_READERS, fn, *args)


@dataclass
class TileClassifier:
    """What a slide job needs from a model: its classes, input, preprocessing, resolution, and inference."""

    ref: str  # "name/version", or "adapter <id> on name/version"
    classes: list[str]
    input_size: tuple[int, int]  # (H, W)
    preprocessing: Preprocessing
    resolution: ModelResolution | None
    infer: Infer


def _background_submit(model) -> Callable:
    """`model.infer` at background priority when the batcher has lanes, else plain (same sessions either way)."""
    if "priority" in inspect.signature(model.infer).parameters:
        return lambda tiles: model.infer(tiles, priority="background")
    return model.infer


async def _submit_until_taken(submit, tiles: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    # Slide tiles are never dropped: when the queue is full they wait for room and go again.
    while True:
        try:
            return await submit(tiles)
        except Overloaded as e:
            await asyncio.sleep(min(max(e.retry_after, 0.05), 2.0))


def service_classifier(model, adapter=None, *, fallback_mpp: float | None) -> TileClassifier:
    """A loaded model (service/registry.py) and optionally an adapter built on it, as a TileClassifier."""
    bundle = model.bundle
    submit = _background_submit(model)
    resolution = model_resolution(bundle.manifest, tuple(bundle.input_size), fallback_mpp)
    if adapter is None:
        async def infer(tiles: list[np.ndarray]) -> np.ndarray:
            rows = await _submit_until_taken(submit, tiles)
            return np.stack([r["probabilities"] for r in rows]).astype(np.float32)

        return TileClassifier(bundle.ref, list(bundle.classes), tuple(bundle.input_size), bundle.preprocessing,
                              resolution, infer)

    async def infer_adapter(tiles: list[np.ndarray]) -> np.ndarray:
        rows = await _submit_until_taken(submit, tiles)
        embeddings = np.stack([r["embedding"] for r in rows]).astype(np.float32)
        return adapter.classify(embeddings).astype(np.float32)

    return TileClassifier(f"adapter {adapter.id} on {bundle.ref}", list(adapter.classes), tuple(bundle.input_size),
                          bundle.preprocessing, resolution, infer_adapter)


def probe(path: Path, mpp: float | None) -> SlideInfo:
    """Open and close a slide: its info, or the SlideError that says why it cannot be used."""
    with Slide(path, mpp) as slide:
        info = slide.info
        # A header that opens is not enough (truncated files open): read one small region too.
        slide.read(0, 0, len(info.level_dimensions) - 1, (1, 1))
        return info


def _thumbnail_side(info: SlideInfo, tile_w: int, tile_h: int) -> int:
    # At least ~8 mask pixels across a tile, within 512..2048 px on the long side.
    tiles_across = max(info.width / tile_w, info.height / tile_h)
    return int(min(2048, max(512, tiles_across * 8)))


async def run_slide(path: Path, classifier: TileClassifier, out_dir: Path, *, mpp: float | None = None,
                    tile_size: int | None = None, level: int | None = None, max_tiles: int, batch_size: int,
                    progress: Progress | None = None) -> dict:
    """Classify every tissue tile of one slide and write the results into `out_dir`; return the summary.

    Raises SlideError for a slide that cannot be used (the job fails with its message).
    """
    started = time.perf_counter()
    progress = progress or (lambda done, total: None)
    slide = await _in_reader(Slide, path, mpp)
    try:
        info = slide.info
        tile_w, tile_h = tile_size_px(info, classifier.resolution, tile_size)
        level, read_w, read_h = choose_level(info, tile_w, tile_h, classifier.input_size, slide.best_level, level)
        thumbnail = await _in_reader(slide.thumbnail, _thumbnail_side(info, tile_w, tile_h))
        mask = await _in_reader(tissue_mask, thumbnail)
        grid = build_grid(info, mask, tile_w, tile_h, level, read_w, read_h)
        total = len(grid.coords)
        if total > max_tiles:
            raise SlideError(422, "too_many_tiles", f"the slide has {total} tissue tiles at the model's resolution; "
                             f"the limit is {max_tiles} (HISTOSERVE_SLIDE_MAX_TILES)")
        progress(0, total)

        def read_batch(start: int) -> list[np.ndarray]:
            tensors = []
            for x, y in grid.coords[start : start + batch_size].tolist():
                img = slide.read(x, y, grid.level, (grid.read_w, grid.read_h))
                tensors.append(preprocess(img, classifier.preprocessing))
            return tensors

        probabilities = np.zeros((total, len(classifier.classes)), dtype=np.float32)
        pending = asyncio.ensure_future(_in_reader(read_batch, 0)) if total else None
        try:
            for start in range(0, total, batch_size):
                tiles = await pending
                nxt = start + batch_size
                pending = asyncio.ensure_future(_in_reader(read_batch, nxt)) if nxt < total else None
                probabilities[start : start + len(tiles)] = await classifier.infer(tiles)
                progress(min(nxt, total), total)
        finally:
            if pending is not None:
                # A worker thread cannot be cancelled: let its read finish (and drop it) before closing.
                await asyncio.wait([pending])
                if not pending.cancelled():
                    pending.exception()
        await _in_reader(lambda: outputs.write_results(
            out_dir, coords=grid.coords, size=(tile_w, tile_h), probabilities=probabilities, tissue=grid.tissue,
            classes=classifier.classes, thumbnail=thumbnail, slide_size=(info.width, info.height)))
    finally:
        await _in_reader(slide.close)
    seconds = time.perf_counter() - started
    fractions = outputs.tissue_fractions(probabilities, grid.tissue, classifier.classes)
    tissue_mm2 = float(mask.mean()) * info.width * info.height * info.mpp_x * info.mpp_y / 1e6
    return {
        "slide": info.summary(),
        "model": classifier.ref,
        "model_resolution": classifier.resolution.summary() if classifier.resolution else None,
        "tiling": grid.summary(),
        "tissue_area_mm2": round(tissue_mm2, 4),
        "tiles_classified": total,
        "class_fractions": fractions,
        "answer": outputs.slide_answer(fractions),
        "seconds": round(seconds, 3),
        "tiles_per_second": round(total / seconds, 3) if seconds > 0 else None,
    }
