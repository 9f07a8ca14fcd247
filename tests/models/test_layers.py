"""Attention modules (models/layers): shapes, gate ranges and the semantics each paper defines."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models.layers import (
    CBAM,
    ActivationAttention,
    ChannelAttention,
    GatedAttention,
    LightweightAttention,
    SEModule,
    SpatialAttention,
    create_attn,
    global_avg,
    global_max,
    list_attn,
    reduced_channels,
)


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(3, 32, 9, 7)


@pytest.mark.parametrize("name", list_attn())
def test_every_attention_returns_its_input_shape(name, x):
    module = create_attn(name, x.shape[1]).eval()
    out = module(x)
    assert out.shape == x.shape
    assert not torch.allclose(out, x), f"{name} left its input unchanged"


def test_unknown_attention_name_lists_known():
    with pytest.raises(ValueError, match="cbam"):
        create_attn("nope", 16)
    assert create_attn(None, 16) is None


def test_reduction_keeps_at_least_8_hidden_units():
    assert reduced_channels(16, 1 / 16) == 8
    assert reduced_channels(256, 1 / 16) == 16
    assert reduced_channels(16, 1 / 16, rd_channels=4) == 4
    assert SEModule(16).fc1.out_channels == 8
    assert ChannelAttention(16).fc1.out_channels == 8
    with pytest.raises(ValueError):
        reduced_channels(16, 0.0)


def test_global_pooling_is_mean_and_max_over_space(x):
    assert torch.allclose(global_avg(x), x.flatten(2).mean(-1))
    assert torch.equal(global_max(x, keepdim=True)[..., 0, 0], x.flatten(2).max(-1).values)


@pytest.mark.parametrize("module", [SEModule(32), ChannelAttention(32), LightweightAttention(32),
                                    SpatialAttention(32)], ids=lambda m: type(m).__name__)
def test_gates_lie_strictly_between_0_and_1(module, x):
    gate = module.eval().attention(x * 3)
    assert ((gate > 0) & (gate < 1)).all()
    assert gate.std() > 0, "gate is constant on random input"


@pytest.mark.parametrize("module", [SEModule(32), ChannelAttention(32), LightweightAttention(32)],
                         ids=lambda m: type(m).__name__)
def test_zeroed_mlp_gives_uniform_half_gate(module, x):
    with torch.no_grad():
        for p in [module.fc1.weight, module.fc1.bias, module.fc2.weight, module.fc2.bias]:
            p.zero_()
    assert torch.allclose(module.attention(x), torch.full((3, 32, 1, 1), 0.5))
    assert torch.allclose(module(x), 0.5 * x)


def test_cbam_is_channel_then_spatial(x):
    cbam = CBAM(32).eval()
    expected = cbam.spatial(cbam.channel(x))
    assert torch.allclose(cbam(x), expected)
    assert not torch.allclose(cbam(x), cbam.channel(cbam.spatial(x)))


def test_cbam_switches_change_the_output(x):
    torch.manual_seed(1)
    full = CBAM(32).eval()
    no_channel = CBAM(32, use_channel=False).eval()
    no_spatial = CBAM(32, use_spatial=False).eval()
    no_channel.spatial.load_state_dict(full.spatial.state_dict())
    no_spatial.channel.load_state_dict(full.channel.state_dict())
    assert no_channel.channel is None and no_spatial.spatial is None
    assert not torch.allclose(full(x), no_channel(x))
    assert not torch.allclose(full(x), no_spatial(x))
    assert torch.allclose(no_spatial(x), full.channel(x))
    with pytest.raises(ValueError):
        CBAM(32, use_channel=False, use_spatial=False)


def test_spatial_attention_uses_channel_mean_and_max(x):
    sa = SpatialAttention(kernel_size=7).eval()
    assert sa.conv.in_channels == 2 and sa.conv.kernel_size == (7, 7)
    # a per-position channel permutation leaves mean and max, hence the gate, unchanged
    assert torch.allclose(sa.attention(x), sa.attention(x.flip(1)), atol=1e-6)


def test_lightweight_attention_uses_leaky_relu_and_dense_layers():
    module = LightweightAttention(64)
    assert isinstance(module.act, nn.LeakyReLU)
    assert isinstance(module.fc1, nn.Linear) and isinstance(module.fc2, nn.Linear)


def test_gated_semantic_map_is_a_softmax_over_positions(x):
    module = GatedAttention(32).eval()
    s = module.semantic_map(x)
    assert s.shape == (3, 9 * 7)
    assert torch.allclose(s.sum(dim=1), torch.ones(3), atol=1e-5)
    assert (s > 0).all()


def test_gated_gates_and_map(x):
    module = GatedAttention(32).eval()
    xr = torch.relu(x)
    g = module.gates(xr)
    assert g.shape == (3, 32)
    assert ((g >= 0) & (g < 1)).all()
    # channel scores are X^T S
    s = module.semantic_map(xr)
    scores = torch.einsum("bcn,bn->bc", xr.flatten(2), s)
    assert torch.allclose(g, torch.relu(torch.tanh(scores)), atol=1e-6)
    amap = module.attention_map(xr)
    assert amap.shape == (3, 9, 7)
    assert torch.allclose(amap, (xr * g[:, :, None, None]).mean(1), atol=1e-6)
    with pytest.raises(ValueError):
        GatedAttention(32, dilations=())


def test_activation_attention_map_is_sum_of_squares_normalised():
    a = torch.zeros(2, 4, 5, 5)
    a[0, :, 1, 2] = 2.0
    a[0, 0, 3, 3] = -1.0
    a[1] = torch.randn(4, 5, 5)
    module = ActivationAttention(4)
    m = module.attention_map(a)
    g = (a.abs() ** 2).sum(1)
    assert torch.allclose(m, g / g.flatten(1).norm(dim=1)[:, None, None], atol=1e-5)
    assert torch.allclose(m.flatten(1).norm(dim=1), torch.ones(2), atol=1e-4)
    assert m[0].argmax() == 1 * 5 + 2
    up = module.attention_map(a, size=(10, 10))
    assert up.shape == (2, 10, 10)
    # merged into the features as x * (1 + m), m in [0, 1]: the hottest position is doubled
    out = module(a)
    assert torch.allclose(out[0, :, 1, 2], 2 * a[0, :, 1, 2], atol=1e-4)
    with pytest.raises(ValueError):
        ActivationAttention(4, p=0)


def test_channel_attention_shares_one_mlp_over_avg_and_max(x):
    module = ChannelAttention(32).eval()
    mlp = nn.Sequential(module.fc1, module.act, module.fc2)
    avg, mx = x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    assert torch.allclose(module.attention(x), torch.sigmoid(mlp(avg) + mlp(mx)), atol=1e-6)


def test_weighted_avg_is_the_weighted_mean_and_uniform_weights_give_the_plain_mean(x):
    from models.layers import weighted_avg

    w = torch.rand(x.shape[0], 1, *x.shape[-2:])
    expected = (x * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3))
    assert torch.allclose(weighted_avg(x, w), expected, atol=1e-6)
    assert torch.allclose(weighted_avg(x, torch.ones(x.shape[0], 1, 2, 2)), global_avg(x), atol=1e-6)


def test_weighted_avg_resizes_the_weights_to_each_map():
    from models.layers import weighted_avg

    x = torch.randn(2, 4, 8, 8)
    w = torch.zeros(2, 1, 4, 4)
    w[:, :, :2] = 1.0  # the upper half only
    half = weighted_avg(x, w)
    # bilinear upsampling keeps rows 0-2 at weight 1, row 3 at 0.75, row 4 at 0.25 and the rest at 0
    rows = torch.tensor([1, 1, 1, 0.75, 0.25, 0, 0, 0]).view(1, 1, 8, 1)
    expected = (x * rows).sum(dim=(2, 3)) / (rows.sum() * 8)
    assert torch.allclose(half, expected, atol=1e-6)


def test_taught_attention_weights_are_the_sharpened_sigmoid_of_its_logits():
    from models.layers import TaughtSpatialAttention

    torch.manual_seed(0)
    attn = TaughtSpatialAttention(6, hidden=4, power=3.0).eval()
    maps = torch.randn(2, 6, 5, 5)
    weights = attn(maps)
    assert weights.shape == (2, 1, 5, 5) and bool(((weights > 0) & (weights <= 1)).all())
    assert torch.allclose(weights, torch.sigmoid(attn.logits(maps)) ** 3, atol=1e-7)
    with pytest.raises(ValueError, match="power"):
        TaughtSpatialAttention(6, power=0)
