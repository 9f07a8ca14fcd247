"""Tiny generated ImageFolders for the training tests: a few 16 px PNGs per class and group."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_png(path: Path, rgb: tuple[int, int, int], size: int = 16, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(rgb)[None, None, :] + rng.integers(-20, 21, (size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)


def make_folder(root: Path, classes: dict[str, int], groups_per_class: int = 6, images_per_group: int = 3,
                colours: dict[str, tuple[int, int, int]] | None = None) -> Path:
    """EBHI-style names: <specimen>-1-400-<n>.png, specimens unique per class."""
    for ci, (cls, _) in enumerate(classes.items()):
        rgb = (colours or {}).get(cls, (40 + 80 * ci, 200 - 60 * ci, 120))
        for g in range(groups_per_class):
            for n in range(images_per_group):
                write_png(root / cls / f"GT{ci}{g:03d}-1-400-{n:03d}.png", rgb, seed=ci * 1000 + g * 10 + n)
    return root


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "ebhi_seg", {"a": 0, "b": 1, "c": 2})
