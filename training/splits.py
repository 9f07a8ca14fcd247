"""Group-disjoint train/val/test splits, stratified by class as far as the groups allow.

Images of one patient or specimen look alike, so they must all fall on one side of a split;
otherwise test accuracy measures memorised patients. StratifiedGroupKFold (scikit-learn) picks
whole groups while keeping class proportions close: one fold of 1/test_frac becomes the test
set, then one fold of the rest the validation set. Classes with fewer than three groups cannot
appear on all three sides; the split says so in `class_report` and as a warning, and leaves the
classes as they are (never merged).

The split file holds the seed and every file's relative path, class and group, so loading it
reproduces the exact split without the scan or the random generator.
"""
from __future__ import annotations

import json
import random
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from bundle.datasets import resolve_dataset
from training.data import ImageFolder, Sample, scan_image_folder

PARTS = ("train", "val", "test")
SPLIT_FORMAT_VERSION = 2  # 2: dataset names instead of root paths; 1 is still read


@dataclass
class Split:
    root: Path
    classes: list[str]
    seed: int
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    group_pattern: str | None = None
    mask_root: Path | None = None
    description: str = ""
    class_report: dict = field(default_factory=dict)

    def part(self, name: str) -> list[Sample]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def _fold(labels: np.ndarray, groups: np.ndarray, frac: float, seed: int, what: str, index: int = 0,
          n_splits: int | None = None) -> np.ndarray:
    """Boolean mask of fold `index` of a StratifiedGroupKFold holding about `frac` of the groups."""
    n_splits = n_splits or max(2, int(round(1.0 / frac)))
    n_groups = len(set(groups.tolist()))
    if n_groups < n_splits:
        raise ValueError(
            f"{n_groups} groups cannot make a {what} fraction of {frac:.2f} ({n_splits} folds need at least "
            f"{n_splits} groups); use more data or a larger fraction"
        )
    if not 0 <= index < n_splits:
        raise ValueError(f"fold {index} does not exist in {n_splits}-fold cross-validation")
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, idx = list(sgkf.split(np.zeros(len(labels)), labels, groups))[index]
    chosen = np.zeros(len(labels), bool)
    chosen[idx] = True
    return chosen


def _class_report(classes, parts: dict[str, list[Sample]]) -> dict:
    report = {}
    for label, cls in enumerate(classes):
        entry = {}
        for name, samples in parts.items():
            mine = [s for s in samples if s.label == label]
            entry[name] = {"images": len(mine), "groups": len({s.group for s in mine})}
        entry["groups"] = len({s.group for ss in parts.values() for s in ss if s.label == label})
        entry["missing_from"] = [n for n in parts if entry[n]["images"] == 0]
        report[cls] = entry
    return report


def make_split(folder: ImageFolder, val_frac: float = 0.15, test_frac: float = 0.15, seed: int = 0,
               cv_folds: int = 0, cv_fold: int = 0) -> Split:
    """One train/val/test split; with cv_folds > 1 the test set is fold `cv_fold` of a grouped
    K-fold (the K test sets then cover every group exactly once) and test_frac is 1/K."""
    if cv_folds > 1:
        test_frac = 1.0 / cv_folds
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"val_frac={val_frac} and test_frac={test_frac} must be in (0, 1) and sum below 1")
    samples = folder.samples
    labels = np.array([s.label for s in samples])
    groups = np.array([s.group for s in samples])
    with warnings.catch_warnings():
        # sklearn warns when a class has fewer groups than folds; our class_report says it better
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        is_test = (_fold(labels, groups, test_frac, seed, "test", cv_fold, cv_folds) if cv_folds > 1
                   else _fold(labels, groups, test_frac, seed, "test"))
        rest = np.flatnonzero(~is_test)
        is_val_rest = _fold(labels[rest], groups[rest], val_frac / (1 - test_frac), seed + 1, "val")
    is_val = np.zeros(len(samples), bool)
    is_val[rest[is_val_rest]] = True
    parts = {
        "train": [s for s, t, v in zip(samples, is_test, is_val, strict=True) if not t and not v],
        "val": [s for s, v in zip(samples, is_val, strict=True) if v],
        "test": [s for s, t in zip(samples, is_test, strict=True) if t],
    }
    report = _class_report(folder.classes, parts)
    for cls, entry in report.items():
        if entry["missing_from"]:
            warnings.warn(
                f"class {cls!r} has {entry['groups']} group(s): it is absent from {entry['missing_from']} "
                "(groups are never shared between splits, and classes are not merged)",
                stacklevel=2,
            )
    grouping = folder.group_pattern or "one group per image"
    test_desc = f"test fold {cv_fold + 1} of {cv_folds}" if cv_folds > 1 else f"test {test_frac:.2f}"
    desc = (f"group-disjoint split of {folder.root.name} by groups from file names ({grouping}), "
            f"stratified by class, val {val_frac:.2f} / {test_desc}, seed {seed}")
    return Split(root=folder.root, classes=list(folder.classes), seed=seed, group_pattern=folder.group_pattern,
                 mask_root=folder.mask_root, description=desc, class_report=report, **parts)


