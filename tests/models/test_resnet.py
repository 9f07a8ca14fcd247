"""ImageNet-style ResNets: torchvision's structure, names and parameter counts."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import models

KEYS_FILE = Path(__file__).parent / "data" / "resnet50_keys.txt"


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet50_state_dict_has_torchvision_keys():
    expected = [k for k in KEYS_FILE.read_text().splitlines() if k and not k.startswith("#")]
    assert list(models.create_model("resnet50").state_dict()) == expected


@pytest.mark.parametrize("name, count", [("resnet50", 25_557_032), ("resnext50_32x4d", 25_028_904),
                                         ("resnet18", 11_689_512), ("resnet34", 21_797_672)])
def test_parameter_counts_match_torchvision(name, count):
    assert n_params(models.create_model(name, num_classes=1000)) == count


def test_cbam_adds_about_2_5m_to_resnet50():
    extra = n_params(models.create_model("cbam_resnet50")) - n_params(models.create_model("resnet50"))
    assert 2.4e6 < extra < 2.6e6
    assert abs(n_params(models.create_model("cbam_resnet50")) - 28.09e6) < 0.02e6  # CBAM paper, Table 2


def _torchvision_resnet50_shape(key: str) -> tuple[int, ...]:
    """The shape torchvision's resnet50 gives `key`, from its architecture alone (not from our model):
    planes 64/128/256/512, blocks 3/4/6/3, bottleneck expansion 4, a 7x7 stem and a 1000-way fc."""
    if key.endswith("num_batches_tracked"):
        return ()
    if key.startswith(("conv1.", "bn1.")):
        return (64, 3, 7, 7) if key == "conv1.weight" else (64,)
    if key.startswith("fc."):
        return (1000, 2048) if key == "fc.weight" else (1000,)
    layer, block, module, *rest = key.split(".")
    planes = 64 * 2 ** (int(layer.removeprefix("layer")) - 1)
    inplanes = (64 if planes == 64 else planes * 2) if block == "0" else planes * 4
    if module == "downsample":
        return (planes * 4, inplanes, 1, 1) if rest == ["0", "weight"] else (planes * 4,)
    width = {"conv1": planes, "conv2": planes, "conv3": planes * 4, "bn1": planes, "bn2": planes, "bn3": planes * 4}
    if module.startswith("bn"):
        return (width[module],)
    kernel = 3 if module == "conv2" else 1
    fan_in = {"conv1": inplanes, "conv2": planes, "conv3": planes}[module]
    return (width[module], fan_in, kernel, kernel)


def test_torchvision_state_dict_loads_strict_into_plain_and_loose_into_attention():
    # a torchvision-shaped state dict built from the committed key list, not from our network
    keys = [k for k in KEYS_FILE.read_text().splitlines() if k and not k.startswith("#")]
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.tensor(7) if k.endswith("num_batches_tracked")
              else torch.randn(_torchvision_resnet50_shape(k), generator=g)) for k in keys}
    plain = models.create_model("resnet50", num_classes=1000)
    plain.load_state_dict(sd, strict=True)
    assert torch.equal(plain.layer3[5].conv2.weight, sd["layer3.5.conv2.weight"])  # values really copied
    assert torch.equal(plain.fc.bias, sd["fc.bias"])
    cbam = models.create_model("cbam_resnet50", num_classes=1000)
    result = cbam.load_state_dict(sd, strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(".attn." in k for k in result.missing_keys)
    assert torch.equal(cbam.layer4[2].bn3.running_var, sd["layer4.2.bn3.running_var"])


def test_blocks_hold_attention_in_the_attn_slot():
    assert models.create_model("resnet18").layer1[0].attn is None
    cbam = models.create_model("cbam_resnet50")
    blocks = [b for layer in (cbam.layer1, cbam.layer2, cbam.layer3, cbam.layer4) for b in layer]
    assert len(blocks) == 16 and all(type(b.attn).__name__ == "CBAM" for b in blocks)


def test_cbam_ablation_switches_change_the_output():
    x = torch.randn(2, 3, 64, 64)
    kw = dict(num_classes=3, widths=(8, 16, 32, 64))
    torch.manual_seed(0)
    full = models.create_model("cbam_resnet18", **kw).eval()
    outs = {}
    for switch in ("channel_attention", "spatial_attention"):
        ablated = models.create_model("cbam_resnet18", **kw, **{switch: False}).eval()
        result = ablated.load_state_dict(full.state_dict(), strict=False)
        assert result.missing_keys == [] and result.unexpected_keys
        outs[switch] = ablated(x)
        assert not torch.allclose(outs[switch], full(x))
    with pytest.raises(ValueError):
        models.create_model("cbam_resnet18", channel_attention=False, spatial_attention=False)


def test_resnext_uses_grouped_convs():
    block = models.create_model("resnext50_32x4d").layer1[0]
    assert block.conv2.groups == 32 and block.conv2.out_channels == 128


@pytest.mark.parametrize("kwargs", [dict(widths=(64, 128)), dict(num_classes=0), dict(groups=2),
                                    dict(drop_rate=1.5), dict(widths=(0, 1, 2, 3))])
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        models.create_model("resnet18", **kwargs)


def test_zero_init_last_makes_blocks_identity_at_start():
    model = models.create_model("resnet50", widths=(8, 16, 32, 64), zero_init_last=True)
    assert all(float(b.bn3.weight.detach().abs().sum()) == 0 for b in model.layer1)
