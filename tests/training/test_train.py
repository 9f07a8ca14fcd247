"""The loop end to end on tiny generated data: checkpoints, resume, evaluate, CLI, --init."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import models
from training.cli import build_parser, main
from training.config import load_config
from training.data import HistoDataset, scan_image_folder
from training.evaluate import evaluate_run
from training.train import load_init_weights, train
from training.transforms import eval_transform

from .conftest import make_folder

TINY = ["model=\"resnet18\"", "model_args={\"widths\": [8, 8, 16, 16]}", "image_size=16", "batch_size=8",
        "epochs=2", "threads=1", "cache=false", "val_frac=0.25", "test_frac=0.25", "lr=0.01"]


@pytest.fixture
def colour_folder(tmp_path):
    # three classes that differ by colour: learnable in a few steps
    return make_folder(tmp_path / "ebhi_seg", {"red": 0, "green": 1, "blue": 2}, groups_per_class=8,
                       images_per_group=2, colours={"red": (200, 40, 40), "green": (40, 200, 40),
                                                    "blue": (40, 40, 200)})


def test_train_writes_a_self_describing_checkpoint_and_evaluates(colour_folder, tmp_path):
    run = tmp_path / "run"
    cfg = load_config(None, TINY + [f"data=\"{colour_folder}\""])
    summary = train(cfg, run)
    assert summary["epochs_run"] == 2
    for name in ("config.json", "split.json", "data_report.json", "checkpoint.pt", "last.pt", "history.json"):
        assert (run / name).is_file(), name
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)  # plain dicts only
    assert ckpt["architecture"] == "resnet18" and ckpt["model_args"]["num_classes"] == 3
    assert ckpt["config"]["image_size"] == 16 and ckpt["classes"] == ["blue", "green", "red"]
    model = models.create_model(ckpt["architecture"], **ckpt["model_args"])
    model.load_state_dict(ckpt["model"])

    metrics = evaluate_run(run, baseline=True)
    for name in ("metrics.json", "curves.png", "confusion_matrix.png", "reliability.png"):
        assert (run / name).is_file(), name
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["test"]["n"] == metrics["test"]["n"] > 0
    assert 0 <= on_disk["test"]["accuracy"] <= 1 and on_disk["temperature"] > 0
    assert "majority_rate" in on_disk["summary"] and on_disk["baseline"]["test"]["n"] == metrics["test"]["n"]


def test_resume_continues_from_last_epoch(colour_folder, tmp_path):
    run = tmp_path / "run"
    train(load_config(None, TINY + [f"data=\"{colour_folder}\""]), run)
    split_before = (run / "split.json").read_text()
    summary = train(load_config(None, TINY + [f"data=\"{colour_folder}\"", "epochs=3"]), run, resume=True)
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3] and summary["epochs_run"] == 3
    assert json.loads((run / "split.json").read_text())["files"] == json.loads(split_before)["files"]


def test_cli_train_and_evaluate(colour_folder, tmp_path, capsys):
    cfg_file = tmp_path / "tiny.json"
    cfg_file.write_text(json.dumps({"name": "tiny", "baseline": False}))
    run = tmp_path / "cli_run"
    args = ["train", "--config", str(cfg_file), "--data", str(colour_folder), "--out", str(run)]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    assert (run / "metrics.json").is_file()
    assert json.loads((run / "config.json").read_text())["name"] == "tiny"
    assert main(["evaluate", "--run", str(run), "--no-baseline"]) == 0
    assert "balanced_accuracy" in capsys.readouterr().out


def test_cli_help_lists_models_and_subcommands():
    text = build_parser().format_help()
    assert "cbam_resnet18" in text and "train" in text and "evaluate" in text and "baseline" in text


def test_config_file_and_overrides(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"epochs": 5, "lr": 0.5, "_comment": "notes are ignored"}))
    cfg = load_config(f, ["epochs=7", "model_args={\"widths\": [8, 8, 8, 8]}", "loss=focal"])
    assert (cfg.epochs, cfg.lr, cfg.loss, cfg.model_args) == (7, 0.5, "focal", {"widths": [8, 8, 8, 8]})
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(f, ["epoch=3"])
    with pytest.raises(ValueError, match="should be int"):
        load_config(f, ["epochs=ten"])
    f.write_text(json.dumps({"lrr": 1}))
    with pytest.raises(ValueError, match="lrr"):
        load_config(f)


def test_init_loads_torchvision_names_non_strict(tmp_path, capsys):
    plain = models.create_model("resnet18", num_classes=1000, widths=[8, 8, 16, 16])
    torch.save(plain.state_dict(), tmp_path / "tv.pth")
    target = models.create_model("cbam_resnet18", num_classes=3, widths=[8, 8, 16, 16])
    report = load_init_weights(target, tmp_path / "tv.pth")
    assert any(".attn." in k for k in report["missing"])  # attention is new
    assert "fc.weight" in report["shape_mismatch"]  # 1000 classes vs 3: left at init
    assert torch.equal(target.conv1.weight, plain.conv1.weight)
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="no key matches"):
        load_init_weights(target, tmp_path / "bad.pth")


def test_dataset_thresholds_masks_and_flags_missing_ones(tiny_folder, tmp_path):
    mask_root = tmp_path / "masks"
    folder = scan_image_folder(tiny_folder)
    s0 = folder.samples[0]
    m = mask_root / s0.path.parent.name / s0.path.name
    m.parent.mkdir(parents=True)
    grey = np.zeros((16, 16), np.uint8)
    grey[:, :8] = 127  # just below the threshold
    grey[:, 8:] = 128
    Image.fromarray(grey).save(m)
    with pytest.warns(UserWarning, match="no mask"):
        folder = scan_image_folder(tiny_folder, mask_root=mask_root)
    ds = HistoDataset(folder.samples[:2], 16, eval_transform([0, 0, 0], [1, 1, 1]), with_masks=True)
    first, second = ds[0], ds[1]
    assert first["has_mask"] and not second["has_mask"]
    assert first["mask"][0, :, :8].sum() == 0 and first["mask"][0, :, 8:].min() == 1
    assert second["mask"].sum() == 0


def test_cli_baseline_uses_the_split_code(colour_folder, tmp_path, capsys):
    out = tmp_path / "base"
    assert main(["baseline", "--data", str(colour_folder), "--out", str(out), "--set", "image_size=16",
                 "--set", "cache=false", "--set", "val_frac=0.25", "--set", "test_frac=0.25"]) == 0
    result = json.loads((out / "baseline.json").read_text())
    assert (out / "split.json").is_file()
    # colour separates these classes completely: the colour-histogram baseline must find it
    assert result["test"]["accuracy"] == 1.0
    assert "baseline test" in capsys.readouterr().out


def test_unreadable_image_is_counted_in_the_run_report(colour_folder, tmp_path):
    bad = colour_folder / "red" / "GT0999-1-400-000.png"
    bad.write_bytes(b"not a png")
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="GT0999-1-400-000.png"):
        train(load_config(None, TINY + [f"data=\"{colour_folder}\"", "epochs=1", "baseline=false"]), run)
    metrics = evaluate_run(run, baseline=False)
    assert metrics["data"]["skipped_count"] == 1 and metrics["data"]["skipped"][0]["file"].endswith(bad.name)
