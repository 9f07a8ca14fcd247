"""`python -m training export | verify | localise`: from a training run to a verified bundle.

    python -m training export --run runs/ebhi_cbam_resnet18_fast --store model_store --name ebhi_cbam_resnet18 \
        [--masks ../shared/data/ebhi_seg_masks] [--data DIR] [--version N] [--ood-flag-rate 0.05]
    python -m training verify model_store/ebhi_cbam_resnet18/1 [--run RUN_DIR]
    python -m training localise --bundle model_store/ebhi_cbam_resnet18/1 --split RUN/split.json \
        --masks ../shared/data/ebhi_seg_masks [--part test] [--out scores.json]

A manifest is hashed and immutable once written, so Grad-CAM localisation is measured during
`export` (with `--masks`, on the run's held-out test split, before the bundle is written) and
goes into the manifest's `metrics.gradcam_localisation`. So is the out-of-distribution flag of a
classification bundle: the energy of the logits (bundle/ood.py) on the run's validation split, and the
threshold that `--ood-flag-rate` of those images exceed, into the manifest's `out_of_distribution`.
When the run's images are not here, the bundle is exported without it (and without the dataset
fingerprint), and the export says so. `localise` scores an existing bundle
with ONNX Runtime alone and prints (or writes) the scores; it never edits a bundle.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import replace
from pathlib import Path

LOCALISATION_PART = "test"
OOD_PART = "val"  # the out-of-distribution threshold is calibrated here, never on test


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained run as a verified ONNX bundle <store>/<name>/<version>/")
    p.add_argument("--run", required=True, help="run directory (checkpoint.pt, metrics.json, split.json, config.json)")
    p.add_argument("--store", required=True, help="model store root, e.g. model_store")
    p.add_argument("--name", default=None, help="bundle name; default: the run config's name")
    p.add_argument("--version", type=int, default=None, help="version number; default: the next free one")
    p.add_argument("--masks", default=None,
                   help="mask folder (class/file as the images): score Grad-CAM on the test split into the manifest")
    p.add_argument("--data", default=None, help="data root when it moved since training")
    p.add_argument("--pixel-size-um", type=float, nargs=2, metavar=("X", "Y"), default=None,
                   help="physical size of one training-image pixel in micrometres (whole-slide tiling)")
    p.add_argument("--pixel-size-source", default=None, help="where the pixel size comes from (paper, scanner)")
    p.add_argument("--pixel-size-estimated", action="store_true", help="the pixel size is an estimate")
    p.add_argument("--ood-flag-rate", type=float, default=None, metavar="RATE",
                   help="fraction of validation images the out-of-distribution threshold flags (default 0.05; "
                        "0: no out-of-distribution flag)")
    p.set_defaults(func=_export)

    p = sub.add_parser("verify", help="check a bundle's hashes and graphs; with --run, parity against PyTorch")
    p.add_argument("bundle", help="bundle directory <store>/<name>/<version>")
    p.add_argument("--run", default=None, help="the run it came from: adds the parity check against its checkpoint")
    p.set_defaults(func=_verify)

    p = sub.add_parser("localise", help="score a bundle's Grad-CAM against masks (ONNX Runtime only)")
    p.add_argument("--bundle", required=True, help="bundle directory")
    p.add_argument("--split", required=True, help="split.json of the run (the bundle's own split.json works)")
    p.add_argument("--masks", required=True, help="mask folder, class/file as the images")
    p.add_argument("--data", default=None, help="image root when it moved since the split was written")
    p.add_argument("--part", default=LOCALISATION_PART, choices=("train", "val", "test"))
    p.add_argument("--out", default=None, help="write the scores as JSON here (default: print only)")
    p.set_defaults(func=_localise)


# ----------------------------------------------------------------------------- helpers

def dataset_fingerprint(root: Path, rel_paths) -> str:
    """sha256 over the sorted (relative path, size) of the data a run used (contracts.md manifest field)."""
    digest = hashlib.sha256()
    for rel in sorted(set(rel_paths)):
        digest.update(f"{rel}\t{(root / rel).stat().st_size}\n".encode())
    return digest.hexdigest()


def load_run(run_dir: Path):
    """(model in eval mode, checkpoint dict, metrics dict or {}) of a supervised run."""
    from training.evaluate import load_checkpoint

    if not (run_dir / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{run_dir} has no checkpoint.pt (train it first)")
    model, ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return model, ckpt, metrics


def masked_samples(samples, root: Path, masks: Path):
    """Samples with their mask path set (masks mirror the image folder); those without a mask are dropped."""
    out = []
    for s in samples:
        mask = masks / s.path.relative_to(root)
        if mask.is_file():
            out.append(replace(s, mask_path=mask))
    return out


def load_images_and_masks(samples, size: int, mean, std):
    """(images (N, 3, size, size) normalised, masks (N, size, size) bool, labels (N,)) for scoring."""
    import torch

    from training.data import HistoDataset
    from training.transforms import eval_transform

    ds = HistoDataset(samples, size, eval_transform(mean, std), with_masks=True)
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([it["image"] for it in items])
    masks = torch.stack([torch.as_tensor(it["mask"]).reshape(size, size) for it in items]) > 0
    labels = torch.tensor([it["label"] for it in items])
    return images, masks, labels


def localise_split(source, split, masks_dir: Path, size: int, mean, std, part: str = LOCALISATION_PART) -> dict:
    """Grad-CAM localisation of `source` (model or bundle dir) on one split part, explaining the true class."""
    from training.gradcam import score_localisation

    samples = masked_samples(split.part(part), split.root, masks_dir)
    if not samples:
        raise ValueError(f"no {part} image has a mask under {masks_dir}")
    images, masks, labels = load_images_and_masks(samples, size, mean, std)
    scores = score_localisation(source, images, masks, labels)
    scores.update(part=part, target="true class", masks=str(masks_dir), images_without_mask=len(split.part(part)) - len(samples))
    return scores


def calibrate_ood(model, samples, size: int, mean, std, flag_rate: float, batch: int = 64) -> dict:
    """The manifest's `out_of_distribution` from the eager network's logits on `samples` (the val split).

    Energy of the raw logits (bundle.ood explains the choice): model.onnx outputs the same logits within
    the export's parity tolerance, so the service's scores are the ones calibrated here.
    """
    import torch

    from bundle import ood
    from training.data import HistoDataset
    from training.engine import predict
    from training.transforms import eval_transform

    if not samples:
        raise ValueError(f"the {OOD_PART} split is empty: nothing to calibrate the out-of-distribution flag on")
    loader = torch.utils.data.DataLoader(HistoDataset(samples, size, eval_transform(mean, std)), batch_size=batch)
    logits, _ = predict(model, loader, torch.device("cpu"), amp=False)
    scores = ood.score(ood.ENERGY, logits)
    return ood.calibrate(scores, flag_rate, name=ood.ENERGY, calibrated_on=OOD_PART)


def _split_without_images(path: Path) -> dict:
    """What the manifest records of a split whose images are not here: its description and seed."""
    doc = json.loads(path.read_text())
    return {"description": doc.get("description", ""), "seed": doc.get("seed")}


# ----------------------------------------------------------------------------- handlers

def _export(args) -> int:
    from bundle.ood import DEFAULT_FLAG_RATE
    from training.config import TrainConfig
    from training.export import export_bundle
    from training.splits import load_split

    run = Path(args.run)
    model, ckpt, metrics = load_run(run)
    if not metrics:
        raise SystemExit(f"{run} has no metrics.json: run `python -m training evaluate --run {run}` first, "
                         "a bundle must carry its held-out metrics")
    cfg = TrainConfig(**ckpt["config"])
    # the folder the run was trained on when it is here, else the split's dataset name under the data dir
    trained_on = cfg.data if cfg.data and Path(cfg.data).is_dir() else None
    flag_rate = DEFAULT_FLAG_RATE if args.ood_flag_rate is None else args.ood_flag_rate
    if not 0 <= flag_rate < 1:
        raise SystemExit(f"--ood-flag-rate must be in [0, 1), got {flag_rate}")
    try:
        split = load_split(run / "split.json", root=args.data or trained_on)
    except FileNotFoundError as exc:  # the bundle needs none of the images; what is measured on them is left out
        if args.masks:
            raise SystemExit(f"--masks scores Grad-CAM on the test images, which are not here: {exc}") from exc
        split = None
        print(json.dumps({"data": f"not found, exported without the dataset fingerprint and the "
                                  f"out-of-distribution flag ({exc}); give --data DIR to include them"}), flush=True)
    size = int(ckpt["preprocessing"]["size"])
    mean, std = ckpt["preprocessing"]["mean"], ckpt["preprocessing"]["std"]

    bundle_metrics = {"test": metrics["test"], "majority_rate": metrics.get("majority_rate"),
                      "val": metrics.get("val")}
    if "test_tta" in metrics:  # the graph has no TTA: beside the served figures, not instead of them
        bundle_metrics["test_dihedral_tta"] = metrics["test_tta"]
    if "training" in metrics:
        bundle_metrics["training"] = metrics["training"]
    if "baseline" in metrics:
        bundle_metrics["baseline_test"] = metrics["baseline"].get("test")
    if args.masks:
        bundle_metrics["gradcam_localisation"] = localise_split(model, split, Path(args.masks), size, mean, std)
        print(json.dumps({"gradcam_localisation": bundle_metrics["gradcam_localisation"]}), flush=True)

    out_of_distribution = None
    if split is not None and flag_rate > 0 and split.part(OOD_PART):
        out_of_distribution = calibrate_ood(model, split.part(OOD_PART), size, mean, std, flag_rate)
        print(json.dumps({"out_of_distribution": out_of_distribution}), flush=True)
    elif split is not None:
        why = "--ood-flag-rate 0" if flag_rate == 0 else f"the {OOD_PART} split is empty"
        print(json.dumps({"out_of_distribution": f"not calibrated ({why})"}), flush=True)

    described = (_split_without_images(run / "split.json") if split is None
                 else {"description": split.description, "seed": split.seed})
    extra = {
        "split": {**metrics.get("split", {}), "description": described["description"], "file": "split.json",
                  "seed": described["seed"]},
        "recipe": cfg.recipe or f"training config {cfg.name!r}",
        "training": ckpt["config"],
        "checkpoint_epoch": ckpt.get("epoch", -1) + 1,
    }
    if split is not None:
        all_paths = [s.path.relative_to(split.root).as_posix() for p in ("train", "val", "test")
                     for s in split.part(p)]
        extra["dataset_fingerprint"] = dataset_fingerprint(split.root, all_paths)
    bundle = export_bundle(
        model, args.store, args.name or cfg.name, classes=list(ckpt["classes"]), input_size=(size, size),
        mean=mean, std=std, temperature=float(metrics.get("temperature", 1.0)), metrics=bundle_metrics,
        extra_manifest=extra, version=args.version, files=[run / "split.json"], model_args=ckpt["model_args"],
        pixel_size_um=_pixel_size(args), out_of_distribution=out_of_distribution)
    print(bundle)
    return 0


def _pixel_size(args) -> dict | None:
    if args.pixel_size_um is None:
        return None
    x, y = args.pixel_size_um
    return {"x": x, "y": y, "estimated": bool(args.pixel_size_estimated),
            "source": args.pixel_size_source or "given at export"}


def _verify(args) -> int:
    from training.verify import BundleError, verify_bundle

    model = load_run(Path(args.run))[0] if args.run else None
    try:
        report = verify_bundle(args.bundle, model)
    except BundleError as exc:
        print(f"REFUSED: {exc}")
        return 1
    print(json.dumps(report, indent=1))
    return 0


def _localise(args) -> int:
    from bundle import read_manifest
    from training.splits import load_split

    manifest, _ = read_manifest(Path(args.bundle))
    size = manifest.input.dims[1]
    pre = manifest.preprocessing
    split = load_split(args.split, root=args.data)
    scores = localise_split(Path(args.bundle), split, Path(args.masks), size, pre.mean, pre.std, args.part)
    text = json.dumps(scores, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0
