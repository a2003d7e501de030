"""Pure metric functions over LayerTrace arrays (claims.md, "Rank" and "Earliest layer")."""

from __future__ import annotations

import numpy as np

# Log-spaced k grid from 1 to 10,000 (claims.md, "Earliest layer <= k").
K_GRID: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def earliest_layer(ranks: np.ndarray, k: int) -> np.ndarray:
    """First crossing: the smallest layer l with rank_l <= k, per row ([L+1, N] -> [N]).

    A row whose rank never reaches k gets L + 1 (cannot happen for the final prediction,
    whose rank at L is 1)."""
    hit = ranks <= k
    return np.where(hit.any(axis=0), hit.argmax(axis=0), ranks.shape[0])


def settled_layer(ranks: np.ndarray, k: int) -> np.ndarray:
    """The smallest layer from which rank stays <= k up to L, per row ([L+1, N] -> [N]);
    L + 1 where the rank at L itself is above k."""
    miss = ranks > k
    n = ranks.shape[0]
    last_miss = np.where(miss.any(axis=0), n - 1 - miss[::-1].argmax(axis=0), -1)
    return last_miss + 1
