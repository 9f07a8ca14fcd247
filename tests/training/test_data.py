"""The ImageFolder reader: groups from file names, masks, and clear errors on bad folders."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from training.data import GROUP_PATTERNS, ImageCache, load_image, scan_image_folder

from .conftest import make_folder, write_png


def test_scan_finds_classes_groups_and_counts(tiny_folder):
    folder = scan_image_folder(tiny_folder)
    assert folder.classes == ["a", "b", "c"]
    assert len(folder.samples) == 3 * 6 * 3
    assert {s.group for s in folder.samples if s.label == 0} == {f"GT0{g:03d}" for g in range(6)}
    assert folder.skipped == []


def test_group_patterns_match_the_data_readme():
    assert re.search(GROUP_PATTERNS["ebhi_seg"], "GT2001837-1-400-001.png").group(1) == "GT2001837"
    # ids sharing a numeric root may be one person: 18842 and 18842D are one group
    assert re.search(GROUP_PATTERNS["breakhis_200x"], "MC_18842D_200X_000.png").group(1) == "18842"
    assert re.search(GROUP_PATTERNS["breakhis_200x"], "A_29960CD_200X_000.png").group(1) == "29960"


def test_group_regex_matching_nothing_is_a_clear_error(tiny_folder):
    with pytest.raises(ValueError, match="matched no file name"):
        scan_image_folder(tiny_folder, group_pattern=r"^patient(\d+)_")


def test_group_regex_needs_one_capture_group(tiny_folder):
    with pytest.raises(ValueError, match="exactly one capture group"):
        scan_image_folder(tiny_folder, group_pattern=r"^GT\d+")


def test_empty_class_folder_is_reported_by_name(tmp_path):
    root = make_folder(tmp_path / "ebhi_seg", {"a": 0, "b": 1})
    (root / "empty_class").mkdir()
    with pytest.raises(ValueError, match="empty_class"):
        scan_image_folder(root)
    # leaving it out works
    assert scan_image_folder(root, classes=["a", "b"]).classes == ["a", "b"]


def test_unreadable_image_is_skipped_with_a_warning_naming_it(tiny_folder):
    bad = tiny_folder / "b" / "GT1999-1-400-000.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.warns(UserWarning, match="GT1999-1-400-000.png"):
        folder = scan_image_folder(tiny_folder)
    assert [p for p, _ in folder.skipped] == [bad]
    assert folder.report()["skipped_count"] == 1
    assert all(s.path != bad for s in folder.samples)


def test_mask_folder_with_missing_masks_is_reported(tiny_folder, tmp_path):
    mask_root = tmp_path / "masks"
    folder = scan_image_folder(tiny_folder)
    for s in folder.samples[:-2]:  # the last two images get no mask
        m = mask_root / s.path.parent.name / s.path.name
        m.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), 255, np.uint8)).save(m)
    with pytest.warns(UserWarning, match="2 image\\(s\\) have no mask"):
        folder = scan_image_folder(tiny_folder, mask_root=mask_root)
    assert len(folder.missing_masks) == 2
    assert sum(s.mask_path is None for s in folder.samples) == 2
    assert folder.report()["missing_masks_count"] == 2


def test_missing_mask_root_is_a_clear_error(tiny_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="mask folder"):
        scan_image_folder(tiny_folder, mask_root=tmp_path / "nope")


def test_load_image_shape_and_clear_error(tmp_path):
    write_png(tmp_path / "x.png", (10, 20, 30), size=16)
    arr = load_image(tmp_path / "x.png", 8)
    assert arr.shape == (8, 8, 3) and arr.dtype == np.uint8
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="bad.png"):
        load_image(tmp_path / "bad.png", 8)


def test_image_cache_round_trips_through_disk(tmp_path):
    write_png(tmp_path / "x.png", (10, 20, 30), size=16)
    first = ImageCache(8, tmp_path / "cache").get(tmp_path / "x.png")
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1
    again = ImageCache(8, tmp_path / "cache").get(tmp_path / "x.png")  # fresh instance: read from disk
    np.testing.assert_array_equal(first, again)
