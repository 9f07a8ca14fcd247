"""Every loss against a hand-computed case."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import attention_distillation, focal_loss, fusion_lambda


def test_focal_loss_is_cross_entropy_at_gamma_zero():
    torch.manual_seed(0)
    logits, target = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert torch.allclose(focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target), atol=1e-6)
    w = torch.rand(5) + 0.5
    assert torch.allclose(focal_loss(logits, target, gamma=0.0, alpha=w),
                          F.cross_entropy(logits, target, weight=w), atol=1e-6)


def test_focal_loss_hand_case_gamma_two():
    # p_t = 0.8 for a two-class logit pair: FL = -(0.2)^2 * log(0.8), alpha 0.25 scales it (sum reduction)
    logits = torch.tensor([[math.log(0.8), math.log(0.2)]])
    target = torch.tensor([0])
    expected = -(0.2 ** 2) * math.log(0.8)
    assert focal_loss(logits, target, gamma=2.0).item() == pytest.approx(expected, rel=1e-5)
    alpha = torch.tensor([0.25, 0.75])
    assert focal_loss(logits, target, gamma=2.0, alpha=alpha, reduction="sum").item() == pytest.approx(
        0.25 * expected, rel=1e-5)
    # well-classified examples are down-weighted relative to CE
    assert focal_loss(logits, target, gamma=2.0).item() < F.cross_entropy(logits, target).item()


def test_tad_loss_is_zero_when_maps_equal_the_teacher():
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 2:6, 2:6] = 1
    mask[1, :, :4, :] = 1
    att = mask[:, 0].clone()
    teacher, selfd = attention_distillation(att, att.clone(), mask)
    assert teacher.item() == pytest.approx(0.0, abs=1e-7)
    assert selfd.item() == pytest.approx(0.0, abs=1e-7)


def test_tad_loss_hand_case_and_mask_weighting():
    mask = torch.zeros(1, 1, 2, 2)
    mask[0, 0, 0, 0] = 1  # teacher: all attention on one pixel
    att4 = torch.ones(1, 2, 2)  # uniform: unit vector 0.5 everywhere
    teacher, _ = attention_distillation(att4, att4, mask)
    # ||(0.5,0.5,0.5,0.5) - (1,0,0,0)||^2 = 0.25 + 3 * 0.25 = 1.0
    assert teacher.item() == pytest.approx(1.0, rel=1e-6)
    # an image without a mask adds nothing to the teacher term
    teacher, _ = attention_distillation(att4, att4, mask, has_mask=torch.tensor([False]))
    assert teacher.item() == 0.0


def test_fusion_lambda_schedule_scaled_to_the_run():
    # the paper: 1.0 for epochs 0-19, 0.9 for 20-39, ...
    assert [fusion_lambda(e, 200) for e in (0, 19, 20, 40, 199)] == pytest.approx([1.0, 1.0, 0.9, 0.8, 0.1])
    # a 50-epoch run steps every 5 epochs
    assert [fusion_lambda(e, 50) for e in (0, 4, 5, 10, 49)] == pytest.approx([1.0, 1.0, 0.9, 0.8, 0.1])
    assert fusion_lambda(10_000, 50) == 0.0


@pytest.mark.parametrize("name,options,aux_loss,parts", [
    ("tad_resnext50", {"layers": [1, 1, 1, 1], "widths": [16, 16, 32, 32], "groups": 2, "width_per_group": 8}, "tad", {"cls", "att4_teacher", "att5_self"}),
    ("gated_fusion", {"global_kwargs": {"widths": [8, 8, 16, 16]}, "local_kwargs": {"widths": [8, 8, 16, 16]},
                      "local_size": 16}, "gated_fusion", {"global", "fusion", "lambda"}),
])
def test_criteria_consume_forward_aux_of_real_networks(name, options, aux_loss, parts):
    import models
    from training.config import TrainConfig
    from training.losses import build_criterion

    torch.manual_seed(0)
    model = models.create_model(name, num_classes=3, **options)
    criterion = build_criterion(TrainConfig(aux_loss=aux_loss, loss="focal", epochs=10))
    batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 2]),
             "mask": (torch.rand(2, 1, 32, 32) > 0.5).float(), "has_mask": torch.tensor([True, False])}
    out = criterion(model, batch, epoch=0)
    assert set(out.parts) == parts and out.logits.shape == (2, 3)
    out.loss.backward()
    assert model.conv1.weight.grad is not None if hasattr(model, "conv1") else True


def test_tad_loss_refuses_a_network_without_attention_maps():
    import models
    from training.config import TrainConfig
    from training.losses import build_criterion

    model = models.create_model("resnet18", num_classes=3, widths=[8, 8, 8, 8])
    with pytest.raises(ValueError, match="att4"):
        build_criterion(TrainConfig(aux_loss="tad"))(model, {"image": torch.randn(2, 3, 32, 32),
                                                            "label": torch.tensor([0, 1])}, 0)
