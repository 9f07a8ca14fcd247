"""Relation Network: a learned module scores how related a query feature map is to each class's.

Paper: Sung, Yang, Zhang, Xiang, Torr, Hospedales, `Learning to Compare: Relation Network for Few-Shot
Learning`, CVPR 2018. As there, class feature maps are the support maps pooled over the shots (the mean
here, so 1-shot and 5-shot maps have the same scale), pairs are concatenated along channels, and relation
scores in [0, 1] regress the one-hot target with a mean squared error. The relation module ends in a spatial
mean instead of fixed-size pooling, so it takes any input size.
"""
from __future__ import annotations

import torch
from torch import nn

from .methods import FewShotMethod, register_method
from .protonet import prototypes


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class RelationModule(nn.Module):
    """(P, 2C, h, w) concatenated pairs -> (P,) relation scores in [0, 1]."""

    def __init__(self, channels: int, width: int = 64, hidden: int = 8) -> None:
        super().__init__()
        self.conv1 = _conv_block(2 * channels, width)
        self.conv2 = _conv_block(width, width)
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(pairs)).mean(dim=(2, 3))
        return torch.sigmoid(self.fc2(self.act(self.fc1(x)))).squeeze(1)


@register_method("relation")
class RelationNet(FewShotMethod):
    def __init__(self, backbone, n_way: int, channels: int, width: int = 64, hidden: int = 8) -> None:
        super().__init__(backbone, n_way)
        self.relation = RelationModule(channels, width, hidden)

    def scores(self, sx, sy, qx, n_way: int) -> torch.Tensor:
        maps = self.backbone.features(torch.cat([sx, qx]))
        return self.predict_encoded(maps[: len(sx)], sy, maps[len(sx):], n_way)

    def encodes_independently(self) -> bool:
        return True

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x)

    def predict_encoded(self, s, sy, q, n_way: int) -> torch.Tensor:
        c, h, w = s.shape[1:]
        classes = prototypes(s.flatten(1), sy, n_way).view(n_way, c, h, w)
        pairs = torch.cat([
            classes[None].expand(len(q), -1, -1, -1, -1),
            q[:, None].expand(-1, n_way, -1, -1, -1),
        ], dim=2).reshape(len(q) * n_way, 2 * c, h, w)
        return self.relation(pairs).view(len(q), n_way)

    def loss(self, sx, sy, qx, qy, n_way: int):
        scores = self.scores(sx, sy, qx, n_way)
        target = nn.functional.one_hot(qy, n_way).to(scores.dtype)
        return nn.functional.mse_loss(scores, target), scores

    def predict(self, sx, sy, qx, n_way: int) -> torch.Tensor:
        return self.scores(sx, sy, qx, n_way)
