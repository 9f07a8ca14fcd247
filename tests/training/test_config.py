"""The training config: defaults, a JSON file, then --set overrides, each checked."""
from __future__ import annotations

import json

import pytest

from training.config import load_config


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
