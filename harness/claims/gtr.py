"""Guess-then-Refine claims (Gupta et al. 2025, "How Do LLMs Use Their Depth?").

Definitions follow ``../shared/docs/claims.md``; each claim's docstring-level choices are
written into its :class:`Claim` and stay stable (a change bumps the claim's version).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.claims.base import Claim, ClaimResult, SubCheck, register
from harness.data.prose import Corpus
from harness.frequency import BUCKETS, FrequencyTable
from harness.stats import bootstrap_mean, bootstrap_ratio, estimate, ratio_estimate
from harness.trace import LayerTrace, ReductionSpec, TraceRequest

PAPER = "Gupta, Yeung, Anumanchipalli, Ivanova 2025, How Do LLMs Use Their Depth? (arXiv 2510.18871)"

GTR_1 = register(
    Claim(
        id="GTR-1",
        version=1,
        paper=PAPER,
        source="Fig. 2",
        statement="Early layers guess frequent tokens: in the first quarter of depth the lens top-1 is a "
        "Top-10 frequency token far more often than the model's final prediction is.",
        statistic="mean over layers 1..floor(L/4) of the Top-10 share of lens top-1 tokens, minus the "
        "Top-10 share of final predictions (prefix = prompt; 95% bootstrap over paragraphs)",
        threshold=0.20,
        direction="above",
        paper_value="Pythia-6.9B, tuned lens: >75% of layer-1 top-1 are Top-10 vs about 1/3 of final "
        "predictions (gap about 40 points); we test a gap of more than 20 points",
    )
)

GTR_2 = register(
    Claim(
        id="GTR-2",
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
        paper_value="high-frequency early guesses are changed more than 70% of the time; 60-80% overall in "
        "the early layers",
    )
)

# Prefix sampling (GTR-1/2/6): fixed, so the same prompts feed every claim that reads them.
PREFIX_CUTS_PER_PARAGRAPH = 3
PREFIX_MAX_TOKENS = 128
PREFIX_MIN_CONTEXT = 8
PREFIX_SEED = 0


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


def bucket_shares(buckets: np.ndarray, n_buckets: int = len(BUCKETS)) -> np.ndarray:
    """Share of each bucket per layer: [L+1, N] bucket ids -> [L+1, n_buckets], rows sum to 1."""
    onehot = buckets[..., None] == np.arange(n_buckets)
    return onehot.mean(axis=-2)


def gtr1_early_frequent_guesses(
    trace: LayerTrace, freq: FrequencyTable, model: str, lens: str, dataset: str
) -> tuple[ClaimResult, pd.DataFrame]:
    """GTR-1: the statistic with its interval, and the per-layer bucket shares (tidy)."""
    bucket_of = freq.bucket_of_id
    top1_bucket = bucket_of[trace.top1]  # [L+1, N]
    final_bucket = bucket_of[trace.final_id]  # [N]
    early = early_layers(trace.n_layers)
    per_prompt = (top1_bucket[early] == 0).mean(axis=0) - (final_bucket == 0)
    est = estimate(per_prompt, groups=trace.example)
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
    result = ClaimResult(claim=GTR_1, model=model, lens=lens, dataset=dataset, estimate=est, details=details)
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
    est = ratio_estimate((flip[early] & top10_early).sum(0), top10_early.sum(0), trace.example)
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
    result = ClaimResult(
        claim=GTR_2, model=model, lens=lens, dataset=dataset, estimate=est, details=details, subchecks=(check,)
    )
    return result, pd.DataFrame(rows)
