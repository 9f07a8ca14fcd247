"""DataLoaders of a split: the training set augmented (optionally class-balanced), validation as is."""
from __future__ import annotations

import numpy as np
import torch

from training.config import TrainConfig
from training.data import HistoDataset, ImageCache, Sample
from training.distributed import World
from training.splits import Split
from training.transforms import eval_transform, train_transform


def image_cache(cfg: TrainConfig) -> ImageCache:
    """The decoded-image cache of a config: cfg.cache_dir on disk, or memory only with cache=false."""
    return ImageCache(cfg.image_size, cfg.cache_dir if cfg.cache else None)


def class_counts(samples: list[Sample], n_classes: int) -> np.ndarray:
    return np.bincount([s.label for s in samples], minlength=n_classes)


def eval_loader(cfg: TrainConfig, samples: list[Sample], cache: ImageCache) -> torch.utils.data.DataLoader:
    """Images as evaluation sees them (no augmentation), in order."""
    ds = HistoDataset(samples, cfg.image_size, eval_transform(cfg.mean, cfg.std), cache=cache)
    return torch.utils.data.DataLoader(ds, cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)


def make_loaders(cfg: TrainConfig, split: Split, with_masks: bool, world: World | None = None):
    """Training and validation loaders; on several ranks each gets its shard of every epoch and
    batch_size / world size images per step, so that batch_size stays the global batch."""
    world = world or World()
    cache = image_cache(cfg)
    ttf = train_transform(cfg.image_size, cfg.mean, cfg.std, cfg.crop_scale, cfg.color_jitter, cfg.stain_jitter,
                          cfg.augment, cfg.blur)
    train_ds = HistoDataset(split.train, cfg.image_size, ttf, with_masks=with_masks, cache=cache)
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = None
    batch_size = cfg.batch_size
    if world.size > 1:
        if cfg.imbalance == "sampler":
            raise ValueError("imbalance=sampler does not shard across ranks; use imbalance=weights with torchrun")
        if cfg.batch_size % world.size:
            raise ValueError(f"batch_size {cfg.batch_size} is the global batch: it must divide by {world.size} ranks")
        batch_size = cfg.batch_size // world.size
        sampler = torch.utils.data.distributed.DistributedSampler(
            train_ds, num_replicas=world.size, rank=world.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    elif cfg.imbalance == "sampler":
        counts = class_counts(split.train, len(split.classes))
        weights = [1.0 / counts[s.label] for s in split.train]
        sampler = torch.utils.data.WeightedRandomSampler(weights, len(weights), replacement=True, generator=gen)
    kw = dict(num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size, shuffle=sampler is None, sampler=sampler,
                                               generator=gen, drop_last=len(train_ds) > cfg.batch_size, **kw)
    val_loader = eval_loader(cfg, split.val, cache)
    return train_loader, val_loader, cache
