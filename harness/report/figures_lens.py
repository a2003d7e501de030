"""Figures that compare lenses: held-out KL per layer (lens quality), and the early-layer Top-10
curves of two lenses (logit vs tuned; standard vs frequency-down-weighted tuned)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from harness.claims.base import ClaimResult
from harness.report.figures import _title, plt

LENS_COLORS = {"logit": "#7f8c8d", "tuned": "#1b4f72", "standard tuned": "#1b4f72", "down-weighted tuned": "#d35400",
               "tuned minus logit": "#27ae60"}


def _early_band(ax, result: ClaimResult) -> None:
    lo, hi = result.details["early_layers"]
    ax.axvspan(lo - 0.5, hi + 0.5, color="#f9e79f", alpha=0.5, zorder=0, label=f"early layers {lo}-{hi}")


def _curves(ax, table: pd.DataFrame, value: str, lenses: list[str]) -> None:
    for name in lenses:
        part = table[table["lens"] == name]
        ax.plot(part["layer"], part[value], marker="o", markersize=3, color=LENS_COLORS.get(name), label=name)
        ax.fill_between(part["layer"], part["ci_low"], part["ci_high"], color=LENS_COLORS.get(name), alpha=0.2)


def top10_mass_curves(result: ClaimResult, table: pd.DataFrame):
    """The logit lens underrates frequent tokens: probability mass on Top-10 frequency tokens per
    layer, logit vs tuned lens."""
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    _early_band(ax, result)
    _curves(ax, table, "top10_mass", ["logit", "tuned"])
    ax.set_xlabel("Layer l (lens applied to residual h_l; h_0 = embeddings)")
    ax.set_ylabel("Probability on Top-10 frequency tokens\n(mean over prefixes, 95% CI)")
    ax.set_ylim(0, 1)
    ax.set_title(_title(result, "the logit lens underrates frequent tokens early"), fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def top10_share_curves(result: ClaimResult, table: pd.DataFrame):
    """Frequent guesses are not a probe artefact: share of top-1 tokens that are Top-10, standard
    vs frequency-down-weighted tuned lens."""
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    _early_band(ax, result)
    _curves(ax, table, "top10_share", ["standard tuned", "down-weighted tuned"])
    final = result.details["final_top10_share"]
    ax.axhline(final, color="black", linestyle=":", linewidth=1, label=f"final predictions ({final:.0%})")
    ax.set_xlabel("Layer l (lens applied to residual h_l; h_0 = embeddings)")
    ax.set_ylabel("Share of lens top-1 that are Top-10 tokens\n(mean over prefixes, 95% CI)")
    ax.set_ylim(0, 1)
    weights = ", ".join(f"{k} x{v:g}" for k, v in result.details["loss_weights"].items())
    ax.set_title(_title(result, f"frequent early guesses are not a probe artefact\nloss weights by target bucket: {weights}"), fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def kl_curves(table: pd.DataFrame, model: str, what: str):
    """Lens quality: mean KL(final || lens) per layer on held-out tokens, one curve per lens
    (columns ``<lens>_kl`` and ``<lens>_kl_se``), log scale."""
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    layers = table["layer"].to_numpy()[:-1]  # KL is 0 at L by construction
    for column in [c for c in table.columns if c.endswith("_kl")]:
        name = column.removesuffix("_kl")
        mean = table[column].to_numpy()[:-1]
        se = table[f"{name}_kl_se"].to_numpy()[:-1]
        ax.errorbar(layers, mean, yerr=1.96 * se, marker="o", markersize=3, capsize=2, color=LENS_COLORS.get(name), label=f"{name} lens")
    ax.set_yscale("log")
    ax.set_xlabel("Layer l (lens applied to residual h_l; h_0 = embeddings; 0 at l = L)")
    ax.set_ylabel("KL(final || lens) in nats, log scale\n(mean over tokens, 95% CI)")
    ax.set_title(f"Tuned lens quality on held-out text: {model}\n{what} · n = {int(table['tokens'].iloc[0]):,} tokens", fontsize=9)
    ax.legend(fontsize=8)
    ax.set_xticks(np.arange(0, len(layers) + 1, max(1, len(layers) // 15)))
    fig.tight_layout()
    return fig


def convergence_table(record: dict) -> pd.DataFrame:
    """Tidy rows of a lens's convergence curve (``training.json``'s ``convergence``): one
    per (stage, training tokens, layer) with the held-out KL, the point's mean over layers
    0..L-1, the logit lens's mean and the number of held-out tokens."""
    curve = record["convergence"]
    rows = [
        {"stage": p["stage"], "tokens": p["tokens"], "layer": layer, "kl": kl, "mean_kl": p["mean_kl"],
         "logit_mean_kl": curve.get("logit_mean_kl"), "held_out_tokens": curve.get("held_out_tokens")}
        for p in curve["points"] for layer, kl in enumerate(p["kl"])
    ]
    return pd.DataFrame(rows)


def convergence_curves(table: pd.DataFrame, model: str, what: str):
    """How held-out KL(final || lens) falls with training tokens: the mean over layers
    0..L-1 (thick) and a few single layers (thin), one point per closed-form solution; the
    final lens (after any SGD steps) as a star; the logit lens's mean as a dashed line."""
    fig, ax = plt.subplots(figsize=(10, 4.6))
    n_layers = int(table["layer"].max())
    closed = table[table["stage"] == "closed form"]
    final = table[table["stage"] == "final"]
    points = closed if final.empty else pd.concat([closed, final[~final["tokens"].isin(closed["tokens"])]])
    means = points.groupby("tokens")["mean_kl"].first()
    ax.plot(means.index, means.to_numpy(), marker="o", color=LENS_COLORS["tuned"], linewidth=2.2, label="mean over layers 0..L-1")
    cmap = plt.get_cmap("viridis")
    shown = sorted({0, n_layers // 4, n_layers // 2, (3 * n_layers) // 4, n_layers - 1})
    for i, layer in enumerate(shown):
        part = points[points["layer"] == layer].sort_values("tokens")
        ax.plot(part["tokens"], part["kl"], marker=".", linewidth=1, color=cmap(i / max(1, len(shown) - 1)), alpha=0.8, label=f"layer {layer}")
    if not final.empty:
        ax.plot(final["tokens"].iloc[0], final["mean_kl"].iloc[0], marker="*", markersize=14, color="#d35400", linestyle="none",
                label=f"final lens (mean {final['mean_kl'].iloc[0]:.2f})")
    logit = table["logit_mean_kl"].iloc[0]
    if logit is not None and np.isfinite(logit):
        ax.axhline(logit, color=LENS_COLORS["logit"], linestyle="--", linewidth=1, label=f"logit lens, mean ({logit:.1f})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 100 else f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("Training tokens (log scale)")
    ax.set_ylabel("KL(final || lens) in nats, log scale\n(mean over held-out tokens)")
    held = table["held_out_tokens"].iloc[0]
    n = f"n = {int(held):,} held-out tokens" if held is not None and np.isfinite(held) else "held-out tokens"
    ax.set_title(f"Tuned lens convergence: held-out KL by training tokens: {model}\n{what} · {n}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
