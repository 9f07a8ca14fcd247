"""Slide-job metrics, registered on the app's own Prometheus registry (service/metrics.py's `Metrics.registry`).

Names follow the service's: `histoserve_` prefix, base units, `_total` for counters, bounded labels
(job states are the five in jobs.py; models are the bundles in the store).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .jobs import STATES


class SlideMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.jobs = Gauge("histoserve_slide_jobs", "Slide jobs held, by state", ["state"], registry=registry)
        self.tiles = Counter("histoserve_slide_tiles_classified", "Slide tiles classified", ["model", "version"],
                             registry=registry)
        self.tiles_per_second = Gauge("histoserve_slide_tiles_per_second",
                                      "Tiles per second of the most recent finished slide job", registry=registry)
        self.job_duration = Histogram("histoserve_slide_job_duration_seconds", "Running time of finished slide jobs",
                                      buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200), registry=registry)
        for state in STATES:
            self.jobs.labels(state=state).set(0)

    def set_counts(self, counts: dict[str, int]) -> None:
        for state, n in counts.items():
            self.jobs.labels(state=state).set(n)
