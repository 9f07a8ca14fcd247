"""Raw ONNX Runtime figures: with the service's streams, and ORT's defaults beside them when they differ."""
from __future__ import annotations

from bench import raw
from bench.images import load_samples
from service.settings import Settings
from service.store import load_bundle


def test_the_reference_is_the_better_of_the_service_settings_and_ort_defaults(tiny_store, ebhi_dir):
    bundle = load_bundle(tiny_store / "tiny_cbam" / "1")
    samples = load_samples(ebhi_dir.parent, 1)
    plain = raw.measure(bundle, samples, Settings(max_batch_size=2, concurrent_batches=1), seconds=0.05, min_runs=2)
    assert plain["ort_defaults_batches"] is None and plain["best_from"] == "service settings"

    streams = Settings(max_batch_size=2, concurrent_batches=2, intra_op_threads=1)
    result = raw.measure(bundle, samples, streams, seconds=0.05, min_runs=2)
    tables = [result["batches"], result["ort_defaults_batches"]]
    assert set(tables[1]) == {"1", "2"} and result["concurrent_batches"] == 2
    best = max(b["images_per_s"] for table in tables for b in table.values())
    assert result["best_images_per_s"] == best
    fastest = min(table["1"]["latency"]["p50_ms"] for table in tables)
    assert result["batch1_p50_plus_decode_p50_ms"] == fastest + result["decode"]["p50_ms"]
    # two streams: each made its calls (at least min_runs each)
    assert result["batches"]["1"]["calls"] >= 4
