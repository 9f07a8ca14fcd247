"""The dual-attention meta-learner: a CBAM embedding network whose prototypes are computed in a MAML inner
loop, with the meta-optimiser updating the initial parameters in the outer loop.

After the dual-attention meta-learning paper on gastric subtypes (see README). Per episode:

1. inner loop: starting from the meta-learned parameters, a few SGD steps on the support set's prototype
   loss (each support image classified against the support prototypes, by negative squared Euclidean
   distance);
2. outer loop: prototypes from the *adapted* embedding of the support set classify the queries; the query
   cross-entropy updates the initial parameters, through the inner steps (second order) or with the inner
   gradients treated as constants (`first_order=True`, what the CPU configs use).

The attention is the backbone's: `cbam_resnet18` with channel and spatial attention; the ablations switch
them off through the backbone's options (`channel_attention=False`, `spatial_attention=False`), so this
module is the same for all four variants. With `inner_steps_test=0` evaluation uses the meta-learned
embedding as it is, which is exactly what the service's /adapt does with the exported bundle.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from .maml import Params, adapt, adaptable_params
from .methods import FewShotMethod, register_method
from .protonet import proto_logits


class _Embed(nn.Module):
    """`backbone.embed` as a forward, so that `functional_call` can run it with adapted parameters."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.embed(x)


@register_method("dual_attention")
class DualAttentionMeta(FewShotMethod):
    def __init__(self, backbone, n_way: int, inner_lr: float = 0.01, inner_steps: int = 1,
                 inner_steps_test: int | None = None, first_order: bool = True,
                 adapt_prefixes: list[str] | None = None, scale: float = 1.0) -> None:
        super().__init__(backbone, n_way)
        self.scale = scale
        self.net = _Embed(backbone)
        self.inner_lr, self.inner_steps, self.first_order = inner_lr, inner_steps, first_order
        self.inner_steps_test = inner_steps_test if inner_steps_test is not None else inner_steps
        self.adapt_prefixes = adapt_prefixes

    def _adapted(self, sx, sy, n_way: int) -> Params:
        steps = self.inner_steps if self.training else self.inner_steps_test
        first_order = self.first_order or not self.training

        def support_loss(p: Params) -> torch.Tensor:
            emb = functional_call(self.net, p, (sx,))
            return nn.functional.cross_entropy(proto_logits(emb, sy, emb, n_way, self.scale), sy)

        with torch.enable_grad():
            return adapt(adaptable_params(self.net, self.adapt_prefixes), support_loss, steps, self.inner_lr,
                         first_order)

    def predict(self, sx, sy, qx, n_way: int) -> torch.Tensor:
        params = self._adapted(sx, sy, n_way)  # zero steps: the meta-learned parameters themselves
        emb = functional_call(self.net, params, (torch.cat([sx, qx]),))
        logits = proto_logits(emb[: len(sx)], sy, emb[len(sx):], n_way, self.scale)
        return logits if self.training else logits.detach()

    def encodes_independently(self) -> bool:
        return self.inner_steps_test == 0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.embed(x)

    def predict_encoded(self, se, sy, qe, n_way: int) -> torch.Tensor:
        return proto_logits(se, sy, qe, n_way, self.scale)
