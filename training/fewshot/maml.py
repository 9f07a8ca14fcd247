"""MAML: learn an initialisation from which a few gradient steps on the support set fit the task.

Paper: Finn, Abbeel, Levine, `Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks`, ICML 2017.
Written with `torch.func.functional_call` (learn2learn does not build here): the adapted weights are plain
tensors computed from the module's parameters, so the outer loss differentiates through the inner steps
(second order) or, with `first_order=True`, treats the inner gradients as constants (FOMAML).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.func import functional_call

from .methods import FewShotMethod, register_method

Params = dict[str, torch.Tensor]


def inner_step(params: Params, loss: torch.Tensor, lr: float, first_order: bool) -> Params:
    """One SGD step on `loss`, returning new tensors. Second order keeps the graph of the gradient, so the
    outer gradient includes the Hessian term; first order detaches it (and skips building that graph)."""
    names = [k for k, p in params.items() if p.requires_grad]
    grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=not first_order,
                                allow_unused=True)
    new = dict(params)
    for k, g in zip(names, grads, strict=True):
        if g is not None:
            new[k] = params[k] - lr * (g.detach() if first_order else g)
    return new


def adapt(params: Params, support_loss: Callable[[Params], torch.Tensor], steps: int, lr: float,
          first_order: bool) -> Params:
    """`steps` inner SGD steps from `params` on `support_loss(params)`."""
    for _ in range(steps):
        params = inner_step(params, support_loss(params), lr, first_order)
    return params


def adaptable_params(module: nn.Module, prefixes: list[str] | None = None) -> Params:
    """The module's parameters (all, or those whose name starts with one of `prefixes`) as a dict that
    `functional_call` takes; the others stay the module's own."""
    params = dict(module.named_parameters())
    if prefixes:
        params = {k: p for k, p in params.items() if any(k.startswith(pre) for pre in prefixes)}
        if not params:
            raise ValueError(f"no parameter name starts with any of {prefixes}")
    return params


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """BatchNorm normalises with the current batch's statistics and leaves its running statistics alone:
    MAML's transductive test setting (Finn et al.'s reference code evaluates in training mode)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    for m in norms:
        m.train()
        m.track_running_stats = False  # with training=True: batch statistics, running buffers not updated
    try:
        yield
    finally:
        for m, (training, track) in zip(norms, saved, strict=True):
            m.train(training)
            m.track_running_stats = track


class _Classifier(nn.Module):
    """Backbone embedding + linear N-way head: the network MAML adapts."""

    def __init__(self, backbone: nn.Module, dim: int, n_way: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(dim, n_way)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone.embed(x))


@register_method("maml")
class MAML(FewShotMethod):
    """Inner loop: cross-entropy of the N-way classifier on the support set; outer loop: on the query set.

    `adapt_prefixes` limits the inner loop to some parameters (e.g. ["fc", "backbone.layer4"]) to save
    time on a CPU; None adapts everything, as in the paper. With `["fc"]`, the head alone (ANIL: Raghu et al.,
    `Rapid Learning or Feature Reuse?`, ICLR 2020), each image is embedded once per episode instead of once
    per inner step, and, without transductive BatchNorm, once per evaluation (the evaluator's fast path).
    """

    def __init__(self, backbone, n_way: int, dim: int, inner_lr: float = 0.01, inner_steps: int = 5,
                 inner_steps_test: int | None = None, first_order: bool = False,
                 adapt_prefixes: list[str] | None = None, transductive_bn: bool = True) -> None:
        super().__init__(backbone, n_way)
        self.net = _Classifier(backbone, dim, n_way)
        self.inner_lr, self.inner_steps, self.first_order = inner_lr, inner_steps, first_order
        self.inner_steps_test = inner_steps_test if inner_steps_test is not None else inner_steps
        self.adapt_prefixes = adapt_prefixes
        self.transductive_bn = transductive_bn

    @property
    def head_only(self) -> bool:
        return self.adapt_prefixes == ["fc"]

    def _adapted(self, net: nn.Module, sx, sy, n_way: int) -> Params:
        """Inner-loop weights of `net` (the whole classifier, or its head on support embeddings `sx`)."""
        if n_way != self.n_way:
            raise ValueError(f"this MAML head was built for {self.n_way}-way tasks, not {n_way}-way")
        steps = self.inner_steps if self.training else self.inner_steps_test
        # At evaluation the outer graph is not needed: first order there is the same update, cheaper.
        first_order = self.first_order or not torch.is_grad_enabled() or not self.training

        def support_loss(p: Params) -> torch.Tensor:
            return nn.functional.cross_entropy(functional_call(net, p, (sx,)), sy)

        prefixes = None if net is self.net.fc else self.adapt_prefixes
        with torch.enable_grad():
            return adapt(adaptable_params(net, prefixes), support_loss, steps, self.inner_lr, first_order)

    def encodes_independently(self) -> bool:
        return self.head_only and not self.transductive_bn

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.embed(x)

    def predict_encoded(self, se, sy, qe, n_way: int) -> torch.Tensor:
        logits = functional_call(self.net.fc, self._adapted(self.net.fc, se, sy, n_way), (qe,))
        return logits if self.training else logits.detach()

    def predict(self, sx, sy, qx, n_way: int) -> torch.Tensor:
        if self.head_only:
            with batch_statistics(self.net) if not self.training and self.transductive_bn else nullcontext():
                se, qe = self.encode(sx), self.encode(qx)
            return self.predict_encoded(se, sy, qe, n_way)
        if not self.training and self.transductive_bn:
            with batch_statistics(self.net):
                return functional_call(self.net, self._adapted(self.net, sx, sy, n_way), (qx,)).detach()
        params = self._adapted(self.net, sx, sy, n_way)
        logits = functional_call(self.net, params, (qx,))
        return logits if self.training else logits.detach()
