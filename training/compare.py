"""Side-by-side test metrics of several runs, as the markdown table the README quotes.

Runs are only comparable on the same held-out groups, so the table refuses runs whose split
files differ, and puts the majority-class rate and the handcrafted baseline (fitted by the
same split code) on rows of their own.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

COLUMNS = ("accuracy", "balanced_accuracy", "macro_f1", "auc_ovr", "g_mean", "iba", "case_accuracy", "ece")


def _split_digest(run: Path) -> str:
    split = json.loads((run / "split.json").read_text())
    # The split's content (which file went where), not its formatting or timestamps.
    assignment = sorted((f["path"], f["split"]) for f in split["files"])
    return hashlib.sha256(json.dumps(assignment).encode()).hexdigest()


def _row(label: str, metrics: dict) -> str:
    cells = [f"{metrics[c]:.3f}" if isinstance(metrics.get(c), int | float) else "" for c in COLUMNS]
    return "| " + " | ".join([label, *cells]) + " |"


def compare_runs(runs: list[str | Path]) -> str:
    if not runs:
        raise ValueError("name at least one run directory")
    runs = [Path(r) for r in runs]
    for run in runs:
        if not (run / "metrics.json").is_file():
            raise ValueError(f"{run} has no metrics.json: train it to the end or run `python -m training evaluate`")
    digests = {run: _split_digest(run) for run in runs}
    if len(set(digests.values())) > 1:
        groups = {}
        for run, d in digests.items():
            groups.setdefault(d[:12], []).append(str(run))
        raise ValueError(f"the runs were tested on different splits, so their numbers are not comparable: {groups}")
    metrics = {run: json.loads((run / "metrics.json").read_text()) for run in runs}
    first = metrics[runs[0]]
    lines = [f"Test split: {first['split']['description']}; {first['test']['n']} images.", "",
             "| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for run in runs:
        m = metrics[run]
        lines.append(_row(f"{m['architecture']} (`{run.name}`)", m["test"]))
    baseline = first.get("baseline", {}).get("test")
    if baseline:
        lines.append(_row("colour + texture baseline", baseline))
    lines.append(_row("majority class", {"accuracy": first["majority_rate"]}))
    return "\n".join(lines)
