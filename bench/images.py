"""The real images every measurement uses: EBHI-Seg PNGs, a few per class, spread over specimens.

Every part of the benchmark (raw decode, the service, the naive endpoint) reads the same
files, so the ratios compare the same work. /adapt needs five classes of at least five
images each, which is why EBHI-Seg's six classes are the source.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET = "ebhi_seg"
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def default_data_dir() -> Path:
    """HISTOSERVE_DATA_DIR, else ../shared/data beside the repository (what the tests use too)."""
    return Path(os.environ.get("HISTOSERVE_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@dataclass(frozen=True)
class Sample:
    label: str
    path: Path
    data: bytes


def load_samples(data_dir: Path, per_class: int) -> list[Sample]:
    """`per_class` images of each EBHI-Seg class, taken at even steps through the sorted file list."""
    root = Path(data_dir) / DATASET
    if not root.is_dir():
        raise FileNotFoundError(f"real images not found: {root} is not a directory "
                                "(pass --data-dir or set HISTOSERVE_DATA_DIR to the shared data folder)")
    samples: list[Sample] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in SUFFIXES)
        if not files:
            continue
        # Even steps rather than the first N: the first files of a class often share one specimen.
        step = max(1, len(files) // per_class)
        chosen = files[::step][:per_class]
        samples += [Sample(class_dir.name, p, p.read_bytes()) for p in chosen]
    if not samples:
        raise FileNotFoundError(f"no images under {root}")
    return samples


def support_sets(samples: list[Sample], ways: int, shots: int, count: int) -> list[list[Sample]]:
    """`count` different N-way K-shot support sets (the first `ways` classes with enough images)."""
    by_class: dict[str, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    classes = [c for c in sorted(by_class) if len(by_class[c]) >= shots][:ways]
    if len(classes) < ways:
        raise ValueError(f"a {ways}-way {shots}-shot support set needs {ways} classes with {shots} images each; "
                         f"the sample has {[(c, len(v)) for c, v in sorted(by_class.items())]}")
    sets = []
    for i in range(count):
        chosen = []
        for c in classes:
            pool = by_class[c]
            chosen += [pool[(i * shots + k) % len(pool)] for k in range(shots)]
        sets.append(chosen)
    return sets
