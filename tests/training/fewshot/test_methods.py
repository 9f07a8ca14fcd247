"""Every method runs an episode on a tiny backbone: shapes, finite gradients, evaluation fast path."""
import numpy as np
import pytest
import torch

from training.fewshot.bank import ImageBank
from training.fewshot.build import build_method, load_checkpoint, save_checkpoint
from training.fewshot.config import FewShotConfig
from training.fewshot.evaluate import evaluate_method, markdown_table

TINY = {"widths": [4, 8, 8, 8]}
SPLIT = {"name": "toy", "dataset": "toy", "classes": ["a", "b", "c"]}


def _cfg(method, **method_args):
    return FewShotConfig.from_dict({"method": method, "method_args": method_args, "backbone": "cbam_resnet18",
                                    "backbone_args": TINY, "image_size": 32, "train": SPLIT, "n_way": 3})


def _bank(n_per_class=8, size=32):
    """Three colour classes, two groups each, so episodes have something to separate."""
    rng = np.random.default_rng(0)
    imgs, labels, groups = [], [], []
    for c in range(3):
        for i in range(n_per_class):
            img = rng.integers(0, 60, (3, size, size))
            img[c] += 150
            imgs.append(img)
            labels.append(c)
            groups.append(f"{c}-{i % 2}")
    return ImageBank(torch.tensor(np.stack(imgs), dtype=torch.uint8), labels, groups, ["a", "b", "c"], {})


CASES = [("protonet", {}), ("relation", {}), ("maml", {"inner_steps": 2, "first_order": False}),
         ("maml", {"inner_steps": 1, "first_order": True}), ("dual_attention", {"inner_steps": 1}),
         ("dual_attention", {"inner_steps": 1, "first_order": False}),
         ("maml", {"inner_steps": 2, "adapt_prefixes": ["fc"]})]
ANIL = {"inner_steps": 2, "inner_lr": 0.5, "adapt_prefixes": ["fc"], "transductive_bn": False}


@pytest.mark.parametrize("method,args", CASES)
def test_one_training_episode_gives_finite_gradients(method, args):
    torch.manual_seed(0)
    m = build_method(_cfg(method, **args)).train()
    bank = _bank()
    ep = bank.sampler(3, 2, 3, seed=0).episode(0)
    sx, qx = bank.batch(ep.support, (0.5,) * 3, (0.25,) * 3), bank.batch(ep.query, (0.5,) * 3, (0.25,) * 3)
    loss, logits = m.loss(sx, torch.as_tensor(ep.support_labels), qx, torch.as_tensor(ep.query_labels), 3)
    assert logits.shape == (9, 3) and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in m.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("method,args", [("relation", {}), ("maml", ANIL)])
def test_fast_path_equals_per_episode_prediction(method, args):
    """Encoding every test image once must give the same logits as running the episode through predict."""
    torch.manual_seed(0)
    m = build_method(_cfg(method, **args)).eval()
    assert m.encodes_independently()
    bank = _bank()
    ep = bank.sampler(3, 2, 3, seed=3).episode(1)
    sy = torch.as_tensor(ep.support_labels)
    with torch.no_grad():
        direct = m.predict(bank.batch(ep.support, (0.5,) * 3, (0.25,) * 3), sy,
                           bank.batch(ep.query, (0.5,) * 3, (0.25,) * 3), 3)
        enc = m.encode(bank.batch(range(len(bank.labels)), (0.5,) * 3, (0.25,) * 3))
        fast = m.predict_encoded(enc[ep.support], sy, enc[ep.query], 3)
    torch.testing.assert_close(direct, fast, rtol=1e-4, atol=1e-5)


def test_maml_with_the_head_alone_adapts_it_by_sgd_on_embeddings_computed_once():
    torch.manual_seed(0)
    m = build_method(_cfg("maml", **ANIL)).eval()
    bank = _bank()
    ep = bank.sampler(3, 2, 3, seed=0).episode(0)
    sx, qx = bank.batch(ep.support, (0.5,) * 3, (0.25,) * 3), bank.batch(ep.query, (0.5,) * 3, (0.25,) * 3)
    sy = torch.as_tensor(ep.support_labels)
    calls = []
    embed = m.backbone.embed
    m.backbone.embed = lambda x: (calls.append(len(x)), embed(x))[1]
    logits = m.predict(sx, sy, qx, 3)
    assert calls == [len(sx), len(qx)]  # not once per inner step
    with torch.no_grad():
        zs, zq = embed(sx), embed(qx)
    w, b = m.net.fc.weight.detach().clone().requires_grad_(), m.net.fc.bias.detach().clone().requires_grad_()
    for _ in range(2):
        gw, gb = torch.autograd.grad(torch.nn.functional.cross_entropy(zs @ w.T + b, sy), (w, b))
        w, b = (w - 0.5 * gw).detach().requires_grad_(), (b - 0.5 * gb).detach().requires_grad_()
    torch.testing.assert_close(logits, (zq @ w.T + b).detach(), rtol=1e-4, atol=1e-5)


def test_checkpoint_round_trip_and_evaluation_report(tmp_path):
    torch.manual_seed(0)
    cfg = _cfg("dual_attention", inner_steps=1, inner_steps_test=1)
    m = build_method(cfg)
    save_checkpoint(tmp_path / "c.pt", m, cfg, extra={"mean": [0.5] * 3, "std": [0.25] * 3})
    m2, cfg2, ckpt = load_checkpoint(tmp_path / "c.pt")
    assert cfg2 == cfg and ckpt["architecture"] == "cbam_resnet18"
    for a, b in zip(m.state_dict().values(), m2.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    r = evaluate_method(m2, _bank(), 3, 1, 3, episodes=5, mean=[0.5] * 3, std=[0.25] * 3)
    assert 0.0 <= r["accuracy"] <= 1.0 and r["episodes"] == 5 and r["group_disjoint_fraction"] == 1.0
    table = markdown_table([{"name": "x", "results": [dict(r, test="toy")]}])
    assert "| x |" in table and "toy 1-shot" in table


def test_maml_evaluation_leaves_batchnorm_statistics_alone():
    torch.manual_seed(0)
    m = build_method(_cfg("maml", inner_steps=1)).eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    bank = _bank()
    evaluate_method(m, bank, 3, 1, 3, episodes=2, mean=[0.5] * 3, std=[0.25] * 3)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)


def test_unseen_classes_must_not_overlap_training_classes():
    with pytest.raises(ValueError, match="unseen"):
        FewShotConfig.from_dict({"train": SPLIT, "tests": [dict(SPLIT, name="t", classes=["c", "d"])]})


def test_table_says_how_many_episodes_each_row_was_scored_on():
    def cell(test, episodes):
        return {"test": test, "k_shot": 5, "accuracy": 0.5, "ci95": 0.01, "episodes": episodes, "n_way": 3,
                "chance": 1 / 3, "shared_group_classes": []}
    table = markdown_table([{"name": "a", "results": [cell("x", 600)]}, {"name": "a", "results": [cell("y", 600)]},
                            {"name": "b", "results": [cell("x", 300)]}])
    assert "| a | 50.0 ± 1.0 | 50.0 ± 1.0 |" in table and "| b | 50.0 ± 1.0 | – |" in table
    assert "test episodes per cell: a 600, b 300" in table
    assert "600 test episodes per cell" in markdown_table([{"name": "a", "results": [cell("x", 600)]}])
