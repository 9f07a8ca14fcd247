"""Cross-validation tables: several methods, each run on the same K group-disjoint folds.

`python -m training cv-table DIR...` reads DIR/fold*/metrics.json for each method directory
and writes mean and standard deviation over folds, with the colour + texture baseline and the
majority-class rate evaluated on the very same test folds. Methods are only compared fold by
fold on identical splits: the table refuses directories whose fold k tested different files.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from training.compare import _split_digest

COLUMNS = ("balanced_accuracy", "accuracy", "macro_f1", "auc_ovr")


def _folds(method_dir: Path) -> dict[int, Path]:
    folds = {}
    for run in sorted(method_dir.glob("fold*")):
        if (run / "metrics.json").is_file():
            folds[int(run.name.removeprefix("fold"))] = run
    return folds


def _cell(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return ""
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def folds_description(split_description: str) -> str:
    """One fold's split description, said of all the folds."""
    return re.sub(r"test fold \d+ of (\d+)", r"test: each of the \1 folds in turn", split_description)


def common_folds(dirs: list[Path]) -> tuple[dict[Path, dict[int, Path]], list[int]]:
    """Each method's fold runs and the folds every method has; refuses a fold tested on different files."""
    folds = {d: _folds(d) for d in dirs}
    common = sorted(set.intersection(*(set(f) for f in folds.values()))) if dirs else []
    if not common:
        raise ValueError(f"no fold has metrics.json in every one of {[str(d) for d in dirs]}")
    for k in common:
        if len({_split_digest(folds[d][k]) for d in dirs}) > 1:
            raise ValueError(f"fold {k} was tested on different splits across {[str(d) for d in dirs]}")
    return folds, common


def reference_rows(first: list[dict]) -> dict[str, list[dict]]:
    """The colour + texture baseline (where evaluated) and the majority rate, from one method's per-fold
    metrics.json: the same test folds as every method's."""
    rows = {}
    if all("baseline" in m for m in first):
        rows["colour + texture baseline"] = [m["baseline"]["test"] for m in first]
    rows["majority class"] = [{"accuracy": m["majority_rate"], "balanced_accuracy": 1.0 / len(m["classes"])}
                              for m in first]
    return rows


def render(rows: dict[str, list[dict]]) -> tuple[list[str], dict]:
    """The markdown table (mean ± std over folds of each row's per-fold metrics) and the per-fold figures."""
    table = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    table += [f"| {label} | " + " | ".join(_cell([m.get(c) for m in per_fold]) for c in COLUMNS) + " |"
              for label, per_fold in rows.items()]
    return table, {label: {c: [m.get(c) for m in per_fold] for c in COLUMNS} for label, per_fold in rows.items()}


def cv_table(method_dirs: list[str | Path]) -> tuple[str, dict]:
    dirs = [Path(d) for d in method_dirs]
    folds, common = common_folds(dirs)
    metrics = {d: [json.loads((folds[d][k] / "metrics.json").read_text()) for k in common] for d in dirs}
    first = metrics[dirs[0]]
    labels = {}
    for d in dirs:
        arch = metrics[d][0]["architecture"]
        labels[d] = arch if d.name == arch else f"{arch} ({d.name})"  # two recipes of one network stay apart
    if len(set(labels.values())) < len(labels):  # and two runs of one recipe go by their paths
        labels = {d: f"{metrics[d][0]['architecture']} ({d})" for d in dirs}
    rows: dict[str, list[dict]] = {}
    for d in dirs:
        rows[labels[d]] = [m["test"] for m in metrics[d]]
        if all("test_tta" in m for m in metrics[d]):
            rows[f"{labels[d]} + dihedral TTA"] = [m["test_tta"] for m in metrics[d]]
    table, methods = render(rows | reference_rows(first))
    n_test = [m["test"]["n"] for m in first]
    description = folds_description(first[0]["split"]["description"])
    header = [f"{len(common)} folds ({', '.join(str(k) for k in common)}); {description}; test images per fold {n_test}.",
              "Mean ± standard deviation over folds (one seed per fold).", ""]
    return "\n".join(header + table), {"folds": common, "split": first[0]["split"]["description"], "methods": methods}
