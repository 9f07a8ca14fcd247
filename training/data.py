"""Reading histopathology ImageFolders: images, their groups (patient or specimen), optional masks.

A folder holds one subfolder per class. Every image also belongs to a group parsed from its
file name (the patient or specimen it came from), because splits must keep groups apart: an
image-level split leaks patients and inflates accuracy (see ../shared/data/README.md).
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

# One place for the data rules, torch-free and shared with the benchmark: the image suffixes,
# each dataset's group (patient/specimen) pattern, the data directory (bundle/datasets.py).
from bundle.datasets import GROUP_PATTERNS, IMAGE_SUFFIXES, default_data_dir  # noqa: F401 (re-exported)

IMAGE_EXTENSIONS = IMAGE_SUFFIXES


class ImageReadError(ValueError):
    """An image file that Pillow cannot decode."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    group: str
    mask_path: Path | None = None


@dataclass
class ImageFolder:
    """What `scan_image_folder` returns: the readable samples and what was left out, and why."""

    root: Path
    classes: list[str]
    samples: list[Sample]
    skipped: list[tuple[Path, str]]  # (file, reason): unreadable images
    group_pattern: str | None = None
    mask_root: Path | None = None
    missing_masks: list[Path] = field(default_factory=list)  # images with no mask in mask_root

    def report(self) -> dict:
        """Counts a run writes down beside its split: what was used, skipped, unmasked."""
        counts = {c: 0 for c in self.classes}
        for s in self.samples:
            counts[self.classes[s.label]] += 1
        return {
            "root": str(self.root),
            "group_pattern": self.group_pattern,
            "images": len(self.samples),
            "groups": len({s.group for s in self.samples}),
            "per_class": counts,
            "skipped": [{"file": str(p), "reason": r} for p, r in self.skipped],
            "skipped_count": len(self.skipped),
            "mask_root": str(self.mask_root) if self.mask_root else None,
            "missing_masks": [str(p) for p in self.missing_masks],
            "missing_masks_count": len(self.missing_masks),
        }


def default_group_pattern(root: Path) -> str | None:
    return GROUP_PATTERNS.get(Path(root).name)


def _check_readable(path: Path) -> str | None:
    """None when Pillow can parse the file; otherwise the reason it cannot."""
    try:
        with Image.open(path) as im:
            im.verify()  # header and checksums without a full decode: cheap enough for a scan
        return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return f"{type(e).__name__}: {e}"


