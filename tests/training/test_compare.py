"""`python -m training compare`: one table for runs on one split, a refusal for runs on different splits."""
from __future__ import annotations

import json

import pytest

from training.compare import compare_runs


def _run(tmp_path, name, test_files, accuracy):
    run = tmp_path / name
    run.mkdir()
    files = [{"path": p, "class": "a", "group": p, "split": "test"} for p in test_files]
    (run / "split.json").write_text(json.dumps({"description": "by patient", "files": files}))
    metrics = {"architecture": name, "split": {"description": "by patient"}, "majority_rate": 0.5,
               "test": {"n": len(test_files), "accuracy": accuracy, "balanced_accuracy": accuracy},
               "baseline": {"test": {"accuracy": 0.6}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_runs_on_one_split_share_a_table_with_baseline_and_majority(tmp_path):
    a = _run(tmp_path, "cbam", ["x.png", "y.png"], 0.75)
    b = _run(tmp_path, "plain", ["y.png", "x.png"], 0.5)
    table = compare_runs([a, b])
    assert "| cbam (`cbam`) | 0.750 | 0.750 |" in table
    assert "| plain (`plain`) | 0.500 | 0.500 |" in table
    assert "| colour + texture baseline | 0.600 |" in table
    assert "| majority class | 0.500 |" in table


def test_runs_on_different_splits_are_refused(tmp_path):
    a = _run(tmp_path, "cbam", ["x.png", "y.png"], 0.75)
    b = _run(tmp_path, "plain", ["x.png", "z.png"], 0.5)
    with pytest.raises(ValueError, match="different splits"):
        compare_runs([a, b])


def test_a_run_without_metrics_is_named(tmp_path):
    with pytest.raises(ValueError, match="no metrics.json"):
        compare_runs([tmp_path])
