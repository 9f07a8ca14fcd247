"""The cross-validation table: mean and spread over folds, same folds for every method."""
from __future__ import annotations

import json

import pytest

from training.cv import cv_table
from training.ensemble import cv_ensemble


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


@pytest.mark.parametrize("table", [cv_table, cv_ensemble])
def test_methods_tested_on_different_folds_are_refused(tmp_path, table):
    a, b = tmp_path / "cbam", tmp_path / "plain"
    _run(a, 0, 0.8, ["x.png"])
    _run(b, 0, 0.7, ["other.png"])
    with pytest.raises(ValueError, match="different splits"):
        table([a, b])


def _cached_probabilities(run, plain, tta, labels):
    """A run whose test probabilities are already cached (written after its checkpoint)."""
    import numpy as np

    (run / "checkpoint.pt").write_bytes(b"")
    np.savez(run / "test_probabilities.npz", plain=np.asarray(plain), tta=np.asarray(tta),
             labels=np.asarray(labels), groups=np.asarray([f"g{i}" for i in range(len(labels))]))


def test_ensemble_averages_member_probabilities_fold_by_fold(tmp_path):
    a, b = tmp_path / "cbam", tmp_path / "plain"
    labels = [0, 0, 1, 1]
    # each member is sure where it is right and unsure where it is wrong: the mean is right on all four
    sure_a = [[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.05, 0.95]]
    sure_b = [[0.4, 0.6], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]]
    for fold in (0, 1):
        files = [f"f{fold}_{i}.png" for i in range(4)]
        _run(a, fold, 0.75, files)
        _run(b, fold, 0.75, files)
        _cached_probabilities(a / f"fold{fold}", sure_a, sure_a, labels)
        _cached_probabilities(b / f"fold{fold}", sure_b, [[0.9, 0.1]] * 4, labels)
    table, summary = cv_ensemble([a, b])
    assert "| cbam | 0.750 ± 0.000" in table and "| plain | 0.750 ± 0.000" in table
    assert "| ensemble | 1.000 ± 0.000" in table
    assert "| plain + dihedral TTA | 0.500 ± 0.000" in table  # always class 0
    assert summary["methods"]["ensemble + dihedral TTA"]["balanced_accuracy"] == [0.75, 0.75]
    assert "test: each of the 2 folds in turn" in table and "colour + texture baseline" in table


def test_ensemble_members_of_one_name_are_told_apart_by_their_paths(tmp_path):
    a, b = tmp_path / "finetuned" / "cbam", tmp_path / "probe" / "cbam"
    for d, bal in ((a, 0.9), (b, 0.6)):
        _run(d, 0, bal, ["x.png", "y.png"])
        _cached_probabilities(d / "fold0", [[0.9, 0.1], [0.2, 0.8]] if bal > 0.8 else [[0.9, 0.1]] * 2, [[0.5, 0.5]] * 2,
                              [0, 1])
    table, summary = cv_ensemble([a, b])
    assert f"| {a} | 1.000" in table and f"| {b} | 0.500" in table
    assert len(summary["methods"][str(a)]["balanced_accuracy"]) == 1


def test_two_runs_of_one_recipe_are_told_apart_by_their_paths(tmp_path):
    a, b = tmp_path / "long" / "plain", tmp_path / "short" / "plain"
    for d, bal in ((a, 0.9), (b, 0.6)):
        _run(d, 0, bal, ["x.png"])
    table, summary = cv_table([a, b])
    assert f"| plain ({a}) | 0.900" in table and f"| plain ({b}) | 0.600" in table
    assert set(summary["methods"]) >= {f"plain ({a})", f"plain ({b})"}
