"""bench.classifier_oos on a tiny random bundle and a tiny fake data folder (EBHI-Seg and BreakHis layouts)."""
from __future__ import annotations

import json
import shutil

import pytest

from bench import classifier_oos


def test_without_a_manifest_threshold_it_calibrates_on_val(labelled_bundle, tmp_path):
    data, bundle = labelled_bundle
    argv = [str(bundle), "--data", str(data), "--synthetic", "3", "--flag-rate", "0.5",
            "--results-dir", str(tmp_path)]
    assert classifier_oos.main(argv) == 0
    result = json.loads((tmp_path / "classifier-oos-tiny_oos-1.json").read_text())
    assert result["command"] == "python -m bench.classifier_oos " + " ".join(argv)
    assert result["dataset"] == "ebhi_seg" and result["other_dataset"] == "breakhis_200x"
    assert result["images"] == {"own": 6, "other": 6, "glass": 3, "blank": 3, "blur": 6}
    assert result["threshold_from"].startswith("calibrated here on the val split")
    assert result["val_flag_rate"] == 0.5 and result["stated_flag_rate"] == 0.5  # 3 of the 6 val images
    assert all(0.0 <= v <= 1.0 for v in result["flagged"].values())
    assert all(0.0 <= v <= 1.0 for v in result["auroc_vs_own"].values())


@pytest.mark.parametrize("threshold,rate", [(-1e9, 1.0), (1e9, 0.0)])
def test_the_manifest_threshold_is_the_one_applied(labelled_bundle, tmp_path, threshold, rate):
    data, bundle = labelled_bundle
    copy = tmp_path / "store" / "tiny_oos" / "1"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["out_of_distribution"] = {"score": "energy", "threshold": threshold, "flag_rate": 0.05,
                                       "val_images": 6, "val_flag_rate": 0.0}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert classifier_oos.main([str(copy), "--data", str(data), "--synthetic", "2",
                                "--results-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "classifier-oos-tiny_oos-1.json").read_text())
    assert result["threshold_from"] == "manifest" and result["threshold"] == threshold
    assert set(result["flagged_by_score"].values()) == {rate}
    assert result["flagged"]["glass"] == result["flagged"]["blank"] == 1.0  # not tissue, whatever the score

