"""Guess-then-Refine claims (Gupta et al. 2025, "How Do LLMs Use Their Depth?").

Definitions follow ``../shared/docs/claims.md``; each claim's docstring-level choices are
written into its :class:`Claim` and stay stable (a change bumps the claim's version).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from functools import partial


from harness.claims.base import (
    ClaimRun,
    Evidence,
    PaperComparison,
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
from harness.data.choices import ChoiceTask
from harness.data.prose import Corpus
from harness.data.tokens import (
    TokenBoundaryError,
    continuation_ids,
    starts_with_special,
    truncate_left,
)
from harness.frequency import BUCKET_EDGES, BUCKETS, FrequencyTable
from harness.metrics import settled_layer
from harness.report import figures
from harness.shared_pass import PROSE_REQUESTS
from harness.stats import Estimate, bootstrap_mean, bootstrap_ratio, estimate, ratio_estimate
from harness.trace import TARGET_RANKS, LayerTrace, ReductionSpec, TraceRequest

PAPER = "Gupta, Yeung, Anumanchipalli, Ivanova 2025, How Do LLMs Use Their Depth? (arXiv 2510.18871)"

# GTR-5: an option is "shortlisted" when it is among the lens's top SHORTLIST_K tokens of
# the full vocabulary; "clearly later" means more than DECISION_GAP of the depth later.
SHORTLIST_K = 10
DECISION_GAP = 0.10
CHOICE_MAX_TOKENS = 1024  # longer prompts are truncated from the left (question and "Answer:" stay)
CHOICE_REDUCTIONS = TARGET_RANKS

# Prefix sampling (GTR-1/2/3/6/7): fixed, so the same prompts feed every claim that reads them.
PREFIX_CUTS_PER_PARAGRAPH = 3
PREFIX_MAX_TOKENS = 128
PREFIX_MIN_CONTEXT = 8
PREFIX_SEED = 0

# What every claim read from the prefix trace depends on: the prefixes and the frequency buckets.
PREFIX_PARAMETERS = {
    "prefix_cuts_per_paragraph": PREFIX_CUTS_PER_PARAGRAPH, "prefix_max_tokens": PREFIX_MAX_TOKENS,
    "prefix_min_context": PREFIX_MIN_CONTEXT, "prefix_seed": PREFIX_SEED, "frequency_buckets": BUCKET_EDGES,
}

# --------------------------------------------------------------------------- evidence
# How each claim is checked on one model (Claim.evidence; claims/test_claims.py runs it).


def gtr1_evidence(run: ClaimRun) -> Evidence:
    """GTR-1: in the first quarter of depth the lens top-1 is a Top-10 frequency token
    far more often than the final prediction is (gap > 20 points).

    Control: the same prefixes, and the same frequency buckets (counted over the same
    corpus with the same tokenizer: frequency belongs to the data, not the weights)."""
    return _on_prefixes(run, gtr1_early_frequent_guesses, figures.stacked_bucket_bars)


def gtr2_evidence(run: ClaimRun) -> Evidence:
    """GTR-2: over 60% of early Top-10 guesses differ from the final prediction, and
    flip rates fall with depth (same trace as GTR-1: no second forward pass).

    Control: the same prefixes and buckets. An early guess of a network whose late layers
    point elsewhere flips whatever it learned, so read this one beside its control."""
    return _on_prefixes(run, gtr2_early_guesses_get_refined, figures.flip_rate_bars)


def _on_prefixes(run: ClaimRun, statistic, figure) -> Evidence:
    """A claim read from the prose prefixes' trace through ``run``'s lens (one trace for both)."""
    session = run.session
    trace = prefix_trace(session, session.lens(run.lens_name))
    result, table = statistic(trace, session.frequency, session.name, session.lens_label(run.lens_name), session.corpus.name)
    return Evidence(result, table, partial(figure, result, table), run.lens_name, trace)


def gtr5_evidence(run: ClaimRun) -> Evidence:
    """GTR-5: the option set enters the lens top-10 in the first half of the layers, and
    the choice among the options settles more than a tenth of the depth later.

    Control: the same few-shot prompts and options."""
    session = run.session
    rows = choice_rows(session)
    trace = session.trace(rows.request, session.lens(run.lens_name), CHOICE_REDUCTIONS)
    result, table = gtr5_shortlist_then_decide(trace, rows, session.name, session.lens_label(run.lens_name))
    return Evidence(result, table, partial(figures.choice_curves, result, table), run.lens_name, trace)



GTR_1 = register(
    Claim(
        id="GTR-1",
        name="early layers guess frequent tokens",
        evidence=gtr1_evidence,
        per_lens=True,
        version=1,
        paper=PAPER,
        source="Fig. 2",
        statement="Early layers guess frequent tokens: in the first quarter of depth the lens top-1 is a "
        "Top-10 frequency token far more often than the model's final prediction is.",
        statistic="mean over layers 1..floor(L/4) of the Top-10 share of lens top-1 tokens, minus the "
        "Top-10 share of final predictions (prefix = prompt; 95% bootstrap over paragraphs)",
        threshold=0.20,
        direction="above",
        min_n=20,  # prefixes
        paper_value="Pythia-6.9B, tuned lens: >75% of layer-1 top-1 are Top-10 vs about 1/3 of final "
        "predictions (gap about 40 points); we test a gap of more than 20 points",
        # Shares of lens top-1 decisions: identical over repeats, 1 vs 2 threads, batch 8 vs 3 or 1,
        # float32 vs float64 (benchmarks/snapshot_variation.py, tiny models and the default model);
        # bfloat16 instead of float32 moved shares by up to 0.14 (tiny models), which must fail.
        parameters=PREFIX_PARAMETERS,
        curves=(CurveSpec("layer", "share", ("bucket",)),),
        tolerances=snapshot_tolerances(statistic=DECISIONS, curves=DECISIONS),
    )
)

GTR_2 = register(
    Claim(
        id="GTR-2",
        name="early guesses get refined",
        evidence=gtr2_evidence,
        per_lens=True,
        version=1,
        paper=PAPER,
        source="Fig. 3",
        statement="Early guesses get refined: most Top-10 frequency guesses of the early layers differ from "
        "the final prediction, and flip rates fall with depth.",
        statistic="flip rate (lens top-1 != final prediction) of Top-10 guesses pooled over layers "
        "1..floor(L/4); sub-check: mean flip rate of all guesses in those layers minus in layers "
        "ceil(3L/4)..L-1 is above 0",
        threshold=0.60,
        direction="above",
        min_n=20,  # early guesses
        paper_value="high-frequency early guesses are changed more than 70% of the time; 60-80% overall in "
        "the early layers",
        # Flip rates of top-1 decisions: identical over repeats, threads, batch sizes and float64
        # (as GTR-1); bfloat16 moved them by up to 0.1 (tiny models).
        parameters=PREFIX_PARAMETERS,
        curves=(CurveSpec("layer", "flip_rate", ("bucket",)),),
        tolerances=snapshot_tolerances(statistic=DECISIONS, curves=DECISIONS),
    )
)

GTR_5 = register(
    Claim(
        id="GTR-5",
        name="options shortlisted by mid depth and chosen late",
        evidence=gtr5_evidence,
        per_lens=True,
        version=1,
        paper=PAPER,
        source="Sec. 5 (multiple-choice case study)",
        statement="Options are shortlisted by mid-depth and chosen late: the option set enters the lens's "
        "top-10 in the first half of the layers, and the final choice among the options settles clearly later.",
        statistic="mean over prompts of s/L, where the shortlist layer s is the first layer from which some "
        "option stays within the full-vocabulary top-10 up to L; sub-check: mean (d - s)/L above 0.10, where "
        "the decision layer d is the first layer from which the argmax over the options stays the final choice",
        threshold=0.50,
        direction="below",
        min_n=20,  # prompts
        paper_value="no numbers: options are identified within the first half of the layers, the answer is "
        "finalised only toward the end",
        # Shortlist / decision layers and the format, shortlist and agreement shares are rank
        # decisions like GTR-1's (which never moved but in bfloat16; GTR-5 itself not measured);
        # the option mass is a probability (continuous numbers moved by at most 1.2e-6).
        parameters={"shortlist_k": SHORTLIST_K, "decision_gap": DECISION_GAP, "choice_max_tokens": CHOICE_MAX_TOKENS},
        curves=(CurveSpec("layer", "value", ("metric", "task")),),
        tolerances=snapshot_tolerances(statistic=DECISIONS, curves=DECISIONS, **{"value/option_mass": CONTINUOUS}),
    )
)


def early_layers(n_layers: int) -> np.ndarray:
    """The first quarter of depth after ``h_0``: layers 1 .. max(1, floor(L / 4))."""
    return np.arange(1, max(1, n_layers // 4) + 1)


def word_initial_tokens(text: str, offsets: list[tuple[int, int]]) -> np.ndarray:
    """For each token, whether it begins a new word (its span covers a word's first
    character). Special tokens (empty spans) never do."""
    starts = np.zeros(len(text) + 1, dtype=bool)
    for i, ch in enumerate(text):
        if not ch.isspace() and (i == 0 or text[i - 1].isspace()):
            starts[i] = True
    cum = np.concatenate([[0], np.cumsum(starts)])
    return np.array([e > s and cum[e] - cum[s] > 0 for s, e in offsets], dtype=bool)


def prefix_request(corpus: Corpus, tokenizer, max_examples: int | None = None) -> TraceRequest:
    """Natural-text prefixes cut at random word boundaries (GTR-1/2).

    One forward pass per paragraph serves all its prefixes: with causal attention the
    prediction at position ``p`` is the prediction for the prefix ending there. A cut at
    ``p`` means token ``p + 1`` starts a new word; at least ``PREFIX_MIN_CONTEXT`` tokens
    of context; up to ``PREFIX_CUTS_PER_PARAGRAPH`` cuts per paragraph (seeded).
    ``max_examples`` caps the number of prefixes.
    """
    rng = np.random.default_rng(PREFIX_SEED)
    token_ids, positions, total = [], [], 0
    for para in corpus.paragraphs:
        if max_examples is not None and total >= max_examples:
            break
        enc = tokenizer(para.text, return_offsets_mapping=True, truncation=True, max_length=PREFIX_MAX_TOKENS)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        starts = word_initial_tokens(para.text, offsets)
        candidates = [j - 1 for j in range(PREFIX_MIN_CONTEXT, len(ids)) if starts[j]]
        if not candidates:
            continue
        k = min(PREFIX_CUTS_PER_PARAGRAPH, len(candidates))
        if max_examples is not None:
            k = min(k, max_examples - total)
        cuts = sorted(rng.choice(candidates, size=k, replace=False).tolist())
        token_ids.append(ids[: cuts[-1] + 2])  # nothing after the last cut's gold token is read
        positions.append(cuts)
        total += k
    return TraceRequest.build(f"{corpus.name}-prefixes", token_ids, positions=positions)


def prefix_reductions(freq: FrequencyTable) -> ReductionSpec:
    """The reductions GTR-1/2/6 read from one shared trace (one forward pass for all)."""
    return ReductionSpec(topk=10, logprobs=True, kl=True, entropy=True, token_sets=freq.bucket_ids())


def gtr1_early_frequent_guesses(
    trace: LayerTrace, freq: FrequencyTable, model: str, lens: str, dataset: str
) -> tuple[ClaimResult, pd.DataFrame]:
    """GTR-1: the statistic with its interval, and the per-layer bucket shares (tidy)."""
    bucket_of = freq.bucket_of_id
    top1_bucket = bucket_of[trace.top1]  # [L+1, N]
    final_bucket = bucket_of[trace.final_id]  # [N]
    early = early_layers(trace.n_layers)

    def gap(kept: list[int]) -> Estimate:
        return estimate((top1_bucket[kept] == 0).mean(axis=0) - (final_bucket == 0), groups=trace.example)

    est = gap(list(early))
    rows = []
    for b, name in enumerate(BUCKETS):
        series = np.concatenate([(top1_bucket == b).T, (final_bucket == b)[:, None]], axis=1).astype(float)
        mean, low, high = bootstrap_mean(series, groups=trace.example)
        for layer in range(trace.n_layers + 2):
            rows.append(
                {
                    "claim": GTR_1.id,
                    "model": model,
                    "lens": lens,
                    "dataset": dataset,
                    "layer": "final" if layer == trace.n_layers + 1 else str(layer),
                    "bucket": name,
                    "share": mean[layer],
                    "ci_low": low[layer],
                    "ci_high": high[layer],
                    "n": trace.n_rows,
                }
            )
    details = {
        "early_layers": [int(early[0]), int(early[-1])],
        "early_top10_share": float((top1_bucket[early] == 0).mean()),
        "final_top10_share": float((final_bucket == 0).mean()),
        "frequency": freq.provenance,
    }
    details["layer1_top10_share"] = float((top1_bucket[1] == 0).mean())
    paper = (
        PaperComparison("Top-10 share of the lens top-1 at layer 1", "> 0.75", "Pythia-6.9B, tuned lens", details["layer1_top10_share"]),
        PaperComparison("Top-10 share of final predictions", "about 0.33", "Pythia-6.9B", details["final_top10_share"]),
        PaperComparison("gap: early (layers 1..L/4) minus final Top-10 share", "about 0.40 (at layer 1)", "Pythia-6.9B, tuned lens", est.value),
    )
    result = ClaimResult(
        claim=GTR_1, model=model, lens=lens, dataset=dataset, estimate=est, details=details,
        robustness=leave_layers_out(GTR_1, early, gap, est), paper=paper,
    )
    return result, pd.DataFrame(rows)


def late_layers(n_layers: int) -> np.ndarray:
    """The last quarter of depth before ``h_L``: layers ceil(3L/4) .. L-1."""
    return np.arange(min(n_layers - 1, -(-3 * n_layers // 4)), n_layers)


def gtr2_early_guesses_get_refined(
    trace: LayerTrace, freq: FrequencyTable, model: str, lens: str, dataset: str
) -> tuple[ClaimResult, pd.DataFrame]:
    """GTR-2: flip rates per layer and per bucket of the intermediate top-1 (same trace as GTR-1)."""
    bucket = freq.bucket_of_id[trace.top1]  # [L+1, N]
    flip = trace.top1 != trace.final_id[None, :]  # [L+1, N]; 0 at L by construction
    early, late = early_layers(trace.n_layers), late_layers(trace.n_layers)
    top10_early = bucket[early] == 0

    def flip_rate(kept: list[int]) -> Estimate:
        top10 = bucket[kept] == 0
        return ratio_estimate((flip[kept] & top10).sum(0), top10.sum(0), trace.example)

    est = flip_rate(list(early))
    trend = estimate(flip[early].mean(0) - flip[late].mean(0), trace.example)
    check = SubCheck(
        name="falls_with_depth",
        description=f"flip rate, layers {early[0]}-{early[-1]} minus layers {late[0]}-{late[-1]}",
        estimate=trend,
        threshold=0.0,
        direction="above",
    )
    rows = []
    groups = [(name, bucket == b) for b, name in enumerate(BUCKETS)] + [("all", np.ones_like(flip))]
    for name, member in groups:
        rate, low, high = bootstrap_ratio((flip & member).T, member.T, trace.example)
        for layer in range(trace.n_layers + 1):
            rows.append(
                {
                    "claim": GTR_2.id, "model": model, "lens": lens, "dataset": dataset, "layer": layer,
                    "bucket": name, "flip_rate": rate[layer], "ci_low": low[layer], "ci_high": high[layer],
                    "n_guesses": int(member[layer].sum()),
                }
            )
    details = {
        "early_layers": [int(early[0]), int(early[-1])],
        "late_layers": [int(late[0]), int(late[-1])],
        "flip_rate_at_L": float(flip[-1].mean()),
        "early_flip_rate_all": float(flip[early].mean()),
        "n_top10_early_guesses": int(top10_early.sum()),
        "frequency": freq.provenance,
    }
    paper = (
        PaperComparison("flip rate of early Top-10 (high-frequency) guesses", "> 0.70", "Pythia-6.9B, tuned lens", est.value),
        PaperComparison("flip rate of all early guesses (layers 1..L/4)", "0.60-0.80", "Pythia-6.9B, tuned lens", details["early_flip_rate_all"]),
    )
    result = ClaimResult(
        claim=GTR_2, model=model, lens=lens, dataset=dataset, estimate=est, details=details, subchecks=(check,),
        robustness=leave_layers_out(GTR_2, early, flip_rate, est), paper=paper,
    )
    return result, pd.DataFrame(rows)


@dataclass(frozen=True)
class ChoiceRows:
    """What a choice trace's rows are: the task of each row, and what was left out."""

    request: TraceRequest
    dataset: str
    tasks: tuple[str, ...]
    option_counts: dict[str, int]
    n_truncated: dict[str, int]
    n_skipped: dict[str, int]


