"""Augmentations keep shapes, move masks with images, and normalise with mean/std."""
from __future__ import annotations

import numpy as np
import torch

from training.transforms import (
    RandomFlip,
    RandomResizedCrop,
    RandomRot90,
    StainJitter,
    eval_transform,
    train_transform,
)


def test_geometric_transforms_move_the_mask_with_the_image():
    rng = np.random.default_rng(0)
    image = np.zeros((32, 32, 3), np.uint8)
    image[:8, :8] = 255
    mask = (image[..., 0] > 0).astype(np.uint8)
    for step in (RandomFlip(p=1.0), RandomRot90(), RandomResizedCrop(32, scale=(0.3, 0.9))):
        for _ in range(5):
            im, m = step(image, mask, rng)
            assert im.shape == (32, 32, 3) and m.shape == (32, 32)
            np.testing.assert_array_equal(im[..., 0] > 127, m > 0)


def test_stain_jitter_is_mild_and_identity_at_zero():
    rng = np.random.default_rng(0)
    image = np.random.default_rng(1).integers(30, 230, (16, 16, 3)).astype(np.uint8)
    same, _ = StainJitter(sigma=0.0, bias=0.0)(image, None, rng)
    assert np.abs(same.astype(int) - image).max() <= 1  # float round trip only
    moved, _ = StainJitter(sigma=0.05, bias=0.02)(image, None, rng)
    assert 0 < np.abs(moved.astype(int) - image).mean() < 20


def test_normalisation_and_tensor_layout():
    image = np.full((8, 8, 3), 255, np.uint8)
    x, m = eval_transform([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])(image, None, np.random.default_rng(0))
    assert x.shape == (3, 8, 8) and m is None
    assert torch.allclose(x, torch.full_like(x, 2.0))
    x, m = train_transform(8, [0, 0, 0], [1, 1, 1])(image, np.ones((8, 8), np.uint8), np.random.default_rng(0))
    assert x.shape == (3, 8, 8) and m.shape == (1, 8, 8)
