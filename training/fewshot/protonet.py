"""Prototypical Networks: a class is the mean of its support embeddings; queries score by negative
squared Euclidean distance to each prototype.

Paper: Snell, Swersky, Zemel, `Prototypical Networks for Few-shot Learning`, NeurIPS 2017.
"""
from __future__ import annotations

import torch
from torch import nn

from .methods import FewShotMethod, register_method


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """(n_way, D) class means of `embeddings` (B, D) under episode labels 0..n_way-1."""
    onehot = nn.functional.one_hot(labels, n_way).to(embeddings.dtype)  # (B, n_way)
    counts = onehot.sum(0)
    if bool((counts == 0).any()):
        raise ValueError(f"every class needs a support example; counts per class: {counts.tolist()}")
    return onehot.t() @ embeddings / counts[:, None]


def squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(A, B) squared distances between the rows of a (A, D) and b (B, D)."""
    # Written out rather than cdist(...)**2: the gradient of cdist is undefined at distance 0 (1-shot support
    # points sit exactly on their prototype).
    return (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)


def proto_logits(support_emb, support_labels, query_emb, n_way: int, scale: float = 1.0) -> torch.Tensor:
    """`scale` sharpens the softmax: an L2-normalised embedding keeps distances within a few units, where
    cross-entropy stays near log(n_way) and meta-training barely separates the classes."""
    return -scale * squared_euclidean(query_emb, prototypes(support_emb, support_labels, n_way))


@register_method("protonet")
class ProtoNet(FewShotMethod):
    """Embedding `backbone.embed(x)`; nothing else is learned."""

    def __init__(self, backbone, n_way: int, scale: float = 1.0) -> None:
        super().__init__(backbone, n_way)
        self.scale = scale

    def predict(self, sx, sy, qx, n_way: int) -> torch.Tensor:
        # One forward for support and query: BatchNorm sees the whole episode, as in the reference code.
        emb = self.backbone.embed(torch.cat([sx, qx]))
        return proto_logits(emb[: len(sx)], sy, emb[len(sx):], n_way, self.scale)

    def encodes_independently(self) -> bool:
        return True

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.embed(x)

    def predict_encoded(self, se, sy, qe, n_way: int) -> torch.Tensor:
        return proto_logits(se, sy, qe, n_way, self.scale)
