"""A served recipe over cross-validation folds: one published bundle per fold, its manifest's figures side by side.

Each bundle is what the service would load for that fold (exported with `--masks`, then `bench.tta`, which chooses
the averaged flip on the fold's own validation split), so the table holds what training's `cv-table` cannot: the
served graph's test figures, the single-view ones it was built from, and Grad-CAM localisation, per fold and as
mean ± standard deviation, beside the colour + texture baseline and the majority rate of the same test folds.
The bundles must test disjoint image sets of one dataset (different folds), else nothing is written.

    python -m bench.folds BUNDLE... [--json FILE]  > table.md
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

COLUMNS = {  # row label -> where in the manifest
    "served graph, balanced accuracy": ("test", "balanced_accuracy"),
    "served graph, accuracy": ("test", "accuracy"),
    "one view (the exported network), balanced accuracy": ("test_single_view", "balanced_accuracy"),
    "8 dihedral views (`tta=dihedral`), balanced accuracy": ("test_dihedral_tta", "balanced_accuracy"),
    "colour + texture baseline, balanced accuracy": ("baseline_test", "balanced_accuracy"),
    "majority rate (the test fold's largest class)": ("majority_rate", None),
    "Grad-CAM pointing game": ("gradcam_localisation", "pointing_game"),
    "random point in the mask": ("gradcam_localisation", "pointing_game_random"),
    "top-20% mask coverage": ("gradcam_localisation", "top_coverage"),
}


def _value(metrics: dict, where: tuple[str, str | None]) -> float | None:
    entry = metrics.get(where[0])
    if where[1] is None:
        return entry if isinstance(entry, int | float) else None
    return entry.get(where[1]) if isinstance(entry, dict) else None


def _test_files(bundle: Path) -> set[str]:
    split = json.loads((bundle / "split.json").read_text())
    return {f["path"] for f in split["files"] if f["split"] == "test"}


def fold_table(bundles: list[Path]) -> tuple[str, dict]:
    """The markdown table and its figures; ValueError when two bundles share a test image."""
    tests = [_test_files(b) for b in bundles]
    for i in range(len(bundles)):
        for j in range(i + 1, len(bundles)):
            if tests[i] & tests[j]:
                raise ValueError(f"{bundles[i]} and {bundles[j]} share {len(tests[i] & tests[j])} test images: "
                                 "not two folds of one cross-validation")
    manifests = [json.loads((b / "manifest.json").read_text()) for b in bundles]
    rows = {label: [_value(m["metrics"], where) for m in manifests] for label, where in COLUMNS.items()}
    rows["averaged views"] = [
        "+".join(m["graphs"]["classify"].get("test_time_augmentation", {}).get("views", ["identity"])) for m in manifests]
    refs = [f"{m['name']}/{m['version']}" for m in manifests]
    lines = ["| | " + " | ".join(f"fold {k} (`{r}`)" for k, r in enumerate(refs)) + " | mean ± std |",
             "|---" * (len(refs) + 2) + "|"]
    for label, values in rows.items():
        numbers = [v for v in values if isinstance(v, int | float)]
        cells = [f"{v:.3f}" if isinstance(v, int | float) else (v or "") for v in values]
        spread = f"{np.mean(numbers):.3f} ± {np.std(numbers):.3f}" if len(numbers) == len(values) else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {spread} |")
    header = [f"{len(bundles)} folds, test images per fold {[len(t) for t in tests]}; "
              "one bundle per fold, its manifest's figures.", ""]
    return "\n".join(header + lines), {"bundles": refs, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.folds", description=__doc__.split("\n")[0])
    p.add_argument("bundles", nargs="+", type=Path, help="bundle directories <store>/<name>/<version>, fold 0 first")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    try:
        table, figures = fold_table(args.bundles)
    except (ValueError, OSError, KeyError) as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
