"""`python -m bench.slides`: the whole-slide pipeline against a plain loop, and /classify while a slide runs.

It builds a test slide the size the issue names (5k x 3k px, pyramidal JPEG TIFF at 1.2 um/px) from real
EBHI-Seg tiles, then measures, on the same tissue tiles:
1. a plain loop: OpenSlide read, preprocess, ONNX Runtime, one batch at a time (no overlap);
2. the pipeline (`service.slides.pipeline.run_slide`, what the CLI runs): tiles per second and wall time;
3. the service in-process: a POST /slides job end to end, and /classify latency (p50, p95) idle and while
   that job runs (tiles go through the background lane of the same batcher).
Writes bench/results/slides-<time>.json and prints it. Needs tifffile + imagecodecs (the dev extra).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from .images import REPO_ROOT, default_data_dir
from .report import command_line, write_results

MPP = 1.2  # the EBHI estimate: one 224-px cell is one model field


def build_slide(path: Path, data_dir: Path, width: int, height: int, fill: float) -> Path:
    import tifffile

    cell = 224
    files = sorted((data_dir / "ebhi_seg").rglob("*.png"))
    cols, rows = width // cell, height // cell
    canvas = np.full((rows * cell, cols * cell, 3), 255, dtype=np.uint8)
    rng = np.random.default_rng(0)
    for i, (r, c) in enumerate((r, c) for r in range(rows) for c in range(cols)):
        if rng.random() < fill:
            tile = Image.open(files[(i * 7) % len(files)]).convert("RGB").resize((cell, cell))
            canvas[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = np.asarray(tile)
    image = Image.fromarray(canvas)
    with tifffile.TiffWriter(path) as tif:
        for lvl in range(4):
            s = 2**lvl
            arr = canvas if lvl == 0 else np.asarray(image.resize((canvas.shape[1] // s, canvas.shape[0] // s),
                                                                  Image.Resampling.BOX))
            tif.write(arr, tile=(256, 256), compression="jpeg", compressionargs={"level": 90}, photometric="rgb",
                      subfiletype=0 if lvl == 0 else 1, resolution=(1e4 / (MPP * s), 1e4 / (MPP * s)),
                      resolutionunit="CENTIMETER")
    return path


def plain_loop(slide_path: Path, coords: np.ndarray, level: int, read: tuple[int, int], runtime, pre,
               batch: int) -> float:
    import openslide

    from service.imaging import preprocess

    slide = openslide.OpenSlide(str(slide_path))
    started = time.perf_counter()
    for start in range(0, len(coords), batch):
        tensors = []
        for x, y in coords[start : start + batch].tolist():
            rgba = slide.read_region((x, y), level, read)
            tensors.append(preprocess(rgba.convert("RGB"), pre))
        runtime.run(np.stack(tensors))
    seconds = time.perf_counter() - started
    slide.close()
    return len(coords) / seconds


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def classify_latencies(client, png: bytes, n: int, model: str, while_running: str | None = None) -> list[float]:
    times = []
    for _ in range(n):
        if while_running is not None and client.get(f"/slides/{while_running}").json()["status"] != "running":
            break
        t = time.perf_counter()
        r = client.post("/classify", files={"files": ("t.png", png, "image/png")}, data={"model": model})
        times.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slides", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--width", type=int, default=5000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--fill", type=float, default=0.6, help="share of grid cells that hold tissue")
    parser.add_argument("--requests", type=int, default=40, help="/classify requests per latency reading")
    parser.add_argument("--model", default=None,
                        help="an EBHI-Seg classification bundle name (default: the store's default classifier)")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()

    from fastapi.testclient import TestClient

    from service.main import create_app
    from service.runtime import ModelRuntime
    from service.settings import Settings
    from service.slides.__main__ import _classifier
    from service.slides.pipeline import run_slide
    from service.store import store_defaults

    settings = Settings()
    if args.model is None:  # the store's defaults.json, as the service reads it; a name, without any /version
        args.model = store_defaults(settings.model_store).get("classification", "").split("/")[0]
        if not args.model:
            parser.error(f"{settings.model_store} names no default classifier: pass --model")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        slide_path = build_slide(tmp / "bench.tiff", data_dir, args.width, args.height, args.fill)
        classifier = _classifier(settings.model_store, args.model, settings)

        # 2. the pipeline (first, so that its results give the tile list for the plain loop)
        summary = asyncio.run(run_slide(slide_path, classifier, tmp / "out", max_tiles=settings.slide_max_tiles,
                                        batch_size=settings.slide_batch_size))
        tiling = summary["tiling"]
        with np.load(tmp / "out" / "tiles.npz") as data:
            coords = data["coords"]
        # 1. the plain loop on the same tiles, same batch size
        from service.store import discover

        bundle = max((b for b in discover(settings.model_store)[0] if b.name == args.model), key=lambda b: b.version)
        runtime = ModelRuntime(bundle, settings)
        plain = plain_loop(slide_path, coords, tiling["level"], (tiling["read_width_px"], tiling["read_height_px"]),
                           runtime, bundle.preprocessing, settings.slide_batch_size)

        # 3. the service: a job over HTTP, /classify latency idle and during the job
        png = io.BytesIO()
        Image.open(next((data_dir / "ebhi_seg").rglob("*.png"))).save(png, format="PNG")
        app_settings = Settings(state_dir=tmp / "state")
        with TestClient(create_app(app_settings)) as client:
            idle = classify_latencies(client, png.getvalue(), args.requests, args.model)
            started = time.perf_counter()
            job = client.post("/slides", files={"file": ("bench.tiff", slide_path.read_bytes())},
                              data={"model": args.model}).json()
            busy = classify_latencies(client, png.getvalue(), args.requests, args.model,
                                      while_running=job["id"])
            for _ in range(100_000):
                record = client.get(f"/slides/{job['id']}").json()
                if record["status"] != "queued" and record["status"] != "running":
                    break
                time.sleep(0.05)
            job_seconds = time.perf_counter() - started

    results = {
        "command": command_line("bench.slides", argv),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "slide": summary["slide"], "tiling": tiling, "tiles": summary["tiles_classified"],
        "pipeline_tiles_per_second": summary["tiles_per_second"], "pipeline_seconds": summary["seconds"],
        "plain_loop_tiles_per_second": round(plain, 3),
        "pipeline_over_plain": round(summary["tiles_per_second"] / plain, 3),
        "service_job_status": record["status"], "service_job_seconds": round(job_seconds, 3),
        "service_job_tiles_per_second": (record.get("summary") or {}).get("tiles_per_second"),
        "classify_idle_p50_ms": round(1000 * percentile(idle, 50), 2),
        "classify_idle_p95_ms": round(1000 * percentile(idle, 95), 2),
        "classify_during_job_p50_ms": round(1000 * percentile(busy, 50), 2),
        "classify_during_job_p95_ms": round(1000 * percentile(busy, 95), 2),
        "classify_during_job_requests": len(busy),
        "during_over_idle_p50": round(statistics.median(busy) / statistics.median(idle), 3) if busy else None,
    }
    out = write_results(args.results_dir, f"slides-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json", results,
                        indent=2)
    print(f"bench.slides: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
