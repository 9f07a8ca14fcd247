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


def _affine(pre: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    std = np.asarray(pre.std, dtype=np.float32)
    return np.float32(pre.scale) / std, -np.asarray(pre.mean, dtype=np.float32) / std


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
