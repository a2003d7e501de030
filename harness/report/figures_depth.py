"""Figures of the depth-efficiency claims (Csordás et al. 2025, Figs. 2-4 and 6).

Each function takes the ``(ClaimResult, table)`` pair of a claim function in
``harness.claims.cso`` and returns a matplotlib Figure that reads without the paper:
what is shown, model, dataset, n and the verdict with its statistic in the title, axis
labels with units, legends and labelled colour bars.

- :func:`contribution_bars` (layer contributions and their cosines): overlaid bars per
  block for attention, MLP and the whole layer, shorter bars in front (the paper's Fig. 2).
- :func:`skip_effect_figure` (layer skips): skipped x affected layer heat maps for both
  skip variants, and the output change per skipped layer (Fig. 3).
- :func:`refinement_figure` (second-half refinement): KL(final || lens) and top-5 overlap
  per residual point (Fig. 4).
- :func:`erasure_map_figure` (no compositional tiling): the residual-erasure map of the
  paper's digit sum, the last layer at which each question token matters, and that layer
  against position for every prompt (Fig. 6b).
- :func:`gradient_map_figure` (integrated gradients agree with erasure): integrated
  gradients next to the erasure map (Fig. 6a).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb

from harness.claims.base import ClaimResult
from harness.interventions.contributions import PARTS
from harness.report.figures import _title, plt

PART_STYLE = {
    "attention": ("attention", "#2e86c1"),
    "mlp": ("MLP", "#e67e22"),
    "layer": ("attention + MLP (whole block)", "#7d3c98"),
}
HALF_COLOR = "#b03a2e"
MEASURE_LABELS = {
    "relative_contribution": (
        "relative contribution of each block to the residual stream",
        "mean relative contribution ||Δh|| / ||h|| (ratio)",
    ),
    "cosine": (
        "cosine between each block's contribution and the residual it is added to (< 0: erasing)",
        "mean cosine(Δh, h) (-1 ... 1)",
    ),
}
SKIP_VARIANTS = {
    "future": "skip before t, measured from t on",
    "all_tokens": "skip on all tokens",
}
MAP_CELL_IN = (0.36, 0.2)  # inches per token column and per residual-point row of a map


# --------------------------------------------------------------------------- shared


def _side(direction: str | None) -> str:
    return ">" if direction == "above" else "<"


def _depth_title(result: ClaimResult, what: str, statistic: str) -> str:
    """The shared title (claim, model, lens, dataset, n, verdict with the statistic and its
    interval) and a line saying what the statistic is and what the claim needs."""
    title = _title(result, what)
    if result.verdict is None:
        title = title.replace("verdict: None", "reported, no threshold")
    claim = result.claim
    need = f"claim: {_side(claim.direction)} {claim.threshold:g}" if claim.threshold is not None else "no claim"
    line = f"statistic: {statistic} ({need})"
    for c in result.subchecks:
        e = c.estimate
        line += f"\nsub-check {c.name}: {e.value:.2f} (95% CI {e.ci_low:.2f}-{e.ci_high:.2f}) " \
                f"{_side(c.direction)} {c.threshold:g}: {c.verdict}"
    return f"{title}\n{line}"


def _layer_ticks(ax, n: int, axis: str = "x", labels: list[str] | None = None) -> None:
    """One tick per layer up to 40 layers, every second or fourth beyond; small font."""
    step = 1 if n <= 40 else 2 if n <= 80 else 4
    ticks = np.arange(0, n, step)
    text = [labels[i] if labels else str(i) for i in ticks]
    (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks, text, fontsize=7)


def token_label(token: str, position: int | None = None) -> str:
    """A readable tick label: GPT-2's space marker "Ġ" (and SentencePiece's "▁") become
    "_", a bare space is "_", newlines are "\\n"; a special token at position 0 is "BOS"."""
    if position == 0 and len(token) > 2 and token.startswith("<") and token.endswith(">"):
        return "BOS"
    text = token.replace("Ġ", "_").replace("▁", "_").replace("Ċ", "\\n").replace("\n", "\\n")
    text = text.replace(" ", "_").replace("\t", "\\t")
    return text if text else "∅"


def _prompt_map(table: pd.DataFrame, prompt: int = 0, measure: str | None = None):
    """(values [points, tokens], raw tokens, question-token mask) of one prompt's map."""
    rows = table[table["prompt"] == prompt]
    if measure is not None and "measure" in rows.columns:
        rows = rows[rows["measure"] == measure]
    if rows.empty:
        raise ValueError(f"the table has no rows for prompt {prompt}.")
    values = rows.pivot(index="layer", columns="position", values="value").sort_index().sort_index(axis=1)
    by_pos = rows.drop_duplicates("position").set_index("position").sort_index()
    tokens = [str(t) for t in by_pos["token"]]
    question = by_pos["question_token"].to_numpy(dtype=bool)
    return values.to_numpy(dtype=np.float64), tokens, question


