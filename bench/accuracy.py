"""`python -m bench.accuracy BUNDLE_DIR`: a classification bundle's own test split, classified over HTTP.

Starts the service on a loopback port with a store holding just that bundle (a symlink, so nothing is
copied), POSTs every test image of the bundle's `split.json` to /classify, and scores the answers with
scikit-learn, beside the majority-class rate of the same images. This is what a lab gets from the
running service, decode and resize included; the manifest's figures come from PyTorch at export.
Writes bench/results/accuracy-<name>-<version>[-tta-dihedral].json (`--tta dihedral`: /classify's
test-time augmentation, the mean of the 8 rotations and flips).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from bundle.datasets import resolve_dataset

from .images import REPO_ROOT, default_data_dir
from .report import command_line, write_results
from .servers import free_port, start


def split_images(bundle: Path, data_dir: Path, part: str = "test") -> tuple[list[Path], list[str], str]:
    """The images of one part of a bundle's split.json, their classes and the split's description."""
    split = json.loads((bundle / "split.json").read_text())
    root = resolve_dataset(split.get("dataset") or Path(split["root"]).name, data_dir)
    files = [f for f in split["files"] if f["split"] == part]
    return [root / f["path"] for f in files], [f["class"] for f in files], split.get("description", "")


def classify_all(url: str, model: str, paths: list[Path], chunk: int = 8, tta: str = "none") -> list[str]:
    labels = []
    with httpx.Client(timeout=120.0) as client:
        for start_at in range(0, len(paths), chunk):
            files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths[start_at:start_at + chunk]]
            r = client.post(f"{url}/classify", files=files, data={"model": model, "tta": tta})
            r.raise_for_status()
            labels += [item["label"] for item in r.json()["results"]]
    return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path, help="bundle directory <store>/<name>/<version> with split.json")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding the dataset (default: ../shared/data)")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument("--tta", choices=("none", "dihedral"), default="none", help="/classify's tta field")
    args = parser.parse_args(argv)
    bundle = args.bundle.resolve()
    manifest = json.loads((bundle / "manifest.json").read_text())
    name, version = manifest["name"], manifest["version"]
    paths, truth, description = split_images(bundle, args.data_dir or default_data_dir())
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        (store / name).mkdir(parents=True)
        (store / name / str(version)).symlink_to(bundle)
        port = free_port()
        server = start("service", ["-m", "service"], {"HISTOSERVE_MODEL_STORE": str(store), "HISTOSERVE_PORT": str(port),
                                                     "HISTOSERVE_HOST": "127.0.0.1"}, Path(tmp) / "service.log", port)
        try:
            predicted = classify_all(server.url(""), f"{name}/{version}", paths, tta=args.tta)
        finally:
            server.stop()
    classes = manifest["classes"]
    counts = np.array([truth.count(c) for c in classes])
    result = {
        "bundle": f"{name}/{version}", "split": description, "images": len(paths), "tta": args.tta,
        "accuracy": accuracy_score(truth, predicted),
        "balanced_accuracy": balanced_accuracy_score(truth, predicted),
        "macro_f1": f1_score(truth, predicted, average="macro", labels=classes, zero_division=0),
        "majority_rate": float(counts.max() / counts.sum()),
        "manifest_test_balanced_accuracy": manifest.get("metrics", {}).get("test", {}).get("balanced_accuracy"),
        "command": command_line("bench.accuracy", argv),
    }
    suffix = "" if args.tta == "none" else f"-tta-{args.tta}"
    write_results(args.results_dir, f"accuracy-{name}-{version}{suffix}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
