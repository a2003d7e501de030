"""Guess-then-Refine (Gupta et al. 2025): each test checks one claim on each --model."""

from __future__ import annotations

from functools import partial

import pytest

from harness.claims import gtr, gtr_facts, gtr_lens, gtr_pos, versus_control
from harness.report import figures, figures_lens
from harness.report.figures_rank import earliest_layer_curves

pytestmark = pytest.mark.claim


def test_gtr1_early_layers_guess_frequent_tokens(model_session, lens_name, publish):
    """GTR-1: in the first quarter of depth the lens top-1 is a Top-10 frequency token
    far more often than the final prediction is (gap > 20 points).

    Control: the same prefixes, and the same frequency buckets (counted over the same
    corpus with the same tokenizer: frequency belongs to the data, not the weights)."""
    trace = model_session.prefix_trace(lens_name)
    result, table = gtr.gtr1_early_frequent_guesses(
        trace, model_session.frequency, model_session.name, model_session.lens_label(lens_name),
        model_session.corpus.name,
    )
    publish(result, table, partial(figures.stacked_bucket_bars, result, table), trace)


def test_gtr2_early_guesses_get_refined(model_session, lens_name, publish):
    """GTR-2: over 60% of early Top-10 guesses differ from the final prediction, and
    flip rates fall with depth (same trace as GTR-1: no second forward pass).

    Control: the same prefixes and buckets. An early guess of a network whose late layers
    point elsewhere flips whatever it learned, so read this one beside its control."""
    trace = model_session.prefix_trace(lens_name)
    result, table = gtr.gtr2_early_guesses_get_refined(
        trace, model_session.frequency, model_session.name, model_session.lens_label(lens_name),
        model_session.corpus.name,
    )
    publish(result, table, partial(figures.flip_rate_bars, result, table), trace)


def test_gtr3_function_words_settle_early(model_session, lens_name, publish):
    """GTR-3: at k = 10 and k = 100 the mean earliest layer of DET and of ADP lies below
    that of NOUN, VERB and ADJ (correct predictions only; spaCy tags).

    Control: the same words and tags (spaCy tags the text, not the model); only the
    control's own correct predictions are kept, so an untrained model keeps few."""
    trace, examples = model_session.pos_trace(lens_name)
    result, table = gtr_pos.gtr3_function_words_settle_early(
        trace, examples, model_session.name, model_session.lens_label(lens_name), model_session.corpus.name,
        tagger=model_session.pos_tags.provenance,
    )
    publish(result, table, partial(earliest_layer_curves, result, table, "tag", what="function words settle early"), trace)


def test_gtr4_first_fact_token_needs_most_depth(model_session, lens_name, publish):
    """GTR-4: for correctly recalled 2- and 3-token answers (teacher-forced, paired facts),
    answer token 1 reaches rank <= k later than every later token, at k = 1 and k = 10.

    Control: the same facts; only facts the control recalls correctly are kept, so an
    untrained model is expected to be inconclusive for too little data."""
    rows = model_session.fact_rows
    trace = model_session.fact_trace(lens_name)
    result, table = gtr_facts.gtr4_first_fact_token_deepest(trace, rows, model_session.name, model_session.lens_label(lens_name))
    fig = partial(
        earliest_layer_curves,
        result, table[table.set == "paired"], ["answer_length", "position"],
        colors=gtr_facts.FIGURE_COLORS, what="the first answer token needs the most depth",
    )
    publish(result, table, fig, trace)


def test_gtr5_options_shortlisted_by_mid_depth_and_chosen_late(model_session, lens_name, publish):
    """GTR-5: the option set enters the lens top-10 in the first half of the layers, and
    the choice among the options settles more than a tenth of the depth later.

    Control: the same few-shot prompts and options."""
    trace = model_session.choice_trace(lens_name)
    result, table = gtr.gtr5_shortlist_then_decide(
        trace, model_session.choice_rows, model_session.name, model_session.lens_label(lens_name)
    )
    publish(result, table, partial(figures.choice_curves, result, table), trace)


