"""How often a classification bundle's out-of-distribution flag fires: on its own test split, on the other
dataset's tissue, and on glass, blank and blurred images. In-process (the service's own imaging, ONNX
Runtime session and score, bundle/ood.py), no HTTP: every image is run once.

    python -m bench.classifier_oos model_store/ebhi_cbam_efficientnet_lite0/1 [--per-class 20] [--synthetic 40]

Image kinds: own (the bundle's test split, from its split.json), other (the other dataset: BreakHis for
an EBHI-Seg model and EBHI-Seg for a BreakHis one, `--per-class` images of each class folder, spread over
the sorted files), glass (near-white images with sensor noise), blank (one flat colour: white, a light
grey, black), blur (the own test images under a Gaussian blur of radius 8 px at 224 px scale). The
threshold is the manifest's `out_of_distribution`; a bundle without one is calibrated here on its val
split as export would (`--flag-rate`), and the result says so. Beside each flag rate: the AUROC of the
score separating that kind from the own test images (1: always apart, 0.5: chance).
Writes bench/results/classifier-oos-<name>-<version>.json with the command in it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from sklearn.metrics import roc_auc_score

from bundle import ood
from bundle.datasets import IMAGE_SUFFIXES, default_data_dir, resolve_dataset
from service.imaging import input_pixels, preprocess
from service.runtime import ModelRuntime
from service.settings import REPO_ROOT, Settings
from service.slides.tissue import MIN_TISSUE_FRACTION, tissue_fraction
from service.store import load_bundle

from .report import command_line, write_results

OTHER_DATASET = {"ebhi_seg": "breakhis_200x", "breakhis_200x": "ebhi_seg"}
BLANK_COLOURS = ((255, 255, 255), (230, 230, 230), (0, 0, 0))


def split_images(bundle: Path, data_dir: Path, part: str) -> tuple[str, list[Path], list[str]]:
    """(dataset name, image paths, their classes) of one part of the bundle's split.json."""
    split = json.loads((bundle / "split.json").read_text())
    dataset = split.get("dataset") or Path(split["root"]).name
    root = resolve_dataset(dataset, data_dir)
    files = [f for f in split["files"] if f["split"] == part]
    return dataset, [root / f["path"] for f in files], [f["class"] for f in files]


