"""Per-patient test accuracy of BreakHis cross-validation runs: which patients the folds' errors come from.

    .venv/bin/python results/breakhis_patients.py runs/cv_probe_448/breakhis_seed0/efficientnet_lite0_stages2345

For every fold run under the folder, the best checkpoint's test predictions (computed as evaluation computes
them, without TTA) grouped by patient (the split's numeric-root group) and by subtype folder. Prints one JSON line
per (fold, patient, subtype) and, last, the patients of each class whose images are mostly misclassified.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from training.evaluate import run_logits


def main(folder: str) -> int:
    worst = defaultdict(list)
    for run in sorted(p for p in Path(folder).glob("fold*") if (p / "checkpoint.pt").is_file()):
        _, _, split, logits_of = run_logits(run)
        logits, labels = logits_of("test")
        right = logits.argmax(1) == labels
        cells = defaultdict(list)
        for sample, ok in zip(split.test, right, strict=True):
            cells[(split.classes[sample.label], sample.group, sample.path.parent.name)].append(bool(ok))
        for (cls, group, subtype), oks in sorted(cells.items()):
            row = {"fold": run.name, "class": cls, "patient": group, "subtype": subtype, "images": len(oks),
                   "accuracy": round(float(np.mean(oks)), 3)}
            print(json.dumps(row))
            if row["accuracy"] < 0.5:
                worst[cls].append(f"{run.name}:{group}:{subtype} ({sum(oks)}/{len(oks)})")
    print(json.dumps({"mostly_misclassified": worst}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
