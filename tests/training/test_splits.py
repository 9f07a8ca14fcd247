"""Splits keep groups apart, stay stratified, report thin classes, and reload exactly."""
from __future__ import annotations

import pytest

from training.data import scan_image_folder
from training.splits import load_split, make_split, save_split

from .conftest import make_folder


def _groups(samples):
    return {s.group for s in samples}


def test_splits_never_share_a_group(tmp_path):
    root = make_folder(tmp_path / "ebhi_seg", {"a": 0, "b": 1, "c": 2}, groups_per_class=10, images_per_group=2)
    for seed in range(3):
        split = make_split(scan_image_folder(root), val_frac=0.2, test_frac=0.2, seed=seed)
        assert not _groups(split.train) & _groups(split.val)
        assert not _groups(split.train) & _groups(split.test)
        assert not _groups(split.val) & _groups(split.test)
        assert len(split.train) + len(split.val) + len(split.test) == 3 * 10 * 2
        # stratified: every class on every side when groups allow
        for part in (split.train, split.val, split.test):
            assert {s.label for s in part} == {0, 1, 2}


def test_split_file_reproduces_the_split(tmp_path):
    root = make_folder(tmp_path / "ebhi_seg", {"a": 0, "b": 1}, groups_per_class=8)
    split = make_split(scan_image_folder(root), seed=7)
    save_split(split, tmp_path / "split.json")
    again = load_split(tmp_path / "split.json", data_dir=tmp_path)
    for name in ("train", "val", "test"):
        assert again.part(name) == split.part(name)
    assert again.seed == 7 and again.classes == split.classes
    # the same seed on a fresh scan gives the same split; another seed a different one
    assert make_split(scan_image_folder(root), seed=7).test == split.test
    assert any(make_split(scan_image_folder(root), seed=s).test != split.test for s in range(8, 12))


def test_class_with_too_few_groups_is_reported_not_merged(tmp_path):
    root = make_folder(tmp_path / "ebhi_seg", {"a": 0, "b": 1}, groups_per_class=10)
    make_folder(tmp_path / "ebhi_seg", {"a": 0, "b": 1, "rare": 2}, groups_per_class=1)  # adds rare: 1 group
    with pytest.warns(UserWarning, match="class 'rare' has 1 group"):
        split = make_split(scan_image_folder(root), seed=0)
    assert split.classes == ["a", "b", "rare"]
    assert len(split.class_report["rare"]["missing_from"]) == 2


def test_loading_a_split_with_missing_files_is_a_clear_error(tmp_path):
    root = make_folder(tmp_path / "ebhi_seg", {"a": 0, "b": 1}, groups_per_class=8)
    split = make_split(scan_image_folder(root), seed=0)
    save_split(split, tmp_path / "split.json")
    split.test[0].path.unlink()
    with pytest.raises(FileNotFoundError, match="not under"):
        load_split(tmp_path / "split.json", data_dir=tmp_path)


def test_a_split_saved_without_masks_finds_them_when_a_mask_root_is_given(tmp_path):
    # A plain run's split reused by a mask-supervised run (TAD) must still see the teacher masks.
    root = make_folder(tmp_path / "ebhi_seg", {"a": 0, "b": 1}, groups_per_class=8)
    split = make_split(scan_image_folder(root), seed=0)
    save_split(split, tmp_path / "split.json")
    masks = tmp_path / "masks"
    first = split.train[0].path.relative_to(root)
    (masks / first.parent).mkdir(parents=True)
    (masks / first).write_bytes(split.train[0].path.read_bytes())
    again = load_split(tmp_path / "split.json", mask_root=masks, data_dir=tmp_path)
    with_mask = [s for s in again.train if s.mask_path is not None]
    assert [s.mask_path for s in with_mask] == [masks / first]


def test_cross_validation_folds_cover_every_group_once_and_never_share_one(tmp_path):
    root = make_folder(tmp_path / "ebhi_seg", {"a": 0, "b": 1, "c": 2}, groups_per_class=10, images_per_group=2)
    folder = scan_image_folder(root)
    tested: list[str] = []
    for fold in range(5):
        split = make_split(folder, val_frac=0.15, seed=0, cv_folds=5, cv_fold=fold)
        assert not _groups(split.train) & _groups(split.val)
        assert not _groups(split.train) & _groups(split.test)
        assert not _groups(split.val) & _groups(split.test)
        assert "test fold" in split.description
        tested += sorted(_groups(split.test))
    # the five test parts partition the groups: each group is tested exactly once
    assert sorted(tested) == sorted({s.group for s in folder.samples})
    with pytest.raises(ValueError, match="fold 5"):
        make_split(folder, cv_folds=5, cv_fold=5)
