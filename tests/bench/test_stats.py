import math

import numpy as np
import pytest

from bench.stats import percentile, summarize_ms


@pytest.mark.parametrize("q", [0, 25, 50, 95, 99, 100])
def test_percentile_matches_numpy_linear(q):
    values = list(np.random.default_rng(0).exponential(size=37))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_rejects_bad_q_and_empty_is_nan():
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    assert math.isnan(percentile([], 50))


def test_summary_is_in_milliseconds():
    s = summarize_ms([0.010, 0.020, 0.030])
    assert s["n"] == 3
    assert s["p50_ms"] == pytest.approx(20.0)
    assert s["mean_ms"] == pytest.approx(20.0)
    assert s["max_ms"] == pytest.approx(30.0)
    assert math.isnan(summarize_ms([])["p50_ms"])
