"""Earliest and settled layers on hand-made ranks, and their invariants."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from harness.metrics import K_GRID, earliest_layer, settled_layer


def test_first_crossing_and_settled_layer():
    ranks = np.array([[50, 3, 1], [4, 20, 1], [1, 1, 1], [9, 1, 1]])  # 4 layers x 3 rows
    assert earliest_layer(ranks, 1).tolist() == [2, 2, 0]
    assert earliest_layer(ranks, 5).tolist() == [1, 0, 0]
    assert settled_layer(ranks, 1).tolist() == [4, 2, 0]  # row 0 ends at rank 9: never settled at k=1
    assert settled_layer(ranks, 10).tolist() == [1, 2, 0]


def test_k_grid_is_log_spaced_from_1_to_10000():
    assert K_GRID[0] == 1 and K_GRID[-1] == 10_000
    assert all(b > a for a, b in zip(K_GRID, K_GRID[1:]))


@settings(max_examples=50, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(1, 12), st.integers(1, 20)), elements=st.integers(1, 50_000)))
def test_earliest_layer_does_not_increase_as_k_grows(ranks):
    layers = np.stack([earliest_layer(ranks, k) for k in K_GRID])  # [len(K_GRID), N]
    assert (np.diff(layers, axis=0) <= 0).all()
    settled = np.stack([settled_layer(ranks, k) for k in K_GRID])
    assert (settled >= layers).all()  # settling never comes before the first crossing
