"""Version 2 of the claims whose v1 statistic an untrained network satisfies too.

On the default model, CSO-1, CSO-4 and GTR-2 (logit lens) replicate on the model's
untrained control as well (``claims/expectations.py``, EXPECTED_NOT_SPECIFIC): as defined
in v1 they measure the architecture (residual norms grow with depth in any pre-norm
stack), not what training taught. Their v2 asks the same question *relative to the
control*: the trained model's statistic against the untrained control's, on the same
prompts, with one bootstrap that resamples the shared prompts (or paragraphs) jointly.
v1 stays and is reported beside v2; neither is bent to pass.

Every function is pure: the model's and the control's per-prompt numbers in, a
``ClaimResult`` and a long-format table out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from functools import partial

from harness.claims import cso, gtr
from harness.claims.base import (
    ClaimRun,
    Evidence,
    CONTINUOUS,
    DECISIONS,
    Claim,
    ClaimResult,
    CurveSpec,
    leave_layers_out,
    register,
    snapshot_tolerances,
)
from harness.frequency import FrequencyTable
from harness.report import figures
from harness.stats import Estimate, bootstrap_column_means, estimate, percentile_interval, ratio_replicates
from harness.trace import LayerTrace

CONTROL_NOTE = (
    " The control is the model's untrained copy (same config, tokenizer and prompts; seeded random weights)."
)

# --------------------------------------------------------------------------- evidence
# Each runs on the trained model only (compares_with_control): ``run.control`` is the
# untrained control's session.


def cso1v2_evidence(run: ClaimRun) -> Evidence:
    """CSO-1 v2: the second-half / first-half ratio of relative contributions is below 0.8x
    the untrained control's on the same prompts (v1's ratio holds on the control too)."""
    model, control = run.session.depth, run.control.depth
    result, table = cso1v2_relative_to_control(
        model.contributions()["relative_layer"], control.contributions()["relative_layer"],
        run.session.name, run.control.name, model.problems.name,
    )
    fig = partial(figures.model_vs_control_curves, result, table, "mean", "relative contribution ||Δh_l|| / ||h_l||",
                  "second half contributes less than in the untrained control")
    return Evidence(result, table, fig, data=model.data_provenance("contributions"))


def cso4v2_evidence(run: ClaimRun) -> Evidence:
    """CSO-4 v2: the rise of the logit lens's top-5 overlap (second half minus first) is
    larger than on the untrained control, problem by problem (v1 holds on the control too)."""
    model, control = run.session.depth, run.control.depth
    trace = model.refinement_trace()
    result, table = cso4v2_refines_more_than_control(
        trace, control.refinement_trace(), run.session.name, run.control.name, "logit", model.problems.name
    )
    fig = partial(figures.model_vs_control_curves, result, table, "mean", "top-5 overlap of the logit lens with the final top-5",
                  "second half refines more than in the untrained control")
    return Evidence(result, table, fig, "logit", trace)


def gtr2v2_evidence(run: ClaimRun) -> Evidence:
    """GTR-2 v2: the model flips fewer of its early Top-10 guesses than its untrained
    control does on the same prefixes (v1's flip rate above 0.6 holds on the control too)."""
    session, control = run.session, run.control
    run.need_lens(lambda: control.lens(run.lens_name))
    trace = gtr.prefix_trace(session, session.lens(run.lens_name))
    result, table = gtr2v2_flips_fewer_than_control(
        trace, gtr.prefix_trace(control, control.lens(run.lens_name)), session.frequency, session.name,
        control.name, session.lens_label(run.lens_name), session.corpus.name,
    )
    fig = partial(figures.model_vs_control_curves, result, table, "flip_rate", "flip rate of Top-10 guesses (lens top-1 ≠ final)",
                  "early guesses flip less than in the untrained control")
    return Evidence(result, table, fig, run.lens_name, trace)


CSO_1_V2 = register(
    Claim(
        id="CSO-1v2",
        name="second half contributes less than untrained",
        evidence=cso1v2_evidence,
        version=2,
        paper=cso.PAPER,
        source="Fig. 2a; v2 of CSO-1 by this suite (v1: an untrained network replicates it)",
        statement="Training makes the second half of the layers add less to the residual stream than the same "
        "architecture does untrained.",
        statistic="CSO-1's ratio (mean relative contribution of second-half blocks / first-half blocks) on the model "
        "divided by the same ratio on its untrained control, on the same prompts (joint bootstrap over prompts); "
        "claim: below 0.8, the factor CSO-1 v1 asks of the raw ratio." + CONTROL_NOTE,
        threshold=0.8,
        direction="below",
        min_n=cso.CSO_1.min_n,
        parameters=cso.CSO_1.parameters,
        paper_value="no number: the paper has no untrained baseline (Llama-3.1-70B: the relative contribution "
        "drops by about half after the middle layer)",
        compares_with_control=True,
        curves=(CurveSpec("layer", "mean", ("measure", "model")),),
        tolerances=snapshot_tolerances(statistic=CONTINUOUS, curves=CONTINUOUS),
    )
)

CSO_4_V2 = register(
    Claim(
        id="CSO-4v2",
        name="second half refines more than untrained",
        evidence=cso4v2_evidence,
        version=2,
        paper=cso.PAPER,
        source="Fig. 4; v2 of CSO-4 by this suite (v1: an untrained network replicates it)",
        statement="The second half refines the output more than it does in the same architecture untrained: "
        "the rise of the logit lens's top-5 overlap with the final top-5 (second half minus first half) is "
        "larger in the trained model than in its untrained control.",
        statistic="per problem, CSO-4's rise (overlap rise over the second half minus over the first) on the model "
        "minus on its untrained control, same problems and positions (paired; bootstrap over problems)."
        + CONTROL_NOTE,
        threshold=0.0,
        direction="above",
        min_n=cso.CSO_4.min_n,
        parameters=cso.CSO_4.parameters,
        paper_value="no number: the paper has no untrained baseline",
        compares_with_control=True,
        curves=(CurveSpec("layer", "mean", ("measure", "model")),),
        tolerances=snapshot_tolerances(statistic=DECISIONS, curves=DECISIONS),
    )
)

GTR_2_V2 = register(
    Claim(
        id="GTR-2v2",
        name="early guesses flip less than untrained",
        evidence=gtr2v2_evidence,
        per_lens=True,
        version=2,
        paper=gtr.PAPER,
        source="Fig. 3; v2 of GTR-2 by this suite (v1: an untrained network replicates it)",
        statement="Early guesses are refined, not random: the trained model keeps more of its early Top-10 "
        "guesses (flips fewer of them) than its untrained control, whose early and late readings are unrelated.",
        statistic="flip rate of early (layers 1..floor(L/4)) Top-10 guesses on the model minus on its untrained "
        "control, same prefixes and buckets (joint bootstrap over paragraphs); n: prefixes with an early Top-10 "
        "guess, the smaller of the two." + CONTROL_NOTE,
        threshold=0.0,
        direction="below",
        min_n=gtr.GTR_2.min_n,
        parameters=gtr.GTR_2.parameters,
        paper_value="no number: the paper has no untrained baseline (Pythia-6.9B: 60-80% of early guesses flip)",
        compares_with_control=True,
        curves=(CurveSpec("layer", "flip_rate", ("measure", "model")),),
        tolerances=snapshot_tolerances(statistic=DECISIONS, curves=DECISIONS),
    )
)


def _check_same_prompts(model: np.ndarray, control: np.ndarray, what: str) -> None:
    if model.shape != control.shape:
        raise ValueError(
            f"{what}: the model's numbers have shape {model.shape}, the control's {control.shape}; a v2 claim needs "
            "both measured on the same prompts (run both with the same data and --max-examples)."
        )


def _replicate_estimate(value: float, replicates: np.ndarray, n: int, n_groups: int) -> Estimate:
    low, high = percentile_interval(replicates)
    return Estimate(float(value), low, high, int(n), int(n_groups))


def _curve_rows(values: dict[str, np.ndarray], measure: str) -> list[dict]:
    """Per-layer means with their intervals of [prompts, layers] arrays, one curve per model."""
    rows = []
    for who, v in values.items():
        means, boots = bootstrap_column_means(v)
        for layer in range(v.shape[1]):
            low, high = percentile_interval(boots[:, layer])
            rows.append({"measure": measure, "model": who, "layer": layer, "mean": means[layer],
                         "ci_low": low, "ci_high": high, "n_prompts": v.shape[0]})
    return rows


# --------------------------------------------------------------------------- CSO-1 v2


def halves_ratios(model: np.ndarray, control: np.ndarray, kept: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CSO-1's ratio (second-half / first-half mean relative contribution) of the model and
    of the control ([2]) and their bootstrap replicates ([n_boot, 2]); [prompts, L] each,
    the same prompts resampled for both."""
    first, second = cso.halves(model.shape[1])
    if kept is not None:
        first, second = np.intersect1d(first, kept), np.intersect1d(second, kept)
    num = np.stack([model[:, second].mean(1), control[:, second].mean(1)], axis=1)
    den = np.stack([model[:, first].mean(1), control[:, first].mean(1)], axis=1)
    return ratio_replicates(num, den)


def relative_halves_ratio(model: np.ndarray, control: np.ndarray, kept: list[int] | None = None) -> Estimate:
    """The model's CSO-1 ratio over the control's, with its joint-bootstrap interval."""
    ratio, boots = halves_ratios(model, control, kept)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _replicate_estimate(ratio[0] / ratio[1], boots[:, 0] / boots[:, 1], len(model), len(model))


def cso1v2_relative_to_control(
    model_relative: np.ndarray, control_relative: np.ndarray, model: str, control: str, dataset: str
) -> tuple[ClaimResult, pd.DataFrame]:
    """Whole-block relative contributions [prompts, L] of the model and of its control."""
    _check_same_prompts(model_relative, control_relative, "CSO-1v2")
    est = relative_halves_ratio(model_relative, control_relative)
    table = pd.DataFrame(_curve_rows({model: model_relative, control: control_relative}, "relative_contribution"))
    n_layers = model_relative.shape[1]
    ratios, _ = halves_ratios(model_relative, control_relative)
    details = {
        "model_ratio": float(ratios[0]),
        "control_ratio": float(ratios[1]),
        "control": control,
        "n_layers": n_layers,
    }
    robust = leave_layers_out(
        CSO_1_V2, range(n_layers), lambda kept: relative_halves_ratio(model_relative, control_relative, kept), est
    )
    return ClaimResult(CSO_1_V2, model, "none", dataset, est, details, robustness=robust), table


# --------------------------------------------------------------------------- CSO-4 v2


def cso4v2_refines_more_than_control(
    model_trace: LayerTrace, control_trace: LayerTrace, model: str, control: str, lens: str, dataset: str
) -> tuple[ClaimResult, pd.DataFrame]:
    """The logit-lens traces of the same problems (every position) on the model and its control."""
    model_prompts, model_overlap = cso.overlap_per_prompt(model_trace)
    control_prompts, control_overlap = cso.overlap_per_prompt(control_trace)
    if not np.array_equal(model_prompts, control_prompts):
        raise ValueError("CSO-4v2: the model's and the control's traces read different problems; trace both from the same request.")
    _check_same_prompts(model_overlap, control_overlap, "CSO-4v2")
    n_layers = model_trace.n_layers
    model_rise, control_rise = cso.overlap_rise(model_overlap, n_layers), cso.overlap_rise(control_overlap, n_layers)
    est = estimate(model_rise - control_rise)
    table = pd.DataFrame(_curve_rows({model: model_overlap, control: control_overlap}, "top5_overlap"))
    details = {
        "model_rise": float(model_rise.mean()),
        "control_rise": float(control_rise.mean()),
        "control": control,
        "n_layers": n_layers,
    }
    return ClaimResult(CSO_4_V2, model, lens, dataset, est, details), table


# --------------------------------------------------------------------------- GTR-2 v2


def _early_top10_flips(trace: LayerTrace, freq: FrequencyTable) -> tuple[np.ndarray, np.ndarray]:
    """Per prefix and layer: early Top-10 guesses that flip, and early Top-10 guesses ([L+1, N] each)."""
    top10 = freq.bucket_of_id[trace.top1] == 0
    flip = trace.top1 != trace.final_id[None, :]
    return flip & top10, top10


def flip_rate_difference(
    model: tuple[np.ndarray, np.ndarray], control: tuple[np.ndarray, np.ndarray], groups: np.ndarray, kept: list[int]
) -> Estimate:
    """Flip rate of the model's early Top-10 guesses minus the control's, over layers ``kept``;
    prefixes grouped (e.g. by paragraph) and resampled jointly for both."""
    (m_flips, m_top10), (c_flips, c_top10) = model, control
    num = np.stack([m_flips[kept].sum(0), c_flips[kept].sum(0)], axis=1)
    den = np.stack([m_top10[kept].sum(0), c_top10[kept].sum(0)], axis=1)
    rate, boots = ratio_replicates(num, den, groups)
    n = int(min((den[:, 0] > 0).sum(), (den[:, 1] > 0).sum()))
    used = (den > 0).any(axis=1)
    return _replicate_estimate(rate[0] - rate[1], boots[:, 0] - boots[:, 1], n, len(np.unique(groups[used])))


def gtr2v2_flips_fewer_than_control(
    model_trace: LayerTrace, control_trace: LayerTrace, freq: FrequencyTable, model: str, control: str,
    lens: str, dataset: str,
) -> tuple[ClaimResult, pd.DataFrame]:
    """The lens traces of the same prefixes on the model and its control (frequency
    buckets of the corpus: they belong to the data, not the weights)."""
    if model_trace.n_rows != control_trace.n_rows or not np.array_equal(model_trace.example, control_trace.example):
        raise ValueError("GTR-2v2: the model's and the control's traces read different prefixes; trace both from the same request.")
    early = gtr.early_layers(model_trace.n_layers)
    m, c = _early_top10_flips(model_trace, freq), _early_top10_flips(control_trace, freq)
    statistic: Callable[[list[int]], Estimate] = lambda kept: flip_rate_difference(m, c, model_trace.example, kept)
    est = statistic(list(early))
    rows = []
    for who, (flips, top10) in ((model, m), (control, c)):
        rate, boots = ratio_replicates(flips.T, top10.T, model_trace.example)
        for layer in range(model_trace.n_layers + 1):
            low, high = percentile_interval(boots[:, layer])
            rows.append({"measure": "top10_flip_rate", "model": who, "layer": layer, "flip_rate": rate[layer],
                         "ci_low": low, "ci_high": high, "n_guesses": int(top10[layer].sum())})
    details = {
        "early_layers": [int(early[0]), int(early[-1])],
        "model_flip_rate": float(m[0][early].sum() / max(m[1][early].sum(), 1)),
        "control_flip_rate": float(c[0][early].sum() / max(c[1][early].sum(), 1)),
        "model_early_top10_guesses": int(m[1][early].sum()),
        "control_early_top10_guesses": int(c[1][early].sum()),
        "control": control,
        "frequency": freq.provenance,
    }
    robust = leave_layers_out(GTR_2_V2, early, statistic, est)
    return ClaimResult(GTR_2_V2, model, lens, dataset, est, details, robustness=robust), pd.DataFrame(rows)
