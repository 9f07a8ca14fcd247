"""bench.folds: one bundle per fold side by side; bundles that share a test image are refused."""
import json

import pytest

from bench.folds import fold_table, main


def _bundle(root, name, test_files, balanced):
    path = root / name / "1"
    path.mkdir(parents=True)
    files = [{"path": f, "split": "test"} for f in test_files] + [{"path": "shared/train.png", "split": "train"}]
    (path / "split.json").write_text(json.dumps({"files": files}))
    metrics = {"test": {"balanced_accuracy": balanced, "accuracy": balanced}, "majority_rate": 0.25,
               "baseline_test": {"balanced_accuracy": 0.5}}
    graphs = {"classify": {"test_time_augmentation": {"views": ["identity", "rot180"]}}}
    (path / "manifest.json").write_text(json.dumps({"name": name, "version": 1, "metrics": metrics, "graphs": graphs}))
    return path


def test_folds_side_by_side_with_mean_and_spread(tmp_path):
    a = _bundle(tmp_path, "fold0", ["a/1.png", "a/2.png"], 0.8)
    b = _bundle(tmp_path, "fold1", ["b/1.png"], 0.6)
    table, figures = fold_table([a, b])
    assert figures["rows"]["served graph, balanced accuracy"] == [0.8, 0.6]
    assert "| served graph, balanced accuracy | 0.800 | 0.600 | 0.700 ± 0.100 |" in table
    assert figures["rows"]["averaged views"] == ["identity+rot180"] * 2
    assert "test images per fold [2, 1]" in table
    # a figure one manifest lacks gets no mean, rather than a mean of the others
    assert "| Grad-CAM pointing game |  |  |  |" in table


def test_bundles_that_share_test_images_are_refused(tmp_path, capsys):
    a = _bundle(tmp_path, "fold0", ["a/1.png", "a/2.png"], 0.8)
    b = _bundle(tmp_path, "again", ["a/2.png"], 0.6)
    with pytest.raises(ValueError, match="share 1 test images"):
        fold_table([a, b])
    assert main([str(a), str(b)]) == 1
    assert "not two folds" in capsys.readouterr().err
