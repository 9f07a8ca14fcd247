"""The job manager on its own: restart recovery, retention, cancellation, timeouts, failures, file store."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from service.slides.jobs import FileJobStore, JobManager, JobRecord
from service.slides.reader import SlideError


def record(job_id: str, status: str = "queued", instance: str = "old-instance", **kw) -> JobRecord:
    return JobRecord(id=job_id, status=status, instance=instance, model="m/1", adapter=None, source="upload",
                     path=None, slide_file="/nowhere/slide.svs", **kw)


def manager(tmp_path, **kw) -> JobManager:
    kw = {"max_jobs": 1, "timeout_s": 30.0, "retention_hours": 1.0, **kw}
    return JobManager(FileJobStore(tmp_path), **kw)


def test_jobs_running_at_shutdown_are_failed_at_start_up(tmp_path):
    store = FileJobStore(tmp_path)
    store.save(record("a" * 22, "running"))
    store.save(record("b" * 22, "queued"))
    store.save(record("c" * 22, "done", finished_ts=time.time()))

    async def main():
        m = JobManager(store, max_jobs=1, timeout_s=30, retention_hours=1)
        await m.start()
        await m.stop()
        return m

    m = asyncio.run(main())
    assert m.jobs["a" * 22].status == "failed" and m.jobs["a" * 22].error["code"] == "service_stopped"
    assert "running" in m.jobs["a" * 22].error["message"]
    assert m.jobs["b" * 22].status == "failed"
    assert m.jobs["c" * 22].status == "done"
    on_disk = json.loads((tmp_path / "slides" / ("a" * 22) / "job.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["instance"] == "old-instance"


def test_a_store_can_keep_other_live_instances_jobs(tmp_path):
    class SharedStore(FileJobStore):
        def orphans(self, records, instance):  # e.g. Redis with leases: this one is alive
            return []

    store = SharedStore(tmp_path)
    store.save(record("a" * 22, "running", instance="other-live-replica"))

    async def main():
        m = JobManager(store, max_jobs=1, timeout_s=30, retention_hours=1)
        await m.start()
        await m.stop()
        return m

    assert asyncio.run(main()).jobs["a" * 22].status == "running"


def test_retention_removes_old_finished_jobs_and_their_files(tmp_path):
    store = FileJobStore(tmp_path)
    old = record("d" * 22, "done", finished_ts=time.time() - 7200)
    fresh = record("e" * 22, "failed", finished_ts=time.time())
    for r in (old, fresh):
        store.save(r)
        (store.job_dir(r.id) / "slide.svs").write_bytes(b"x")

    async def main():
        m = JobManager(store, max_jobs=1, timeout_s=30, retention_hours=1)
        await m.start()  # sweeps once at start-up
        await m.stop()
        return m

    m = asyncio.run(main())
    assert set(m.jobs) == {"e" * 22}
    assert not store.job_dir("d" * 22).exists() and store.job_dir("e" * 22).exists()


def test_cancel_timeout_failure_and_concurrency(tmp_path):
    async def main():
        m = manager(tmp_path, timeout_s=0.5, max_jobs=1)
        await m.start()
        gate = asyncio.Event()
        running = []

        async def blocked(rec):
            running.append(rec.id)
            await gate.wait()
            return {"ok": True}

        async def never(rec):
            await asyncio.Event().wait()

        async def broken(rec):
            raise SlideError(422, "unreadable_slide", "cannot read its pixels")

        async def buggy(rec):
            raise KeyError("bug")

        first, second = record("f" * 22, instance=m.instance), record("g" * 22, instance=m.instance)
        await m.submit(first, blocked)
        await m.submit(second, blocked)
        for _ in range(100):
            if running:
                break
            await asyncio.sleep(0.01)
        # one job at a time: the second waits queued
        assert first.status == "running" and second.status == "queued" and running == [first.id]
        assert await m.cancel_or_delete(first) == "cancelled"
        assert first.status == "cancelled"
        gate.set()
        await asyncio.wait_for(asyncio.gather(*m._tasks.values(), return_exceptions=True), 10)
        assert second.status == "done" and second.summary == {"ok": True}

        slow, bad, bug = (record(c * 22, instance=m.instance) for c in "hij")
        await m.submit(slow, never)
        await m.submit(bad, broken)
        await m.submit(bug, buggy)
        await asyncio.wait_for(asyncio.gather(*m._tasks.values(), return_exceptions=True), 10)
        assert slow.status == "failed" and slow.error["code"] == "job_timeout"
        assert bad.status == "failed" and bad.error == {"code": "unreadable_slide", "message": "cannot read its pixels"}
        assert bug.status == "failed" and bug.error["code"] == "job_error"
        assert m.counts() == {"queued": 0, "running": 0, "done": 1, "failed": 3, "cancelled": 1}
        # a finished job is deleted with its files
        assert await m.cancel_or_delete(bad) == "deleted"
        assert not m.store.job_dir(bad.id).exists() and m.get(bad.id) is None
        await m.stop()

    asyncio.run(main())


def test_file_store_skips_damaged_records(tmp_path):
    store = FileJobStore(tmp_path)
    store.save(record("k" * 22))
    (tmp_path / "slides" / ("l" * 22)).mkdir()
    (tmp_path / "slides" / ("l" * 22) / "job.json").write_text("{not json")
    (tmp_path / "slides" / "not-an-id").mkdir()
    assert [r.id for r in store.load_all()] == ["k" * 22]
    with pytest.raises(ValueError):
        store.job_dir("../escape")
