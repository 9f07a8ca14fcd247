"""Raw ONNX Runtime figures: with the service's streams, and ORT's defaults beside them when they differ."""
from __future__ import annotations

from bench import raw
from bench.images import load_samples
from service.runtime import ModelRuntime
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


def test_the_support_set_reference_pads_its_last_chunk_where_the_service_pads(tiny_store, ebhi_dir):
    bundle = load_bundle(tiny_store / "tiny_cbam" / "1")
    samples = load_samples(ebhi_dir.parent, 1)
    for pad, sizes in (("always", {4}), ("never", {4, 1})):  # 25 images in chunks of 4: ..., 4, 1
        runtime = ModelRuntime(bundle, Settings(pad_batches=pad))
        seen = []
        real_run = runtime.run
        runtime.run = lambda x, real_run=real_run, seen=seen: seen.append(len(x)) or real_run(x)
        result = raw._embed_support(runtime, bundle, samples, Settings(max_batch_size=4, pad_batches=pad), 0.01, 25)
        assert set(seen) == sizes and result["padded"] is (pad == "always")
