"""Training losses: cross-entropy, focal loss, teacher attention distillation, gated-fusion multi-task.

Each criterion consumes `model.forward_aux(x)` (docs/contracts.md) and returns the loss, the
logits the metrics should score, and its parts for the log, so the loop never needs to know
which method it trains.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               alpha: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Alpha-balanced focal loss, FL = -alpha_t (1 - p_t)^gamma log p_t.

    Lin et al., "Focal Loss for Dense Object Detection", https://arxiv.org/abs/1708.02002; the
    DPN/TAD paper uses gamma = 2. `alpha` holds one weight per class; gamma = 0 without alpha is
    cross-entropy.
    """
    logp_t = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
    loss = -((1.0 - logp_t.exp()) ** gamma) * logp_t
    if alpha is not None:
        loss = loss * alpha.to(loss.device, loss.dtype)[target]
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if alpha is not None:  # weighted mean, as F.cross_entropy(weight=...) does
        return loss.sum() / alpha.to(loss.device, loss.dtype)[target].sum()
    return loss.mean()


def _unit_maps(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, H*W), each row of unit L2 norm: compares where attention lies, not its scale."""
    return F.normalize(maps.flatten(1).float(), dim=1, eps=1e-8)


def attention_distillation(att4: torch.Tensor, att5: torch.Tensor, mask: torch.Tensor | None,
                           has_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher attention distillation (DPN/TAD paper): L2 between normalised attention maps.

    Stage 4 mimics the labelled region (the mask is the teacher); stage 5 mimics stage 4, whose
    map is detached so that the student does not pull its teacher. Maps are compared after L2
    normalisation, as in Zagoruyko & Komodakis' attention transfer (https://arxiv.org/abs/1612.03928).
    Images without a mask (`has_mask` False) add nothing to the teacher term.
    Returns (teacher term, self term).
    """
    if att5.shape[-2:] != att4.shape[-2:]:
        att5 = F.interpolate(att5[:, None], size=att4.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    self_term = (_unit_maps(att5) - _unit_maps(att4).detach()).pow(2).sum(1).mean()
    if mask is None:
        return att4.new_zeros(()), self_term
    if mask.dim() == 4:
        mask = mask[:, 0]
    teacher = F.adaptive_avg_pool2d(mask[:, None].float(), att4.shape[-2:])[:, 0]
    per_image = (_unit_maps(att4) - _unit_maps(teacher)).pow(2).sum(1)
    weight = torch.ones_like(per_image) if has_mask is None else has_mask.to(per_image.device, per_image.dtype)
    teacher_term = (per_image * weight).sum() / weight.sum().clamp_min(1.0)
    return teacher_term, self_term


def fusion_lambda(epoch: int, epochs: int, paper_epochs: int = 200, step: int = 20, drop: float = 0.1) -> float:
    """lambda of the gated-fusion loss: from 1 down by `drop` every `step` epochs, scaled to the run.

    The paper's schedule spans `paper_epochs`; a run of `epochs` steps every step * epochs /
    paper_epochs epochs, so a short run sees the same sequence of lambdas.
    """
    scaled = max(step * epochs / paper_epochs, 1e-9)
    return max(0.0, 1.0 - drop * math.floor(epoch / scaled + 1e-9))


@dataclass
class LossOutput:
    loss: torch.Tensor
    logits: torch.Tensor  # what the metrics score
    parts: dict[str, float] = field(default_factory=dict)


class Criterion:
    """Classification term (CE or focal) on `forward_aux`'s logits, plus the method's auxiliary term."""

    needs_masks = False

    def __init__(self, kind: str = "ce", class_weights: torch.Tensor | None = None, gamma: float = 2.0,
                 label_smoothing: float = 0.0):
        if kind not in ("ce", "focal"):
            raise ValueError(f"unknown classification loss {kind!r}; use 'ce' or 'focal'")
        self.kind, self.weights, self.gamma, self.smoothing = kind, class_weights, gamma, label_smoothing

    def classify(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = None if self.weights is None else self.weights.to(logits.device)
        if self.kind == "focal":
            return focal_loss(logits, target, gamma=self.gamma, alpha=w)
        return F.cross_entropy(logits.float(), target, weight=w, label_smoothing=self.smoothing)

    def __call__(self, model, batch: dict, epoch: int) -> LossOutput:
        logits, _ = model.forward_aux(batch["image"])
        loss = self.classify(logits, batch["label"])
        return LossOutput(loss, logits, {"cls": loss.item()})


class TADCriterion(Criterion):
    """Focal/CE + beta * (stage-4 vs mask) + lam * (stage-5 vs stage-4)."""

    needs_masks = True

    def __init__(self, beta: float = 1.0, lam: float = 1.0, **kw):
        super().__init__(**kw)
        self.beta, self.lam = beta, lam

    def __call__(self, model, batch: dict, epoch: int) -> LossOutput:
        logits, aux = model.forward_aux(batch["image"])
        if "att4" not in aux or "att5" not in aux:
            raise ValueError("the tad loss needs a model whose forward_aux returns aux['att4'] and aux['att5']")
        cls = self.classify(logits, batch["label"])
        teacher, selfd = attention_distillation(aux["att4"], aux["att5"], batch.get("mask"), batch.get("has_mask"))
        loss = cls + self.beta * teacher + self.lam * selfd
        return LossOutput(loss, logits, {"cls": cls.item(), "att4_teacher": teacher.item(), "att5_self": selfd.item()})


class GatedFusionCriterion(Criterion):
    """lambda * L_global + (1 - lambda) * L_fusion, lambda on the schedule of `fusion_lambda`."""

    def __init__(self, epochs: int, paper_epochs: int = 200, **kw):
        super().__init__(**kw)
        self.epochs, self.paper_epochs = epochs, paper_epochs

    def __call__(self, model, batch: dict, epoch: int) -> LossOutput:
        logits, aux = model.forward_aux(batch["image"])
        if "global_logits" not in aux:
            raise ValueError("the gated_fusion loss needs a model whose forward_aux returns aux['global_logits']")
        lam = fusion_lambda(epoch, self.epochs, self.paper_epochs)
        glob = self.classify(aux["global_logits"], batch["label"])
        fused = self.classify(logits, batch["label"])
        loss = lam * glob + (1.0 - lam) * fused
        return LossOutput(loss, logits, {"global": glob.item(), "fusion": fused.item(), "lambda": lam})


def build_criterion(cfg, class_weights: torch.Tensor | None = None) -> Criterion:
    """The criterion a TrainConfig asks for (`loss` and `aux_loss`)."""
    kw = dict(kind=cfg.loss, class_weights=class_weights, gamma=cfg.focal_gamma, label_smoothing=cfg.label_smoothing)
    if cfg.aux_loss == "none":
        return Criterion(**kw)
    if cfg.aux_loss == "tad":
        return TADCriterion(beta=cfg.tad_beta, lam=cfg.tad_lambda, **kw)
    if cfg.aux_loss == "gated_fusion":
        return GatedFusionCriterion(epochs=cfg.epochs, paper_epochs=cfg.fusion_paper_epochs, **kw)
    raise ValueError(f"unknown aux_loss {cfg.aux_loss!r}; use 'none', 'tad' or 'gated_fusion'")
