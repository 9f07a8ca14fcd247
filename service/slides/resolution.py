"""The physical size of a model's input, so that a slide is tiled at the resolution the model was trained at.

The manifest's optional `pixel_size_um` is `{"x": um, "y": um, "estimated": bool, "source": text}`, the
physical size of one pixel of the training images. It applies to images of `image_size` [width, height]
pixels when the manifest says so (`pixel_size_um.image_size`); without it, to the network input itself
(`input.dims`). A tile then covers `x * width` by `y * height` microns, whatever the slide's own spacing.

Bundles exported before that field have none. For them the service uses, in order:
1. a built-in estimate for the dataset the bundle was trained on (`training.data`, or `training.train.dataset`
   for an episodic run), below;
2. the `HISTOSERVE_SLIDE_MODEL_MPP` setting (um per network-input pixel);
3. nothing: the job needs an explicit `tile_size` or fails saying why.

The built-in estimates are estimates, and every answer says so (`estimated: true`):
- EBHI-Seg (`ebhi_seg`, 224x224 images labelled 400x): the dataset paper (Shi et al., Front. Med. 2023) gives
  no pixel size in what could be read here. The images show ~15 colonic crypts across 224 px; a crypt is
  ~60 um wide, so ~1.2 um per 224-px pixel (the images were evidently downscaled from the microscope's
  frames). 0.25 um/px, the usual 40x scanner figure, would make a tile 56 um wide: one crypt, which the
  images plainly are not.
- BreakHis 200x (`breakhis_200x`): the source frames are 700x460 px (BreakHis site); ~0.49 um per source
  pixel is an estimate not confirmed from the paper here. The shared copy resized them to 224x224 without
  keeping the aspect ratio, so one 224-px pixel is 700/224 * 0.49 = 1.53 um in x and 460/224 * 0.49 =
  1.01 um in y.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePath

# dataset folder name -> (um per pixel in x, in y, image size [w, h] those pixels belong to, why)
DATASET_ESTIMATES: dict[str, tuple[float, float, tuple[int, int], str]] = {
    "ebhi_seg": (1.2, 1.2, (224, 224),
                 "estimate: EBHI-Seg 224 px images, ~1.2 um/px from colonic crypt size (no figure in the paper)"),
    "breakhis_200x": (0.49 * 700 / 224, 0.49 * 460 / 224, (224, 224),
                      "estimate: BreakHis 200x, 700x460 frames at ~0.49 um/px resized to 224x224"),
}


@dataclass(frozen=True)
class ModelResolution:
    """What one network input covers on the glass."""

    width_um: float
    height_um: float
    estimated: bool
    source: str

    def summary(self) -> dict:
        return {"tile_width_um": round(self.width_um, 3), "tile_height_um": round(self.height_um, 3),
                "estimated": self.estimated, "source": self.source}


def _positive(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _dataset(training: dict) -> str | None:
    """The training dataset's folder name: `data` of a supervised run, `train.dataset` of an episodic one."""
    data = training.get("data")
    if isinstance(data, str):
        return PurePath(data).name
    train = training.get("train")
    if isinstance(train, dict) and isinstance(train.get("dataset"), str):
        return PurePath(train["dataset"]).name
    return None


def model_resolution(manifest: dict, input_size: tuple[int, int], fallback_mpp: float | None) -> ModelResolution | None:
    """The field of view of one model input, from the manifest, a dataset estimate or the setting; else None.

    `input_size` is the network input (height, width).
    """
    height, width = input_size
    px = manifest.get("pixel_size_um")
    if isinstance(px, dict) and _positive(px.get("x")) and _positive(px.get("y")):
        size = px.get("image_size")
        if isinstance(size, list | tuple) and len(size) == 2 and all(_positive(v) for v in size):
            w_px, h_px = float(size[0]), float(size[1])
        else:
            w_px, h_px = float(width), float(height)
        return ModelResolution(float(px["x"]) * w_px, float(px["y"]) * h_px, bool(px.get("estimated", False)),
                               str(px.get("source") or "manifest"))
    dataset = _dataset(manifest.get("training") or {})
    if dataset in DATASET_ESTIMATES:
        x, y, (w_px, h_px), why = DATASET_ESTIMATES[dataset]
        return ModelResolution(x * w_px, y * h_px, True, why)
    if fallback_mpp is not None:
        return ModelResolution(fallback_mpp * width, fallback_mpp * height, True,
                               f"estimate: HISTOSERVE_SLIDE_MODEL_MPP = {fallback_mpp} um per input pixel")
    return None
