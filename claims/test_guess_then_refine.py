"""Guess-then-Refine (Gupta et al. 2025): each test checks one claim on each --model."""

from __future__ import annotations

import pytest

from harness.claims import gtr
from harness.report import figures

pytestmark = pytest.mark.claim


def test_gtr1_early_layers_guess_frequent_tokens(model_session, lens_name, publish):
    """GTR-1: in the first quarter of depth the lens top-1 is a Top-10 frequency token
    far more often than the final prediction is (gap > 20 points)."""
    trace = model_session.prefix_trace(lens_name)
    result, table = gtr.gtr1_early_frequent_guesses(
        trace, model_session.frequency, model_session.name, lens_name, model_session.corpus.name
    )
    publish(result, table, figures.stacked_bucket_bars(result, table), trace)


def test_gtr2_early_guesses_get_refined(model_session, lens_name, publish):
    """GTR-2: over 60% of early Top-10 guesses differ from the final prediction, and
    flip rates fall with depth (same trace as GTR-1: no second forward pass)."""
    trace = model_session.prefix_trace(lens_name)
    result, table = gtr.gtr2_early_guesses_get_refined(
        trace, model_session.frequency, model_session.name, lens_name, model_session.corpus.name
    )
    publish(result, table, figures.flip_rate_bars(result, table), trace)
