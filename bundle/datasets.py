"""Dataset rules both sides need: where the data lives, which files are images, whose patient an image is.

Torch-free so that the benchmark and the service's tools use the very rules training splits by.
Bundles and split files name a dataset (the folder under the data directory) and relative paths,
never a machine's absolute path; `resolve_dataset` turns the name back into a folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

DATA_DIR_ENV = "HISTOSERVE_DATA_DIR"
REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# Group rules by dataset folder name: a regex with one capture group, applied to the file name.
GROUP_PATTERNS: dict[str, str] = {
    # GT2001837-1-400-001.png -> GT2001837 (specimen: the prefix before the first '-')
    "ebhi_seg": r"^([^-]+)-",
    # A_29960CD_200X_000.png -> 29960, MC_18842D_200X_000.png -> 18842: the numeric root of the
    # patient field, since ids that share a numeric root (18842 and 18842D) may be one person
    "breakhis_200x": r"^[^_]+_(\d+)",
}


def default_data_dir() -> Path:
    """$HISTOSERVE_DATA_DIR, else ../shared/data beside the repository."""
    return Path(os.environ.get(DATA_DIR_ENV, REPO_ROOT.parent / "shared" / "data"))


def is_image(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def group_pattern(dataset: str) -> str | None:
    return GROUP_PATTERNS.get(dataset)


def group_of(name: str, dataset: str | None = None) -> str:
    """The patient or specimen id of a file name, by the dataset's rule.

    Without a known dataset the rule is guessed from the name's shape: EBHI-Seg names have a '-'
    before any '_', BreakHis names start `<letter>_<patient>_`. A name matching neither is its own group.
    """
    name = Path(name).name
    if dataset is None or dataset not in GROUP_PATTERNS:
        dataset = "ebhi_seg" if "-" in name.split("_", 1)[0] else "breakhis_200x"
    m = re.search(GROUP_PATTERNS[dataset], name)
    return m.group(1) if m else Path(name).stem


def resolve_dataset(dataset: str, data_dir: Path | None = None) -> Path:
    """The folder of a dataset named in a bundle or split file."""
    if not dataset or Path(dataset).name != dataset:
        raise ValueError(f"dataset {dataset!r} must be a folder name, not a path")
    return Path(data_dir if data_dir is not None else default_data_dir()) / dataset
