"""GTR-6 and GTR-7 on hand-made traces of two lenses over the same prompts."""

from __future__ import annotations

import numpy as np
import pytest

from harness.claims import gtr_lens
from harness.frequency import FrequencyTable
from harness.trace import LayerTrace

N_LAYERS, N = 8, 40  # early layers: 1..2


def _freq() -> FrequencyTable:
    counts = np.arange(200, 0, -1)  # id 0 most frequent: ids 0-9 are Top-10
    return FrequencyTable("tok", "test", "hash", int(counts.sum()), counts)


def _trace(top1: np.ndarray, top10_mass: np.ndarray, final: np.ndarray | None = None) -> LayerTrace:
    zeros = np.zeros(N, dtype=np.int32)
    mass = np.stack([top10_mass, 1 - top10_mass, np.zeros_like(top10_mass), np.zeros_like(top10_mass)], axis=-1)
    return LayerTrace(
        meta={"token_sets": ["Top-10", "Top-100", "Top-1000", "Rest"]}, example=np.arange(N) // 2, position=zeros,
        input_id=zeros, gold_id=zeros, final_id=np.full(N, 150) if final is None else final, top1=top1,
        final_rank=np.ones_like(top1), gold_rank=np.ones_like(top1), set_mass=mass,
    )


def test_gtr6_is_the_early_top10_mass_difference():
    rng = np.random.default_rng(0)
    logit_mass = rng.uniform(0.0, 0.3, (N_LAYERS + 1, N))
    top1 = np.full((N_LAYERS + 1, N), 150)
    logit, tuned = _trace(top1, logit_mass), _trace(top1, logit_mass + 0.25)
    result, table = gtr_lens.gtr6_logit_lens_underrates_frequent(logit, tuned, _freq(), "m", "logit-vs-tuned", "d")
    assert result.estimate.value == pytest.approx(0.25) and result.verdict == "replicated"
    assert set(table["lens"]) == {"logit", "tuned", "tuned minus logit"} and len(table) == 3 * (N_LAYERS + 1)
    flipped, _ = gtr_lens.gtr6_logit_lens_underrates_frequent(tuned, logit, _freq(), "m", "x", "d")
    assert flipped.verdict == "contradicted"


def test_gtr7_compares_early_top10_shares_with_a_tolerance():
    standard_top1 = np.full((N_LAYERS + 1, N), 150)
    standard_top1[1:3, : N // 2] = 3  # half the early guesses are a Top-10 token
    weighted_top1 = standard_top1.copy()
    weighted_top1[1:3, : N // 2] = 150  # the weighted lens loses all of them: -0.5
    mass = np.zeros((N_LAYERS + 1, N))
    same, _ = gtr_lens.gtr7_frequent_guesses_not_probe_artefact(
        _trace(standard_top1, mass), _trace(standard_top1.copy(), mass), _freq(), "m", "l", "d"
    )
    assert same.estimate.value == 0 and same.verdict == "replicated"
    fewer, table = gtr_lens.gtr7_frequent_guesses_not_probe_artefact(
        _trace(standard_top1, mass), _trace(weighted_top1, mass), _freq(), "m", "l", "d"
    )
    assert fewer.estimate.value == pytest.approx(-0.5) and fewer.verdict == "contradicted"
    assert fewer.details["early_top10_share_standard"] == pytest.approx(0.5)
    assert set(table["lens"]) == {"standard tuned", "down-weighted tuned"}


def test_traces_of_different_prompts_are_refused():
    top1, mass = np.full((N_LAYERS + 1, N), 150), np.zeros((N_LAYERS + 1, N))
    with pytest.raises(ValueError, match="same prompts"):
        gtr_lens.gtr6_logit_lens_underrates_frequent(_trace(top1, mass), _trace(top1, mass, final=np.zeros(N, int)), _freq(), "m", "l", "d")
