"""Guess-then-Refine claims that compare lenses: GTR-6 (logit vs tuned) and GTR-7 (tuned vs
a tuned lens trained with frequent targets down-weighted). Both read the GTR-1 prefix
trace of each lens: the same prompts, so rows pair up one to one."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from functools import partial


from harness.claims.base import (
    ClaimRun,
    Evidence,
    leave_layers_out,
    CONTINUOUS,
    DECISIONS,
    Claim,
    ClaimResult,
    CurveSpec,
    SubCheck,
    register,
    snapshot_tolerances,
)
from harness.claims.gtr import PAPER, PREFIX_PARAMETERS, early_layers, prefix_trace
from harness.frequency import FrequencyTable
from harness.lens_training import DOWNWEIGHT_FREQUENT
from harness.report import figures_lens
from harness.stats import Estimate, bootstrap_mean, estimate
from harness.trace import LayerTrace

# GTR-7: "about as often": the down-weighted lens's early Top-10 share may fall short of
# the standard lens's by less than this (absolute share, i.e. 10 percentage points).
GTR7_TOLERANCE = 0.10

# --------------------------------------------------------------------------- evidence


def gtr6_evidence(run: ClaimRun) -> Evidence:
    """GTR-6: in the early layers the tuned lens puts more probability on Top-10 frequency
    tokens than the logit lens (same prefixes as GTR-1).

    Control: the same prefixes, with a tuned lens fitted to the control by the same
    recipe on the same corpus."""
    session = run.session
    logit, tuned = session.lens("logit"), run.need_lens(lambda: session.lens("tuned"))
    logit_trace, tuned_trace = prefix_trace(session, logit), prefix_trace(session, tuned)
    label = f"logit-vs-{session.lens_label('tuned')}"
    result, table = gtr6_logit_lens_underrates_frequent(
        logit_trace, tuned_trace, session.frequency, session.name, label, session.corpus.name
    )
    return Evidence(result, table, partial(figures_lens.top10_mass_curves, result, table), None, logit_trace, lenses=[logit, tuned])


def gtr7_evidence(run: ClaimRun) -> Evidence:
    """GTR-7: a tuned lens trained with frequent targets down-weighted still ranks Top-10
    tokens first in the early layers about as often as the standard tuned lens (both
    trained here with the same recipe and data).

    Control: the same prefixes, with both tuned lenses fitted to the control by the same
    recipe on the same corpus."""
    return _two_tuned_lenses(gtr7_frequent_guesses_not_probe_artefact, run)


def gtr7v2_evidence(run: ClaimRun) -> Evidence:
    """GTR-7 v2: v1, plus the sub-check v1 lacks: under the down-weighted lens early top-1
    tokens are Top-10 tokens more often than final predictions are (an untrained network,
    with no frequent early guesses at all, passes v1 trivially).

    Control: as GTR-7."""
    return _two_tuned_lenses(gtr7v2_frequent_guesses_exist_and_survive, run)


def _two_tuned_lenses(statistic, run: ClaimRun) -> Evidence:
    """GTR-7 (v1 or v2): both tuned lenses fitted here, read on the GTR-1 prefixes."""
    session = run.session
    standard = run.need_lens(lambda: session.trained_lens("standard"))
    weighted = run.need_lens(lambda: session.trained_lens("downweight-frequent"))
    standard_trace, weighted_trace = prefix_trace(session, standard), prefix_trace(session, weighted)
    label = session.lens_label("tuned") + "-vs-downweighted"
    result, table = statistic(standard_trace, weighted_trace, session.frequency, session.name, label, session.corpus.name)
    fig = partial(figures_lens.top10_share_curves, result, table)
    return Evidence(result, table, fig, None, standard_trace, lenses=[standard, weighted])



GTR_6 = register(
    Claim(
        id="GTR-6",
        name="logit lens underrates frequent tokens vs tuned",
        evidence=gtr6_evidence,
        version=1,
        paper=PAPER,
        source="summary of key results (Pythia-6.9B)",
        statement="The logit lens underrates frequent tokens early: in the first quarter of depth the tuned "
        "lens puts more probability on Top-10 frequency tokens than the logit lens does.",
        statistic="mean over layers 1..floor(L/4) of the tuned lens's probability mass on Top-10 tokens minus "
        "the logit lens's, per prefix (same prompts as GTR-1; 95% bootstrap over paragraphs)",
        threshold=0.0,
        direction="above",
        min_n=20,  # prefixes
        paper_value="Pythia-6.9B: the logit lens underestimates the probability mass of high-frequency tokens "
        "in early layers (no number given)",
        # Probability masses: continuous numbers (measured float32 noise up to 1.2e-6; CONTINUOUS in base.py).
        parameters=PREFIX_PARAMETERS,
        curves=(CurveSpec("layer", "top10_mass", ("lens",)),),
        tolerances=snapshot_tolerances(statistic=CONTINUOUS, curves=CONTINUOUS),
    )
)

GTR_7 = register(
    Claim(
        id="GTR-7",
        name="frequent guesses survive downweighted tuned lens",
        evidence=gtr7_evidence,
        version=1,
        paper=PAPER,
        source="summary of key results (Pythia-6.9B)",
        statement="Frequent early guesses are not a probe artefact: a tuned lens trained with frequent targets "
        "down-weighted still ranks Top-10 tokens first in the early layers about as often as the standard one.",
        statistic="early-layer (1..floor(L/4)) Top-10 share of lens top-1 tokens under the down-weighted lens "
        f"minus under the standard lens, per prefix; claim: above -{GTR7_TOLERANCE} (within "
        f"{GTR7_TOLERANCE * 100:.0f} points or higher). Loss weights by the frequency bucket of the target "
        f"(the final prediction): {DOWNWEIGHT_FREQUENT}",
        threshold=-GTR7_TOLERANCE,
        direction="above",
        min_n=20,  # prefixes
        paper_value="Pythia-6.9B: reducing the update frequency of high-frequency tokens such as 'the' does not "
        "diminish their prominence in early-layer predictions (no number given)",
        # Shares of top-1 decisions: no measured run-to-run variation (as GTR-1).
        parameters={**PREFIX_PARAMETERS, "loss_weights": DOWNWEIGHT_FREQUENT},
        curves=(CurveSpec("layer", "top10_share", ("lens",)),),
        tolerances=snapshot_tolerances(statistic=DECISIONS, curves=DECISIONS),
    )
)


GTR_7_V2 = register(
    Claim(
        id="GTR-7v2",
        name="frequent guesses exist and survive downweighting",
        evidence=gtr7v2_evidence,
        version=2,
        paper=PAPER,
        source="summary of key results (Pythia-6.9B); v2 of GTR-7 by this suite (v1 holds trivially when no "
        "early guess is frequent, as on an untrained network)",
        statement="Frequent early guesses exist and are not a probe artefact: under a tuned lens trained with "
        "frequent targets down-weighted, early top-1 tokens are still Top-10 tokens more often than final "
        "predictions are, and about as often as under the standard tuned lens.",
        statistic=GTR_7.statistic + "; sub-check (new in v2): the down-weighted lens's early Top-10 share minus "
        "the Top-10 share of the final predictions, per prefix, above 0",
        threshold=-GTR7_TOLERANCE,
        direction="above",
        min_n=GTR_7.min_n,
        paper_value=GTR_7.paper_value,
        parameters=GTR_7.parameters,
        curves=GTR_7.curves,
        tolerances=GTR_7.tolerances,
    )
)


def _check_paired(a: LayerTrace, b: LayerTrace) -> None:
    if a.n_rows != b.n_rows or not np.array_equal(a.example, b.example) or not np.array_equal(a.final_id, b.final_id):
        raise ValueError("The two lens traces do not read the same prompts; build both from the same prefix request.")


def gtr6_logit_lens_underrates_frequent(
    logit: LayerTrace, tuned: LayerTrace, freq: FrequencyTable, model: str, lens: str, dataset: str
) -> tuple[ClaimResult, pd.DataFrame]:
    """GTR-6 from the logit and tuned traces of the same prefixes: the per-prefix difference
    of Top-10 mass in the early layers, and per-layer mass curves of both lenses."""
    _check_paired(logit, tuned)
    top10 = logit.set_index("Top-10")
    mass = {"logit": logit.set_mass[..., top10], "tuned": tuned.set_mass[..., top10]}  # [L+1, N]
    early = early_layers(logit.n_layers)

    def difference(kept: list[int]) -> Estimate:
        return estimate(mass["tuned"][kept].mean(0) - mass["logit"][kept].mean(0), groups=logit.example)

    est = difference(list(early))
    rows = []
    for name, m in [*mass.items(), ("tuned minus logit", mass["tuned"] - mass["logit"])]:
        mean, low, high = bootstrap_mean(m.T, groups=logit.example)
        for layer in range(logit.n_layers + 1):
            rows.append({"claim": GTR_6.id, "model": model, "dataset": dataset, "lens": name, "layer": layer,
                         "top10_mass": mean[layer], "ci_low": low[layer], "ci_high": high[layer], "n": logit.n_rows})
    details = {
        "early_layers": [int(early[0]), int(early[-1])],
        "early_top10_mass_logit": float(mass["logit"][early].mean()),
        "early_top10_mass_tuned": float(mass["tuned"][early].mean()),
        "final_top10_mass": float(mass["logit"][-1].mean()),
        "frequency": freq.provenance,
    }
    robust = leave_layers_out(GTR_6, early, difference, est)
    return ClaimResult(GTR_6, model, lens, dataset, est, details, robustness=robust), pd.DataFrame(rows)


def gtr7_frequent_guesses_not_probe_artefact(
    standard: LayerTrace, weighted: LayerTrace, freq: FrequencyTable, model: str, lens: str, dataset: str
) -> tuple[ClaimResult, pd.DataFrame]:
    """GTR-7 from the standard and down-weighted tuned lenses' traces of the same prefixes:
    per-prefix difference of the early Top-10 share of top-1, and per-layer share curves."""
    _check_paired(standard, weighted)
    is_top10 = {
        "standard tuned": freq.bucket_of_id[standard.top1] == 0,
        "down-weighted tuned": freq.bucket_of_id[weighted.top1] == 0,
    }  # [L+1, N]
    early = early_layers(standard.n_layers)
    share = {name: v[early].mean(0) for name, v in is_top10.items()}

    def difference(kept: list[int]) -> Estimate:
        shares = {name: v[kept].mean(0) for name, v in is_top10.items()}
        return estimate(shares["down-weighted tuned"] - shares["standard tuned"], groups=standard.example)

    est = difference(list(early))
    final_top10 = freq.bucket_of_id[standard.final_id] == 0
    rows = []
    for name, v in is_top10.items():
        mean, low, high = bootstrap_mean(v.T.astype(float), groups=standard.example)
        for layer in range(standard.n_layers + 1):
            rows.append({"claim": GTR_7.id, "model": model, "dataset": dataset, "lens": name, "layer": layer,
                         "top10_share": mean[layer], "ci_low": low[layer], "ci_high": high[layer], "n": standard.n_rows})
    details = {
        "early_layers": [int(early[0]), int(early[-1])],
        "early_top10_share_standard": float(share["standard tuned"].mean()),
        "early_top10_share_downweighted": float(share["down-weighted tuned"].mean()),
        "final_top10_share": float(final_top10.mean()),
        "tolerance": GTR7_TOLERANCE,
        "loss_weights": DOWNWEIGHT_FREQUENT,
        "frequency": freq.provenance,
    }
    robust = leave_layers_out(GTR_7, early, difference, est)
    return ClaimResult(GTR_7, model, lens, dataset, est, details, robustness=robust), pd.DataFrame(rows)


def gtr7v2_frequent_guesses_exist_and_survive(
    standard: LayerTrace, weighted: LayerTrace, freq: FrequencyTable, model: str, lens: str, dataset: str
) -> tuple[ClaimResult, pd.DataFrame]:
    """GTR-7 (v1's statistic) with the sub-check v1 lacks: the down-weighted lens's early
    guesses are frequent tokens more often than the final predictions are."""
    v1, table = gtr7_frequent_guesses_not_probe_artefact(standard, weighted, freq, model, lens, dataset)
    early = early_layers(standard.n_layers)
    weighted_share = (freq.bucket_of_id[weighted.top1[early]] == 0).mean(0)
    final_top10 = freq.bucket_of_id[standard.final_id] == 0
    check = SubCheck(
        "early_guesses_frequent",
        f"early (layers {early[0]}-{early[-1]}) Top-10 share of the down-weighted lens's top-1 minus the final "
        "predictions' Top-10 share, per prefix, > 0",
        estimate(weighted_share - final_top10, groups=standard.example),
        0.0,
        "above",
    )
    # the same statistic, threshold and minimum n as v1: its leave-one-layer-out judgments stand
    result = replace(v1, claim=GTR_7_V2, subchecks=(check,))
    return result, table.assign(claim=GTR_7_V2.id)
