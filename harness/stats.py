"""Bootstrap intervals and verdicts (claims.md, "Statistics")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

N_BOOT = 2000
SEED = 0

Direction = Literal["above", "below"]
Verdict = Literal["replicated", "contradicted", "inconclusive"]


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% bootstrap interval; ``n`` prompts, ``n_groups`` resampled units."""

    value: float
    ci_low: float
    ci_high: float
    n: int
    n_groups: int


def bootstrap_mean(
    values: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    alpha: float = 0.05,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over rows and its percentile interval, resampling rows (or whole groups of
    rows, e.g. prefixes of one paragraph) with replacement.

    ``values``: [n] or [n, m] (each column gets its own interval, from the same
    resamples). NaNs are left out of both the mean and the resampled means. Returns
    (mean, low, high), each of shape [m] (or scalars for 1-D input).
    """
    v = np.asarray(values, dtype=np.float64)
    squeeze = v.ndim == 1
    v = v.reshape(len(v), -1)
    if len(v) == 0:
        raise ValueError("bootstrap_mean needs at least one value.")
    if groups is None:
        groups = np.arange(len(v))
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(g.max()) + 1
    present = ~np.isnan(v)
    sums = np.zeros((n_groups, v.shape[1]))
    counts = np.zeros((n_groups, v.shape[1]))
    np.add.at(sums, g, np.where(present, v, 0.0))
    np.add.at(counts, g, present)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums.sum(0) / counts.sum(0)
        boots = (weights @ sums) / (weights @ counts)
    low = np.nanpercentile(boots, 100 * alpha / 2, axis=0)
    high = np.nanpercentile(boots, 100 * (1 - alpha / 2), axis=0)
    if squeeze:
        return mean[0], low[0], high[0]
    return mean, low, high


def estimate(values: np.ndarray, groups: np.ndarray | None = None, **kw) -> Estimate:
    values = np.asarray(values, dtype=np.float64)
    mean, low, high = bootstrap_mean(values, groups, **kw)
    n_groups = len(np.unique(groups)) if groups is not None else len(values)
    return Estimate(float(mean), float(low), float(high), int(np.sum(~np.isnan(values))), n_groups)


def verdict(ci_low: float, ci_high: float, threshold: float, direction: Direction) -> Verdict:
    """Replicated when the whole interval lies on the claimed side of the threshold,
    contradicted when it lies wholly on the other side, inconclusive otherwise."""
    above, below = ci_low > threshold, ci_high < threshold
    if direction == "above":
        return "replicated" if above else "contradicted" if below else "inconclusive"
    return "replicated" if below else "contradicted" if above else "inconclusive"
