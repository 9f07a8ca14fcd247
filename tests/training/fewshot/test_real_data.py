"""A short real-data meta-training run beats chance on classes it never saw."""
import pytest

from training.fewshot.bank import load_bank
from training.fewshot.build import load_checkpoint
from training.fewshot.config import FewShotConfig
from training.fewshot.evaluate import evaluate_method
from training.fewshot.train import meta_train


@pytest.mark.slow
def test_protonet_with_the_dual_attention_embedding_beats_chance_on_unseen_ebhi_classes(ebhi_dir, tmp_path):
    cfg = FewShotConfig.from_dict({
        "name": "tiny", "method": "protonet", "backbone": "cbam_resnet18",
        "backbone_args": {"widths": [8, 16, 32, 64]}, "image_size": 48,
        "train": {"name": "base", "dataset": ebhi_dir.name, "classes": ["adenocarcinoma", "low_grade_in", "polyp"]},
        "tests": [{"name": "unseen", "dataset": ebhi_dir.name,
                   "classes": ["high_grade_in", "normal", "serrated_adenoma"]}],
        "n_way": 3, "k_shot": 5, "q_query": 5, "episodes": 120, "lr": 0.002, "log_every": 40, "seed": 0,
    })
    ckpt = meta_train(cfg, tmp_path / "run", banks=[load_bank(cfg.train[0], cfg.image_size, root=ebhi_dir.parent)])
    method, _, saved = load_checkpoint(ckpt)
    test = load_bank(cfg.tests[0], cfg.image_size, root=ebhi_dir.parent)
    r = evaluate_method(method, test, 3, 5, 10, episodes=200, mean=saved["mean"], std=saved["std"])
    print(f"tiny ProtoNet (CBAM embedding), unseen EBHI classes, 3-way 5-shot: {r['accuracy']:.3f} +- {r['ci95']:.3f}")
    # Unseen classes, specimens kept apart between support and query (all three classes have several).
    assert r["group_disjoint_fraction"] == 1.0
    assert r["accuracy"] - r["ci95"] > 1 / 3 + 0.05, r
