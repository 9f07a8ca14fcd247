"""Slide jobs: their records, where the records live, and the manager that runs them.

A job's record is plain JSON (`JobRecord`), kept by a `JobStore`. `FileJobStore` writes one
`<state_dir>/slides/<id>/job.json` per job atomically (temporary file, fsync, rename), beside the job's
uploaded slide and its results. The store is an interface so that records can move to the shared state
store (Redis) without touching the manager; what counts as an orphan is the store's call too: in a file
store, owned by one process, every unfinished job of an earlier instance is one.

Each record names the service instance that runs it. At start-up the manager marks the orphans failed
("the service stopped while the job was running"), so no job stays `running` for ever.
"""
from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..files import write_atomic

log = logging.getLogger("histoserve.slides")

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_instance_id() -> str:
    return f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass
class JobRecord:
    id: str
    status: str
    instance: str  # the service instance that runs (or ran) it
    model: str | None  # name/version, once resolved
    adapter: str | None
    source: str  # "upload" or "path"
    path: str | None  # relative to HISTOSERVE_SLIDE_ROOT for "path"; uploads keep no client file name
    slide_file: str  # where the slide is on this machine (never returned)
    mpp: float | None = None
    tile_size: int | None = None
    level: int | None = None
    created_at: str = field(default_factory=now)
    started_at: str | None = None
    finished_at: str | None = None
    finished_ts: float | None = None  # epoch seconds, for retention
    progress: dict = field(default_factory=lambda: {"done": 0, "total": None})
    error: dict | None = None
    summary: dict | None = None
    slide: dict | None = None  # size and pixel spacing, known from the upload check on

    def public(self) -> dict:
        out = asdict(self)
        for private in ("slide_file", "finished_ts", "instance"):
            out.pop(private)
        out["instance"] = self.instance
        return out


class JobStore(abc.ABC):
    """Where job records live. Methods are blocking; the manager calls them in worker threads."""

    @abc.abstractmethod
    def save(self, record: JobRecord) -> None: ...

    @abc.abstractmethod
    def load_all(self) -> list[JobRecord]: ...

    @abc.abstractmethod
    def delete(self, job_id: str) -> None: ...

    @abc.abstractmethod
    def job_dir(self, job_id: str) -> Path:
        """The directory for the job's files (upload, results)."""

    def orphans(self, records: list[JobRecord], instance: str) -> list[JobRecord]:
        """Unfinished jobs that no live instance runs. Default (one process owns the store): all of another
        instance's."""
        return [r for r in records if r.status not in FINISHED and r.instance != instance]


class FileJobStore(JobStore):
    def __init__(self, state_dir: Path):
        self.root = Path(state_dir) / "slides"
        self._lock = threading.Lock()

    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def save(self, record: JobRecord) -> None:
        directory = self.job_dir(record.id)
        directory.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(asdict(record)).encode()
        with self._lock:
            write_atomic(directory / "job.json", payload, tmp_prefix=".tmp-job-")

    def load_all(self) -> list[JobRecord]:
        self.root.mkdir(parents=True, exist_ok=True)
        records = []
        for directory in sorted(self.root.iterdir()):
            if not JOB_ID.match(directory.name) or not (directory / "job.json").is_file():
                continue
            try:
                data = json.loads((directory / "job.json").read_text())
                record = JobRecord(**data)
                if record.id != directory.name or record.status not in STATES:
                    raise ValueError("id or status does not fit")
            except Exception as e:  # a damaged record: skip it, keep the others
                log.warning("skipping unreadable slide job record %s: %s", directory.name, e)
                continue
            records.append(record)
        return records

    def delete(self, job_id: str) -> None:
        with self._lock:
            shutil.rmtree(self.job_dir(job_id), ignore_errors=True)


