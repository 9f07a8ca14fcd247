"""The whole benchmark in quick mode on a tiny bundle: it must run, answer, and write its table.

No timing is asserted: only that every stage produced figures from real responses.
"""
import json
import math

import pytest

from bench.__main__ import main


@pytest.mark.slow
def test_quick_benchmark_end_to_end(tiny_store, ebhi_dir, tmp_path, capsys):
    results_dir = tmp_path / "results"
    code = main(["--quick", "--store", str(tiny_store), "--data-dir", str(ebhi_dir.parent),
                 "--results-dir", str(results_dir)])
    printed = capsys.readouterr().out
    (json_path,) = results_dir.glob("*.json")
    results = json.loads(json_path.read_text())
    assert results["problems"] == [], results["problems"]
    assert code == 0

    entry = results["bundles"]["tiny_cbam/1"]
    raw = entry["raw"]
    assert set(raw["batches"]) == {"1", "2"}  # up to the service's default max_batch_size, 2
    assert raw["best_images_per_s_with_decode"] < raw["best_images_per_s"]
    assert set(results["floor"]) == {"fastapi", "asgi"}
    for server in (entry["service"]["batched"], entry["service"]["unbatched"], entry["plain"], entry["naive"],
                   *results["floor"].values()):
        assert set(server) == {"1", "2"}
        for level in server.values():
            assert level["ok"] == level["sent"] > 0
            assert level["latency"]["p50_ms"] > 0 and level["requests_per_s"] > 0
            assert level["server_cpu_ms_per_request"] >= 0  # present (CPU ticks are 10 ms: may round to 0)
    assert entry["gradcam"]["ok"] == entry["gradcam"]["sent"] > 0
    # No embedding bundle in the store: /adapt runs on the classifier's embedding output, and says so.
    assert entry["adapt"]["ok"] == entry["adapt"]["sent"] > 0
    assert any("/adapt measured on tiny_cbam/1" in n for n in results["notes"])
    assert results["memory"]["requests"] >= results["plan"]["soak_requests"]
    assert results["memory"]["after_bytes"] > 0
    assert [t["after"] for t in results["memory"]["timeline"]][-2:] == ["soak half 1", "soak half 2"]

    targets = {r["target"]: r for r in results["targets"]}
    assert set(targets) == {"service_vs_raw", "c1_latency", "vs_naive", "vs_plain", "gradcam_vs_classify",
                            "adapt_vs_raw_embed", "rss_growth"}
    for row in targets.values():
        assert math.isfinite(row["value"]) and row["status"] in ("met", "missed")

    table = (results_dir / json_path.name.replace(".json", ".md")).read_text()
    assert table in printed
    assert "| naive eager PyTorch (random init) | 2 |" in table
    assert "## Targets" in table and "## Problems seen" in table and "## HTTP floor" in table
    assert set(targets["service_vs_raw"]["ceiling"]) == {"FastAPI upload", "bare ASGI"}
    assert all(math.isfinite(v) for key in ("service_vs_raw", "c1_latency", "vs_plain")
               for v in targets[key]["ceiling"].values())


def test_unknown_model_is_a_clear_error(tiny_store, tmp_path):
    with pytest.raises(SystemExit, match="no bundle 'nope'"):
        main(["--quick", "--store", str(tiny_store), "--model", "nope", "--results-dir", str(tmp_path)])


def test_empty_store_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no bundle in"):
        main(["--quick", "--store", str(tmp_path), "--results-dir", str(tmp_path)])


def test_server_cpu_seconds_grow_with_work():
    import os

    from bench.servers import cpu_seconds

    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    after = cpu_seconds(os.getpid())
    assert before is not None and after > before
    assert cpu_seconds(2**22 + 12345) is None  # no such process