def choice_request(tasks: list[ChoiceTask], tokenizer, dataset: str, max_examples: int | None = None) -> ChoiceRows:
    """One row per prompt: its last position, scored against the first token of each option.

    Option tokens come from the ids of ``prompt + " " + option`` minus those of the prompt.
    Prompts over CHOICE_MAX_TOKENS are truncated from the left (BOS kept); prompts whose
    boundary tokens merge with an option are skipped; both are counted.
    ``max_examples`` caps the prompts of the claim, split evenly over the tasks.
    """
    ids, options, row_tasks = [], [], []
    truncated, skipped = {}, {}
    per_task = None if max_examples is None else -(-max_examples // len(tasks))
    for task in tasks:
        truncated[task.name] = skipped[task.name] = 0
        for item in task.items[:per_task]:
            try:
                pieces = [continuation_ids(tokenizer, item.prompt, " " + opt) for opt in item.options]
            except TokenBoundaryError:
                skipped[task.name] += 1
                continue
            first = tuple(cont[0] for _, cont in pieces)
            if len(set(first)) < len(first):
                skipped[task.name] += 1  # two options share a first token: not separable
                continue
            prompt_ids = pieces[0][0]
            if len(prompt_ids) > CHOICE_MAX_TOKENS:
                truncated[task.name] += 1
                prompt_ids = truncate_left(prompt_ids, CHOICE_MAX_TOKENS, starts_with_special(tokenizer, prompt_ids))
            ids.append(prompt_ids)
            options.append(first)
            row_tasks.append(task.name)
    if not ids:
        raise ValueError(f"No usable multiple-choice prompts in {dataset}.")
    # One request per option-set size: the engine needs equally many options per prompt.
    n_opt = {len(o) for o in options}
    width = max(n_opt)
    padded = [o + (o[-1],) * (width - len(o)) for o in options]  # repeats are ignored below
    request = TraceRequest.build(f"{dataset}-choices", ids, positions="last", option_ids=padded)
    counts = {task.name: len(task.items[0].options) for task in tasks if task.items}
    return ChoiceRows(request, dataset, tuple(row_tasks), counts, truncated, skipped)


def _option_views(trace: LayerTrace, n_options: np.ndarray):
    """Masks out padded option columns: [L+1, N, O] ranks and log-probs of real options."""
    real = np.arange(trace.option_rank.shape[-1])[None, :] < n_options[:, None]  # [N, O]
    rank = np.where(real[None], trace.option_rank, np.iinfo(np.int32).max)
    logp = np.where(real[None], trace.option_logprob, -np.inf)
    return rank, logp


def gtr5_shortlist_then_decide(
    trace: LayerTrace, rows: ChoiceRows, model: str, lens: str
) -> tuple[ClaimResult, pd.DataFrame]:
    """GTR-5: per-layer format share, agreement with the final choice and option mass,
    per task; shortlist and decision layers per prompt."""
    tasks = np.array(rows.tasks)
    dataset = rows.dataset
    n_options = np.array([rows.option_counts[t] for t in rows.tasks])
    rank, logp = _option_views(trace, n_options)
    L = trace.n_layers
    best_rank = rank.min(axis=-1)  # [L+1, N]
    choice = logp.argmax(axis=-1)  # [L+1, N]
    agrees = choice == choice[-1][None, :]
    shortlist = settled_layer(best_rank, SHORTLIST_K)  # L + 1 if never shortlisted at L
    decision = settled_layer(np.where(agrees, 1, 2), 1)
    groups = np.arange(trace.n_rows)
    est = estimate(shortlist / L, groups)
    gap = SubCheck(
        name="decided_later",
        description=f"mean (decision layer - shortlist layer) / L, claim > {DECISION_GAP}",
        estimate=estimate((decision - shortlist) / L, groups),
        threshold=DECISION_GAP,
        direction="above",
    )
    curves = {
        "format_share": (best_rank == 1).astype(float),  # the lens top-1 is one of the options
        "shortlisted": (best_rank <= SHORTLIST_K).astype(float),
        "agrees_with_final_choice": agrees.astype(float),
        "option_mass": np.exp(logp).sum(axis=-1),
    }
    table_rows = []
    for task in [*dict.fromkeys(rows.tasks), "all"]:
        member = np.ones(trace.n_rows, bool) if task == "all" else tasks == task
        for metric, values in curves.items():
            mean, low, high = bootstrap_mean(values[:, member].T)
            for layer in range(L + 1):
                table_rows.append(
                    {
                        "claim": GTR_5.id, "model": model, "lens": lens, "dataset": dataset, "task": task,
                        "metric": metric, "layer": layer, "value": mean[layer], "ci_low": low[layer],
                        "ci_high": high[layer], "n": int(member.sum()),
                    }
                )
    per_task = {
        task: {
            "n": int((tasks == task).sum()),
            "shortlist_layer_mean": float(shortlist[tasks == task].mean()),
            "decision_layer_mean": float(decision[tasks == task].mean()),
            "truncated": rows.n_truncated.get(task, 0),
            "skipped": rows.n_skipped.get(task, 0),
            "final_top1_is_option": float((best_rank[-1, tasks == task] == 1).mean()),
        }
        for task in dict.fromkeys(rows.tasks)
    }
    details = {
        "n_layers": L,
        "shortlist_k": SHORTLIST_K,
        "shortlist_layer_mean": float(shortlist.mean()),
        "decision_layer_mean": float(decision.mean()),
        "never_shortlisted_at_L": int((shortlist > L).sum()),
        "max_prompt_tokens": CHOICE_MAX_TOKENS,
        "tasks": per_task,
    }
    result = ClaimResult(GTR_5, model, lens, dataset, est, details, subchecks=(gap,))
    return result, pd.DataFrame(table_rows)


# --------------------------------------------------------------------------- requests on a session
# What these claims read, built from a model's session (``harness.session.ModelSession``)
# and kept there for the run; the session itself knows no claim.


def session_prefix_request(session) -> TraceRequest:
    """The GTR-1/2 prefixes of the session's prose corpus (also read by GTR-6/7)."""
    return session.memo("prefix_request", lambda: prefix_request(session.corpus, session.loaded.tokenizer, session.config.max_examples))


PROSE_REQUESTS["prefixes"] = session_prefix_request  # read from the shared prose pass


def prefix_trace(session, lens) -> LayerTrace:
    """The prefixes' trace through ``lens``: the last position of each prefix."""
    return session.trace(session_prefix_request(session), lens, prefix_reductions(session.frequency), prose=True)


def choice_rows(session) -> ChoiceRows:
    """The GTR-5 few-shot prompts of the session's choice tasks, scored on their options."""
    tasks, name = session.choice_tasks
    return session.memo("choice_rows", lambda: choice_request(tasks, session.loaded.tokenizer, name, session.config.max_examples))
