"""The cross-validation table: mean and spread over folds, same folds for every method."""
from __future__ import annotations

import json

import pytest

from training.cv import cv_table


def _run(d, fold: int, bal: float, test_files: list[str], tta: float | None = None):
    run = d / f"fold{fold}"
    run.mkdir(parents=True)
    files = [{"path": p, "split": "test"} for p in test_files]
    (run / "split.json").write_text(json.dumps({"files": files}))
    m = {"architecture": d.name, "classes": ["a", "b"], "majority_rate": 0.6,
         "split": {"description": f"group-disjoint split, test fold {fold + 1} of 2, seed 0"},
         "test": {"balanced_accuracy": bal, "accuracy": bal, "n": len(test_files)},
         "baseline": {"test": {"balanced_accuracy": 0.5, "accuracy": 0.55}}}
    if tta is not None:
        m["test_tta"] = {"balanced_accuracy": tta}
    (run / "metrics.json").write_text(json.dumps(m))


def test_mean_and_std_over_folds_beside_baseline_and_majority(tmp_path):
    a, b = tmp_path / "cbam", tmp_path / "plain"
    for fold, files in enumerate([["x.png"], ["y.png"]]):
        _run(a, fold, [0.8, 0.9][fold], files, tta=0.95)
        _run(b, fold, [0.7, 0.7][fold], files)
    table, summary = cv_table([a, b])
    assert "| cbam | 0.850 ± 0.050" in table
    assert "| cbam + dihedral TTA | 0.950 ± 0.000" in table
    assert "| plain | 0.700 ± 0.000" in table
    assert "colour + texture baseline | 0.500 ± 0.000" in table
    assert "majority class | 0.500 ± 0.000 | 0.600 ± 0.000" in table
    assert summary["folds"] == [0, 1]


def test_methods_tested_on_different_folds_are_refused(tmp_path):
    a, b = tmp_path / "cbam", tmp_path / "plain"
    _run(a, 0, 0.8, ["x.png"])
    _run(b, 0, 0.7, ["other.png"])
    with pytest.raises(ValueError, match="different splits"):
        cv_table([a, b])
