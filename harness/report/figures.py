"""Figures that read without the paper: titles, axis labels, units, n."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.claims.base import ClaimResult  # noqa: E402

BUCKET_COLORS = {"Top-10": "#1b4f72", "Top-100": "#2e86c1", "Top-1000": "#85c1e9", "Rest": "#d5d8dc"}


def _title(result: ClaimResult, what: str) -> str:
    e = result.estimate
    lens = "" if result.lens == "none" else f"{result.lens} lens · "
    return (
        f"{result.claim.id}: {what}\n{result.model} · {lens}{result.dataset} · "
        f"n = {e.n} · verdict: {result.verdict} ({e.value:.2f}, 95% CI {e.ci_low:.2f} to {e.ci_high:.2f})"
    )


def stacked_bucket_bars(result: ClaimResult, table: pd.DataFrame):
    """Early frequent guesses (Gupta et al. 2025, Fig. 2): 100%-stacked bars of the frequency
    buckets of the lens top-1 per layer, with the model's final prediction as the last bar."""
    layers = list(dict.fromkeys(table["layer"]))
    fig, ax = plt.subplots(figsize=(max(8, 0.32 * len(layers) + 2), 4.8))
    x = np.arange(len(layers))
    bottom = np.zeros(len(layers))
    for bucket, color in BUCKET_COLORS.items():
        share = table[table["bucket"] == bucket].set_index("layer").loc[layers, "share"].to_numpy() * 100
        ax.bar(x, share, bottom=bottom, color=color, label=bucket, width=0.85, edgecolor="white", linewidth=0.3)
        bottom += share
    lo, hi = result.details["early_layers"]
    ax.plot([lo - 0.4, hi + 0.4], [103, 103], color="#b9770e", linewidth=2, clip_on=False)
    ax.text((lo + hi) / 2, 105, f"early layers {lo}-{hi} (first quarter)", ha="center", fontsize=7, color="#b9770e")
    ax.set_xticks(x, [str(layer) if layer != "final" else "final\npred." for layer in layers], fontsize=7)
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_ylim(0, 100)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("Layer l (lens applied to residual h_l; h_0 = embeddings)")
    ax.set_ylabel("Share of lens top-1 tokens (%)")
    ax.set_title(_title(result, "early guesses are frequent tokens"), fontsize=9, pad=30)
    freq = result.details["frequency"]
    ax.legend(
        title=f"Frequency rank bucket\n({freq['corpus']}, {freq['n_tokens']:,} tokens)",
        fontsize=7,
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
    )
    fig.tight_layout()
    return fig


