"""Uploaded bytes -> RGB image -> the normalised tensor a bundle's manifest asks for.

Decoding is where hostile input arrives, so each failure becomes an `ImageError` with an
HTTP status: 415 for bytes that are not a supported image (wrong format, truncated, corrupt),
413 for an image whose header declares more pixels than allowed. The pixel count is read
from the header, before any pixel data is decoded, so a small file that claims enormous
dimensions costs nothing.
"""
from __future__ import annotations

import io
import logging
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .store import Preprocessing

log = logging.getLogger("histoserve.imaging")

FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}
# What Pillow raises on broken files varies by plugin; all of them mean "not a readable image".
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError)


class ImageError(ValueError):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


def decode_image(data: bytes, *, max_pixels: int, filename: str = "upload") -> Image.Image:
    """Decode an upload into an RGB image with EXIF orientation applied."""
    if not data:
        raise ImageError(422, "empty_file", f"{filename}: the file is empty")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is the one that counts; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError as e:
        raise ImageError(413, "image_too_large", f"{filename}: {e}") from e
    except UnidentifiedImageError as e:
        raise ImageError(415, "unsupported_image",
                         f"{filename}: not an image in a supported format ({', '.join(FORMATS)})") from e
    except _DECODE_ERRORS as e:
        raise ImageError(415, "unsupported_image", f"{filename}: unreadable image header: {e}") from e
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError(415, "unsupported_image", f"{filename}: the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(413, "image_too_large",
                         f"{filename}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}")
    try:
        img.load()
    except _DECODE_ERRORS as e:
        raise ImageError(415, "corrupt_image", f"{filename}: the {img.format} data is truncated or corrupt: {e}") from e
    try:
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of the (usual) image without a rotation
    except _DECODE_ERRORS as e:
        # A broken EXIF block should not cost the user the image: keep the stored orientation.
        log.warning("ignoring unreadable EXIF orientation in %s: %s", filename, e)
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited over white (the slide background)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit and float scans: Pillow's own convert clips instead of scaling, so scale here.
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if img.mode == "F" and arr.max(initial=0) <= 1.0 else (255.0 if arr.max(initial=0) <= 255 else 65535.0)
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def preprocess(img: Image.Image, pre: Preprocessing, out: np.ndarray | None = None) -> np.ndarray:
    """RGB image -> float32 (3, H, W): resize, scale, then (x - mean) / std, as the manifest says.

    Computed as x * (scale / std) + (-mean / std), one pass per channel straight from the uint8 pixels
    into the (3, H, W) result (`out` when given): no float (H, W, 3) copy and no transpose. The
    result equals the textbook formula within float32 rounding (a few 1e-7).
    """
    height, width = pre.resize
    if img.size != (width, height):
        img = img.resize((width, height), _RESAMPLE[pre.interpolation])
    arr = np.asarray(img)
    gain, offset = _affine(pre)
    if out is None:
        out = np.empty((3, height, width), dtype=np.float32)
    for c in range(3):
        np.multiply(arr[..., c], gain[c], out=out[c])
        out[c] += offset[c]
    return out


def input_pixels(x: np.ndarray, pre: Preprocessing, pool: int = 1) -> np.ndarray:
    """A preprocessed (3, H, W) input back to its 0..255 RGB values, (H, W, 3) float32: `preprocess` undone;
    with pool > 1, the means of pool x pool blocks (taken before undoing: the affine map commutes with them,
    and the work drops by pool^2)."""
    if pool > 1:
        # sums of strided views: numpy's mean over the axes of a 5-d reshape is ten times slower here
        h, w = (x.shape[1] // pool) * pool, (x.shape[2] // pool) * pool
        rows = sum(x[:, i:h:pool, :w] for i in range(pool))
        x = sum(rows[:, :, j::pool] for j in range(pool)) / (pool * pool)
    gain, offset = _affine(pre)
    return ((x - np.asarray(offset, np.float32)[:, None, None]) / np.asarray(gain, np.float32)[:, None, None]
            ).transpose(1, 2, 0)


def rescale_to_model(img: Image.Image, mpp: float, um_per_px: tuple[float, float], input_size: tuple[int, int],
                     interpolation: str, *, max_pixels: int, filename: str = "upload") -> tuple[Image.Image, dict]:
    """An image taken at `mpp` um/px -> the centred network input at the model's pixel size, and what was done.

    The image is resized, with the manifest's interpolation, to `um_per_px` (x, y), the physical size of
    one network-input pixel, so that cells have the size the model learned: w * mpp / x by h * mpp / y
    pixels. The network input (H, W) is then cut from its centre, as a slide tile covers the model's field
    of view and no more. A client gets the same input by doing both steps itself and sending the result
    without `mpp`. Refused (422): a rescaled image smaller than the input (padding would show the model
    glass it never saw, stretching would undo the rescaling), or one larger than `max_pixels`.
    """
    (ux, uy), (in_h, in_w) = um_per_px, input_size
    w, h = img.size
    new_w, new_h = max(1, round(w * mpp / ux)), max(1, round(h * mpp / uy))
    at = f"{filename}: {w}x{h} px at {mpp:g} um/px is {new_w}x{new_h} px at the model's {ux:.4g} x {uy:.4g} um/px"
    if new_w < in_w or new_h < in_h:
        raise ImageError(422, "image_too_small_at_mpp",
                         f"{at}, smaller than its {in_w}x{in_h} input; send a larger field of view (at least "
                         f"{in_w * ux:.4g} x {in_h * uy:.4g} um)")
    if new_w * new_h > max_pixels:
        raise ImageError(422, "image_too_large_at_mpp",
                         f"{at}, more than the limit of {max_pixels} pixels; crop the image around the region "
                         "to classify")
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), _RESAMPLE[interpolation])
    left, top = (new_w - in_w) // 2, (new_h - in_h) // 2
    if (in_w, in_h) != (new_w, new_h):
        img = img.crop((left, top, left + in_w, top + in_h))
    return img, {"from_mpp": mpp, "to_um": [ux, uy], "size": [new_w, new_h], "crop": [left, top, in_w, in_h]}


def _affine(pre: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    std = np.asarray(pre.std, dtype=np.float32)
    return np.float32(pre.scale) / std, -np.asarray(pre.mean, dtype=np.float32) / std


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
