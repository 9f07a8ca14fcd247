"""`python -m training`: train, evaluate and baseline from the command line, and its help."""
from __future__ import annotations

import json

from training.cli import build_parser, main

from .test_train import TINY
from .test_train import colour_folder as colour_folder  # noqa: F401  (a fixture, used by name)


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


def test_cli_baseline_uses_the_split_code(colour_folder, tmp_path, capsys):
    out = tmp_path / "base"
    assert main(["baseline", "--data", str(colour_folder), "--out", str(out), "--set", "image_size=16",
                 "--set", "cache=false", "--set", "val_frac=0.25", "--set", "test_frac=0.25"]) == 0
    result = json.loads((out / "baseline.json").read_text())
    assert (out / "split.json").is_file()
    # colour separates these classes completely: the colour-histogram baseline must find it
    assert result["test"]["accuracy"] == 1.0
    assert "baseline test" in capsys.readouterr().out
