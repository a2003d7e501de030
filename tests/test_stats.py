"""Bootstrap intervals and verdicts."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.stats import N_BOOT, bootstrap_mean, estimate, verdict


def test_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.3, 1, 50), rng.normal(0.3, 1, 5000)
    m_s, lo_s, hi_s = bootstrap_mean(small)
    m_l, lo_l, hi_l = bootstrap_mean(large)
    assert lo_s <= m_s <= hi_s and lo_l <= m_l <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 5
    assert lo_l < 0.3 < hi_l


def test_group_bootstrap_is_wider_for_correlated_rows():
    rng = np.random.default_rng(2)
    group_effect = rng.normal(0, 1, 40)
    groups = np.repeat(np.arange(40), 10)
    values = group_effect[groups] + rng.normal(0, 0.1, 400)
    _, lo_rows, hi_rows = bootstrap_mean(values)
    _, lo_groups, hi_groups = bootstrap_mean(values, groups=groups)
    assert hi_groups - lo_groups > 2 * (hi_rows - lo_rows)
    assert estimate(values, groups).n_groups == 40


def test_columns_get_their_own_intervals_and_nans_are_left_out():
    values = np.array([[1.0, np.nan], [1.0, 2.0], [1.0, 4.0]])
    mean, lo, hi = bootstrap_mean(values)
    assert mean.tolist() == [1.0, 3.0]
    assert lo[0] == hi[0] == 1.0 and 2.0 <= lo[1] <= hi[1] <= 4.0


def test_the_interval_depends_on_its_seed_and_nothing_else():
    v = np.random.default_rng(0).normal(size=100)
    first = bootstrap_mean(v, seed=7)
    np.random.seed(123)  # the global random state must not matter
    np.random.normal(size=1000)
    assert bootstrap_mean(v, seed=7) == first
    assert bootstrap_mean(v, seed=8)[1:] != first[1:]  # the seed is used: another one moves the interval
    # the interval is the percentile interval of means of seeded resamples (the definition)
    weights = np.random.default_rng(7).multinomial(100, np.full(100, 0.01), size=N_BOOT)
    low, high = np.percentile(weights @ v / 100, [2.5, 97.5])
    assert np.isclose(first[1], low) and np.isclose(first[2], high)


@given(st.floats(-5, 5), st.floats(0, 3), st.floats(-5, 5))
def test_verdict_sides(low, width, threshold):
    high = low + width
    up, down = verdict(low, high, threshold, "above"), verdict(low, high, threshold, "below")
    if low > threshold:
        assert (up, down) == ("replicated", "contradicted")
    elif high < threshold:
        assert (up, down) == ("contradicted", "replicated")
    else:
        assert up == down == "inconclusive"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=1, max_size=60))
def test_interval_lies_within_the_data(values):
    mean, lo, hi = bootstrap_mean(np.array(values), n_boot=200)
    assert min(values) - 1e-9 <= lo <= hi <= max(values) + 1e-9
    assert min(values) - 1e-9 <= mean <= max(values) + 1e-9
