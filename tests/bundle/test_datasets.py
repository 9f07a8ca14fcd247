"""The data rules both sides share: patient/specimen ids, image suffixes, the data directory."""
from __future__ import annotations

from pathlib import Path

import pytest

from bundle import datasets


@pytest.mark.parametrize("name,dataset,group", [
    ("GT2001837-1-400-001.png", "ebhi_seg", "GT2001837"),
    ("A_29960CD_200X_000.png", "breakhis_200x", "29960"),
    ("MC_18842D_200X_000.png", "breakhis_200x", "18842"),  # 18842D folds into patient 18842
    ("MC_18842_200X_001.png", "breakhis_200x", "18842"),
    ("MC_18842D_200X_000.png", None, "18842"),  # the rule guessed from the name's shape
    ("GT2001837-1-400-001.png", None, "GT2001837"),
])
def test_group_ids(name, dataset, group):
    assert datasets.group_of(name, dataset) == group


def test_the_training_side_uses_the_same_rules():
    pytest.importorskip("torch")
    from training import data

    assert data.GROUP_PATTERNS is datasets.GROUP_PATTERNS
    assert data.IMAGE_EXTENSIONS is datasets.IMAGE_SUFFIXES


def test_data_dir_and_dataset_names(monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path))
    assert datasets.default_data_dir() == tmp_path
    assert datasets.resolve_dataset("ebhi_seg") == tmp_path / "ebhi_seg"
    monkeypatch.delenv(datasets.DATA_DIR_ENV)
    assert datasets.default_data_dir() == Path(datasets.REPO_ROOT).parent / "shared" / "data"
    for bad in ("../ebhi_seg", "/abs/ebhi_seg", ""):
        with pytest.raises(ValueError):
            datasets.resolve_dataset(bad)
    assert datasets.is_image(Path("x.PNG")) and not datasets.is_image(Path("x.txt"))
