"""The v2 claims (harness/claims/versus_control.py and GTR-7v2) on hand-made numbers: a
model that equals its untrained control never replicates a control-relative claim, the
joint bootstrap pairs the prompts, and GTR-7v2 refuses the untrained network's trivial pass."""

from __future__ import annotations

import numpy as np
import pytest

from harness.claims import gtr_lens, versus_control
from tests.test_gtr_lens import N, N_LAYERS, _freq, _trace

L = 8


def _relative(second_half_scale: float, n: int = 16, seed: int = 0) -> np.ndarray:
    """[prompts, L] relative contributions: first half around 1, second half scaled."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.8, 1.2, (n, L))
    values[:, L // 2 :] *= second_half_scale
    return values


def test_cso1v2_is_the_ratio_of_the_two_halves_ratios():
    model, control = _relative(0.2), _relative(0.5, seed=1)
    result, table = versus_control.cso1v2_relative_to_control(model, control, "m", "m+untrained", "d")
    first, second = slice(0, L // 2), slice(L // 2, L)
    ratio = lambda v: v[:, second].mean(1).sum() / v[:, first].mean(1).sum()
    assert result.estimate.value == pytest.approx(ratio(model) / ratio(control))
    assert result.estimate.ci_low < result.estimate.value < result.estimate.ci_high
    assert result.verdict == "replicated" and result.estimate.n == 16
    assert set(table["model"]) == {"m", "m+untrained"} and len(table) == 2 * L
    assert result.robustness is not None and result.robustness.label == "robust"


def test_cso1v2_a_model_like_its_control_does_not_replicate():
    """v1 holds on both (ratio 0.5 < 0.8); v2 asks for less than 0.8 of the control's."""
    same = _relative(0.5)
    result, _ = versus_control.cso1v2_relative_to_control(same, same.copy(), "m", "c", "d")
    assert result.estimate.value == pytest.approx(1.0)
    assert result.estimate.ci_low == pytest.approx(1.0) and result.verdict == "contradicted"


def test_cso1v2_refuses_numbers_of_other_prompts():
    with pytest.raises(ValueError, match="same prompts"):
        versus_control.cso1v2_relative_to_control(_relative(0.2), _relative(0.2, n=15), "m", "c", "d")


def _flip_trace(early_kept: int):
    """Every early guess a Top-10 token; ``early_kept`` prefixes keep theirs to the end."""
    top1 = np.full((N_LAYERS + 1, N), 150)
    top1[1:3] = 3  # early layers 1..2 guess Top-10 token 3
    final = np.full(N, 150)
    final[:early_kept] = 3
    top1[-1] = final
    return _trace(top1, np.zeros((N_LAYERS + 1, N)), final=final)


def test_gtr2v2_the_difference_of_flip_rates_joint_over_paragraphs():
    model, control = _flip_trace(early_kept=20), _flip_trace(early_kept=0)
    result, table = versus_control.gtr2v2_flips_fewer_than_control(model, control, _freq(), "m", "c", "logit", "d")
    assert result.estimate.value == pytest.approx(0.5 - 1.0)
    assert result.verdict == "replicated" and result.estimate.n == N
    assert result.details["model_flip_rate"] == pytest.approx(0.5) and result.details["control_flip_rate"] == 1.0
    assert set(table["model"]) == {"m", "c"}
    same, _ = versus_control.gtr2v2_flips_fewer_than_control(control, control, _freq(), "m", "c", "logit", "d")
    assert same.estimate.value == 0 and same.verdict != "replicated"


def test_gtr2v2_counts_the_smaller_set_of_early_guesses():
    model = _flip_trace(early_kept=20)
    top1 = np.full((N_LAYERS + 1, N), 150)
    top1[1:3, :4] = 3  # the control makes only 4 early Top-10 guesses
    control = _trace(top1, np.zeros((N_LAYERS + 1, N)))
    result, _ = versus_control.gtr2v2_flips_fewer_than_control(model, control, _freq(), "m", "c", "logit", "d")
    assert result.estimate.n == 4
    assert result.verdict == "inconclusive" and result.too_little_data


def test_gtr7v2_fails_a_lens_pair_with_no_frequent_early_guesses():
    """An untrained network: no Top-10 guesses early under either lens passes v1 (difference
    0 > -0.1) but not v2's new sub-check."""
    nothing = np.full((N_LAYERS + 1, N), 150)
    final = np.full(N, 3)  # final predictions are Top-10 tokens
    mass = np.zeros((N_LAYERS + 1, N))
    v1, _ = gtr_lens.gtr7_frequent_guesses_not_probe_artefact(
        _trace(nothing, mass, final), _trace(nothing.copy(), mass, final), _freq(), "m", "l", "d"
    )
    v2, _ = gtr_lens.gtr7v2_frequent_guesses_exist_and_survive(
        _trace(nothing, mass, final), _trace(nothing.copy(), mass, final), _freq(), "m", "l", "d"
    )
    assert v1.verdict == "replicated"
    assert v2.estimate == v1.estimate and v2.claim.id == "GTR-7v2"
    assert v2.subchecks[0].estimate.value == pytest.approx(-1.0) and v2.verdict == "contradicted"


def _overlap_trace(overlap_at: np.ndarray, n_prompts: int = 10, positions: int = 3):
    """A trace whose top-5 overlap with the final top-5 at layer l is ``overlap_at[l]``
    (a multiple of 0.2) at every row."""
    rows = n_prompts * positions
    final = np.arange(5)
    topk = np.empty((len(overlap_at), rows, 5), dtype=np.int64)
    for layer, share in enumerate(overlap_at):
        shared = int(round(share * 5))
        topk[layer] = np.concatenate([final[:shared], 100 + np.arange(5 - shared)])
    zeros = np.zeros(rows, dtype=np.int64)
    return _trace_like(topk, np.repeat(np.arange(n_prompts), positions), zeros)


def _trace_like(topk, example, zeros):
    from harness.trace import LayerTrace

    top1 = topk[:, :, 0]
    return LayerTrace(meta={}, example=example, position=zeros, input_id=zeros, gold_id=zeros,
                      final_id=top1[-1], top1=top1, final_rank=np.zeros_like(top1), gold_rank=np.zeros_like(top1),
                      topk=topk)


def test_cso4v2_is_the_paired_difference_of_the_overlap_rises():
    # L = 4 blocks: inputs h_0..h_3; rise = (ov[3] - ov[2]) - (ov[2] - ov[0])
    trained = _overlap_trace(np.array([0.0, 0.0, 0.2, 1.0, 1.0]))  # rise 0.8 - 0.2 = 0.6
    untrained = _overlap_trace(np.array([0.0, 0.2, 0.4, 0.6, 1.0]))  # rise 0.2 - 0.4 = -0.2
    result, table = versus_control.cso4v2_refines_more_than_control(trained, untrained, "m", "c", "logit", "d")
    assert result.estimate.value == pytest.approx(0.8)
    assert result.details["model_rise"] == pytest.approx(0.6) and result.details["control_rise"] == pytest.approx(-0.2)
    assert result.verdict == "replicated" and result.estimate.n == 10
    same, _ = versus_control.cso4v2_refines_more_than_control(trained, trained, "m", "c", "logit", "d")
    assert same.estimate.value == 0 and same.verdict != "replicated"
    with pytest.raises(ValueError, match="different problems"):
        versus_control.cso4v2_refines_more_than_control(trained, _overlap_trace(np.zeros(5), n_prompts=9), "m", "c", "logit", "d")
