"""`python -m service.slides SLIDE... --model NAME --out DIR`: slide jobs without HTTP, over the same pipeline.

Each slide gets `DIR/<slide name>/` with tiles.geojson, tiles.csv, heatmap.png, thumbnail.png and
summary.json, exactly what a POST /slides job writes. ONNX Runtime runs in this process (no batcher:
nothing else competes for it). A slide that cannot be used is reported and skipped; the exit status
is 1 when any slide failed, 2 for a usage error.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..settings import MODEL_REF, Settings
from ..store import discover
from .pipeline import TileClassifier, run_slide
from .reader import SlideError
from .resolution import model_resolution


class ProgressBar:
    """One line on stderr, redrawn at most ten times a second."""

    def __init__(self, label: str, stream=sys.stderr):
        self.label, self.stream, self.last = label, stream, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < 0.1:
            return
        self.last = now
        width = 30
        filled = width if total == 0 else int(width * done / total)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} tiles")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _classifier(store: Path, ref: str | None, settings: Settings) -> TileClassifier:
    from ..runtime import ModelRuntime

    bundles, refused = discover(store)
    for path, reason in refused:
        print(f"note: refusing bundle {path}: {reason}", file=sys.stderr)
    candidates = [b for b in bundles if b.task == "classification"]
    if ref is not None:
        name, _, version = ref.partition("/")
        candidates = [b for b in bundles if b.name == name and (not version or b.version == int(version))]
    if not candidates:
        raise SystemExit(f"error: no classification bundle {ref or ''} in {store} "
                         f"(found {[b.ref for b in bundles]})")
    first = min(b.name for b in candidates)  # no --model: the first classifier by name, its highest version
    bundle = max((b for b in candidates if b.name == first), key=lambda b: b.version)
    if bundle.task != "classification":
        raise SystemExit(f"error: {bundle.ref} is an embedding bundle; the CLI classifies with classifiers only")
    runtime = ModelRuntime(bundle, settings)

    async def infer(tiles: list[np.ndarray]) -> np.ndarray:
        out = await asyncio.to_thread(runtime.run, np.stack(tiles))
        return out["probabilities"].astype(np.float32)

    return TileClassifier(bundle.ref, list(bundle.classes), tuple(bundle.input_size), bundle.preprocessing,
                          model_resolution(bundle.manifest, tuple(bundle.input_size), settings.slide_model_mpp), infer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.slides", description=__doc__.splitlines()[0])
    parser.add_argument("slides", nargs="+", type=Path, help="slide files (SVS, NDPI, pyramidal TIFF, DICOM...)")
    parser.add_argument("--model", default=None, help="name or name/version; default: the first classifier")
    parser.add_argument("--out", required=True, type=Path, help="results go to OUT/<slide name>/")
    parser.add_argument("--store", type=Path, default=None, help="model store (default: HISTOSERVE_MODEL_STORE)")
    parser.add_argument("--mpp", type=float, default=None, help="microns per level-0 pixel (overrides the slide)")
    parser.add_argument("--tile-size", type=int, default=None, help="level-0 pixels per tile (overrides the model)")
    parser.add_argument("--level", type=int, default=None, help="pyramid level to read (default: the nearest)")
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per ONNX Runtime call")
    args = parser.parse_args(argv)
    if args.model is not None and not MODEL_REF.match(args.model):
        parser.error(f"--model {args.model!r} is not a name or name/version")
    settings = Settings()
    classifier = _classifier(args.store or settings.model_store, args.model, settings)
    failed = 0
    for path in args.slides:
        out_dir = args.out / path.name
        try:
            summary = asyncio.run(run_slide(path, classifier, out_dir, mpp=args.mpp, tile_size=args.tile_size,
                                            level=args.level, max_tiles=settings.slide_max_tiles,
                                            batch_size=args.batch_size or settings.slide_batch_size,
                                            progress=ProgressBar(path.name)))
        except SlideError as e:
            print(f"{path}: failed: {e}", file=sys.stderr)
            failed += 1
            continue
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        answer = summary["answer"]
        print(f"{path}: {summary['tiles_classified']} tiles, {answer['label']} "
              f"({answer['fraction']:.0%} of the tissue) -> {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
