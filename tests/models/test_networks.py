"""Every registered network honours the interface of docs/contracts.md, on small inputs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import models

NUM_CLASSES = 5
SMALL = (8, 16, 32, 64)
CIFAR = {f"{p}resnet{d}" for p in ("", "se_", "cbam_") for d in (20, 32, 56, 110)}


def small_kwargs(name: str) -> dict:
    """Reduced widths so that a forward pass takes milliseconds; the architecture is unchanged."""
    if name in CIFAR:
        return dict(num_classes=NUM_CLASSES, widths=(8, 16, 16))
    if name in ("tad_resnext50", "resnext50_32x4d"):
        # a ResNeXt bottleneck needs planes * width_per_group >= 64
        return dict(num_classes=NUM_CLASSES, widths=(16, 32, 64, 128), groups=8)
    if "efficientnet" in name:  # fixed widths: the point is the ImageNet checkpoint's shapes
        return dict(num_classes=NUM_CLASSES)
    if name == "gated_fusion":
        return dict(num_classes=NUM_CLASSES, global_kwargs=dict(widths=SMALL), local_kwargs=dict(widths=SMALL),
                    local_size=32)
    return dict(num_classes=NUM_CLASSES, widths=SMALL)


def input_for(name: str, batch: int) -> torch.Tensor:
    size = 16 if name in CIFAR else 64
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))


def test_registry_holds_every_network_of_the_five_papers():
    expected = {"resnet18", "resnet34", "resnet50", "resnext50_32x4d", "cbam_resnet18", "cbam_resnet50",
                "lwa_resnet50", "lwa_resnet18", "tad_resnext50", "gated_fusion"} | CIFAR
    assert expected <= set(models.list_models())


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", models.list_models())
def test_interface_shapes_and_consistency(name, batch):
    torch.manual_seed(0)
    model = models.create_model(name, **small_kwargs(name)).eval()
    x = input_for(name, batch)
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
        emb = model.embed(x)
        aux_logits, aux = model.forward_aux(x)
        head = model.head(feats)
    assert logits.shape == (batch, NUM_CLASSES)
    assert feats.dim() == 4 and feats.shape[:2] == (batch, model.num_features)
    assert emb.shape == (batch, model.num_features)
    assert torch.allclose(emb, feats.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(aux_logits, logits, atol=1e-5)
    assert isinstance(aux, dict)
    if name == "gated_fusion":
        assert torch.allclose(head, aux["global_logits"], atol=1e-5)
    else:
        assert torch.allclose(head, logits, atol=1e-5)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", models.list_models())
def test_gradients_reach_the_first_conv(name):
    torch.manual_seed(0)
    model = models.create_model(name, **small_kwargs(name)).train()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    model(input_for(name, 2)).square().sum().backward()
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", models.list_models())
def test_pretrained_cfg_describes_and_rebuilds(name):
    model = models.create_model(name, **small_kwargs(name))
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == name and cfg["num_classes"] == NUM_CLASSES
    assert len(cfg["input_size"]) == 3 and len(cfg["mean"]) == 3 and len(cfg["std"]) == 3
    rebuilt = models.create_model(cfg["architecture"], **cfg["model_args"])
    rebuilt.load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize("depth, millions, digits", [(20, 0.27, 2), (32, 0.46, 2), (56, 0.85, 2), (110, 1.7, 1)])
def test_cifar_resnet_parameter_counts_match_he_et_al(depth, millions, digits):
    """He et al. 2016, Table 6, to the precision the paper prints."""
    model = models.create_model(f"resnet{depth}", num_classes=10)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, digits) == millions


@pytest.mark.parametrize("depth", [20, 32, 56, 110])
def test_cifar_resnet_has_6n_plus_2_layers_in_3_stages(depth):
    model = models.create_model(f"cbam_resnet{depth}")
    convs = [m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and ".attn." not in n]
    assert len(convs) + 1 == depth
    assert [model.layer1[0].conv1.out_channels, model.layer2[0].conv1.out_channels,
            model.layer3[0].conv1.out_channels] == [16, 32, 64]
    assert not hasattr(model, "layer4")
    # the 16-channel stage keeps 8 hidden units in its attention MLP, not 16 / 16 = 1
    assert model.layer1[0].attn.channel.fc1.out_channels == 8


def test_se_and_cbam_cifar_variants_differ_from_plain():
    plain, se, cbam = (models.create_model(n) for n in ("resnet20", "se_resnet20", "cbam_resnet20"))
    assert plain.layer1[0].attn is None
    assert type(se.layer1[0].attn).__name__ == "SEModule"
    assert type(cbam.layer1[0].attn).__name__ == "CBAM"


def test_lwa_head_is_fc_leaky_fc_relu_dropout_classifier():
    model = models.create_model("lwa_resnet18", num_classes=3, widths=SMALL)
    assert isinstance(model.head_act1, nn.LeakyReLU) and isinstance(model.head_act2, nn.ReLU)
    assert model.head_drop_rate == 0.25 and model.classifier.out_features == 3
    assert type(model.attn).__name__ == "LightweightAttention"
    assert not hasattr(model, "fc")
    feats = torch.relu(torch.randn(4, model.num_features, 2, 2))
    torch.manual_seed(0)
    train_a, train_b = model.train().head(feats), model.head(feats)
    assert not torch.allclose(train_a, train_b), "dropout is not active in training"
    model.eval()
    assert torch.allclose(model.head(feats), model.head(feats))


def test_lwa_resnet50_loads_a_torchvision_trunk_non_strictly():
    trunk = models.create_model("resnet50", widths=SMALL).state_dict()
    result = models.create_model("lwa_resnet50", widths=SMALL, num_classes=2).load_state_dict(trunk, strict=False)
    assert result.unexpected_keys == ["fc.weight", "fc.bias"]
    assert all(k.split(".")[0] in {"attn", "head_fc1", "head_fc2", "classifier"} for k in result.missing_keys)


def test_tad_resnext_attention_maps():
    model = models.create_model("tad_resnext50", **small_kwargs("tad_resnext50")).eval()
    x = input_for("tad_resnext50", 3)
    with torch.no_grad():
        _, aux = model.forward_aux(x)
    assert set(aux) == {"att4", "att5"}
    assert aux["att4"].shape == aux["att5"].shape == (3, 4, 4)  # stage-4 resolution of a 64x64 input
    for m in aux.values():
        assert (m >= 0).all()
        assert torch.allclose(m.flatten(1).norm(dim=1), torch.ones(3), atol=1e-4)
    # att4 is g(A) of the stage-4 output: recompute it from the trunk
    with torch.no_grad():
        a4 = model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x)))))))
    g = a4.square().sum(1)
    assert torch.allclose(aux["att4"], g / g.flatten(1).norm(dim=1)[:, None, None], atol=1e-5)


def test_tad_resnext_blocks_have_dual_paths():
    model = models.create_model("tad_resnext50")
    block = model.layer1[1]
    assert block.conv2.groups == 32 and block.res_chs == 256
    x = torch.randn(1, model.layer1[1].conv1.in_channels, 8, 8)
    # the residual part keeps its width, the dense part grows by the block's increment
    assert block(x).shape[1] == x.shape[1] + (block.conv3.out_channels - block.res_chs)


def test_gated_fusion_aux_and_fusion():
    model = models.create_model("gated_fusion", **small_kwargs("gated_fusion")).eval()
    x = input_for("gated_fusion", 3)
    with torch.no_grad():
        fused, aux = model.forward_aux(x)
    assert aux["global_logits"].shape == (3, NUM_CLASSES)
    assert aux["attention"].shape == (3, 2, 2)
    assert not torch.allclose(fused, aux["global_logits"])


def test_gated_fusion_selects_peaks_and_crops_there():
    model = models.create_model("gated_fusion", **dict(small_kwargs("gated_fusion"), num_instances=2,
                                                       crop_scale=0.25, threshold=0.5)).eval()
    amap = torch.zeros(1, 8, 8)
    amap[0, 1, 6] = 1.0   # strong peak, row 1 col 6
    amap[0, 5, 2] = 0.8   # second peak above threshold
    amap[0, 5, 3] = 0.7   # suppressed: neighbour of a bigger one
    centres, weights = model.select_instances(amap)
    assert torch.allclose(centres[0, 0], torch.tensor([(6.5 / 8) * 2 - 1, (1.5 / 8) * 2 - 1]))
    assert torch.allclose(centres[0, 1], torch.tensor([(2.5 / 8) * 2 - 1, (5.5 / 8) * 2 - 1]))
    assert torch.allclose(weights, torch.tensor([[1.0, 0.8]]) / 1.8, atol=1e-5)
    # below the threshold a peak gets no weight
    amap[0, 5, 2], amap[0, 5, 3] = 0.3, 0.2
    _, weights = model.select_instances(amap)
    assert torch.allclose(weights, torch.tensor([[1.0, 0.0]]), atol=1e-5)
    # the crop is the image region around the centre: on a horizontal ramp its mean is the centre's x
    ramp = torch.linspace(-1, 1, 256).expand(1, 3, 256, 256)
    crops = model.crop(ramp, torch.tensor([[[0.5, 0.0]]]))
    assert crops.shape == (1, 3, 32, 32)
    assert abs(float(crops.mean()) - 0.5) < 0.01
    assert float(crops.amax() - crops.amin()) == pytest.approx(0.25 * 2, abs=0.02)


@pytest.mark.parametrize("name, kwargs", [
    ("resnet20", dict(widths=(16, 32))), ("resnet20", dict(shortcut="C")),
    ("tad_resnext50", dict(dense_inc=(1, 2))), ("gated_fusion", dict(global_backbone="nope")),
    ("gated_fusion", dict(crop_scale=0.0)), ("gated_fusion", dict(num_instances=0)),
    ("lwa_resnet18", dict(head_dims=(8,))), ("lwa_resnet18", dict(attn_layer="se")), ("lwa_resnet18", dict(drop_rate=0.5)),
    ("resnet18", dict(widht=(8, 16, 32, 64))), ("gated_fusion", dict(global_kwargs=dict(nope=1))),
])
def test_bad_arguments_raise_value_error(name, kwargs):
    with pytest.raises(ValueError):
        models.create_model(name, **kwargs)


def test_cifar_depth_must_be_6n_plus_2():
    from models.cifar_resnet import CifarResNet

    with pytest.raises(ValueError, match="6n"):
        CifarResNet(21)
