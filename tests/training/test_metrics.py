"""Metrics on a hand case, calibration, and case-level majority vote."""
from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    case_accuracy,
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
    majority_rate,
)


def test_metrics_hand_case():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 0])
    probs = np.eye(3)[pred] * 0.7 + 0.1  # rows sum to 1, argmax = pred
    m = classification_metrics(y, probs, ["a", "b", "c"], groups=["g1", "g1", "g2", "g3", "g3", "g4"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["recall"] == pytest.approx(1.0)
    assert m["per_class"]["c"]["f1"] == 0.0
    # f1: a = 2*(2/3*2/3)/(4/3) = 2/3, b = 2*(2/3*1)/(5/3) = 0.8, c = 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert m["g_mean"] == 0.0  # a class with zero recall zeroes the geometric mean
    assert m["majority_rate"] == pytest.approx(0.5)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    # cases: g1 (a,a -> a,a) right, g2 (a -> b) wrong, g3 right, g4 (c -> a) wrong
    assert m["case_accuracy"] == pytest.approx(0.5)
    # every prediction has confidence 0.8; accuracy 4/6 -> ECE = |0.8 - 0.667|
    assert m["ece"] == pytest.approx(0.8 - 4 / 6)


def test_binary_gmean_and_auc():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    m = classification_metrics(y, probs, ["benign", "malignant"])
    assert m["g_mean"] == pytest.approx(np.sqrt(0.5 * 1.0))
    assert m["auc_ovr"] == pytest.approx(1.0)
    assert 0.0 < m["iba"] < 1.0


def test_case_accuracy_majority_vote():
    assert case_accuracy([1, 1, 1], [1, 0, 1], ["p", "p", "p"]) == 1.0
    assert case_accuracy([1, 1, 1], [0, 0, 1], ["p", "p", "p"]) == 0.0


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(2000, 4)) * 1.5
    y = np.array([rng.choice(4, p=np.exp(r) / np.exp(r).sum()) for r in true_logits])
    t = fit_temperature(true_logits * 3.0, y)  # a network three times too confident
    assert t == pytest.approx(3.0, rel=0.15)
    assert majority_rate([0, 1, 1, 2]) == 0.5


def test_ece_perfectly_calibrated_is_small():
    probs = np.array([[1.0, 0.0]] * 10)
    assert expected_calibration_error(probs, [0] * 10) == 0.0