def flip_rate_bars(result: ClaimResult, table: pd.DataFrame):
    """Refined guesses (Gupta et al. 2025, Fig. 3): grouped bars of the flip rate (lens top-1 !=
    final prediction) per layer, one bar per frequency bucket of the intermediate top-1."""
    layers = sorted(table["layer"].unique())
    fig, ax = plt.subplots(figsize=(max(9, 0.42 * len(layers) + 2), 4.8))
    width = 0.8 / len(BUCKET_COLORS)
    for k, (bucket, color) in enumerate(BUCKET_COLORS.items()):
        rows = table[table["bucket"] == bucket].set_index("layer").reindex(layers)
        x = np.arange(len(layers)) + (k - 1.5) * width
        rate = rows["flip_rate"].to_numpy() * 100
        err = np.vstack([rate - rows["ci_low"].to_numpy() * 100, rows["ci_high"].to_numpy() * 100 - rate])
        ax.bar(x, rate, width=width, color=color, label=bucket, yerr=np.nan_to_num(err), error_kw={"elinewidth": 0.5})
    ax.axhline(result.claim.threshold * 100, color="#b03a2e", linestyle="--", linewidth=1,
               label=f"claim: Top-10 early flip rate > {result.claim.threshold:.0%}")
    lo, hi = result.details["early_layers"]
    ax.plot([lo - 0.45, hi + 0.45], [103, 103], color="#b9770e", linewidth=2, clip_on=False)
    ax.text((lo + hi) / 2, 105, f"early layers {lo}-{hi}", ha="center", fontsize=7, color="#b9770e")
    ax.set_xticks(np.arange(len(layers)), [str(layer) for layer in layers], fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_xlabel("Layer l (lens applied to residual h_l); bucket of the lens top-1 at that layer")
    ax.set_ylabel("Flip rate: lens top-1 ≠ final prediction (%)")
    ax.set_title(_title(result, "early guesses get refined"), fontsize=9, pad=30)
    ax.legend(title="Frequency bucket of the guess\n(95% bootstrap intervals)", fontsize=7, title_fontsize=7,
              loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


CHOICE_CURVES = {
    "format_share": ("lens top-1 is an option", "#1b4f72"),
    "shortlisted": ("an option is in the lens top-10", "#2e86c1"),
    "agrees_with_final_choice": ("option argmax = final choice", "#b03a2e"),
    "option_mass": ("probability mass on the options", "#7d3c98"),
}


def choice_curves(result: ClaimResult, table: pd.DataFrame):
    """Multiple choice (Gupta et al. 2025, Sec. 5): per task, the per-layer curves with 95%
    intervals, and the mean shortlist and decision layers marked."""
    tasks = [t for t in dict.fromkeys(table["task"]) if t != "all"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.4), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = table[table["task"] == task]
        for metric, (label, color) in CHOICE_CURVES.items():
            rows = part[part["metric"] == metric].sort_values("layer")
            ax.plot(rows["layer"], rows["value"] * 100, color=color, label=label, linewidth=1.4)
            ax.fill_between(rows["layer"], rows["ci_low"] * 100, rows["ci_high"] * 100, color=color, alpha=0.15)
        info = result.details["tasks"][task]
        ax.axvline(info["shortlist_layer_mean"], color="#117a65", linestyle="--", linewidth=1)
        ax.axvline(info["decision_layer_mean"], color="#b9770e", linestyle=":", linewidth=1.5)
        ax.axvspan(0, result.details["n_layers"] / 2, color="#eeeeee", zorder=0)
        ax.set_title(
            f"{task}: n = {info['n']} prompts (truncated {info['truncated']}, skipped {info['skipped']})\n"
            f"shortlist layer {info['shortlist_layer_mean']:.1f} (dashed), decision layer "
            f"{info['decision_layer_mean']:.1f} (dotted)",
            fontsize=8,
        )
        ax.set_xlabel("Layer l (lens applied to residual h_l); grey: first half")
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("Share of prompts, or probability mass (%)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(_title(result, "options are shortlisted by mid-depth, chosen late"), fontsize=9)
    fig.tight_layout()
    return fig


def model_vs_control_curves(result: ClaimResult, table: pd.DataFrame, value: str, ylabel: str, what: str):
    """A v2 claim (harness/claims/versus_control.py): one per-layer curve of ``value`` for the
    model and one for its untrained control, with 95% bootstrap bands, a line at half depth."""
    fig, ax = plt.subplots(figsize=(8, 4.6))
    models = list(dict.fromkeys(table["model"]))
    n_layers = int(table["layer"].max()) + 1
    for who, color in zip(models, ("#1b4f72", "#b9770e")):
        rows = table[table["model"] == who].sort_values("layer")
        layers = rows["layer"].to_numpy()
        kind = "untrained control" if who == result.details.get("control") else "trained model"
        ax.plot(layers, rows[value], color=color, marker="o", markersize=2.5, linewidth=1.2, label=f"{who} ({kind})")
        ax.fill_between(layers, rows["ci_low"], rows["ci_high"], color=color, alpha=0.2, linewidth=0)
    ax.axvline(n_layers // 2 - 0.5, color="grey", linestyle="--", linewidth=1, label="half depth")
    ax.set_xlabel("layer l (block l, or the lens on residual h_l)")
    ax.set_ylabel(ylabel)
    ax.set_title(_title(result, what), fontsize=9)
    ax.plot([], [], color="black", alpha=0.3, linewidth=6, label="95% bootstrap interval")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