class JobManager:
    """Runs slide jobs as asyncio tasks, at most `max_jobs` at once, each within `timeout_s`.

    `run(record)` is the coroutine that does one job and returns its summary (routers/slides.py builds
    it from the pipeline); the manager owns states, timing, cancellation, retention and persistence.
    """

    def __init__(self, store: JobStore, *, max_jobs: int, timeout_s: float, retention_hours: float,
                 on_change=None):
        self.store = store
        self.instance = new_instance_id()
        self.max_jobs = max_jobs
        self.timeout_s = timeout_s
        self.retention_s = retention_hours * 3600.0
        self.jobs: dict[str, JobRecord] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._semaphore: asyncio.Semaphore | None = None
        self._sweeper: asyncio.Task | None = None
        self._on_change = on_change or (lambda manager: None)

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(16)

    # --- lifespan

    async def start(self) -> None:
        self._semaphore = asyncio.Semaphore(self.max_jobs)
        records = await asyncio.to_thread(self.store.load_all)
        self.jobs = {r.id: r for r in records}
        for record in self.store.orphans(records, self.instance):
            was = record.status
            self._finish(record, "failed", error={"code": "service_stopped",
                                                  "message": f"the service stopped while the job was {was}"})
            await asyncio.to_thread(self.store.save, record)
            log.warning("slide job %s was %s when instance %s stopped: marked failed", record.id, was, record.instance)
        await self.sweep()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(), name="slide-retention")
        self._on_change(self)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        # A job cancelled by shutdown stays `running` on disk: the next start marks it failed with the reason.
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- jobs

    async def submit(self, record: JobRecord, run) -> JobRecord:
        self.jobs[record.id] = record
        await asyncio.to_thread(self.store.save, record)
        self._tasks[record.id] = asyncio.get_running_loop().create_task(self._run(record, run),
                                                                        name=f"slide-job-{record.id}")
        self._on_change(self)
        return record

    async def _run(self, record: JobRecord, run) -> None:
        from .reader import SlideError

        assert self._semaphore is not None
        shutdown = False
        try:
            async with self._semaphore:
                record.status, record.started_at = "running", now()
                await asyncio.to_thread(self.store.save, record)
                self._on_change(self)
                try:
                    async with asyncio.timeout(self.timeout_s):
                        summary = await run(record)
                except TimeoutError:
                    self._finish(record, "failed", error={
                        "code": "job_timeout", "message": f"the job ran longer than {self.timeout_s:g} s "
                        "(HISTOSERVE_SLIDE_JOB_TIMEOUT_S)"})
                else:
                    record.summary = summary
                    self._finish(record, "done")
        except asyncio.CancelledError:
            if record.status in FINISHED:  # cancelled by DELETE: already recorded
                raise
            shutdown = True
            raise
        except SlideError as e:
            self._finish(record, "failed", error={"code": e.code, "message": str(e)})
        except Exception as e:  # a bug or an unexpected reader error: the job fails, the service goes on
            log.exception("slide job %s failed", record.id)
            self._finish(record, "failed", error={"code": "job_error", "message": f"{type(e).__name__}: {e}"})
        finally:
            self._tasks.pop(record.id, None)
            if not shutdown:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.store.save, record)
            self._on_change(self)

    def _finish(self, record: JobRecord, status: str, error: dict | None = None) -> None:
        record.status, record.error = status, error
        record.finished_at, record.finished_ts = now(), time.time()

    def progress(self, record: JobRecord, done: int, total: int) -> None:
        record.progress = {"done": done, "total": total}

    def get(self, job_id: str) -> JobRecord | None:
        return self.jobs.get(job_id)

    async def cancel_or_delete(self, record: JobRecord) -> str:
        """A queued or running job is cancelled (its record stays); a finished one is deleted with its files."""
        task = self._tasks.get(record.id)
        if record.status not in FINISHED:
            self._finish(record, "cancelled", error=None)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await asyncio.to_thread(self.store.save, record)
            self._on_change(self)
            return "cancelled"
        self.jobs.pop(record.id, None)
        await asyncio.to_thread(self.store.delete, record.id)
        self._on_change(self)
        return "deleted"

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for record in self.jobs.values():
            counts[record.status] += 1
        return counts

    # --- retention

    async def sweep(self) -> int:
        """Delete finished jobs (records, uploads, results) older than the retention period."""
        cutoff = time.time() - self.retention_s
        old = [r for r in self.jobs.values() if r.status in FINISHED and (r.finished_ts or 0) < cutoff]
        for record in old:
            self.jobs.pop(record.id, None)
            await asyncio.to_thread(self.store.delete, record.id)
            log.info("slide job %s removed after the retention period", record.id)
        if old:
            self._on_change(self)
        return len(old)

    async def _sweep_forever(self) -> None:
        interval = max(10.0, min(600.0, self.retention_s / 10))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("slide retention sweep failed")