def _prompt_text(tokens: list[str]) -> str:
    """The prompt as text, without a special token at position 0."""
    if tokens and token_label(tokens[0], 0) == "BOS":
        tokens = tokens[1:]
    return "".join(t.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n") for t in tokens).strip()


def _map_panel(ax, values: np.ndarray, tokens: list[str], question: np.ndarray, **imshow):
    """A [points, tokens] heat map, residual point 0 (embeddings) at the bottom, token
    labels rotated 45 degrees; labels of tokens outside the question in grey."""
    im = ax.imshow(values, origin="lower", aspect="auto", interpolation="nearest", **imshow)
    ax.set_xticks(np.arange(len(tokens)), [token_label(t, i) for i, t in enumerate(tokens)], rotation=45,
                  ha="right", rotation_mode="anchor", fontsize=8)
    for label, q in zip(ax.get_xticklabels(), question):
        if not q:
            label.set_color("#7f8c8d")
    _layer_ticks(ax, values.shape[0], axis="y")
    ax.set_ylabel("residual point r (0 = embeddings, r = output of block r - 1)")
    ax.set_xlabel("input token (grey: answer-predicting and answer tokens, not in the staircase statistic)", fontsize=8)
    return im


def _map_size(n_points: int, n_tokens: int) -> tuple[float, float]:
    return max(4.5, MAP_CELL_IN[0] * n_tokens + 1.6), max(4.0, MAP_CELL_IN[1] * n_points + 2.4)


# --------------------------------------------------------------------------- contributions (Fig. 2)


def _sort_zorder(containers, base: float = 2.0) -> None:
    """At every x, the bar with the smallest |height| in front, the largest behind."""
    for group in zip(*containers):
        for rank, bar in enumerate(sorted(group, key=lambda b: abs(b.get_height()))):
            bar.set_zorder(base + len(group) - rank)


def contribution_bars(result: ClaimResult, table: pd.DataFrame, measure: str = "relative_contribution"):
    """Relative contributions (``measure="relative_contribution"``, Fig. 2a) or their cosines
    (``"cosine"``, Fig. 2b): the mean per block of attention, MLP and the whole block, as
    overlaid bars (shorter bars in front) with 95% bootstrap intervals over prompts as
    whiskers; a dashed line at half depth."""
    if measure not in MEASURE_LABELS:
        raise ValueError(f"measure must be one of {sorted(MEASURE_LABELS)}, not {measure!r}.")
    data = table[table["measure"] == measure]
    if data.empty:
        raise ValueError(f"the table has no rows of measure {measure!r}.")
    n_layers = int(data["layer"].max()) + 1
    what, ylabel = MEASURE_LABELS[measure]
    fig, ax = plt.subplots(figsize=(max(7.5, 0.26 * n_layers + 3.5), 4.6))
    containers = []
    parts = [p for p in PARTS if p in set(data["part"])]
    offsets = np.linspace(-0.22, 0.22, len(parts)) if len(parts) > 1 else np.zeros(1)
    for part, dx in zip(parts, offsets):
        label, color = PART_STYLE.get(part, (part, None))
        rows = data[data["part"] == part].set_index("layer").reindex(range(n_layers))
        mean = rows["mean"].to_numpy(dtype=float)
        n = int(rows["n_prompts"].max())
        containers.append(ax.bar(np.arange(n_layers), np.nan_to_num(mean), width=0.9, color=color,
                                 label=f"{label} (n = {n} prompts)"))
        err = np.vstack([mean - rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float) - mean])
        dark = tuple(0.55 * np.array(to_rgb(color or "black")))
        ax.errorbar(np.arange(n_layers) + dx, mean, yerr=np.clip(np.nan_to_num(err), 0, None), fmt="none",
                    ecolor=dark, elinewidth=0.7, capsize=1.5, zorder=10)
    _sort_zorder(containers)
    ax.axvline(n_layers // 2 - 0.5, color=HALF_COLOR, linestyle="--", linewidth=1.2, zorder=11, label="half depth")
    ax.text(n_layers // 2 - 0.4, 0.98, "half depth", transform=ax.get_xaxis_transform(), ha="left", va="top",
            fontsize=7, color=HALF_COLOR)
    if measure == "cosine":
        ax.axhline(0, color="black", linewidth=0.8, zorder=11)
    else:
        ax.set_ylim(bottom=0)
    ax.plot([], [], color="black", linewidth=0.7,
            label="95% bootstrap CI over prompts\n(whiskers in the part's colour, darker)")
    _layer_ticks(ax, n_layers)
    ax.set_xlim(-0.6, n_layers - 0.4)
    ax.set_xlabel("block l (its contribution Δh = h_{l+1} - h_l, relative to the residual h_l it reads)")
    ax.set_ylabel(ylabel)
    if measure == "relative_contribution":
        d = result.details
        statistic = ("whole-block relative contribution, second half / first half; MLP "
                     f"{d['mlp_ratio']['value']:.2f}, attention {d['attention_ratio']['value']:.2f}")
    else:
        statistic = "whole-block mean cosine, second half minus first half"
    ax.set_title(_depth_title(result, what, statistic), fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- layer skips (Fig. 3)


def _skip_matrix(rows: pd.DataFrame, n_layers: int) -> np.ndarray:
    m = rows.pivot(index="skipped_layer", columns="affected_layer", values="mean")
    return m.reindex(index=range(n_layers), columns=range(n_layers)).to_numpy(dtype=float)


def skip_effect_figure(result: ClaimResult, table: pd.DataFrame):
    """Layer skips: for both variants, the mean over prompts of the relative change of each
    block's contribution (x) when a block is skipped (y), and below it the largest L2
    change of the output probabilities per skipped block (mean and largest over prompts)."""
    rel = table[table["measure"] == "relative_change"]
    out = table[table["measure"] == "output_change"]
    n_layers = int(rel["skipped_layer"].max()) + 1
    mid = n_layers // 2
    side = max(4.4, 0.17 * n_layers + 1.8)
    fig = plt.figure(figsize=(2 * side + 1.6, side + 3.4), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[side, 2.3])
    images, map_axes = [], []
    for col, (variant, name) in enumerate(SKIP_VARIANTS.items()):
        ax = fig.add_subplot(grid[0, col])
        rows = rel[rel["variant"] == variant]
        n = int(rows["n_prompts"].max()) if len(rows) else 0
        images.append(ax.imshow(_skip_matrix(rows, n_layers), vmin=0, vmax=1, cmap="viridis",
                                interpolation="nearest"))
        for pos in (ax.axvline, ax.axhline):
            pos(mid - 0.5, color="white", linestyle="--", linewidth=1)
        _layer_ticks(ax, n_layers, "x")
        _layer_ticks(ax, n_layers, "y")
        ax.set_xlabel("affected block l (relative change of its contribution Δh_l)", fontsize=8)
        ax.set_ylabel("skipped block s")
        ax.set_title(f"{name}\nmean over n = {n} prompts of the largest change over positions\n"
                     f"dashed: half depth", fontsize=8)
        map_axes.append(ax)
    cbar = fig.colorbar(images[0], ax=map_axes, extend="max", shrink=0.9)
    cbar.set_label("relative change of the layer's contribution ||Δh' - Δh|| / ||Δh|| (clipped at 1)", fontsize=8)
    check = next((c for c in result.subchecks if c.name == "second_half_output_change"), None)
    bar_axes = []
    for col, (variant, name) in enumerate(SKIP_VARIANTS.items()):
        ax = fig.add_subplot(grid[1, col], sharey=bar_axes[0] if bar_axes else None)
        rows = out[out["variant"] == variant].set_index("skipped_layer").reindex(range(n_layers))
        x = np.arange(n_layers)
        n = int(rows["n_prompts"].max()) if rows["n_prompts"].notna().any() else 0
        ax.bar(x, np.nan_to_num(rows["mean"].to_numpy(dtype=float)), width=0.85, color="#2e86c1",
               label=f"mean over n = {n} prompts")
        ax.plot(x, rows["max"].to_numpy(dtype=float), linestyle="none", marker="_", markersize=7, color="black",
                label="largest over prompts")
        ax.axvline(mid - 0.5, color=HALF_COLOR, linestyle="--", linewidth=1, label="half depth")
        if variant == "all_tokens" and check is not None:
            ax.axhline(check.threshold, color="#b9770e", linestyle=":", linewidth=1.2,
                       label=f"sub-check: mean over second-half blocks {_side(check.direction)} {check.threshold:g}")
        _layer_ticks(ax, n_layers)
        ax.set_xlim(-0.6, n_layers - 0.4)
        top = np.nanmax(out[["mean", "max"]].to_numpy(dtype=float)) if out["mean"].notna().any() else 1.0
        ax.set_ylim(0, 1.4 * top if top > 0 else 1.0)
        ax.set_xlabel("skipped block s")
        ax.set_ylabel("largest L2 change of output probabilities", fontsize=8)
        ax.set_title(f"output change, {name}", fontsize=8)
        ax.legend(fontsize=6, loc="upper center", ncol=2, framealpha=0.9)
        bar_axes.append(ax)
    d = result.details
    statistic = (f"future effect (largest change of a later block, 'skip before t' variant) of second-half skips / "
                 f"first-half skips; means {d['second_half_future_effect']:.2f} / {d['first_half_future_effect']:.2f}")
    fig.suptitle(_depth_title(result, "skipping a block: effect on later blocks and on the output", statistic),
                 fontsize=8)
    return fig


# --------------------------------------------------------------------------- refinement (Fig. 4)


def refinement_figure(result: ClaimResult, table: pd.DataFrame):
    """Second-half refinement: per residual point (lens input; L = the model's own output),
    the mean KL(final || lens) in nats and the top-5 overlap with the final top-5, with 95%
    bootstrap intervals over prompts."""
    fig, axes = plt.subplots(2, 1, sharex=True, layout="constrained",
                             figsize=(max(7.5, 0.26 * (table["layer"].max() + 1) + 3), 6.4))
    n_layers = int(table["layer"].max())
    mid = n_layers // 2
    x = np.arange(n_layers + 1)
    colors = ["#2e86c1"] * n_layers + ["#7f8c8d"]
    panels = (
        ("kl_final_to_lens", "KL(final || lens) (nats)", "KL divergence of the lens distribution from the final one"),
        ("top5_overlap", "top-5 overlap with the final top-5\n(share, 0 ... 1)",
         "share of the final top-5 tokens found in the lens top-5"),
    )
    for ax, (measure, ylabel, name) in zip(axes, panels):
        rows = table[table["measure"] == measure].set_index("layer").reindex(x)
        mean = rows["mean"].to_numpy(dtype=float)
        err = np.vstack([mean - rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float) - mean])
        ax.bar(x, np.nan_to_num(mean), width=0.85, color=colors, yerr=np.clip(np.nan_to_num(err), 0, None),
               error_kw={"elinewidth": 0.6, "capsize": 1.5}, label="mean over prompts (95% bootstrap CI)")
        ax.axvline(mid, color=HALF_COLOR, linestyle="--", linewidth=1, zorder=0, label=f"half depth (h_{mid})")
        ax.set_ylabel(ylabel, fontsize=8)
        n, n_pos = int(rows["n_prompts"].max()), int(rows["n_positions"].max())
        ax.set_title(f"{name}; n = {n} prompts, {n_pos} positions; grey bar: the model's own output (r = L)",
                     fontsize=8)
        ax.set_ylim(bottom=0)
    over = axes[1]
    over.set_ylim(0, 1.05)
    used = [0, mid, n_layers - 1]
    rows = table[table["measure"] == "top5_overlap"].set_index("layer").reindex(used)
    over.plot(used, rows["mean"].to_numpy(dtype=float), linestyle="none", marker="v", markersize=6,
              color="#b9770e", zorder=5, label=f"points of the statistic (h_0, h_{mid}, h_{n_layers - 1})")
    for c in result.subchecks:
        if c.name == "first_half_overlap":
            over.hlines(c.threshold, -0.5, mid - 0.5, color="#117a65", linestyle=":", linewidth=1.2,
                        label=f"sub-check thresholds: first-half mean {_side(c.direction)} {c.threshold:g} (left),\n"
                              f"overlap at h_{n_layers - 1} (right)")
        elif c.name == "overlap_at_end":
            over.hlines(c.threshold, n_layers - 1.5, n_layers - 0.5, color="#117a65", linestyle=":", linewidth=1.2)
    for ax in axes:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
    labels = [str(i) for i in x]
    labels[-1] = f"{n_layers}\n(final)"
    _layer_ticks(over, n_layers + 1, labels=labels)
    over.set_xlim(-0.6, n_layers + 0.6)
    over.set_xlabel("residual point l (input of block l; L = final)")
    statistic = (f"rise of the top-5 overlap over the second half (h_{mid} to h_{n_layers - 1}) minus its rise over "
                 f"the first half (h_0 to h_{mid})")
    fig.suptitle(_depth_title(result, "the second half refines the output distribution", statistic), fontsize=8)
    return fig


# --------------------------------------------------------------------------- erasure, gradients (Fig. 6)


def erasure_map_figure(result: ClaimResult, table: pd.DataFrame, prompt: int = 0, drop_last: bool = True):
    """No compositional tiling: the residual-erasure map of one prompt (default 0, the paper's
    5 + 7 + 5 + 3 + 1 + 7 = 28) with the last point at which each question token still
    matters marked, and next to it that point against token position for every prompt.

    ``drop_last`` leaves out the last token, which predicts nothing (as the paper's plot)."""
    values, tokens, question = _prompt_map(table, prompt, "erasure_effect")
    text = _prompt_text(tokens)
    if drop_last:
        values, tokens, question = values[:, :-1], tokens[:-1], question[:-1]
    n_points, n_tokens = values.shape
    width, height = _map_size(n_points, n_tokens)
    fig = plt.figure(figsize=(width + 4.2, height + 1.0), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[width, 3.6])
    ax = fig.add_subplot(grid[0, 0])
    im = _map_panel(ax, values, tokens, question, cmap="viridis", vmin=0)
    cbar = fig.colorbar(im, ax=ax, pad=0.01, fraction=0.05, shrink=0.9)
    cbar.set_label("largest change of answer probabilities (L2)", fontsize=8)
    layers_all = result.details["last_layer_per_token"]
    last = np.array([np.nan if v is None else v for v in layers_all[prompt]], dtype=float)
    pos = np.arange(len(last))
    ax.plot(pos, last, linestyle="none", marker="o", markersize=5, markerfacecolor="#e74c3c",
            markeredgecolor="white", label=f"last point where erasing still changes the answer by\n"
                                            f">= {result.claim.parameters['matters_share']:.0%} of the token's largest change")
    ax.legend(fontsize=7, loc="upper right", framealpha=0.85)
    rho = result.details["rho_per_prompt"][prompt]
    ax.set_title(f"prompt {prompt}: {text!r} (answer tokens at the end); "
                 f"Spearman ρ(position, last point) = {rho:.2f}", fontsize=8)
    side = fig.add_subplot(grid[0, 1])
    palette = plt.get_cmap("tab10")
    rhos = result.details["rho_per_prompt"]
    nudge = np.linspace(-0.2, 0.2, len(layers_all)) if len(layers_all) > 1 else np.zeros(1)
    for i, layers in enumerate(layers_all):
        ys = np.array([np.nan if v is None else v for v in layers], dtype=float) + nudge[i]
        side.plot(np.arange(len(ys)), ys, marker="o", markersize=3, linewidth=1.2 if i else 2,
                  color=palette(i % 10), label=f"prompt {i} (ρ = {rhos[i]:.2f})")
    side.set_ylim(-0.5, n_points - 0.5)
    _layer_ticks(side, n_points, axis="y")
    side.set_xlabel("question token position")
    side.set_ylabel("last residual point at which the token matters\n(prompts nudged apart by up to ±0.2)")
    e = result.estimate
    side.set_title(f"every prompt: mean Spearman ρ = {e.value:.2f}\n(95% CI {e.ci_low:.2f}-{e.ci_high:.2f}, "
                   f"n = {e.n}); a staircase gives ρ near 1", fontsize=8)
    side.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0, -0.09), ncol=2)
    statistic = "mean over prompts of Spearman ρ between a question token's position and the last point it matters at"
    fig.suptitle(_depth_title(result, "residual erasure: up to which layer does each input token matter?", statistic),
                 fontsize=8)
    return fig


