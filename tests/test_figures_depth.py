"""CSO-1 .. CSO-6 figures on synthetic tables from the real claim functions, and the pure
helpers of harness.claims.cso on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.claims import cso
from harness.interventions.measurements import MapPrompt
from harness.trace import LayerTrace

L, N_PROMPTS = 6, 3
# The paper's digit sum as GPT-2 tokens ("= " + "28": a bare-space token, then the answer).
PAPER_TOKENS = ("5", "Ġ+", "Ġ7", "Ġ+", "Ġ5", "Ġ+", "Ġ3", "Ġ+", "Ġ1", "Ġ+", "Ġ7", "Ġ=", "Ġ", "28")
OTHER_TOKENS = ("2", "Ġ+", "Ġ4", "Ġ+", "Ġ9", "Ġ+", "Ġ1", "Ġ+", "Ġ6", "Ġ+", "Ġ3", "Ġ=", "Ġ", "25")


def _assert_labelled(fig) -> None:
    """A non-empty (sup)title; every panel has a title, a y label and an x label (its own or
    a shared one); every colour bar has a label."""
    assert fig._suptitle is None or fig._suptitle.get_text()
    for ax in fig.axes:
        if getattr(ax, "_colorbar", None) is not None:
            assert ax.get_ylabel(), "colour bar without a label"
            continue
        assert ax.get_title() and ax.get_ylabel()
        assert any(a.get_xlabel() for a in ax.get_shared_x_axes().get_siblings(ax))


def _save(fig, path):
    import matplotlib.pyplot as plt

    fig.savefig(path, format="png", dpi=60)
    plt.close(fig)
    assert path.stat().st_size > 1000


def _is_figure(fig) -> bool:
    from matplotlib.figure import Figure

    return isinstance(fig, Figure)


# --- synthetic inputs -----------------------------------------------------------------


def _contributions(rng):
    falling = np.r_[np.full(L // 2, 0.8), np.full(L - L // 2, 0.3)]
    relative = {p: falling * rng.uniform(0.7, 1.3, (N_PROMPTS, L)) for p in cso.PARTS}
    cosine = {p: rng.uniform(-0.6, 0.4, (N_PROMPTS, L)) for p in cso.PARTS}
    return relative, cosine


def _refinement_trace(rng, positions: int = 4) -> LayerTrace:
    n = N_PROMPTS * positions
    topk = rng.integers(0, 50, (L + 1, n, 5))
    final = np.tile(np.arange(100, 105), (n, 1))
    topk[-1] = final
    for layer in range(L // 2, L):  # the lens top-5 fills with final tokens in the second half
        share = layer - L // 2 + 2
        topk[layer, :, :share] = final[:, :share]
    kl = np.linspace(8, 0, L + 1)[:, None] * rng.uniform(0.8, 1.2, (1, n))
    zeros = np.zeros(n, dtype=np.int32)
    ones = np.ones((L + 1, n), dtype=np.int32)
    return LayerTrace(meta={}, example=np.repeat(np.arange(N_PROMPTS), positions),
                      position=np.tile(np.arange(positions), N_PROMPTS), input_id=zeros, gold_id=zeros,
                      final_id=zeros, top1=ones, final_rank=ones, gold_rank=ones, topk=topk, kl_final=kl)


def _maps(rng):
    prompts = [MapPrompt(PAPER_TOKENS, 1), MapPrompt(OTHER_TOKENS, 1), MapPrompt(PAPER_TOKENS, 1)]
    erasure = []
    for _ in prompts:
        e = rng.uniform(0, 0.02, (L + 1, len(PAPER_TOKENS)))
        e[: L // 2 + 1, :-1] += rng.uniform(0.2, 0.6, (L // 2 + 1, len(PAPER_TOKENS) - 1))
        erasure.append(e)
    attribution = [rng.normal(0, 0.05, e.shape) + e * rng.choice([-1, 1], e.shape) for e in erasure]
    attribution[0][:, 0] *= 20  # a large first position, left out of the colour limits
    return prompts, erasure, attribution


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --- figures --------------------------------------------------------------------------


def test_contribution_bars_cso1_and_cso2(rng, tmp_path):
    from harness.report.figures_depth import contribution_bars

    relative, cosine = _contributions(rng)
    result, table = cso.cso1_second_half_contributes_less(relative, cosine, "toy", "arith")
    fig = contribution_bars(result, table, "relative_contribution")
    assert _is_figure(fig) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert "CSO-1" in ax.get_title() and "n = 3 ·" in ax.get_title() and "verdict" in ax.get_title()
    assert "relative contribution" in ax.get_ylabel() and ax.get_xlabel()
    assert len(ax.patches) == 3 * L
    # shorter bars in front at every layer
    for layer in range(L):
        bars = sorted((p for p in ax.patches if abs(p.get_x() + p.get_width() / 2 - layer) < 1e-9),
                      key=lambda p: abs(p.get_height()))
        assert [b.get_zorder() for b in bars] == sorted((b.get_zorder() for b in bars), reverse=True)
    half = [ln for ln in ax.get_lines() if ln.get_label() == "half depth"]
    assert len(half) == 1 and half[0].get_xdata()[0] == pytest.approx(L // 2 - 0.5)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("MLP") for t in legend) and "half depth" in legend
    _assert_labelled(fig)
    _save(fig, tmp_path / "cso1.png")

    result2, table2 = cso.cso2_cosine_curve(cosine, "toy", "arith")
    fig = contribution_bars(result2, table2, "cosine")
    ax = fig.axes[0]
    assert "CSO-2" in ax.get_title() and "None" not in ax.get_title() and "cosine" in ax.get_ylabel()
    assert any(ln.get_ydata()[0] == 0 and ln.get_linestyle() == "-" for ln in ax.get_lines())  # the zero line
    _assert_labelled(fig)
    _save(fig, tmp_path / "cso2.png")
    with pytest.raises(ValueError):
        contribution_bars(result2, table2, "relative_contribution")  # CSO-2's table has only cosines


def test_skip_effect_figure(rng, tmp_path):
    from harness.report.figures_depth import skip_effect_figure

    future = rng.uniform(0, 1.3, (N_PROMPTS, L, L))
    result, table = cso.cso3_skip_effects(future, rng.uniform(0, 0.5, (N_PROMPTS, L)),
                                          rng.uniform(0, 1, (N_PROMPTS, L, L)), rng.uniform(0, 0.5, (N_PROMPTS, L)),
                                          "toy", "arith")
    fig = skip_effect_figure(result, table)
    assert _is_figure(fig) and len(fig.axes) == 5  # two maps, their colour bar, two bar charts
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 2
    for ax, variant in zip(maps, ("future", "all_tokens")):
        im = ax.images[0]
        assert im.get_array().shape == (L, L) and im.get_clim() == (0, 1)
        expected = table[(table.variant == variant) & (table.measure == "relative_change")]
        row = expected[(expected.skipped_layer == 2) & (expected.affected_layer == 4)]["mean"].item()
        assert im.get_array()[2, 4] == pytest.approx(row)
        assert ax.get_ylabel() == "skipped block s" and "affected" in ax.get_xlabel()
    assert "skip before t, measured from t on" in maps[0].get_title()
    assert "skip on all tokens" in maps[1].get_title()
    cbar = [ax for ax in fig.axes if "relative change of the layer's contribution" in ax.get_ylabel()]
    assert len(cbar) == 1
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "largest L2 change of output probabilities"]
    assert len(bars) == 2 and all(len(ax.patches) == L for ax in bars)
    assert "CSO-3" in fig._suptitle.get_text() and "second_half_output_change" in fig._suptitle.get_text()
    _assert_labelled(fig)
    _save(fig, tmp_path / "cso3.png")


def test_refinement_figure(rng, tmp_path):
    from harness.report.figures_depth import refinement_figure

    result, table = cso.cso4_second_half_refines(_refinement_trace(rng), "toy", "logit", "arith")
    fig = refinement_figure(result, table)
    assert _is_figure(fig) and len(fig.axes) == 2
    kl_ax, over_ax = fig.axes
    assert "nats" in kl_ax.get_ylabel() and "overlap" in over_ax.get_ylabel()
    assert over_ax.get_xlabel() == "residual point l (input of block l; L = final)"
    assert len(kl_ax.patches) == L + 1 and len(over_ax.patches) == L + 1
    assert over_ax.patches[-1].get_height() == pytest.approx(1.0)  # the model's own top-5
    assert "CSO-4" in fig._suptitle.get_text() and "logit lens" in fig._suptitle.get_text()
    _assert_labelled(fig)
    _save(fig, tmp_path / "cso4.png")


def test_erasure_map_figure(rng, tmp_path):
    from harness.report.figures_depth import erasure_map_figure, token_label

    prompts, erasure, _ = _maps(rng)
    result, table = cso.cso5_no_compositional_tiling(prompts, erasure, "toy", "digit sums")
    fig = erasure_map_figure(result, table)
    assert _is_figure(fig) and len(fig.axes) == 3  # map, colour bar, per-prompt panel
    ax = next(a for a in fig.axes if a.images)
    im = ax.images[0]
    assert im.get_array().shape == (L + 1, len(PAPER_TOKENS) - 1)  # last token (predicts nothing) left out
    assert im.origin == "lower"  # residual point 0 at the bottom
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[:3] == ["5", "_+", "_7"] and labels[-1] == "_"  # the bare space token
    assert all(t.get_rotation() == 45 for t in ax.get_xticklabels())
    assert "5 + 7 + 5 + 3 + 1 + 7 = 28" in ax.get_title()
    dots = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    expected = [np.nan if v is None else v for v in result.details["last_layer_per_token"][0]]
    assert len(dots) == 1 and np.allclose(dots[0].get_ydata(), expected, equal_nan=True)
    cbar = [a for a in fig.axes if a.get_ylabel() == "largest change of answer probabilities (L2)"]
    assert len(cbar) == 1
    side = next(a for a in fig.axes if "Spearman" in a.get_title() and not a.images and a not in cbar)
    assert len(side.get_lines()) == N_PROMPTS and f"{result.estimate.value:.2f}" in side.get_title()
    assert "CSO-5" in fig._suptitle.get_text()
    _assert_labelled(fig)
    _save(fig, tmp_path / "cso5.png")
    assert token_label("<|endoftext|>", 0) == "BOS" and token_label(" ") == "_" and token_label("Ċ") == "\\n"


def test_gradient_map_figure(rng, tmp_path):
    from harness.report.figures_depth import gradient_map_figure

    prompts, erasure, attribution = _maps(rng)
    _, erasure_table = cso.cso5_no_compositional_tiling(prompts, erasure, "toy", "digit sums")
    result, table = cso.cso6_gradients_agree(prompts, attribution, erasure, np.array([0.01, 0.02, 0.03]),
                                             "toy", "digit sums")
    fig = gradient_map_figure(result, table, erasure_table)
    assert _is_figure(fig) and len(fig.axes) == 4  # two maps, two colour bars
    ig_ax, erase_ax = [a for a in fig.axes if a.images]
    low, high = ig_ax.images[0].get_clim()
    limit = np.abs(attribution[0][:, 1:-1]).max()
    assert ig_ax.images[0].get_cmap().name == "seismic"
    assert low == pytest.approx(-limit) and high == pytest.approx(limit)
    assert np.abs(attribution[0][:, 0]).max() > limit  # position 0 does not set the limits
    assert [t.get_text() for t in ig_ax.get_xticklabels()] == [t.get_text() for t in erase_ax.get_xticklabels()]
    assert np.allclose(erase_ax.images[0].get_array(), erasure[0][:, :-1])
    assert "CSO-6" in fig._suptitle.get_text()
    _assert_labelled(fig)
    _save(fig, tmp_path / "cso6.png")


# --- pure functions of harness.claims.cso -----------------------------------------------


def test_halves():
    first, second = cso.halves(5)
    assert first.tolist() == [0, 1] and second.tolist() == [2, 3, 4]


def test_future_effect_takes_only_later_blocks():
    future = np.array([[[0.0, 0.4, 0.2], [0.9, 0.0, 0.3], [0.5, 0.5, 0.5]]])
    out = cso.future_effect(future)
    assert out.shape == (1, 3)
    assert out[0, 0] == pytest.approx(0.4) and out[0, 1] == pytest.approx(0.3)  # 0.9 at l < s ignored
    assert math.isnan(out[0, 2])  # nothing after the last block


def test_cso3_statistic_on_known_maps():
    n = 4
    future = np.zeros((2, n, n))
    future[:, :2, :] = 1.0  # first-half skips change every later block fully
    future[:, 2, 3] = 0.25  # second-half skip (block 2; block 3 is last and left out)
    output = np.full((2, n), 0.5)
    result, table = cso.cso3_skip_effects(future, output, future, output, "toy", "arith")
    assert result.estimate.value == pytest.approx(0.25)
    assert result.details["first_half_future_effect"] == pytest.approx(1.0)
    assert len(table) == 2 * n * (n + 1)


def test_topk_overlap():
    top = np.array([[[1, 2, 3, 4, 5]], [[9, 10, 11, 1, 7]], [[1, 5, 9, 10, 11]]])
    trace = LayerTrace(meta={}, example=np.zeros(1), position=np.zeros(1), input_id=np.zeros(1), gold_id=np.zeros(1),
                       final_id=np.zeros(1), top1=top[:, :, 0], final_rank=top[:, :, 0], gold_rank=top[:, :, 0],
                       topk=top)
    assert np.allclose(cso.topk_overlap(trace), [[0.4], [0.8], [1.0]])
    assert np.allclose(cso.topk_overlap(trace, k=2), [[0.5], [0.0], [1.0]])


def test_cso4_rise_on_a_known_trace(rng):
    result, table = cso.cso4_second_half_refines(_refinement_trace(rng), "toy", "logit", "arith")
    over = table[table.measure == "top5_overlap"].set_index("layer")["mean"]
    # h_0 and h_3 hold no final token by chance (ids < 50 vs >= 100); h_5 holds 4 of 5
    assert over[0] == pytest.approx(0) and over[L // 2] == pytest.approx(0.4) and over[L - 1] == pytest.approx(0.8)
    assert result.estimate.value == pytest.approx((0.8 - 0.4) - (0.4 - 0.0))
    assert over[L] == pytest.approx(1.0)


def test_last_mattering_layer():
    effect = np.array([[0.00, 0.20, 0.001, 0.10],
                       [0.10, 0.05, 0.002, 0.05],
                       [0.06, 0.00, 0.000, 0.00]])
    out = cso.last_mattering_layer(effect)
    # token 0: peak 0.1, last >= 0.05 at point 2; token 1: only point 0; token 2: never matters;
    # token 3: 0.05 is exactly half of its peak, so point 1 still counts
    assert out[0] == 2 and out[1] == 0 and math.isnan(out[2]) and out[3] == 1


def test_spearman():
    x = np.arange(5, dtype=float)
    assert cso.spearman(x, x ** 3) == pytest.approx(1.0)
    assert cso.spearman(x, -x) == pytest.approx(-1.0)
    assert cso.spearman(x, np.ones(5)) == 0.0  # a flat profile has no staircase
    assert math.isnan(cso.spearman(x[:2], x[:2]))
    # ties get average ranks: y ranks 1.5, 1.5, 3, 4 -> r = 4.5 / sqrt(5 * 4.5) = 3 / sqrt(10)
    assert cso.spearman(np.array([1.0, 2, 3, 4]), np.array([1.0, 1, 2, 3])) == pytest.approx(3 / math.sqrt(10))
    # NaN pairs are left out
    assert cso.spearman(np.array([0.0, 1, np.nan, 3]), np.array([0.0, 1, 2, 3])) == pytest.approx(1.0)


def test_staircase_detects_a_diagonal():
    effect = np.zeros((6, 6))
    for t in range(5):
        effect[: t + 1, t] = 1.0  # token t matters up to point t
    rho, layers = cso.staircase(effect, 5)
    assert layers.tolist() == [0, 1, 2, 3, 4] and rho == pytest.approx(1.0)
    flat = np.zeros((6, 6))
    flat[:3, :5] = 1.0
    rho, layers = cso.staircase(flat, 5)
    assert layers.tolist() == [2] * 5 and rho == 0.0


def test_map_prompt_question_tokens():
    p = MapPrompt(PAPER_TOKENS, 1)
    assert p.n_question == len(PAPER_TOKENS) - 2  # the position predicting "28" and "28" itself are out
