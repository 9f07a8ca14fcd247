"""Meta-training on several class pools, with part of a pretrained backbone frozen."""
import numpy as np
import pytest
import torch

from training.distributed import World
from training.fewshot.build import build_method, load_checkpoint
from training.fewshot.config import FewShotConfig
from training.fewshot.train import episode_step, meta_train

from .test_methods import SPLIT, TINY, _bank

TWO_POOLS = [SPLIT, dict(SPLIT, name="toy2", dataset="toy2")]


def _cfg(**over):
    return FewShotConfig.from_dict({"method": "protonet", "method_args": {"scale": 10.0}, "backbone": "cbam_resnet18",
                                    "backbone_args": TINY, "image_size": 32, "train": TWO_POOLS, "n_way": 3,
                                    "k_shot": 2, "q_query": 2, "episodes": 4, "log_every": 2, **over})


def test_a_single_train_split_still_loads_and_every_pool_is_checked_against_the_tests():
    assert [s.name for s in _cfg(train=SPLIT).train] == ["toy"]  # checkpoints before pools held one dict
    with pytest.raises(ValueError, match="toy2"):
        _cfg(tests=[dict(SPLIT, name="t", dataset="toy2", classes=["c", "z"])])


def test_episodes_alternate_between_pools_and_never_mix_them():
    cfg = _cfg()
    method = build_method(cfg).train()
    banks = [_bank(), _bank()]
    seen = []
    for i, bank in enumerate(banks):
        batch = bank.batch
        bank.batch = lambda idx, *a, _i=i, _b=batch, **k: (seen.append(_i), _b(idx, *a, **k))[1]
    tasks = [(b, b.sampler(3, 2, 2, seed=0)) for b in banks]
    episode_step(method, tasks, [0, 1, 2], (0.5,) * 3, (0.25,) * 3, cfg, np.random.default_rng(0), World())
    assert seen == [0, 0, 1, 1, 0, 0]  # support and query of one episode from one pool


def test_only_the_trainable_prefixes_learn_and_frozen_batchnorm_keeps_its_statistics(tmp_path):
    torch.manual_seed(0)
    cfg = _cfg(trainable=["layer4"], freeze_bn=True)
    before = build_method(cfg).state_dict()
    torch.manual_seed(0)
    checkpoint = meta_train(cfg, tmp_path / "run", banks=[_bank(), _bank()])
    method, _, saved = load_checkpoint(checkpoint)
    after = method.state_dict()
    assert len(saved["train_data"]) == 2
    trained = {k for k in after if not torch.equal(after[k], before[k])}
    assert trained and all(k.startswith("backbone.layer4") for k in trained), trained
    assert not any("running_" in k for k in trained)


def test_frozen_batchnorm_is_the_backbones_and_a_relation_module_learns_its_own_statistics(tmp_path):
    torch.manual_seed(0)
    cfg = _cfg(method="relation", method_args={"width": 8, "hidden": 4}, trainable=["layer4"], freeze_bn=True)
    before = build_method(cfg).state_dict()
    torch.manual_seed(0)
    method, _, _ = load_checkpoint(meta_train(cfg, tmp_path / "run", banks=[_bank(), _bank()]))
    changed = {k for k, v in method.state_dict().items() if not torch.equal(v, before[k])}
    assert "relation.conv1.1.running_mean" in changed  # the new module's BatchNorm saw the episodes
    assert not any(k.startswith("backbone.") and "running_" in k for k in changed), changed


def test_a_prefix_that_names_nothing_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no backbone parameter"):
        meta_train(_cfg(trainable=["nothing_here"]), tmp_path / "run", banks=[_bank(), _bank()])
