"""The few-shot method registry, and the one interface every method implements.

A method wraps an embedding network from `models` (anything with `features(x)` and `embed(x)`, see
docs/contracts.md) and answers two questions on an episode:

- `loss(sx, sy, qx, qy, n_way)` -> (loss, query logits): what meta-training minimises;
- `predict(sx, sy, qx, n_way)` -> query logits: what evaluation scores. It may adapt to the support set
  internally (MAML, the dual-attention method); it must not look at query labels.

Every method is trained and evaluated by the same trainer and evaluator on the same episodes, so the only
difference between two rows of the results table is the method.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

import models

_methods: dict[str, Callable[..., FewShotMethod]] = {}


def register_method(name: str):
    def wrap(cls):
        if name in _methods:
            raise ValueError(f"few-shot method {name!r} is registered twice")
        _methods[name] = cls
        cls.method_name = name
        return cls
    return wrap


def list_methods() -> list[str]:
    return sorted(_methods)


def create_method(name: str, backbone: nn.Module, n_way: int, **options) -> FewShotMethod:
    if name not in _methods:
        raise ValueError(f"unknown few-shot method {name!r}; known: {', '.join(list_methods())}")
    return _methods[name](backbone, n_way=n_way, **options)


def create_backbone(name: str, **options) -> nn.Module:
    """An embedding network from the model registry. Its classifier head is never used here."""
    net = models.create_model(name, **options)
    for member in ("features", "embed"):
        if not callable(getattr(net, member, None)):
            raise TypeError(f"model {name!r} has no {member}(x); few-shot methods need an embedding network")
    return net


class FewShotMethod(nn.Module):
    """Base class: holds the embedding network as `backbone`; subclasses add what they learn besides."""

    method_name = "base"

    def __init__(self, backbone: nn.Module, n_way: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.n_way = n_way

    def loss(self, sx, sy, qx, qy, n_way: int) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.predict(sx, sy, qx, n_way)
        return nn.functional.cross_entropy(logits, qy), logits

    def predict(self, sx, sy, qx, n_way: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # Evaluation fast path: a method whose test-time prediction depends on each image only through a fixed
    # per-image encoding says so, and the evaluator encodes every test image once instead of per episode.
    def encodes_independently(self) -> bool:
        return False

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - only when encodes_independently
        raise NotImplementedError

    def predict_encoded(self, se, sy, qe, n_way: int) -> torch.Tensor:  # pragma: no cover - likewise
        raise NotImplementedError
