"""bench.sweep: each config gets its own service with its settings, runs interleaved, figures from real answers."""
from __future__ import annotations

import argparse
import json

import pytest

from bench.sweep import main, parse_config


def test_config_syntax():
    assert parse_config("two:CONCURRENT_BATCHES=2,max_batch_size=4") == (
        "two", {"HISTOSERVE_CONCURRENT_BATCHES": "2", "HISTOSERVE_MAX_BATCH_SIZE": "4"})
    assert parse_config("defaults:") == ("defaults", {})
    for bad in ("no-colon", ":A=1", "x:A"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_config(bad)


@pytest.mark.slow
def test_sweep_runs_every_config_and_writes_its_results(tiny_store, ebhi_dir, tmp_path):
    code = main(["--config", "one:CONCURRENT_BATCHES=1", "--config", "defaults:", "--repeat", "1", "--levels", "1,2",
                 "--seconds", "1", "--per-class", "1", "--model", "tiny_cbam", "--store", str(tiny_store),
                 "--data-dir", str(ebhi_dir.parent), "--out-dir", str(tmp_path)])
    assert code == 0
    (path,) = tmp_path.glob("sweep-*.json")
    result = json.loads(path.read_text())
    assert result["configs"] == {"one": {"HISTOSERVE_CONCURRENT_BATCHES": "1"}, "defaults": {}}
    for name in ("one", "defaults"):
        (run,) = result["runs"][name]
        for level in ("1", "2"):
            assert set(run[level]["statuses"]) == {"200"} and run[level]["requests_per_s"] > 0
        assert result["mean"][name]["2"]["p50_ms"] == run["2"]["p50_ms"]
