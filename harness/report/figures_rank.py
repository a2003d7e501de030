"""Earliest-layer curves (parts of speech; reusable for the answer positions of multi-token facts).

The paper's Fig. 4 view: for each group of prompts, the mean layer at which the target
first reaches rank <= k, against k on a log scale.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from harness.claims.base import ClaimResult
from harness.report.figures import _title, plt

# Part-of-speech tags: function words in blues, content words in warm colours, punctuation grey.
TAG_COLORS = {
    "DET": "#1b4f72",
    "ADP": "#3498db",
    "NOUN": "#c0392b",
    "VERB": "#e67e22",
    "ADJ": "#8e44ad",
    "PUNCT": "#7f8c8d",
}


def _label(key, cols: Sequence[str]) -> str:
    key = key if isinstance(key, tuple) else (key,)
    if len(cols) == 1:
        return str(key[0])
    return " · ".join(f"{c} {v}" for c, v in zip(cols, key))


def earliest_layer_curves(
    result: ClaimResult,
    table: pd.DataFrame,
    group_col: str | Sequence[str],
    measure: str = "earliest",
    what: str | None = None,
    colors: Mapping[str, str] | None = None,
    n_col: str = "n_kept",
):
    """Mean earliest layer (x) against the rank threshold k (y, log scale), one line per
    group with its 95% interval as a horizontal bar; the legend gives each group's n.

    ``table``: tidy rows with ``k``, ``layer``, ``ci_low``, ``ci_high``, ``n_col`` and the
    group column(s) (one line per distinct value, or per combination when ``group_col``
    lists several columns, e.g. ``["answer_length", "position"]``); rows of other measures
    are dropped when the table has a ``measure`` column. The x axis runs from 0 to L
    (``n_layers`` column or ``result.details["n_layers"]``). The ks in
    ``result.details["k_checked"]`` are marked. Interval bars of different groups are
    nudged apart vertically (by a few percent of k) so that they stay readable.
    """
    cols = [group_col] if isinstance(group_col, str) else list(group_col)
    data = table[table["measure"] == measure] if "measure" in table.columns else table
    groups = list(dict.fromkeys(data[cols].itertuples(index=False, name=None)))
    n_layers = int(data["n_layers"].max()) if "n_layers" in data.columns else int(result.details["n_layers"])
    palette = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    spread = np.linspace(-1, 1, len(groups)) if len(groups) > 1 else np.zeros(1)
    for i, key in enumerate(groups):
        rows = data[(data[cols] == pd.Series(key, index=cols)).all(axis=1)].sort_values("k")
        name = _label(key, cols)
        color = (colors or TAG_COLORS).get(name, palette(i % 10))
        k = rows["k"].to_numpy(dtype=float)
        x = rows["layer"].to_numpy(dtype=float)
        y = k * 1.07 ** spread[i]
        err = np.vstack([x - rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float) - x])
        n = int(rows[n_col].max()) if len(rows) else 0
        ax.plot(x, k, color=color, linewidth=1.6, marker="o", markersize=3.5, label=f"{name} (n = {n})")
        ax.errorbar(x, y, xerr=np.nan_to_num(np.clip(err, 0, None)), fmt="none", ecolor=color, elinewidth=1,
                    capsize=2, alpha=0.8)
    for kc in result.details.get("k_checked", []):
        ax.axhline(kc, color="#b9770e", linestyle=":", linewidth=1)
    if result.details.get("k_checked"):
        ax.plot([], [], color="#b9770e", linestyle=":", linewidth=1,
                label="claim checked at k = " + ", ".join(str(k) for k in result.details["k_checked"]))
    ks = sorted(data["k"].unique())
    ax.set_yscale("log")
    ax.set_yticks(ks, [f"{k:,}" for k in ks], fontsize=7)
    ax.minorticks_off()
    ax.set_ylim(min(ks) / 1.4, max(ks) * 1.4)
    ax.set_xlim(0, n_layers)
    ax.set_xlabel(f"Earliest layer with rank <= k (lens at h_l, l = 0 ... {n_layers}; mean, 95% bootstrap CI)"
                  if measure == "earliest" else
                  f"Layer from which rank stays <= k up to L = {n_layers} (mean, 95% bootstrap CI)")
    ax.set_ylabel("k (rank threshold)")
    ax.grid(axis="x", color="#e5e7e9", linewidth=0.6)
    default_what = "earliest layer at which the target's rank <= k, per group"
    ax.set_title(_title(result, what or default_what), fontsize=9)
    ax.legend(title=f"{' · '.join(cols)} (n = kept prompts)", fontsize=7, title_fontsize=7,
              loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig
