"""The tile grid: which level-0 rectangles to classify, and at which pyramid level to read them.

A tile covers the model's field of view (resolution.py) on the glass: `width_um / mpp_x` by
`height_um / mpp_y` level-0 pixels. It is read at the coarsest pyramid level that is still at least
as fine as the network input needs, then resized to the input size, so a 40x slide and a 20x slide
give the model the same physical scale. Tiles do not overlap; partial tiles at the right and bottom
edges are left out (as WSInfer does); a tile is kept when enough of it is tissue.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .reader import SlideError, SlideInfo
from .resolution import ModelResolution

# A tile is classified when at least this fraction of its footprint on the tissue mask is tissue.
MIN_TISSUE_FRACTION = 0.25


@dataclass(frozen=True)
class TileGrid:
    tile_w: int  # level-0 pixels
    tile_h: int
    level: int  # the pyramid level read
    read_w: int  # pixels read at that level (then resized to the input size)
    read_h: int
    coords: np.ndarray  # (N, 2) int64 level-0 top-left corners of the kept tiles
    tissue: np.ndarray  # (N,) float32 tissue fraction of each kept tile
    columns: int  # the full grid, kept or not
    rows: int

    def summary(self) -> dict:
        return {"tile_width_px": self.tile_w, "tile_height_px": self.tile_h, "level": self.level,
                "read_width_px": self.read_w, "read_height_px": self.read_h,
                "grid": [self.columns, self.rows], "tiles": int(len(self.coords))}


def tile_size_px(info: SlideInfo, resolution: ModelResolution | None, tile_size: int | None) -> tuple[int, int]:
    """Level-0 pixels per tile: the client's `tile_size`, else the model's field of view over the slide's mpp."""
    if tile_size is not None:
        return tile_size, tile_size
    if resolution is None:
        raise SlideError(422, "model_resolution_unknown",
                         "the model's bundle states no physical pixel size and the service has no estimate for it; "
                         "give `tile_size` (level-0 pixels per tile) or set HISTOSERVE_SLIDE_MODEL_MPP")
    return max(1, round(resolution.width_um / info.mpp_x)), max(1, round(resolution.height_um / info.mpp_y))


def choose_level(info: SlideInfo, tile_w: int, tile_h: int, input_size: tuple[int, int], best_level,
                 level: int | None) -> tuple[int, int, int]:
    """(level, read width, read height): the client's level, else the coarsest one still fine enough."""
    in_h, in_w = input_size
    if level is None:
        # level-0 pixels per network pixel; reading where a level pixel is no larger keeps the detail.
        level = best_level(min(tile_w / in_w, tile_h / in_h))
    elif not 0 <= level < len(info.level_downsamples):
        raise SlideError(422, "invalid_level", f"level {level} does not exist; the slide has levels "
                         f"0..{len(info.level_downsamples) - 1}")
    downsample = info.level_downsamples[level]
    return level, max(1, round(tile_w / downsample)), max(1, round(tile_h / downsample))


def build_grid(info: SlideInfo, mask: np.ndarray, tile_w: int, tile_h: int, level: int, read_w: int, read_h: int,
               *, min_tissue: float = MIN_TISSUE_FRACTION) -> TileGrid:
    columns, rows = info.width // tile_w, info.height // tile_h
    if columns == 0 or rows == 0:
        raise SlideError(422, "slide_too_small", f"the slide ({info.width}x{info.height} px) is smaller than one "
                         f"tile ({tile_w}x{tile_h} level-0 px at the model's resolution)")
    mh, mw = mask.shape
    sx, sy = mw / info.width, mh / info.height  # mask pixels per level-0 pixel
    # Tissue fraction of every grid cell from a summed-area table of the mask (exact per mask pixel).
    integral = np.zeros((mh + 1, mw + 1), dtype=np.float64)
    integral[1:, 1:] = mask.astype(np.float64).cumsum(0).cumsum(1)
    xs = np.arange(columns) * tile_w
    ys = np.arange(rows) * tile_h
    x0 = np.clip(np.floor(xs * sx).astype(int), 0, mw - 1)
    x1 = np.clip(np.ceil((xs + tile_w) * sx).astype(int), x0 + 1, mw)
    y0 = np.clip(np.floor(ys * sy).astype(int), 0, mh - 1)
    y1 = np.clip(np.ceil((ys + tile_h) * sy).astype(int), y0 + 1, mh)
    area = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    total = (integral[y1][:, x1] - integral[y0][:, x1] - integral[y1][:, x0] + integral[y0][:, x0])
    fraction = (total / area).astype(np.float32)  # (rows, columns)
    keep_r, keep_c = np.nonzero(fraction >= min_tissue)
    coords = np.stack([xs[keep_c], ys[keep_r]], axis=1).astype(np.int64) if len(keep_r) else np.zeros((0, 2), np.int64)
    return TileGrid(tile_w=tile_w, tile_h=tile_h, level=level, read_w=read_w, read_h=read_h, coords=coords,
                    tissue=fraction[keep_r, keep_c], columns=columns, rows=rows)
