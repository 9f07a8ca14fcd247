"""A meta-trained run exports its prototype embedding as an `embedding` bundle for /adapt."""
import json

import pytest
import torch

from training.fewshot.build import build_method, save_checkpoint
from training.fewshot.config import FewShotConfig
from training.fewshot.export import export_embedding

SPLIT = {"name": "toy", "dataset": "toy", "classes": ["a", "b", "c"]}


def _run(tmp_path, method):
    cfg = FewShotConfig.from_dict({"method": method, "backbone": "cbam_resnet18",
                                   "backbone_args": {"widths": [8, 8, 16, 16]}, "image_size": 64, "train": SPLIT})
    torch.manual_seed(0)
    m = build_method(cfg)
    run = tmp_path / method
    run.mkdir()
    save_checkpoint(run / "checkpoint.pt", m, cfg, extra={"mean": [0.5] * 3, "std": [0.25] * 3})
    return run


@pytest.mark.slow
def test_dual_attention_run_exports_an_embedding_bundle(tmp_path):
    bundle = export_embedding(_run(tmp_path, "dual_attention"), tmp_path / "store", "fs_test")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"] == "embedding" and manifest["classes"] == SPLIT["classes"]
    assert manifest["input"]["dims"] == [3, 64, 64] and manifest["preprocessing"]["mean"] == [0.5] * 3
    assert manifest["embedding"]["distance"] == "squared_euclidean" and manifest["embedding"]["dim"] == 16
    assert manifest["training"]["method"] == "dual_attention"
    # the graphs an embedding bundle needs and nothing else; model_args rebuild the backbone of this run
    assert sorted(manifest["files"]) == ["model.onnx"] and list(manifest["graphs"]) == ["classify"]
    assert manifest["model_args"] == {"widths": [8, 8, 16, 16], "num_classes": len(SPLIT["classes"])}
    assert manifest["format_version"] == 2 and manifest["embedding"]["stages"] == ["features"]


def test_methods_without_a_prototype_embedding_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no prototype embedding"):
        export_embedding(_run(tmp_path, "relation"), tmp_path / "store", "fs_test")
