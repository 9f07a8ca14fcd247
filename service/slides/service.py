"""The slide side of the app: jobs, the slide root, result files and Deep Zoom, behind one object.

`SlideService` is built in the lifespan (app.state.slides) and used by routers/slides.py, which stays
thin: parse, call, answer.
"""
from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from pathlib import Path

from ..errors import ServiceError
from ..metrics import Metrics
from ..settings import Settings
from . import outputs
from .jobs import FileJobStore, JobManager, JobRecord, JobStore
from .metrics import SlideMetrics
from .pipeline import probe, run_slide, service_classifier
from .reader import Slide, SlideError

# What GET /slides/files lists: the extensions OpenSlide's formats use.
SLIDE_EXTENSIONS = frozenset({".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide",
                              ".bif", ".dcm"})
MAX_LISTED_FILES = 10_000
_DEEPZOOM_CACHE = 8  # open slides kept for Deep Zoom tiles


def slide_metrics(metrics: Metrics) -> SlideMetrics:
    # One per Metrics registry, however often the lifespan runs (a test app entered twice).
    existing = getattr(metrics, "slides", None)
    if existing is None:
        existing = SlideMetrics(metrics.registry)
        metrics.slides = existing
    return existing


class SlideService:
    def __init__(self, settings: Settings, metrics: Metrics, store: JobStore | None = None):
        self.settings = settings
        self.metrics = slide_metrics(metrics)
        self.store = store or FileJobStore(settings.state_dir)
        self.jobs = JobManager(self.store, max_jobs=settings.slide_max_jobs, timeout_s=settings.slide_job_timeout_s,
                               retention_hours=settings.slide_retention_hours,
                               on_change=lambda m: self.metrics.set_counts(m.counts()))
        self._zooms: OrderedDict[tuple, object] = OrderedDict()
        self._zoom_lock = threading.Lock()

    async def start(self) -> None:
        await self.jobs.start()

    async def stop(self) -> None:
        await self.jobs.stop()
        with self._zoom_lock:
            for slide, _ in self._zooms.values():
                if slide is not None:
                    slide.close()
            self._zooms.clear()

    # --- the slide root

    def root(self) -> Path:
        if self.settings.slide_root is None:
            raise ServiceError(422, "slide_root_unset", "this service has no HISTOSERVE_SLIDE_ROOT; upload the slide "
                               "as `file` instead of naming a `path`")
        return Path(self.settings.slide_root).resolve()

    def resolve_path(self, relative: str) -> Path:
        """A client's `path` -> the slide file, strictly inside the root (no `..`, no symlink out of it)."""
        root = self.root()
        bad = ServiceError(422, "invalid_path", f"path {relative[:200]!r} must be a relative path to a file under "
                           "the slide root, without '..'")
        if not relative or "\x00" in relative or relative.startswith(("/", "\\")) or ":" in relative[:3]:
            raise bad
        parts = Path(relative.replace("\\", "/")).parts
        if any(p in ("..", "") for p in parts):
            raise bad
        candidate = root.joinpath(*parts)
        try:
            resolved = candidate.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise ServiceError(404, "slide_not_found", f"no slide at {relative!r} under the slide root") from e
        except (OSError, RuntimeError) as e:  # a symlink loop
            raise bad from e
        if not resolved.is_relative_to(root):
            raise ServiceError(422, "invalid_path", f"path {relative!r} leads outside the slide root")
        if not resolved.is_file():
            raise ServiceError(404, "slide_not_found", f"{relative!r} is not a file")
        return resolved

    def list_files(self) -> list[dict]:
        root = self.root()
        found = []
        for directory, dirs, files in os.walk(root, followlinks=False):
            dirs.sort()
            for name in sorted(files):
                path = Path(directory) / name
                if path.suffix.lower() not in SLIDE_EXTENSIONS:
                    continue
                try:
                    resolved = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    continue
                if not resolved.is_relative_to(root) or not resolved.is_file():
                    continue  # a symlink out of the root is not offered
                found.append({"path": path.relative_to(root).as_posix(), "bytes": resolved.stat().st_size})
                if len(found) >= MAX_LISTED_FILES:
                    return found
        return found

    # --- jobs

    def record_or_404(self, job_id: str) -> JobRecord:
        record = self.jobs.get(job_id)
        if record is None:
            raise ServiceError(404, "slide_job_not_found", f"no slide job with id {job_id!r}")
        return record

    async def check_slide(self, path: Path, mpp: float | None) -> dict:
        """Open the slide before accepting the job: a broken or spacing-less slide is a 4xx now, not later."""
        try:
            info = await asyncio.to_thread(probe, path, mpp)
        except SlideError as e:
            raise ServiceError(e.status, e.code, str(e)) from e
        return {"width": info.width, "height": info.height, "mpp_x": info.mpp_x, "mpp_y": info.mpp_y,
                "mpp_source": info.mpp_source}

    async def submit(self, record: JobRecord, model, adapter) -> JobRecord:
        classifier = service_classifier(model, adapter, fallback_mpp=self.settings.slide_model_mpp)
        labels = {"model": model.bundle.name, "version": str(model.bundle.version)}
        settings = self.settings

        async def run(rec: JobRecord) -> dict:
            def progress(done: int, total: int) -> None:
                previous = rec.progress.get("done") or 0
                self.jobs.progress(rec, done, total)
                if done > previous:
                    self.metrics.tiles.labels(**labels).inc(done - previous)

            summary = await run_slide(Path(rec.slide_file), classifier, self.store.job_dir(rec.id) / "results",
                                      mpp=rec.mpp, tile_size=rec.tile_size, level=rec.level,
                                      max_tiles=settings.slide_max_tiles, batch_size=settings.slide_batch_size,
                                      progress=progress)
            if summary.get("tiles_per_second") is not None:
                self.metrics.tiles_per_second.set(summary["tiles_per_second"])
            self.metrics.job_duration.observe(summary["seconds"])
            return summary

        return await self.jobs.submit(record, run)

    async def delete(self, record: JobRecord) -> str:
        with self._zoom_lock:
            for key in [k for k in self._zooms if k[0] == record.id]:
                slide, _ = self._zooms.pop(key)
                if slide is not None:
                    slide.close()
        outcome = await self.jobs.cancel_or_delete(record)
        if outcome == "cancelled" and record.source == "upload":
            # A cancelled upload's slide is not needed any more; the record stays until deleted or expired.
            await asyncio.to_thread(lambda: Path(record.slide_file).unlink(missing_ok=True))
        return outcome

    # --- results

    def results_dir(self, record: JobRecord) -> Path:
        if record.status != "done":
            raise ServiceError(409, "slide_job_not_done", f"slide job {record.id} is {record.status}; results exist "
                               "once it is done", {"status": record.status, "progress": record.progress})
        return self.store.job_dir(record.id) / "results"

    def result_file(self, record: JobRecord, name: str) -> Path:
        path = self.results_dir(record) / name
        if not path.is_file():
            raise ServiceError(404, "result_not_found", f"slide job {record.id} has no {name} (removed from disk)")
        return path

    def heatmap(self, record: JobRecord, class_name: str | None) -> bytes:
        directory = self.results_dir(record)
        if class_name is None:
            return (directory / "heatmap.png").read_bytes()
        tiles = outputs.load_tiles(directory)
        if class_name not in tiles["classes"]:
            raise ServiceError(422, "unknown_class", f"{class_name!r} is not a class of this job's model",
                               {"classes": tiles["classes"]})
        from PIL import Image

        with Image.open(directory / "thumbnail.png") as img:
            thumbnail = img.convert("RGB")
        overlay = outputs.heatmap_rgba(thumbnail.size, tiles["slide_size"], tiles["coords"], tiles["size"],
                                       tiles["probabilities"], tiles["classes"].index(class_name))
        return outputs.heatmap_png(thumbnail, overlay)

    # --- Deep Zoom (openslide.deepzoom does the maths)

    def deepzoom(self, record: JobRecord, kind: str):
        """The DeepZoomGenerator of the slide (`kind="slide"`) or of the heatmap overlay (`"heatmap"`)."""
        from openslide import ImageSlide
        from openslide.deepzoom import DeepZoomGenerator

        from .deepzoom import TransparentDeepZoom

        key = (record.id, kind)
        with self._zoom_lock:
            if key in self._zooms:
                self._zooms.move_to_end(key)
                return self._zooms[key][1]
        if kind == "slide":
            if record.source == "upload" and not Path(record.slide_file).is_file():
                raise ServiceError(404, "slide_gone", f"the slide of job {record.id} was removed")
            try:
                slide = Slide(Path(record.slide_file), record.mpp)
            except SlideError as e:
                raise ServiceError(e.status, e.code, str(e)) from e
            generator = DeepZoomGenerator(slide.osr, tile_size=254, overlap=1, limit_bounds=False)
        else:
            directory = self.results_dir(record)
            tiles = outputs.load_tiles(directory)
            from PIL import Image

            with Image.open(directory / "thumbnail.png") as img:
                size = img.size
            overlay = outputs.heatmap_rgba(size, tiles["slide_size"], tiles["coords"], tiles["size"],
                                           tiles["probabilities"], None)
            slide = None
            generator = TransparentDeepZoom(ImageSlide(overlay), tile_size=254, overlap=1, limit_bounds=False)
        with self._zoom_lock:
            self._zooms[key] = (slide, generator)
            while len(self._zooms) > _DEEPZOOM_CACHE:
                old_slide, _ = self._zooms.popitem(last=False)[1]
                if old_slide is not None:
                    old_slide.close()
        return generator
