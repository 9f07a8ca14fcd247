"""Opening a whole-slide image with OpenSlide, and the little the service keeps of it.

OpenSlide comes from the `openslide-python` and `openslide-bin` wheels: SVS, NDPI, MRXS, generic and OME
pyramidal TIFF, DICOM WSI, with no system package. `OpenSlide(path)` is used directly rather than
`open_slide`, whose Pillow fallback would accept any PNG as a "slide".

What a slide carries besides its pixels (label and macro images, scanner properties, often a patient's
name or a barcode) never leaves this module: `SlideInfo` holds only the size, the pyramid and the pixel
spacing, and nothing reads `associated_images`.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

# Pixel spacings outside this range are not a microscope's: a generic TIFF written at the default
# 72 dpi claims 352.8 um/px. Such a slide needs `mpp` from the client.
MPP_RANGE = (0.02, 50.0)
# The thumbnail is read from one pyramid level; a slide without a small enough level is refused, not decoded.
MAX_THUMBNAIL_SOURCE_PIXELS = 64_000_000


class SlideError(ValueError):
    """A slide the service cannot use; `status` is the HTTP answer when it happens during a request."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


def _openslide():
    try:
        import openslide
    except ImportError as e:  # pragma: no cover - the serving install always has it
        raise SlideError(503, "slides_unavailable",
                         "openslide-python is not installed; install the openslide-python and openslide-bin wheels") from e
    return openslide


@dataclass(frozen=True)
class SlideInfo:
    width: int
    height: int
    mpp_x: float  # um per level-0 pixel
    mpp_y: float
    mpp_source: str  # "slide" (its metadata) or "request" (the client's `mpp`)
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    vendor: str | None  # the format OpenSlide recognised (aperio, generic-tiff, dicom...)

    def summary(self) -> dict:
        return {"width": self.width, "height": self.height, "mpp_x": self.mpp_x, "mpp_y": self.mpp_y,
                "mpp_source": self.mpp_source, "levels": len(self.level_dimensions), "format": self.vendor}


def _spacing(value: str | None) -> float | None:
    try:
        mpp = float(value) if value is not None else None
    except ValueError:
        return None
    if mpp is None or not math.isfinite(mpp) or not MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
        return None
    return mpp


class Slide:
    """An open slide: info, region reads at a level, and a thumbnail. Close it (or use `with`)."""

    def __init__(self, path: Path, mpp: float | None = None):
        openslide = _openslide()
        self.path = Path(path)
        # Reads and close() hold it: a read still running in a worker thread when its job is cancelled
        # finishes before the handle is closed under it.
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError as e:
            raise SlideError(415, "unsupported_slide",
                             f"{self.path.name}: not a whole-slide image OpenSlide can read "
                             "(SVS, NDPI, MRXS, SCN, generic or OME pyramidal TIFF, DICOM WSI)") from e
        except (openslide.OpenSlideError, OSError, ValueError) as e:
            raise SlideError(415, "unreadable_slide", f"{self.path.name}: OpenSlide cannot open it: {e}") from e
        try:
            self.info = self._read_info(mpp)
        except BaseException:
            self._osr.close()
            raise

    def _read_info(self, mpp: float | None) -> SlideInfo:
        props = self._osr.properties
        width, height = self._osr.dimensions
        if width < 1 or height < 1:
            raise SlideError(415, "unreadable_slide", f"{self.path.name}: the slide has no pixels")
        if mpp is not None:
            if _spacing(str(mpp)) is None:
                raise SlideError(422, "invalid_mpp", f"mpp {mpp} is outside {MPP_RANGE[0]}..{MPP_RANGE[1]} um per pixel")
            mpp_x = mpp_y = float(mpp)
            source = "request"
        else:
            mpp_x, mpp_y = _spacing(props.get("openslide.mpp-x")), _spacing(props.get("openslide.mpp-y"))
            if mpp_x is None or mpp_y is None:
                raise SlideError(422, "mpp_required",
                                 f"{self.path.name}: the slide states no usable pixel spacing; give `mpp` "
                                 "(microns per level-0 pixel) with the request")
            source = "slide"
        return SlideInfo(width=width, height=height, mpp_x=mpp_x, mpp_y=mpp_y, mpp_source=source,
                         level_dimensions=tuple(self._osr.level_dimensions),
                         level_downsamples=tuple(float(d) for d in self._osr.level_downsamples),
                         vendor=props.get("openslide.vendor"))

    @property
    def osr(self):
        """The OpenSlide object, for `openslide.deepzoom` only."""
        return self._osr

    def best_level(self, downsample: float) -> int:
        """The coarsest level that is still at least as fine as `downsample` (read there, then resize)."""
        return self._osr.get_best_level_for_downsample(max(downsample, 1.0) * 1.0001)

    def read(self, x: int, y: int, level: int, size: tuple[int, int]) -> Image.Image:
        """RGB pixels of a region whose top-left is (x, y) in level-0 coordinates, `size` at `level`.

        Transparent pixels (outside a scanned region) become white, the colour of glass.
        """
        openslide = _openslide()
        with self._lock:
            if self._closed:
                raise SlideError(409, "slide_closed", f"{self.path.name}: the slide was closed")
            try:
                rgba = self._osr.read_region((int(x), int(y)), int(level), (int(size[0]), int(size[1])))
            except (openslide.OpenSlideError, OSError, ValueError) as e:
                raise SlideError(422, "unreadable_slide", f"{self.path.name}: cannot read its pixels: {e}") from e
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")

    def thumbnail(self, max_side: int) -> Image.Image:
        """The whole slide, at most `max_side` px on its longer side, from the nearest level (RGB)."""
        width, height = self.info.width, self.info.height
        scale = max(width, height) / max_side
        size = (max(1, round(width / max(scale, 1.0))), max(1, round(height / max(scale, 1.0))))
        level = self.best_level(max(scale, 1.0))
        lw, lh = self.info.level_dimensions[level]
        if lw * lh > MAX_THUMBNAIL_SOURCE_PIXELS:
            raise SlideError(422, "no_pyramid",
                             f"{self.path.name}: its smallest usable level is {lw}x{lh} pixels; a slide this large "
                             "needs a pyramid (downsampled levels) to be tiled")
        region = self.read(0, 0, level, (lw, lh))
        return region if region.size == size else region.resize(size, Image.Resampling.BILINEAR)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._osr.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
