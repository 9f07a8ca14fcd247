"""Split files name their dataset and relative paths only, and the format-1 files (with roots) still load."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from training.data import scan_image_folder
from training.splits import load_split, make_split, save_split


def _folder(root):
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for g in range(4):
            for k in range(2):
                Image.fromarray(np.full((8, 8, 3), 40 * g + k, np.uint8)).save(root / cls / f"P{cls}{g}-{k}.png")
    return scan_image_folder(root, group_pattern=r"^([^-]+)-")


def test_saved_split_names_the_dataset_and_reloads_from_the_data_dir(tmp_path, monkeypatch):
    data = tmp_path / "data"
    split = make_split(_folder(data / "toyset"), val_frac=0.25, test_frac=0.25, seed=0)
    save_split(split, tmp_path / "split.json")
    doc = json.loads((tmp_path / "split.json").read_text())
    assert doc["format_version"] == 2 and doc["dataset"] == "toyset" and "root" not in doc
    assert str(tmp_path) not in (tmp_path / "split.json").read_text()  # no path of this machine
    again = load_split(tmp_path / "split.json", data_dir=data)
    assert again.root == data / "toyset"
    assert [s.path for s in again.part("test")] == [s.path for s in split.part("test")]
    monkeypatch.setenv("HISTOSERVE_DATA_DIR", str(data))
    assert load_split(tmp_path / "split.json").root == data / "toyset"


def test_format_1_files_with_roots_still_load(tmp_path):
    data = tmp_path / "data"
    split = make_split(_folder(data / "toyset"), val_frac=0.25, test_frac=0.25, seed=0)
    save_split(split, tmp_path / "split.json")
    doc = json.loads((tmp_path / "split.json").read_text())
    legacy = {**{k: v for k, v in doc.items() if k not in ("dataset", "mask_dataset")},
              "format_version": 1, "root": str(data / "toyset"), "mask_root": None}
    (tmp_path / "old.json").write_text(json.dumps(legacy))
    assert load_split(tmp_path / "old.json").root == data / "toyset"  # the recorded root exists here
    legacy["root"] = "/elsewhere/on/another/machine/toyset"
    (tmp_path / "moved.json").write_text(json.dumps(legacy))
    assert load_split(tmp_path / "moved.json", data_dir=data).root == data / "toyset"  # its name, here