def scan_image_folder(
    root,
    group_pattern: str | None = None,
    mask_root=None,
    classes: list[str] | None = None,
) -> ImageFolder:
    """List the images of an ImageFolder with their class, group and (optional) mask.

    group_pattern: a regex with one capture group applied to the file name; by default the one
    GROUP_PATTERNS gives for the folder's name. With neither, each image is its own group (and
    a warning says that splits are then image-level). Unreadable images are skipped with a
    warning naming the file; a class left with no image is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = found
    else:
        unknown = [c for c in classes if c not in found]
        if unknown:
            raise ValueError(f"classes {unknown} not found in {root}; it has {found}")
        classes = list(classes)
    if not classes:
        raise ValueError(f"{root} has no class subfolders (expected one folder per class)")

    pattern = group_pattern if group_pattern is not None else default_group_pattern(root)
    regex = None
    if pattern is not None:
        regex = re.compile(pattern)
        if regex.groups != 1:
            raise ValueError(f"group pattern {pattern!r} must have exactly one capture group, has {regex.groups}")
    else:
        warnings.warn(
            f"no group pattern for folder {root.name!r} (known: {sorted(GROUP_PATTERNS)}): each image is its "
            "own group, so splits are image-level and may leak patients; pass group_pattern",
            stacklevel=2,
        )

    mask_root = Path(mask_root) if mask_root is not None else None
    if mask_root is not None and not mask_root.is_dir():
        raise FileNotFoundError(f"mask folder {mask_root} does not exist or is not a directory")

    samples: list[Sample] = []
    skipped: list[tuple[Path, str]] = []
    missing_masks: list[Path] = []
    unmatched: list[str] = []
    empty: list[str] = []
    for label, cls in enumerate(classes):
        files = sorted(
            p for p in (root / cls).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        kept = 0
        for path in files:
            if regex is not None:
                m = regex.search(path.name)
                if m is None:
                    unmatched.append(f"{cls}/{path.name}")
                    continue
                group = m.group(1)
            else:
                group = f"{cls}/{path.stem}"
            reason = _check_readable(path)
            if reason is not None:
                warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=2)
                skipped.append((path, reason))
                continue
            mask_path = None
            if mask_root is not None:
                candidate = mask_root / cls / path.name
                if candidate.is_file():
                    mask_path = candidate
                else:
                    missing_masks.append(path)
            samples.append(Sample(path=path, label=label, group=group, mask_path=mask_path))
            kept += 1
        if kept == 0:
            empty.append(cls)

    if regex is not None and unmatched and not samples:
        raise ValueError(
            f"group pattern {pattern!r} matched no file name in {root} "
            f"(e.g. {unmatched[:3]}); give a regex with one capture group that finds the patient/specimen id"
        )
    if unmatched:
        raise ValueError(
            f"group pattern {pattern!r} matched no group in {len(unmatched)} file name(s) of {root} "
            f"(e.g. {unmatched[:3]}); every image needs a group for a leak-free split"
        )
    if empty:
        raise ValueError(
            f"class folder(s) {[str(root / c) for c in empty]} hold no readable image; "
            "add images or leave the class out with classes=[...]"
        )
    if missing_masks:
        warnings.warn(
            f"{len(missing_masks)} image(s) have no mask under {mask_root} (e.g. "
            f"{[str(p.relative_to(root)) for p in missing_masks[:3]]}); they train without the mask loss",
            stacklevel=2,
        )
    return ImageFolder(
        root=root, classes=classes, samples=samples, skipped=skipped,
        group_pattern=pattern, mask_root=mask_root, missing_masks=missing_masks,
    )


def _decode(path, size: int, mode: str, what: str) -> np.ndarray:
    """Pillow decode to `mode`, bilinear resize to (size, size) when the size differs."""
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot read {what} {path}: {type(e).__name__}: {e}") from e


def load_image(path, size: int) -> np.ndarray:
    """An image as uint8 RGB (size, size, 3)."""
    return _decode(path, size, "RGB", "image")


def load_mask(path, size: int) -> np.ndarray:
    """A mask as uint8 {0, 1} (size, size): grey level >= 128 is the labelled region."""
    return (_decode(path, size, "L", "mask") >= 128).astype(np.uint8)


class ImageCache:
    """Decoded uint8 arrays at the training size, in memory and under `.data_cache/` on disk.

    Decoding a 224 px PNG costs more than a CPU epoch's augmentation, so every image is decoded
    once per size. The disk key covers path, size and mtime, so an edited file is decoded again.
    """

    def __init__(self, size: int, cache_dir: str | os.PathLike | None = ".data_cache"):
        self.size = size
        self.dir = Path(cache_dir) / f"{size}px" if cache_dir is not None else None
        self._mem: dict[tuple[str, str], np.ndarray] = {}

    def _key(self, path: Path, kind: str) -> str:
        st = path.stat()
        raw = f"{path.resolve()}|{self.size}|{kind}|{st.st_mtime_ns}|{st.st_size}"
        return hashlib.sha1(raw.encode()).hexdigest()

    def get(self, path, kind: str = "image") -> np.ndarray:
        path = Path(path)
        mem_key = (str(path), kind)
        if mem_key in self._mem:
            return self._mem[mem_key]
        arr = None
        file = None
        if self.dir is not None:
            file = self.dir / f"{self._key(path, kind)}.npy"
            if file.is_file():
                try:
                    arr = np.load(file, allow_pickle=False)
                except (OSError, ValueError):
                    arr = None  # a torn write by another process: decode again
        if arr is None:
            arr = load_image(path, self.size) if kind == "image" else load_mask(path, self.size)
            if file is not None:
                file.parent.mkdir(parents=True, exist_ok=True)
                tmp = file.with_suffix(f".{os.getpid()}.tmp")
                with open(tmp, "wb") as f:
                    np.save(f, arr, allow_pickle=False)
                os.replace(tmp, file)  # atomic: concurrent runs never read half a file
        self._mem[mem_key] = arr
        return arr


class HistoDataset(torch.utils.data.Dataset):
    """Samples -> dicts of `image` (3, H, W) float, `label`, and with masks `mask` (1, H, W), `has_mask`.

    `transform(image, mask, rng)` takes uint8 HWC and a {0,1} HW mask (or None) and returns the
    normalised image tensor and the mask tensor; see training.transforms.
    """

    def __init__(self, samples, size: int, transform, with_masks: bool = False, cache: ImageCache | None = None):
        self.samples = list(samples)
        self.size = size
        self.transform = transform
        self.with_masks = with_masks
        self.cache = cache if cache is not None else ImageCache(size, cache_dir=None)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        image = self.cache.get(s.path, "image")
        mask = None
        if self.with_masks:
            mask = self.cache.get(s.mask_path, "mask") if s.mask_path is not None else np.zeros(
                (self.size, self.size), np.uint8)
        # numpy randomness drawn from torch's generator: seeded by torch.manual_seed and distinct per worker
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        x, m = self.transform(image, mask, rng)
        item = {"image": x, "label": s.label, "index": i}
        if self.with_masks:
            item["mask"] = m
            item["has_mask"] = s.mask_path is not None
        return item
