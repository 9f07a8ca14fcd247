"""The real images every measurement uses: EBHI-Seg PNGs, a few per class, spread over specimens.

Every part of the benchmark (raw decode, the service, the naive endpoint) reads the same
files, so the ratios compare the same work. /adapt needs five classes of at least five
images each, which is why EBHI-Seg's six classes are the source.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bundle.datasets import default_data_dir, group_of, is_image  # noqa: F401 (default_data_dir re-exported)

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET = "ebhi_seg"


@dataclass(frozen=True)
class Sample:
    label: str
    path: Path
    data: bytes


def load_samples(data_dir: Path, per_class: int) -> list[Sample]:
    """`per_class` images of each EBHI-Seg class, spread over specimens: one image of each specimen in
    turn (sorted ids, each specimen's files in order), so no specimen gives a second image before every
    specimen has given one."""
    root = Path(data_dir) / DATASET
    if not root.is_dir():
        raise FileNotFoundError(f"real images not found: {root} is not a directory "
                                "(pass --data-dir or set HISTOSERVE_DATA_DIR to the shared data folder)")
    samples: list[Sample] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        by_specimen: dict[str, list[Path]] = {}
        for p in sorted(p for p in class_dir.iterdir() if is_image(p)):
            by_specimen.setdefault(group_of(p.name, DATASET), []).append(p)
        queues = [by_specimen[g] for g in sorted(by_specimen)]
        chosen: list[Path] = []
        for depth in range(max((len(q) for q in queues), default=0)):
            chosen += [q[depth] for q in queues if depth < len(q)]
            if len(chosen) >= per_class:
                break
        samples += [Sample(class_dir.name, p, p.read_bytes()) for p in chosen[:per_class]]
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
