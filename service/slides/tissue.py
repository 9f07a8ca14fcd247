"""Tissue detection on a thumbnail, so that glass, background and faint dust are never classified.

The steps are WSInfer's `segment_tissue` (wsinfer/patchlib/segment.py): RGB -> HSV, keep saturation,
median blur, threshold, binary closing, then drop small specks and fill small holes. WSInfer does the
clean-up with scikit-image's `remove_small_objects`/`remove_small_holes`; here Pillow's rank filters
do it (an opening removes specks narrower than the kernel, the closing fills holes narrower than it),
so the serving install needs neither OpenCV nor scikit-image.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def tissue_mask(thumbnail: Image.Image, *, median_filter_size: int = 7, binary_threshold: int = 15,
                closing_size: int = 5, opening_size: int = 3) -> np.ndarray:
    """bool (H, W): True where the thumbnail shows tissue.

    `binary_threshold` is on saturation in 0..255. WSInfer's default is 7 on its thumbnails; 15 keeps
    JPEG-compressed glass (saturation up to ~12 after compression) out while H&E tissue sits far above.
    Filter sizes are in thumbnail pixels and must be odd.
    """
    saturation = thumbnail.convert("RGB").convert("HSV").getchannel("S")
    if median_filter_size > 1:
        saturation = saturation.filter(ImageFilter.MedianFilter(median_filter_size))
    mask = saturation.point(lambda v: 255 if v > binary_threshold else 0)
    if closing_size > 1:
        mask = mask.filter(ImageFilter.MaxFilter(closing_size)).filter(ImageFilter.MinFilter(closing_size))
    if opening_size > 1:
        mask = mask.filter(ImageFilter.MinFilter(opening_size)).filter(ImageFilter.MaxFilter(opening_size))
    return np.asarray(mask) > 0


MIN_TISSUE_FRACTION = 0.1  # below it a single image is mostly glass or background: out of distribution
TISSUE_POOL = 4  # block size whose mean colours `tissue_fraction` thresholds


def tissue_fraction(rgb: np.ndarray, *, binary_threshold: int = 15, pool: int = TISSUE_POOL) -> float:
    """Share of an RGB image ((H, W, 3), 0..255) that is tissue by `tissue_mask`'s rule, saturation above
    `binary_threshold`, taken on pool x pool means (as the median filter does for slides, JPEG noise
    on glass then stays below it); pool=1 for pixels that are block means already (`imaging.input_pixels`).
    Cheap enough for every /classify image: numpy on the network input."""
    h, w = (rgb.shape[0] // pool) * pool, (rgb.shape[1] // pool) * pool
    if h == 0 or w == 0:
        return 0.0
    means = rgb[:h, :w].reshape(h // pool, pool, w // pool, pool, 3).mean(axis=(1, 3))
    top, bottom = means.max(axis=2), means.min(axis=2)
    saturation = np.where(top > 0, (top - bottom) / np.maximum(top, 1e-6), 0.0) * 255  # HSV's S, 0..255
    return float(np.mean(saturation > binary_threshold))


def mask_png(mask: np.ndarray) -> Image.Image:
    return Image.fromarray((mask * 255).astype(np.uint8), mode="L")