def test_gtr6_logit_lens_underrates_frequent_tokens_vs_tuned(model_session, need_lens, publish):
    """GTR-6: in the early layers the tuned lens puts more probability on Top-10 frequency
    tokens than the logit lens (same prefixes as GTR-1).

    Control: the same prefixes, with a tuned lens fitted to the control by the same
    recipe on the same corpus."""
    logit, tuned = model_session.lens("logit"), need_lens(lambda: model_session.lens("tuned"))
    logit_trace, tuned_trace = model_session.prefix_trace_for(logit), model_session.prefix_trace_for(tuned)
    label = f"logit-vs-{model_session.lens_label('tuned')}"
    result, table = gtr_lens.gtr6_logit_lens_underrates_frequent(
        logit_trace, tuned_trace, model_session.frequency, model_session.name, label, model_session.corpus.name
    )
    publish(result, table, partial(figures_lens.top10_mass_curves, result, table), logit_trace, lenses=[logit, tuned])


def test_gtr7_frequent_guesses_survive_downweighted_tuned_lens(model_session, need_lens, publish):
    """GTR-7: a tuned lens trained with frequent targets down-weighted still ranks Top-10
    tokens first in the early layers about as often as the standard tuned lens (both
    trained here with the same recipe and data).

    Control: the same prefixes, with both tuned lenses fitted to the control by the same
    recipe on the same corpus."""
    _publish_gtr7(gtr_lens.gtr7_frequent_guesses_not_probe_artefact, model_session, need_lens, publish)


def _publish_gtr7(statistic, model_session, need_lens, publish) -> None:
    """GTR-7 (v1 or v2): both tuned lenses fitted here, read on the GTR-1 prefixes."""
    standard = need_lens(lambda: model_session.trained_lens("standard"))
    weighted = need_lens(lambda: model_session.trained_lens("downweight-frequent"))
    standard_trace, weighted_trace = model_session.prefix_trace_for(standard), model_session.prefix_trace_for(weighted)
    label = model_session.lens_label("tuned") + "-vs-downweighted"
    result, table = statistic(
        standard_trace, weighted_trace, model_session.frequency, model_session.name, label, model_session.corpus.name
    )
    publish(result, table, partial(figures_lens.top10_share_curves, result, table), standard_trace, lenses=[standard, weighted])


# --------------------------------------------------------------------------- v2


def test_gtr7v2_frequent_guesses_exist_and_survive_downweighting(model_session, need_lens, publish):
    """GTR-7 v2: v1, plus the sub-check v1 lacks: under the down-weighted lens early top-1
    tokens are Top-10 tokens more often than final predictions are (an untrained network,
    with no frequent early guesses at all, passes v1 trivially).

    Control: as GTR-7."""
    _publish_gtr7(gtr_lens.gtr7v2_frequent_guesses_exist_and_survive, model_session, need_lens, publish)


@pytest.mark.versus_control
def test_gtr2v2_early_guesses_flip_less_than_untrained(model_session, control_session, lens_name, need_lens, publish):
    """GTR-2 v2: the model flips fewer of its early Top-10 guesses than its untrained
    control does on the same prefixes (v1's flip rate above 0.6 holds on the control too)."""
    need_lens(lambda: control_session.lens(lens_name))
    trace = model_session.prefix_trace(lens_name)
    result, table = versus_control.gtr2v2_flips_fewer_than_control(
        trace, control_session.prefix_trace(lens_name), model_session.frequency, model_session.name,
        control_session.name, model_session.lens_label(lens_name), model_session.corpus.name,
    )
    fig = partial(figures.model_vs_control_curves, result, table, "flip_rate", "flip rate of Top-10 guesses (lens top-1 ≠ final)",
                  "early guesses flip less than in the untrained control")
    publish(result, table, fig, trace)
