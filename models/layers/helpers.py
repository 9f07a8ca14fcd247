"""Small shared helpers for the attention layers."""
from __future__ import annotations

MIN_RD_CHANNELS = 8


def reduced_channels(channels: int, rd_ratio: float, rd_channels: int | None = None,
                     min_channels: int = MIN_RD_CHANNELS) -> int:
    """Hidden width of a reduction MLP.

    An explicit `rd_channels` wins. Otherwise `channels * rd_ratio`, but never fewer than
    `min_channels`: a 16-channel CIFAR stage with ratio 1/16 would otherwise squeeze the
    whole channel descriptor through a single unit.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if rd_channels is not None:
        if rd_channels < 1:
            raise ValueError(f"rd_channels must be >= 1, got {rd_channels}")
        return int(rd_channels)
    if not 0 < rd_ratio <= 1:
        raise ValueError(f"rd_ratio must be in (0, 1], got {rd_ratio}")
    return max(min_channels, int(round(channels * rd_ratio)))
