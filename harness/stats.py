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


def bootstrap_ratio(
    numerators: np.ndarray,
    denominators: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    alpha: float = 0.05,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ratio of sums, sum(num) / sum(den), with a percentile interval from resampling
    rows (or whole groups of rows, e.g. prefixes of one paragraph) with replacement.

    Inputs are [n] or [n, m] (each column gets its own interval, from the same
    resamples). Returns (ratio, low, high), each [m] (scalars for 1-D input); NaN where a
    column's denominator is 0.
    """
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    squeeze = num.ndim == 1
    num, den = num.reshape(len(num), -1), den.reshape(len(den), -1)
    if len(num) == 0:
        raise ValueError("a bootstrap needs at least one row.")
    if groups is None:
        groups = np.arange(len(num))
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(g.max()) + 1
    sums = np.zeros((n_groups, num.shape[1]))
    counts = np.zeros((n_groups, num.shape[1]))
    np.add.at(sums, g, num)
    np.add.at(counts, g, den)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = sums.sum(0) / counts.sum(0)
        boots = (weights @ sums) / (weights @ counts)
    low, high = np.full(num.shape[1], np.nan), np.full(num.shape[1], np.nan)
    defined = counts.sum(0) > 0  # columns with no denominator at all have no interval
    if defined.any():
        low[defined] = np.nanpercentile(boots[:, defined], 100 * alpha / 2, axis=0)
        high[defined] = np.nanpercentile(boots[:, defined], 100 * (1 - alpha / 2), axis=0)
    if squeeze:
        return ratio[0], low[0], high[0]
    return ratio, low, high


def bootstrap_mean(values: np.ndarray, groups: np.ndarray | None = None, **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over rows with its interval (see :func:`bootstrap_ratio`); NaNs are left out."""
    v = np.asarray(values, dtype=np.float64)
    present = ~np.isnan(v)
    return bootstrap_ratio(np.where(present, v, 0.0), present, groups, **kw)


def estimate(values: np.ndarray, groups: np.ndarray | None = None, **kw) -> Estimate:
    """Mean of per-prompt values with its interval; n counts the prompts with a value."""
    values = np.asarray(values, dtype=np.float64)
    mean, low, high = bootstrap_mean(values, groups, **kw)
    present = ~np.isnan(values)
    n_groups = len(np.unique(groups[present])) if groups is not None else int(present.sum())
    return Estimate(float(mean), float(low), float(high), int(present.sum()), n_groups)


def ratio_estimate(numerators: np.ndarray, denominators: np.ndarray, groups: np.ndarray | None = None) -> Estimate:
    """sum(num) / sum(den) over prompts with its interval; n counts prompts with den > 0."""
    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    value, low, high = bootstrap_ratio(num, den, groups)
    used = den > 0
    n_groups = len(np.unique(groups[used])) if groups is not None else int(used.sum())
    return Estimate(float(value), float(low), float(high), int(used.sum()), n_groups)


def verdict(ci_low: float, ci_high: float, threshold: float, direction: Direction) -> Verdict:
    """Replicated when the whole interval lies on the claimed side of the threshold,
    contradicted when it lies wholly on the other side, inconclusive otherwise."""
    above, below = ci_low > threshold, ci_high < threshold
    if direction == "above":
        return "replicated" if above else "contradicted" if below else "inconclusive"
    return "replicated" if below else "contradicted" if above else "inconclusive"
