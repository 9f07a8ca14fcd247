"""Augmentations for H&E tiles in numpy, without torchvision (its import fails with the CPU torch).

Tissue has no canonical orientation, so flips and 90-degree rotations are free label-preserving
augmentations; stain intensity varies between labs, so a mild jitter in HED (haematoxylin,
eosin, DAB) colour space follows Tellez et al., "Quantifying the effects of data augmentation
and stain color normalization in convolutional neural networks for computational pathology"
(https://arxiv.org/abs/1902.06543). Geometric transforms move the mask with the image.

Every transform is `(image uint8 HWC, mask HW or None, rng) -> (image, mask)`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter

# Ruifrok & Johnston's stain vectors (the ones scikit-image's rgb2hed uses).
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
RGB_FROM_HED[2] = np.cross(RGB_FROM_HED[0], RGB_FROM_HED[1])
RGB_FROM_HED /= np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


@dataclass
class RandomFlip:
    p: float = 0.5

    def __call__(self, image, mask, rng):
        if rng.random() < self.p:
            image, mask = image[:, ::-1], None if mask is None else mask[:, ::-1]
        if rng.random() < self.p:
            image, mask = image[::-1], None if mask is None else mask[::-1]
        return image, mask


@dataclass
class RandomRot90:
    def __call__(self, image, mask, rng):
        k = int(rng.integers(4))
        return np.rot90(image, k), None if mask is None else np.rot90(mask, k)


@dataclass
class RandomResizedCrop:
    """Crop a random area fraction in `scale` and aspect ratio in `ratio`, resize back to `size`."""

    size: int
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, image, mask, rng):
        h, w = image.shape[:2]
        for _ in range(10):
            area = h * w * rng.uniform(*self.scale)
            aspect = np.exp(rng.uniform(np.log(self.ratio[0]), np.log(self.ratio[1])))
            cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                break
        else:
            cw, ch = w, h
        y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        image = np.ascontiguousarray(image[y:y + ch, x:x + cw])
        image = np.asarray(Image.fromarray(image).resize((self.size, self.size), Image.Resampling.BILINEAR))
        if mask is not None:
            mask = np.ascontiguousarray(mask[y:y + ch, x:x + cw])
            mask = np.asarray(Image.fromarray(mask).resize((self.size, self.size), Image.Resampling.NEAREST))
        return image, mask


@dataclass
class ColorJitter:
    """Mild brightness, contrast and saturation jitter: each factor drawn from [1 - s, 1 + s]."""

    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1

    def __call__(self, image, mask, rng):
        x = image.astype(np.float32)
        x = x * rng.uniform(1 - self.brightness, 1 + self.brightness)
        mean = x.mean()
        x = (x - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
        grey = x.mean(axis=2, keepdims=True)
        x = (x - grey) * rng.uniform(1 - self.saturation, 1 + self.saturation) + grey
        return np.clip(x, 0, 255).astype(np.uint8), mask


@dataclass
class StainJitter:
    """Scale and shift each HED stain channel: h' = h * U(1-sigma, 1+sigma) + U(-bias, bias)."""

    sigma: float = 0.03
    bias: float = 0.01

    def __call__(self, image, mask, rng):
        rgb = np.maximum(image.astype(np.float32) / 255.0, 1e-6)
        od = -np.log(rgb)  # optical density: stains add up linearly here (Beer-Lambert)
        hed = od @ HED_FROM_RGB
        hed = hed * rng.uniform(1 - self.sigma, 1 + self.sigma, 3) + rng.uniform(-self.bias, self.bias, 3)
        out = np.exp(-(hed @ RGB_FROM_HED))
        return np.clip(out * 255.0, 0, 255).astype(np.uint8), mask


@dataclass
class RandomBlur:
    """With probability p, a slight Gaussian blur (radius up to `max_radius` px): focus varies on a slide."""

    p: float = 0.2
    max_radius: float = 1.0

    def __call__(self, image, mask, rng):
        if rng.random() < self.p:
            radius = rng.uniform(0.1, self.max_radius)
            image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).filter(ImageFilter.GaussianBlur(radius)))
        return image, mask


class Compose:
    """Apply geometric/colour steps, then scale to [0, 1] and normalise with mean/std -> tensors."""

    def __init__(self, steps, mean, std):
        self.steps = list(steps)
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def __call__(self, image, mask, rng):
        for step in self.steps:
            image, mask = step(image, mask, rng)
        x = (image.astype(np.float32) / 255.0 - self.mean) / self.std
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
        m = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        return x, m


def train_transform(size: int, mean, std, crop_scale=(0.5, 1.0), color: float = 0.1, stain: float = 0.03,
                    augment: bool = True, blur: float = 0.0) -> Compose:
    if not augment:
        return eval_transform(mean, std)
    steps = [RandomResizedCrop(size, scale=tuple(crop_scale)), RandomFlip(), RandomRot90()]
    if color > 0:
        steps.append(ColorJitter(color, color, color))
    if stain > 0:
        steps.append(StainJitter(sigma=stain, bias=stain / 3))
    if blur > 0:
        steps.append(RandomBlur(p=blur))
    return Compose(steps, mean, std)


def eval_transform(mean, std) -> Compose:
    return Compose([], mean, std)