def save_split(split: Split, path) -> None:
    """Write the split as JSON: the dataset's name (the image folder's name under the data directory),
    its group rule and every file by relative path, never this machine's absolute paths."""
    files = []
    for name in PARTS:
        for s in split.part(name):
            rel = s.path.relative_to(split.root).as_posix()
            entry = {"path": rel, "class": split.classes[s.label], "group": s.group, "split": name}
            if s.mask_path is not None:
                entry["mask"] = s.mask_path.relative_to(split.mask_root).as_posix()
            files.append(entry)
    doc = {
        "format_version": SPLIT_FORMAT_VERSION,
        "description": split.description,
        "seed": split.seed,
        "dataset": Path(split.root).name,
        "mask_dataset": Path(split.mask_root).name if split.mask_root else None,
        "group_pattern": split.group_pattern,
        "classes": split.classes,
        "counts": {name: len(split.part(name)) for name in PARTS},
        "class_report": split.class_report,
        "files": files,
    }
    Path(path).write_text(json.dumps(doc, indent=1))


def _stored_root(doc: dict, name_key: str, path_key: str, data_dir) -> Path | None:
    """Where a split's images (or masks) are: format 2 names a dataset under the data directory;
    format 1 recorded a path, used when it exists here, else its last part as the dataset name."""
    if doc.get(name_key):
        return resolve_dataset(doc[name_key], data_dir)
    stored = doc.get(path_key)
    if not stored:
        return None
    return Path(stored) if Path(stored).is_dir() else resolve_dataset(Path(stored).name, data_dir)


def load_split(path, root=None, mask_root=None, data_dir=None) -> Split:
    """Rebuild a split from its file; `root`/`mask_root` override the stored folders (another layout),
    `data_dir` the data directory the dataset names are looked up in (default: HISTOSERVE_DATA_DIR)."""
    doc = json.loads(Path(path).read_text())
    if doc.get("format_version") not in (1, SPLIT_FORMAT_VERSION):
        raise ValueError(f"{path}: unknown split format_version {doc.get('format_version')!r}")
    root = Path(root) if root is not None else _stored_root(doc, "dataset", "root", data_dir)
    mroot = Path(mask_root) if mask_root is not None else _stored_root(doc, "mask_dataset", "mask_root", data_dir)
    classes = doc["classes"]
    index = {c: i for i, c in enumerate(classes)}
    parts: dict[str, list[Sample]] = {name: [] for name in PARTS}
    missing = []
    for f in doc["files"]:
        p = root / f["path"]
        if not p.is_file():
            missing.append(f["path"])
        mask = None
        if mroot is not None:
            # A split written without masks still finds them: masks share the images' class/file names.
            candidate = mroot / (f.get("mask") or f["path"])
            mask = candidate if candidate.is_file() else None
        parts[f["split"]].append(Sample(path=p, label=index[f["class"]], group=f["group"], mask_path=mask))
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) of split {path} are not under {root} (e.g. {missing[:3]})")
    return Split(root=root, classes=classes, seed=doc["seed"], group_pattern=doc.get("group_pattern"),
                 mask_root=mroot, description=doc.get("description", ""),
                 class_report=doc.get("class_report", {}), **parts)


def apply_class_map(folder: ImageFolder, class_map: dict) -> ImageFolder:
    """Relabel folders into target classes (BreakHis subtypes -> benign/malignant); groups unchanged."""
    missing = [c for c in folder.classes if c not in class_map]
    if missing:
        raise ValueError(f"class_map has no target for folder(s) {missing}")
    targets = sorted(set(class_map[c] for c in folder.classes))
    samples = [replace(s, label=targets.index(class_map[folder.classes[s.label]])) for s in folder.samples]
    return replace(folder, classes=targets, samples=samples)


def limit_per_class(samples: list[Sample], n: int | None, seed: int) -> list[Sample]:
    """At most about n images per class, taken by whole groups so the split stays group-disjoint."""
    if not n:
        return samples
    rng = random.Random(seed)
    kept: list[Sample] = []
    for label in sorted({s.label for s in samples}):
        by_group: dict[str, list[Sample]] = {}
        for s in samples:
            if s.label == label:
                by_group.setdefault(s.group, []).append(s)
        groups = sorted(by_group)
        rng.shuffle(groups)
        count = 0
        for g in groups:
            if count >= n:
                break
            kept += by_group[g]
            count += len(by_group[g])
    return kept


def prepare_split(cfg, out_dir: Path) -> Split:
    """Scan and split (or reload cfg.split_file), write split.json and data_report.json."""
    if cfg.split_file:
        split = load_split(cfg.split_file, root=cfg.data, mask_root=cfg.mask_root)
        report = {"split_file": cfg.split_file}
    else:
        if not cfg.data:
            raise ValueError("no data folder: pass --data DIR or set 'data' in the config")
        folder = scan_image_folder(cfg.data, cfg.group_pattern, cfg.mask_root, cfg.classes)
        report = folder.report()
        if cfg.class_map:
            folder = apply_class_map(folder, cfg.class_map)
        split = make_split(folder, cfg.val_frac, cfg.test_frac, cfg.split_seed, cfg.cv_folds, cfg.cv_fold)
        # a reloaded split is already limited: limiting again could drop further groups
        split.train = limit_per_class(split.train, cfg.max_per_class, cfg.split_seed)
    save_split(split, out_dir / "split.json")
    (out_dir / "data_report.json").write_text(json.dumps(report, indent=1))
    return split
