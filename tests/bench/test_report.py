import pytest

from bench.report import BY_KEY, evaluate


def _run(rps: float, p50: float) -> dict:
    return {"requests_per_s": rps, "latency": {"p50_ms": p50}}


def _results(**memory) -> dict:
    return {
        "plan": {"levels": [1, 8, 32]},
        "bundles": {
            "clf/1": {"task": "classification",
                      "raw": {"best_images_per_s_with_decode": 100.0, "batch1_p50_plus_decode_p50_ms": 20.0},
                      "service": {"batched": {"1": _run(40.0, 22.0), "32": _run(97.0, 300.0)}},
                      "naive": {"32": _run(50.0, 600.0)},
                      "gradcam": {"latency": {"p50_ms": 44.0}}},
            "emb/1": {"task": "embedding",
                      "raw": {"embed_support_set": {"latency": {"p50_ms": 500.0}}},
                      "adapt": {"latency": {"p50_ms": 700.0}}},
        },
        "memory": memory,
    }


def test_ratios_and_statuses():
    rows = {(r["bundle"], r["target"]): r for r in evaluate(_results(before_bytes=100, after_bytes=104, growth=0.04,
                                                                         soak=[{"sent": 10}]))}
    assert rows[("clf/1", "service_vs_raw")]["value"] == pytest.approx(0.97)
    assert rows[("clf/1", "service_vs_raw")]["status"] == "met"
    assert rows[("clf/1", "c1_latency")]["value"] == pytest.approx(1.1)
    assert rows[("clf/1", "vs_naive")]["value"] == pytest.approx(1.94)
    assert rows[("clf/1", "gradcam_vs_classify")]["value"] == pytest.approx(2.0)
    assert rows[("clf/1", "gradcam_vs_classify")]["status"] == "missed"
    assert rows[("emb/1", "adapt_vs_raw_embed")]["value"] == pytest.approx(1.4)
    assert rows[("emb/1", "adapt_vs_raw_embed")]["status"] == "missed"
    assert rows[("service", "rss_growth")]["status"] == "met"
    # Classification targets do not apply to an embedding bundle, nor /adapt to a bundle it did not run on.
    assert ("emb/1", "service_vs_raw") not in rows and ("clf/1", "adapt_vs_raw_embed") not in rows


def test_missing_figures_are_na_not_met():
    results = _results()
    del results["bundles"]["clf/1"]["naive"]
    rows = {(r["bundle"], r["target"]): r for r in evaluate(results)}
    assert rows[("clf/1", "vs_naive")]["status"] == "n/a"
    assert ("service", "rss_growth") not in rows


def test_memory_target_needs_a_soak():
    rows = evaluate(_results(before_bytes=100, after_bytes=110, growth=0.1, soak=[]))
    assert "rss_growth" not in {r["target"] for r in rows}


@pytest.mark.parametrize(("key", "value", "status"), [
    ("service_vs_raw", 0.95, "met"), ("service_vs_raw", 0.9499, "missed"),
    ("c1_latency", 1.15, "met"), ("c1_latency", 1.2, "missed"),
    ("rss_growth", 0.06, "missed"), ("vs_naive", float("nan"), "n/a"), ("vs_naive", None, "n/a"),
])
def test_target_bounds(key, value, status):
    assert BY_KEY[key].status(value) == status


def test_plain_ratio_is_taken_at_concurrency_16_when_measured():
    results = _results()
    entry = results["bundles"]["clf/1"]
    entry["service"]["batched"]["16"] = _run(88.0, 150.0)
    entry["plain"] = {"16": _run(80.0, 190.0), "32": _run(40.0, 700.0)}
    rows = {(r["bundle"], r["target"]): r for r in evaluate(results)}
    assert rows[("clf/1", "vs_plain")]["value"] == pytest.approx(1.1)
    assert rows[("clf/1", "vs_plain")]["status"] == "met"
    del entry["plain"]
    assert {(r["bundle"], r["target"]): r for r in evaluate(results)}[("clf/1", "vs_plain")]["status"] == "n/a"


def test_ceilings_are_what_the_measured_costs_leave_any_endpoint():
    results = _results()
    # 900 floor requests/s beside 100 raw images/s: the floor takes a tenth of the machine -> at most 0.9
    results["floor"] = {"fastapi": {"1": _run(500.0, 2.0), "32": _run(900.0, 35.0)},
                        "asgi": {"1": _run(2000.0, 0.5), "32": _run(2400.0, 13.0)}}
    results["bundles"]["clf/1"]["raw"]["batches"] = {"1": {"images_per_s": 80.0}, "4": {"images_per_s": 92.0},
                                                     "8": {"images_per_s": 88.0}}
    rows = {(r["bundle"], r["target"]): r for r in evaluate(results)}
    vs_raw = rows[("clf/1", "service_vs_raw")]["ceiling"]
    assert vs_raw["FastAPI upload"] == pytest.approx(0.9) and vs_raw["bare ASGI"] == pytest.approx(2400 / 2500)
    c1 = rows[("clf/1", "c1_latency")]["ceiling"]
    assert c1["FastAPI upload"] == pytest.approx(22.0 / 20.0) and c1["bare ASGI"] == pytest.approx(20.5 / 20.0)
    assert rows[("clf/1", "vs_plain")]["ceiling"] == {"ORT batching": pytest.approx(92.0 / 80.0)}
    assert "ceiling" not in rows[("clf/1", "vs_naive")]
    assert all("ceiling" not in r for r in evaluate(_results()))  # nothing measured: no ceiling claimed
