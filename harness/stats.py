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


def ratio_replicates(
    numerators: np.ndarray, denominators: np.ndarray, groups: np.ndarray | None = None,
    n_boot: int = N_BOOT, seed: int = SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Ratio of sums per column ([m]) and its bootstrap replicates ([n_boot, m]): groups
    of rows are resampled with replacement, the same resamples for every column, so
    differences and extremes across columns can be taken per replicate. NaN where a
    column (or a replicate of it) has no denominator."""
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
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
        return sums.sum(0) / counts.sum(0), (weights @ sums) / (weights @ counts)


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
    squeeze = num.ndim == 1
    ratio, boots = ratio_replicates(numerators, denominators, groups, n_boot, seed)
    low, high = np.full(ratio.shape, np.nan), np.full(ratio.shape, np.nan)
    defined = ~np.isnan(ratio)  # columns with no denominator at all have no interval
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


def bootstrap_column_means(
    values: np.ndarray, groups: np.ndarray | None = None, n_boot: int = N_BOOT, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column means of [n, m] values (NaNs left out) and their bootstrap replicates
    [n_boot, m] (see :func:`ratio_replicates`)."""
    v = np.asarray(values, dtype=np.float64)
    v = v.reshape(len(v), -1)
    present = ~np.isnan(v)
    return ratio_replicates(np.where(present, v, 0.0), present, groups, n_boot, seed)


def percentile_interval(replicates: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates left out; NaN if none)."""
    r = np.asarray(replicates, dtype=np.float64)
    if np.isnan(r).all():
        return float("nan"), float("nan")
    return float(np.nanpercentile(r, 100 * alpha / 2)), float(np.nanpercentile(r, 100 * (1 - alpha / 2)))
