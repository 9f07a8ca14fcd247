"""Test slides: pyramidal, JPEG-tiled TIFFs built from real EBHI-Seg and BreakHis tiles with tifffile.

Tissue sits at known grid cells on white glass, with resolution tags set, so the tests know which tiles
must be classified and where. Slides stay small (a few thousand pixels a side, a handful of tissue tiles).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import DATA_DIR, REPO_ROOT

MODEL_STORE = REPO_ROOT / "model_store"
WSI_FIXTURES = DATA_DIR / "wsi_fixtures"
EBHI_CELLS = [(1, 1), (2, 1), (5, 2), (6, 4), (3, 4)]  # (column, row) of the tissue tiles


def write_pyramid(path: Path, level0: np.ndarray, mpp: float, levels: int = 3, tile: int = 256) -> Path:
    """A generic pyramidal TIFF OpenSlide reads: one tiled JPEG page per level, halving each time."""
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("imagecodecs")
    image = Image.fromarray(level0)
    with tifffile.TiffWriter(path) as tif:
        for lvl in range(levels):
            scale = 2**lvl
            arr = level0 if lvl == 0 else np.asarray(
                image.resize((level0.shape[1] // scale, level0.shape[0] // scale), Image.Resampling.BOX))
            tif.write(arr, tile=(tile, tile), compression="jpeg", compressionargs={"level": 95},
                      photometric="rgb", subfiletype=0 if lvl == 0 else 1,
                      resolution=(1e4 / (mpp * scale), 1e4 / (mpp * scale)), resolutionunit="CENTIMETER")
    return path


def place(canvas: np.ndarray, tiles: list[np.ndarray], cells, tile_w: int, tile_h: int) -> None:
    for arr, (col, row) in zip(tiles, cells, strict=True):
        canvas[row * tile_h : (row + 1) * tile_h, col * tile_w : (col + 1) * tile_w] = arr


def _real_tiles(folder: Path, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    files = sorted(p for p in folder.rglob("*.png"))[:: max(1, len(list(folder.rglob("*.png"))) // count)][:count]
    return [np.asarray(Image.open(f).convert("RGB").resize(size, Image.Resampling.BILINEAR)) for f in files]


@pytest.fixture(scope="session")
def ebhi_slide(ebhi_dir, tmp_path_factory) -> dict:
    """10 x 6 cells of 224 px at 1.2 um/px (the EBHI estimate), 5 real EBHI tiles, 3 levels."""
    tiles = _real_tiles(ebhi_dir, len(EBHI_CELLS), (224, 224))
    canvas = np.full((6 * 224, 10 * 224, 3), 255, dtype=np.uint8)
    # faint, unsaturated dust on the glass: must not count as tissue
    canvas[20:40, 1800:1900] = 200
    place(canvas, tiles, EBHI_CELLS, 224, 224)
    path = write_pyramid(tmp_path_factory.mktemp("slides") / "ebhi.tiff", canvas, mpp=1.2)
    return {"path": path, "cells": EBHI_CELLS, "tile": 224, "mpp": 1.2}


@pytest.fixture(scope="session")
def ebhi_slide_fine(ebhi_dir, tmp_path_factory) -> dict:
    """The same tissue at 0.6 um/px (two level-0 pixels per model pixel): tiles are read at level 1."""
    tiles = [np.asarray(Image.fromarray(t).resize((448, 448), Image.Resampling.BICUBIC))
             for t in _real_tiles(ebhi_dir, 3, (224, 224))]
    cells = EBHI_CELLS[:3]
    canvas = np.full((4 * 448, 8 * 448, 3), 255, dtype=np.uint8)
    place(canvas, tiles, cells, 448, 448)
    path = write_pyramid(tmp_path_factory.mktemp("slides") / "ebhi_fine.tiff", canvas, mpp=0.6)
    return {"path": path, "cells": cells, "tile": 448, "mpp": 0.6}


@pytest.fixture(scope="session")
def breakhis_slide(breakhis_dir, tmp_path_factory) -> dict:
    """BreakHis tiles at 1.0 um/px: the model's field is 700 x 460 px at ~0.49 um = 343 x 225 um (estimate)."""
    w, h = round(0.49 * 700), round(0.49 * 460)
    cells = [(1, 1), (3, 2), (4, 5)]
    tiles = _real_tiles(breakhis_dir, len(cells), (w, h))
    canvas = np.full((7 * h, 6 * w, 3), 255, dtype=np.uint8)
    place(canvas, tiles, cells, w, h)
    path = write_pyramid(tmp_path_factory.mktemp("slides") / "breakhis.tiff", canvas, mpp=1.0, levels=2)
    return {"path": path, "cells": cells, "tile_w": w, "tile_h": h, "mpp": 1.0}


@pytest.fixture(scope="session")
def no_mpp_slide(tmp_path_factory) -> Path:
    """A pyramidal TIFF without resolution tags (OpenSlide reports no spacing)."""
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("imagecodecs")
    arr = np.full((512, 512, 3), 240, dtype=np.uint8)
    path = tmp_path_factory.mktemp("slides") / "nompp.tiff"
    with tifffile.TiffWriter(path) as tif:
        tif.write(arr, tile=(256, 256), compression="jpeg", photometric="rgb")
    return path
