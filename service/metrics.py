"""Prometheus metrics. The names and labels are an interface: the Grafana dashboard and the
alert rules in deploy/ are built on exactly these, so rename nothing.

Each app gets its own registry, so that tests can build several apps in one process.
Label values stay bounded: routes are templates ("/models/{name}", or "unmatched"),
models are the bundles in the store, and error kinds are the codes in errors.py.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
UNMATCHED_ROUTE = "unmatched"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter("histoserve_http_requests", "HTTP requests answered",
                                     ["route", "method", "status"], registry=r)
        self.http_duration = Histogram("histoserve_http_request_duration_seconds", "HTTP request latency",
                                       ["route", "method"], buckets=_LATENCY_BUCKETS, registry=r)
        self.inference_duration = Histogram("histoserve_inference_duration_seconds",
                                            "Duration of one ONNX Runtime batch call",
                                            ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("histoserve_batch_size", "Items per ONNX Runtime batch call",
                                    ["model", "version"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256),
                                    registry=r)
        self.queue_depth = Gauge("histoserve_queue_depth", "Items waiting in the micro-batcher queue",
                                 ["model", "version"], registry=r)
        self.queue_capacity = Gauge("histoserve_queue_capacity", "Size of the micro-batcher queue",
                                    ["model", "version"], registry=r)
        self.images_classified = Counter("histoserve_images_classified", "Images classified",
                                         ["model", "version"], registry=r)
        self.errors = Counter("histoserve_errors", "Error responses by kind", ["kind"], registry=r)
        self.adapters = Gauge("histoserve_adapters", "Few-shot adapters held", registry=r)
        self.build = Info("histoserve_build", "Service version and the execution providers in use", registry=r)
        self.model_info = Gauge("histoserve_model_info", "Loaded bundles and the provider each really got",
                                ["model", "version", "provider"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