def gradient_map_figure(result: ClaimResult, table: pd.DataFrame, erasure_table: pd.DataFrame, prompt: int = 0,
                        drop_last: bool = True):
    """Integrated gradients agree with erasure: the integrated-gradients map of one prompt
    (seismic, limits symmetric around 0 from the largest |value| outside position 0) next to
    its residual-erasure map."""
    ig, tokens, question = _prompt_map(table, prompt, "integrated_gradients")
    erase, e_tokens, _ = _prompt_map(erasure_table, prompt, "erasure_effect")
    if e_tokens != tokens:
        raise ValueError(f"prompt {prompt} has different tokens in the two tables.")
    text = _prompt_text(tokens)
    if drop_last:
        ig, erase, tokens, question = ig[:, :-1], erase[:, :-1], tokens[:-1], question[:-1]
    n_points, n_tokens = ig.shape
    rest = np.abs(ig[:, 1:]) if n_tokens > 1 else np.abs(ig)
    limit = float(np.nanmax(rest)) if np.isfinite(rest).any() else 0.0
    limit = limit if limit > 0 else 1.0
    width, height = _map_size(n_points, n_tokens)
    fig, axes = plt.subplots(1, 2, figsize=(2 * width + 1.5, height + 0.8), layout="constrained")
    im = _map_panel(axes[0], ig, tokens, question, cmap="seismic", vmin=-limit, vmax=limit)
    cbar = fig.colorbar(im, ax=axes[0], pad=0.01, fraction=0.05, extend="both" if np.nanmax(np.abs(ig)) > limit else
                        "neither")
    cbar.set_label("integrated gradients: attribution to the answer probability\n"
                   "(red raises, blue lowers; limits from the largest |value| after position 0)", fontsize=8)
    agreement = result.details["agreement_per_prompt"][prompt]
    axes[0].set_title(f"integrated gradients, prompt {prompt}: {text!r}\n"
                      f"Spearman ρ(|IG|, erasure) over cells for this prompt = {agreement:.2f}", fontsize=8)
    im = _map_panel(axes[1], erase, tokens, question, cmap="viridis", vmin=0)
    cbar = fig.colorbar(im, ax=axes[1], pad=0.01, fraction=0.05)
    cbar.set_label("largest change of answer probabilities (L2)", fontsize=8)
    axes[1].set_title(f"residual erasure (Fig. 6b), prompt {prompt}\nsame tokens and residual points", fontsize=8)
    statistic = (f"mean over prompts of Spearman ρ between the |IG| and erasure maps over (point, token) cells; "
                 f"largest IG completeness error {result.details['max_completeness_error']:.3g}")
    fig.suptitle(_depth_title(result, "integrated gradients give the same picture as residual erasure", statistic),
                 fontsize=8)
    return fig
