"""Do Language Models Use Their Depth Efficiently? (Csordás et al. 2025): each test checks
one claim on each --model. GSM8K-format problems (embedded, or ``--data-dir``) and the
paper's digit sum "5 + 7 + 5 + 3 + 1 + 7 = 28" (plus seeded sums like it)."""

from __future__ import annotations

from functools import partial

import pytest

from harness.claims import cso, versus_control
from harness.report import figures, figures_depth

pytestmark = pytest.mark.claim


def test_cso1_second_half_contributes_less(model_session, publish):
    """CSO-1: blocks of the second half add at most 0.8x what blocks of the first half add,
    relative to the residual (the whole layer; attention and MLP reported beside it).

    Control: the same prompts. In any pre-norm stack the residual norm grows with depth,
    so late blocks' relative contributions fall in an untrained network too."""
    depth = model_session.depth
    c = depth.contributions()
    relative = {p: c[f"relative_{p}"] for p in cso.PARTS}
    cosine = {p: c[f"cosine_{p}"] for p in cso.PARTS}
    result, table = cso.cso1_second_half_contributes_less(relative, cosine, model_session.name, depth.problems.name)
    fig = partial(figures_depth.contribution_bars, result, table, "relative_contribution")
    publish(result, table, fig, data=depth.data_provenance("contributions"))


def test_cso2_cosine_to_the_residual(model_session, publish):
    """CSO-2: the cosine of each contribution with its residual, per layer (a curve the
    paper states no threshold for: reported, not judged). Control: the same prompts."""
    depth = model_session.depth
    c = depth.contributions()
    cosine = {p: c[f"cosine_{p}"] for p in cso.PARTS}
    result, table = cso.cso2_cosine_curve(cosine, model_session.name, depth.problems.name)
    publish(result, table, partial(figures_depth.contribution_bars, result, table, "cosine"), data=depth.data_provenance("contributions"))


def test_cso3_second_half_barely_affects_future_computation(model_session, publish):
    """CSO-3: skipping a second-half layer before position t changes later layers' work
    from t on at most half as much as skipping a first-half layer, and skipping it on all
    tokens still moves the output (L2 change > 0.1).

    Control: the same problems and the same sampled positions t (seeded by prompt index)."""
    depth = model_session.depth
    m = depth.skips()
    result, table = cso.cso3_skip_effects(
        m["future_map"], m["future_output"], m["all_map"], m["all_output"], model_session.name, depth.problems.name
    )
    publish(result, table, partial(figures_depth.skip_effect_figure, result, table), data=depth.data_provenance("skips"))


def test_cso4_second_half_refines_the_output(model_session, publish):
    """CSO-4: the logit lens's top-5 overlap with the final top-5 rises more over the second
    half than over the first; low (< 0.5) in the first half, high (> 0.5) at the end.

    Control: the same problems; the overlap is with the control's own final top-5."""
    depth = model_session.depth
    trace = depth.refinement_trace()
    result, table = cso.cso4_second_half_refines(trace, model_session.name, "logit", depth.problems.name)
    publish(result, table, partial(figures_depth.refinement_figure, result, table), trace)


def test_cso5_no_compositional_tiling(model_session, publish):
    """CSO-5: in the residual-erasure map every question token stops mattering at about the
    same layer: Spearman(position, last mattering layer) < 0.5.

    Control: the same digit sums, erased to the control's own mean residual over the same
    GSM8K prompts."""
    depth = model_session.depth
    prompts = [p for _, p in depth.map_prompts]
    effects = depth.unpad(depth.erasure()["effect"])
    result, table = cso.cso5_no_compositional_tiling(prompts, effects, model_session.name, "digit-sums")
    publish(result, table, partial(figures_depth.erasure_map_figure, result, table), data=depth.data_provenance("erasure"))


def test_cso6_integrated_gradients_agree(model_session, publish):
    """CSO-6: the |integrated-gradients| map correlates with the erasure map (Spearman
    > 0.5 over cells) and shows no staircase either.

    Control: the same digit sums, integration baseline and steps."""
    depth = model_session.depth
    prompts = [p for _, p in depth.map_prompts]
    g = depth.gradients()
    attributions = depth.unpad(g["attribution"])
    effects = depth.unpad(depth.erasure()["effect"])
    result, table = cso.cso6_gradients_agree(
        prompts, attributions, effects, g["completeness_error"], model_session.name, "digit-sums"
    )
    _, erasure_table = cso.cso5_no_compositional_tiling(prompts, effects, model_session.name, "digit-sums")
    fig = partial(figures_depth.gradient_map_figure, result, table, erasure_table)
    publish(result, table, fig, data=depth.data_provenance("gradients"))


# --------------------------------------------------------------------------- v2: against the untrained control


@pytest.mark.versus_control
def test_cso1v2_second_half_contributes_less_than_untrained(model_session, control_session, publish):
    """CSO-1 v2: the second-half / first-half ratio of relative contributions is below 0.8x
    the untrained control's on the same prompts (v1's ratio holds on the control too)."""
    model, control = model_session.depth, control_session.depth
    result, table = versus_control.cso1v2_relative_to_control(
        model.contributions()["relative_layer"], control.contributions()["relative_layer"],
        model_session.name, control_session.name, model.problems.name,
    )
    fig = partial(figures.model_vs_control_curves, result, table, "mean", "relative contribution ||Δh_l|| / ||h_l||",
                  "second half contributes less than in the untrained control")
    publish(result, table, fig, data=model.data_provenance("contributions"))


@pytest.mark.versus_control
def test_cso4v2_second_half_refines_more_than_untrained(model_session, control_session, publish):
    """CSO-4 v2: the rise of the logit lens's top-5 overlap (second half minus first) is
    larger than on the untrained control, problem by problem (v1 holds on the control too)."""
    model, control = model_session.depth, control_session.depth
    trace = model.refinement_trace()
    result, table = versus_control.cso4v2_refines_more_than_control(
        trace, control.refinement_trace(), model_session.name, control_session.name, "logit", model.problems.name
    )
    fig = partial(figures.model_vs_control_curves, result, table, "mean", "top-5 overlap of the logit lens with the final top-5",
                  "second half refines more than in the untrained control")
    publish(result, table, fig, trace)
