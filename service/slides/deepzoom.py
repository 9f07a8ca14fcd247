"""Deep Zoom tiles of the heatmap overlay that keep its transparency.

`openslide.deepzoom.DeepZoomGenerator.get_tile` composites every tile onto the slide's background colour
(white for an `ImageSlide`), so overlay tiles came out opaque and the viewer's opacity slider faded the
slide into white instead of showing it under the scores. This generator does the same maths (the tile's
region and final size come from the library's own `get_tile_coordinates` / `get_tile_dimensions`) and
returns the region as RGBA: alpha 0 wherever no tile was scored.
"""
from __future__ import annotations

from openslide import AbstractSlide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image


class TransparentDeepZoom(DeepZoomGenerator):
    def __init__(self, osr: AbstractSlide, **kwargs):
        super().__init__(osr, **kwargs)
        self._source = osr

    def get_tile(self, level: int, address: tuple[int, int]) -> Image.Image:
        """An RGBA tile (ValueError for a level or address that does not exist, as the library raises)."""
        location, slide_level, size = self.get_tile_coordinates(level, address)
        tile = self._source.read_region(location, slide_level, size)
        z_size = self.get_tile_dimensions(level, address)
        if tile.size != z_size:
            tile.thumbnail(z_size, Image.Resampling.LANCZOS)  # Pillow resizes RGBA with premultiplied alpha
        return tile
