"""Cross-validated ensembles: the mean class probabilities of several trained methods, fold by fold.

`python -m training cv-ensemble DIR... --out FILE.md` takes method directories laid out as for
`cv-table` (DIR/fold0/, DIR/fold1/, ...: one run per fold, the same folds for every method), and
scores, on each fold's test part, every method alone and the mean of their softmax outputs, with
and without dihedral test-time augmentation. Nothing is tuned on the test part: the members are
weighted equally. Each run's test probabilities are kept in RUN/test_probabilities.npz, so a
second table over the same runs costs no inference.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.cv import common_folds, folds_description, reference_rows, render

CACHE = "test_probabilities.npz"


def test_probabilities(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(plain, dihedral-TTA, labels, groups) on the run's test part, cached beside its checkpoint."""
    cache = run / CACHE
    if cache.is_file() and cache.stat().st_mtime >= (run / "checkpoint.pt").stat().st_mtime:
        saved = np.load(cache)
        return saved["plain"], saved["tta"], saved["labels"], list(saved["groups"])
    from training.evaluate import run_logits
    from training.metrics import probabilities

    _, _, split, logits_of = run_logits(run)
    logits, labels = logits_of("test")
    tta, _ = logits_of("test", tta=True)  # log of the mean softmax over the 8 views
    plain, tta = probabilities(logits), np.exp(tta)
    groups = [s.group for s in split.test]
    tmp = run / f".{CACHE}.tmp.npz"
    np.savez(tmp, plain=plain, tta=tta, labels=labels, groups=np.asarray(groups))
    tmp.replace(cache)
    return plain, tta, labels, groups


def cv_ensemble(method_dirs: list[str | Path]) -> tuple[str, dict]:
    from training.metrics import classification_metrics

    dirs = [Path(d) for d in method_dirs]
    if len(dirs) < 2:
        raise ValueError("an ensemble needs at least two method directories")
    folds, common = common_folds(dirs)
    names = [d.name for d in dirs]
    if len(set(names)) < len(names):  # one network under two recipes: name them by their paths
        names = [str(d) for d in method_dirs]
    first = [json.loads((folds[dirs[0]][k] / "metrics.json").read_text()) for k in common]
    rows: dict[str, list[dict]] = {}
    for k, reference in zip(common, first, strict=True):
        members = [test_probabilities(folds[d][k]) for d in dirs]
        labels, groups = members[0][2], members[0][3]
        classes = reference["classes"]
        scored = {f"{n}{t}": p for n, (plain, tta, _, _) in zip(names, members, strict=True)
                  for t, p in (("", plain), (" + dihedral TTA", tta))}
        scored["ensemble"] = np.mean([m[0] for m in members], axis=0)
        scored["ensemble + dihedral TTA"] = np.mean([m[1] for m in members], axis=0)
        for label, probs in scored.items():
            rows.setdefault(label, []).append(classification_metrics(labels, probs, classes, groups=groups))
    table, methods = render(rows | reference_rows(first))
    header = [f"{len(common)} folds ({', '.join(map(str, common))}); {folds_description(first[0]['split']['description'])}.",
              f"ensemble: the mean softmax of {', '.join(names)} (equal weights), one seed per fold.",
              "Mean ± standard deviation over folds.", ""]
    return "\n".join(header + table), {"folds": common, "members": [str(d) for d in dirs], "methods": methods}


def add_subcommands(sub) -> None:
    p = sub.add_parser("cv-ensemble", help="equal-weight ensembles of several methods over the same CV folds")
    p.add_argument("methods", nargs="+", help="method directories holding fold0/, fold1/, ... run directories")
    p.add_argument("--out", required=True, help="markdown table to write (and the per-fold figures as .json)")
    p.set_defaults(func=_cv_ensemble)


def _cv_ensemble(args) -> int:
    table, summary = cv_ensemble(args.methods)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    print(table)
    return 0
