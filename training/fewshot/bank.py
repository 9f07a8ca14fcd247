"""Images decoded once per run at the episode size and held in memory as uint8.

Episodes reuse each image many times; decoding a PNG costs more than the small forward pass a CPU run
makes per image, so a split's images are decoded once (through `training.data.ImageCache`, which also
keeps them on disk between runs) and batches are gathered from one uint8 tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from training.data import ImageCache, scan_image_folder

from .config import DataSplit, data_dir
from .episodes import EpisodeSampler

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageBank:
    images: torch.Tensor       # (N, 3, S, S) uint8
    labels: list[int]          # index into classes
    groups: list[str]          # patient or specimen
    classes: list[str]
    description: dict          # what was read, for the run's record
    masks: torch.Tensor | None = None  # (N, 1, S, S) uint8 {0, 1}, with the split's masks
    has_mask: torch.Tensor | None = None  # (N,) bool: False where an image has no mask

    def sampler(self, n_way: int, k_shot: int, q_query: int, seed: int) -> EpisodeSampler:
        return EpisodeSampler(self.labels, self.groups, range(len(self.classes)), n_way, k_shot, q_query,
                              seed=seed, class_names=self.classes)

    def batch(self, indices, mean, std, augment: bool = False, rng: np.random.Generator | None = None,
              device: str = "cpu") -> torch.Tensor:
        """Float (B, 3, S, S): scaled to [0, 1], normalised, optionally flipped / rotated by 90 degrees."""
        x = self.images[torch.as_tensor(np.asarray(indices), dtype=torch.long)].to(device).float().div_(255)
        if augment:
            rng = rng or np.random.default_rng()
            # Tissue has no orientation: the 8 symmetries of the square are label-preserving.
            out = []
            for img, k, flip in zip(x, rng.integers(4, size=len(x)), rng.random(len(x)) < 0.5, strict=True):
                img = torch.rot90(img, int(k), dims=(1, 2))
                out.append(img.flip(2) if flip else img)
            x = torch.stack(out)
        m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        s = torch.tensor(std, device=device).view(1, 3, 1, 1)
        return (x - m) / s


def load_bank(split: DataSplit, size: int, root=None) -> ImageBank:
    """Scan the split's dataset folder for its classes and decode every image (and mask) at `size`."""
    base = root or data_dir()
    root = base / split.dataset
    folder = scan_image_folder(root, classes=list(split.classes),
                               mask_root=base / split.masks if split.masks else None)
    cache = ImageCache(size)
    images = np.stack([cache.get(s.path) for s in folder.samples]).transpose(0, 3, 1, 2)
    masks = has_mask = None
    if split.masks:
        has_mask = torch.tensor([s.mask_path is not None for s in folder.samples])
        masks = torch.from_numpy(np.stack([cache.get(s.mask_path, "mask") if s.mask_path else
                                           np.zeros((size, size), np.uint8) for s in folder.samples])[:, None])
    report = folder.report()
    return ImageBank(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=[s.label for s in folder.samples],
        groups=[s.group for s in folder.samples],
        classes=list(folder.classes),
        description={"name": split.name, "dataset": split.dataset, "root": str(root),
                     "group_pattern": report["group_pattern"], "images": report["images"],
                     "groups": report["groups"], "per_class": report["per_class"],
                     **({"masks": split.masks, "missing_masks": report["missing_masks_count"]} if split.masks else {})},
        masks=masks, has_mask=has_mask,
    )
