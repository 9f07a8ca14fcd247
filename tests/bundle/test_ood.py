"""The out-of-distribution flag of a classification bundle: the energy score, its calibration on validation
scores, and the manifest field that carries it (optional: manifests without it load as before)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bundle import OutOfDistribution, ood, parse_manifest, validate_bundle

from .conftest import manifest_dict

SECTION = {"score": "energy", "threshold": -2.5, "flag_rate": 0.05, "calibrated_on": "val", "val_images": 40,
           "val_flag_rate": 0.05}


def test_energy_is_minus_logsumexp_and_stable():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [1000.0, 999.0, -50.0]])
    reference = [-math.log(sum(math.exp(v - 1000.0 * (i == 2)) for v in row)) - 1000.0 * (i == 2)
                 for i, row in enumerate(logits.tolist())]
    np.testing.assert_allclose(ood.energy(logits), reference, rtol=1e-12)
    assert ood.energy(logits, temperature=2.0)[1] == pytest.approx(-2.0 * math.log(3.0))
    with pytest.raises(ValueError, match="unknown out-of-distribution score"):
        ood.score("max_softmax", logits)


@pytest.mark.parametrize("n,rate", [(100, 0.05), (37, 0.05), (200, 0.1), (19, 0.05), (1, 0.5)])
def test_threshold_flags_the_stated_fraction_of_validation(n, rate):
    scores = np.random.default_rng(n).normal(size=n)
    section = ood.calibrate(scores, rate)
    flagged = int(ood.flags(scores, section["threshold"]).sum())
    assert flagged == math.floor(rate * n)  # continuous scores: no ties at the threshold
    assert section["val_flag_rate"] == pytest.approx(flagged / n) and section["val_flag_rate"] <= rate
    assert section["val_images"] == n and section["flag_rate"] == rate and section["calibrated_on"] == "val"
    OutOfDistribution.model_validate(section)  # what calibrate writes is what the manifest takes


def test_far_away_logits_are_flagged_and_familiar_ones_not():
    rng = np.random.default_rng(0)
    # a trained classifier's validation logits: one class clearly ahead
    val = rng.normal(0, 1, (200, 4))
    val[np.arange(200), rng.integers(0, 4, 200)] += 8.0
    section = ood.calibrate(ood.energy(val), 0.05)
    familiar = rng.normal(0, 1, (200, 4))
    familiar[np.arange(200), rng.integers(0, 4, 200)] += 8.0
    far = rng.normal(0, 0.3, (50, 4))  # no class stands out: low logsumexp, high energy
    rate_familiar = ood.flags(ood.energy(familiar), section["threshold"]).mean()
    assert rate_familiar < 0.15
    assert ood.flags(ood.energy(far), section["threshold"]).all()


@pytest.mark.parametrize("bad", [np.array([]), np.array([0.0, np.nan])])
def test_calibration_refuses_no_or_non_finite_scores(bad):
    with pytest.raises(ValueError, match="finite score"):
        ood.calibrate(bad, 0.05)


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1])
def test_calibration_refuses_a_rate_outside_0_1(rate):
    with pytest.raises(ValueError, match="flag_rate"):
        ood.calibrate(np.zeros(10), rate)


def test_manifest_field_round_trips(make_bundle):
    m = manifest_dict()
    m["out_of_distribution"] = dict(SECTION, calibration="in words")
    parsed = validate_bundle(make_bundle(m)).manifest
    assert parsed.out_of_distribution.model_dump(exclude_none=True) == {**SECTION, "temperature": 1.0,
                                                                         "calibration": "in words"}
    again = parse_manifest(parsed.model_dump(mode="json", exclude_none=True))
    assert again.out_of_distribution == parsed.out_of_distribution


@pytest.mark.parametrize("format_version", [1, 2])
def test_manifests_without_it_load_unchanged(format_version, make_bundle):
    m = manifest_dict(format_version=format_version)
    assert "out_of_distribution" not in m
    assert validate_bundle(make_bundle(m)).manifest.out_of_distribution is None


@pytest.mark.parametrize("edit,reason", [
    (lambda s: s.update(score="max_softmax"), "out_of_distribution.score:"),
    (lambda s: s.update(threshold=float("nan")), "out_of_distribution.threshold:"),
    (lambda s: s.update(flag_rate=1.5), "out_of_distribution.flag_rate:"),
    (lambda s: s.update(val_images=0), "out_of_distribution.val_images:"),
    (lambda s: s.update(val_flag_rate=2.0), "out_of_distribution.val_flag_rate:"),
    (lambda s: s.pop("threshold"), "out_of_distribution.threshold:"),
])
def test_a_bad_section_is_refused(edit, reason):
    m = manifest_dict()
    section = dict(SECTION)
    edit(section)
    m["out_of_distribution"] = section
    with pytest.raises(ValueError, match=reason):
        parse_manifest(m)


def test_an_embedding_bundle_cannot_carry_it():
    m = manifest_dict("embedding")
    m["out_of_distribution"] = dict(SECTION)
    with pytest.raises(ValueError, match="class logits"):
        parse_manifest(m)