def spread(folder: Path, n: int) -> list[Path]:
    """`n` images of a folder, spread evenly over its sorted files."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        return []
    return [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, min(n, len(paths))).astype(int))]


def auroc(inside: np.ndarray, outside: np.ndarray) -> float | None:
    """P(score of an outside image > score of an inside one), ties half (the Mann-Whitney statistic)."""
    if len(inside) == 0 or len(outside) == 0:
        return None
    return float(roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))], np.r_[inside, outside]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.classifier_oos", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path, help="classification bundle <store>/<name>/<version> with split.json")
    p.add_argument("--data", type=Path, default=None, help="data directory (default: ../shared/data)")
    p.add_argument("--per-class", type=int, default=20, help="images of the other dataset per class folder")
    p.add_argument("--synthetic", type=int, default=40, help="glass images (blank: one per colour)")
    p.add_argument("--flag-rate", type=float, default=ood.DEFAULT_FLAG_RATE,
                   help="for a bundle without out_of_distribution: the val fraction the threshold flags")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    data_dir = args.data or default_data_dir()
    bundle = load_bundle(args.bundle)
    if bundle.task != "classification":
        raise SystemExit(f"{bundle.ref} is a {bundle.task} bundle: its out-of-distribution flag is the adapters' "
                         "(python -m bench.adapter_oos)")
    runtime = ModelRuntime(bundle, Settings(model_store=args.bundle.parent.parent, intra_op_threads=1))
    h, w = bundle.input_size

    def inputs(images: list[Image.Image]) -> list[np.ndarray]:  # the network inputs, made once per image
        return [preprocess(img, bundle.preprocessing) for img in images]

    def logits(x: list[np.ndarray]) -> np.ndarray:
        rows = [np.zeros((0, len(bundle.classes)), np.float32)]
        for start in range(0, len(x), 32):
            rows.append(runtime.run(np.stack(x[start : start + 32]))["logits"])
        return np.concatenate(rows)

    def mostly_not_tissue(x: list[np.ndarray]) -> np.ndarray:
        """The service's second test: less than MIN_TISSUE_FRACTION of the network input is tissue."""
        return np.array([tissue_fraction(input_pixels(t, bundle.preprocessing)) < MIN_TISSUE_FRACTION for t in x],
                        dtype=bool)

    def read(paths: list[Path]) -> list[Image.Image]:
        return [Image.open(q).convert("RGB") for q in paths]

    calibrated = bundle.spec.out_of_distribution
    if calibrated is not None:
        spec, threshold_from = calibrated.model_dump(exclude_none=True), "manifest"
    else:  # as export calibrates it, but with the service's decode and ONNX Runtime's logits
        _, val_paths, _ = split_images(args.bundle, data_dir, "val")
        spec = ood.calibrate(ood.score(ood.ENERGY, logits(inputs(read(val_paths)))), args.flag_rate)
        threshold_from = f"calibrated here on the val split (the manifest has none), flag rate {args.flag_rate:g}"

    dataset, test_paths, test_classes = split_images(args.bundle, data_dir, "test")
    own_images = read(test_paths)
    other_name = OTHER_DATASET.get(dataset)
    other_root = resolve_dataset(other_name, data_dir) if other_name else None
    other_paths = ([q for d in sorted(other_root.iterdir()) if d.is_dir() for q in spread(d, args.per_class)]
                   if other_root is not None and other_root.is_dir() else [])
    images = {
        "own": own_images,
        "other": read(other_paths),
        "glass": [Image.fromarray(np.clip(235 + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8))
                  for _ in range(args.synthetic)],
        "blank": [Image.new("RGB", (w, h), c) for c in BLANK_COLOURS],
        "blur": [img.filter(ImageFilter.GaussianBlur(8 * img.width / 224)) for img in own_images],
    }
    x = {k: inputs(v) for k, v in images.items()}
    kind_logits = {k: logits(v) for k, v in x.items()}
    kinds = {k: ood.score(spec["score"], v, spec.get("temperature", 1.0)) for k, v in kind_logits.items()}
    not_tissue = {k: mostly_not_tissue(v) for k, v in x.items()}
    own = kinds["own"]
    correct = np.asarray(bundle.classes)[kind_logits["own"].argmax(1)] == np.asarray(test_classes)
    threshold = spec["threshold"]
    result = {
        "bundle": bundle.ref, "dataset": dataset, "other_dataset": other_name if other_paths else None,
        "score": spec["score"], "threshold": threshold, "threshold_from": threshold_from,
        "val_flag_rate": spec["val_flag_rate"], "stated_flag_rate": spec["flag_rate"],
        "images": {k: int(len(v)) for k, v in kinds.items()},
        "flagged_by_score": {k: round(float(ood.flags(v, threshold).mean()), 4) if len(v) else None
                             for k, v in kinds.items()},
        # what /classify answers: the score's flag, or less than MIN_TISSUE_FRACTION of the image is tissue
        "flagged": {k: round(float((ood.flags(v, threshold) | not_tissue[k]).mean()), 4) if len(v) else None
                    for k, v in kinds.items()},
        "auroc_vs_own": {k: auroc(own, v) for k, v in kinds.items() if k != "own"},
        "own_accuracy": round(float(correct.mean()), 4) if len(correct) else None,
        # is the flag worth more on wrong answers? the rate among misclassified vs correct test images
        "flagged_own_wrong": round(float(ood.flags(own[~correct], threshold).mean()), 4) if (~correct).any() else None,
        "flagged_own_right": round(float(ood.flags(own[correct], threshold).mean()), 4) if correct.any() else None,
        "score_median": {k: round(float(np.median(v)), 4) if len(v) else None for k, v in kinds.items()},
        "command": command_line("bench.classifier_oos", argv),
    }
    write_results(args.results_dir, f"classifier-oos-{bundle.name}-{bundle.version}.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
