"""GTR-4, "the first token of a multi-token fact needs the most depth" (Gupta et al. 2025,
Fig. 4, facts).

Facts come from :mod:`harness.data.facts` (the embedded cloze facts, or MQuAKE single hops
or a plain ``{prompt, answer}`` file via ``--data-dir``). Choices fixed here (a change
bumps the claim's version):

- answer tokens: the ids of ``prompt + " " + answer`` minus those of ``prompt``
  (:func:`harness.data.tokens.continuation_ids`; no second BOS, no lone space piece
  mistaken for the answer); a fact whose prompt tokens change when the answer is appended
  is skipped and counted (``token_boundary``);
- only answers of 2 or 3 tokens are traced; 1-token and longer answers are counted
  (``n_by_length``, ``n_skipped``);
- teacher forcing in one forward pass: the sequence is ``prompt + answer`` and the read
  positions are ``len(prompt) - 1 + j`` for ``j = 0 .. n - 1``, so answer position 1 is
  predicted from the prompt, position 2 from the prompt and answer token 1, and so on;
  the gold token at each read position is the answer token (the engine's gold is the
  next token of the sequence). The paper ran one pass per answer token and fed the
  model's own prediction back when it was right, the gold token otherwise: the same
  input on every position we keep;
- a position counts as correct when the model's final prediction (argmax of its own
  logits) is the gold answer token. The claim is tested on the **paired** set: facts
  whose every answer position is correct, so position 1 and the later positions are
  compared on the same facts. The per-position (unpaired) kept rows, as the paper's
  figure used them, are reported too (table and details);
- earliest layer = first crossing: the smallest l with gold rank_l <= k (``h_0`` counts
  as layer 0); the settled layer (rank stays <= k up to L) is reported alongside;
- means per (answer length, position), 95% bootstrap intervals over facts (one fact is
  one prompt: ``LayerTrace.example``), 2000 replicates, seeded; every column comes from
  the same resamples, so the two positions of one fact move together;
- the claim: for answer lengths 2 and 3, at k = 1 and k = 10, the mean earliest layer of
  position 1 lies above that of every later position: 6 sub-checks on
  ``mean(position 1) - mean(position j) > 0`` (length 2: j = 2; length 3: j = 2, 3). The
  primary statistic is the weakest one, the smallest of the 6 differences, whose
  interval is the percentile interval of the per-replicate minimum (same resamples), so
  "replicated" needs all 6 to hold;
- a length with fewer than ``MIN_PAIRED`` paired facts gives its sub-checks no value
  (NaN): they, and with them the claim, are inconclusive; the counts are in the details.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from functools import partial


from harness.claims.base import (
    ClaimRun,
    Evidence,
    DECISIONS,
    Claim,
    ClaimResult,
    CurveSpec,
    SubCheck,
    register,
    snapshot_tolerances,
)
from harness.claims.gtr import PAPER
from harness.data.facts import Fact
from harness.data.tokens import TokenBoundaryError, continuation_ids
from harness.metrics import K_GRID, earliest_layer, settled_layer
from harness.report.figures_rank import earliest_layer_curves
from harness.stats import Estimate, bootstrap_column_means, percentile_interval
from harness.trace import TARGET_RANKS, LayerTrace, TraceRequest

ANSWER_LENGTHS: tuple[int, ...] = (2, 3)
K_CHECKED: tuple[int, ...] = (1, 10)

def gtr4_evidence(run: ClaimRun) -> Evidence:
    """GTR-4: for correctly recalled 2- and 3-token answers (teacher-forced, paired facts),
    answer token 1 reaches rank <= k later than every later token, at k = 1 and k = 10.

    Control: the same facts; only facts the control recalls correctly are kept, so an
    untrained model is expected to be inconclusive for too little data."""
    session = run.session
    rows = fact_rows(session)
    trace = session.trace(rows.request, session.lens(run.lens_name), FACT_REDUCTIONS)
    result, table = gtr4_first_fact_token_deepest(trace, rows, session.name, session.lens_label(run.lens_name))
    fig = partial(
        earliest_layer_curves, result, table[table.set == "paired"], ["answer_length", "position"],
        colors=FIGURE_COLORS, what="the first answer token needs the most depth",
    )
    return Evidence(result, table, fig, run.lens_name, trace)



GTR_4 = register(
    Claim(
        id="GTR-4",
        name="first fact token needs most depth",
        evidence=gtr4_evidence,
        per_lens=True,
        version=1,
        paper=PAPER,
        source="Fig. 4 (multi-token facts)",
        statement="The first token of a multi-token fact needs the most depth: for correctly recalled answers of "
        "2 and 3 tokens (teacher-forced), answer token 1 reaches a gold-token rank <= k at deeper layers than "
        "the later answer tokens.",
        statistic="smallest of 6 differences, mean earliest layer (first l with gold rank_l <= k) of answer "
        "position 1 minus that of a later position (length 2: position 2; length 3: positions 2 and 3), at "
        "k = 1 and k = 10, over facts whose every answer position is predicted correctly (paired); 95% "
        "interval: percentiles of the per-replicate minimum of the 6 differences, facts resampled jointly",
        threshold=0.0,
        direction="above",
        min_n=5,  # paired facts per answer length
        paper_value="GPT2-XL, logit lens, MQuAKE single-hop cloze prompts (Fig. 4, no numbers in the text): the "
        "first answer token's earliest-layer curve lies deeper than those of the second and third tokens, for "
        "2- and 3-token answers; we test that position 1 lies above every later position at k = 1 and k = 10 "
        "(every difference > 0)",
        # Mean earliest layers of gold-rank crossings, rank decisions as in GTR-3 (GTR-1's top-1
        # never moved but in bfloat16; GTR-4 itself not measured); 1e-3 layer is less than one
        # crossing of one fact.
        parameters={"answer_lengths": ANSWER_LENGTHS, "k": K_CHECKED},
        curves=(CurveSpec("k", "layer", ("set", "measure", "answer_length", "position")),),
        tolerances=snapshot_tolerances(statistic=DECISIONS, curves=DECISIONS),
    )
)

MEASURES: tuple[str, ...] = ("earliest", "settled")
SETS: tuple[str, ...] = ("paired", "kept")
MIN_PAIRED = GTR_4.min_n  # fewer paired facts of a length: its sub-checks have no value

# (answer length, position) groups, in table and column order.
GROUPS: tuple[tuple[int, int], ...] = tuple((n, j) for n in ANSWER_LENGTHS for j in range(1, n + 1))

# Figure colours (earliest_layer_curves labels with group_col=["answer_length", "position"]):
# position 1 dark, later positions lighter; 2-token answers blue, 3-token answers red.
FIGURE_COLORS = {
    "answer_length 2 · position 1": "#1b4f72",
    "answer_length 2 · position 2": "#5dade2",
    "answer_length 3 · position 1": "#922b21",
    "answer_length 3 · position 2": "#e74c3c",
    "answer_length 3 · position 3": "#f5b7b1",
}

# What GTR-4 reads from its trace: gold ranks only (one cheap reduction set).
FACT_REDUCTIONS = TARGET_RANKS


@dataclass(frozen=True)
class FactRows:
    """What a fact trace's rows are. One prompt per traced fact (``facts[i]`` is the
    index, into the loaded fact list, of prompt ``i``); per row (prompt, then position):
    ``fact`` (index into the fact list), ``answer_length`` (2 or 3), ``position`` (1-based
    position in the answer), ``read_position`` (position in the token sequence) and
    ``gold_id`` (the answer token). ``n_by_length``: facts examined per answer length in
    tokens (str keys; ``"0"`` where the answer could not be split off); ``n_skipped``:
    facts left out, by reason."""

    request: TraceRequest
    dataset: str
    facts: tuple[int, ...]
    fact: tuple[int, ...]
    answer_length: tuple[int, ...]
    position: tuple[int, ...]
    read_position: tuple[int, ...]
    gold_id: tuple[int, ...]
    n_by_length: dict[str, int]
    n_skipped: dict[str, int]

    @property
    def n_rows(self) -> int:
        return len(self.fact)


def fact_request(facts: Sequence[Fact], tokenizer, dataset: str, max_examples: int | None = None) -> FactRows:
    """The GTR-4 request: one prompt per fact with a 2- or 3-token answer, the whole
    ``prompt + " " + answer`` sequence, read at the positions that predict each answer
    token. ``max_examples`` caps the traced facts (facts after the cap are not examined,
    nor counted)."""
    token_ids, positions = [], []
    traced, row_fact, row_len, row_pos, row_read, row_gold = [], [], [], [], [], []
    n_by_length: dict[str, int] = {}
    skipped = {"answer_1_token": 0, "answer_over_3_tokens": 0, "token_boundary": 0, "empty_prompt": 0}
    for index, fact in enumerate(facts):
        if max_examples is not None and len(traced) >= max_examples:
            break
        try:
            prompt_ids, answer_ids = continuation_ids(tokenizer, fact.prompt, " " + fact.answer)
        except TokenBoundaryError:
            skipped["token_boundary"] += 1
            n_by_length["0"] = n_by_length.get("0", 0) + 1
            continue
        n = len(answer_ids)
        n_by_length[str(n)] = n_by_length.get(str(n), 0) + 1
        if n not in ANSWER_LENGTHS:
            skipped["answer_1_token" if n < min(ANSWER_LENGTHS) else "answer_over_3_tokens"] += 1
            continue
        if not prompt_ids:
            skipped["empty_prompt"] += 1
            continue
        reads = [len(prompt_ids) - 1 + j for j in range(n)]
        traced.append(index)
        token_ids.append(list(prompt_ids) + list(answer_ids))
        positions.append(reads)
        for j, p in enumerate(reads):
            row_fact.append(index)
            row_len.append(n)
            row_pos.append(j + 1)
            row_read.append(p)
            row_gold.append(int(answer_ids[j]))
    if not token_ids:
        raise ValueError(f"No fact in {dataset} has a {' or '.join(map(str, ANSWER_LENGTHS))}-token answer.")
    request = TraceRequest.build(f"{dataset}-facts", token_ids, positions=positions)
    n_by_length = dict(sorted(n_by_length.items(), key=lambda kv: int(kv[0])))
    return FactRows(
        request, dataset, tuple(traced), tuple(row_fact), tuple(row_len), tuple(row_pos), tuple(row_read),
        tuple(row_gold), n_by_length, skipped,
    )


def check_alignment(trace: LayerTrace, rows: FactRows) -> None:
    """The rows must describe the trace's rows one by one (prompt, position, gold)."""
    if rows.n_rows != trace.n_rows:
        raise ValueError(f"{rows.n_rows} fact rows for a trace of {trace.n_rows} rows.")
    prompt_of_fact = {f: i for i, f in enumerate(rows.facts)}
    prompt = np.array([prompt_of_fact[f] for f in rows.fact])
    if not (np.array_equal(prompt, trace.example) and np.array_equal(np.array(rows.read_position), trace.position)):
        raise ValueError("The fact rows are not in the trace's row order (prompt, then position).")
    if not np.array_equal(np.array(rows.gold_id), trace.gold_id):
        raise ValueError("The fact rows' answer tokens differ from the trace's gold tokens.")


def _column(set_name: str, measure: str, group: tuple[int, int], k: int) -> int:
    return ((SETS.index(set_name) * len(MEASURES) + MEASURES.index(measure)) * len(GROUPS) + GROUPS.index(group)) * len(
        K_GRID
    ) + K_GRID.index(k)


def gtr4_first_fact_token_deepest(
    trace: LayerTrace, rows: FactRows, model: str, lens: str
) -> tuple[ClaimResult, pd.DataFrame]:
    """GTR-4: the weakest of the 6 comparisons with its interval, the comparisons as
    sub-checks, and per (set, measure, answer length, position, k) the mean layer with its
    interval (tidy; ``set`` is ``paired`` or ``kept``, the per-position correct rows)."""
    check_alignment(trace, rows)
    fact = np.array(rows.fact)
    length = np.array(rows.answer_length)
    position = np.array(rows.position)
    correct = trace.final_id == trace.gold_id
    # A fact is paired when all of its answer positions are correct.
    all_correct = {f: True for f in rows.facts}
    for f, ok in zip(fact, correct):
        all_correct[int(f)] &= bool(ok)
    paired = np.array([all_correct[int(f)] for f in fact])
    member = {"paired": paired, "kept": correct}

    layers = {
        "earliest": np.stack([earliest_layer(trace.gold_rank, k) for k in K_GRID], axis=1),  # [N, K]
        "settled": np.stack([settled_layer(trace.gold_rank, k) for k in K_GRID], axis=1),
    }
    n_cols = len(SETS) * len(MEASURES) * len(GROUPS) * len(K_GRID)
    values = np.full((trace.n_rows, n_cols), np.nan)
    for set_name in SETS:
        for measure in MEASURES:
            for group in GROUPS:
                sel = member[set_name] & (length == group[0]) & (position == group[1])
                start = _column(set_name, measure, group, K_GRID[0])
                values[sel, start : start + len(K_GRID)] = layers[measure][sel]
    means, boots = bootstrap_column_means(values, fact)

    n_total = {g: int(((length == g[0]) & (position == g[1])).sum()) for g in GROUPS}
    n_in = {
        s: {g: int((member[s] & (length == g[0]) & (position == g[1])).sum()) for g in GROUPS} for s in SETS
    }
    n_facts = {n: n_total[(n, 1)] for n in ANSWER_LENGTHS}  # one position-1 row per fact
    n_paired = {n: n_in["paired"][(n, 1)] for n in ANSWER_LENGTHS}

    checks, diffs, names, unpaired = [], [], [], {}
    for n in ANSWER_LENGTHS:
        enough = n_paired[n] >= MIN_PAIRED
        for k in K_CHECKED:
            for j in range(2, n + 1):
                name = f"len{n}_k{k}_pos1_minus_pos{j}"
                c1, cj = _column("paired", "earliest", (n, 1), k), _column("paired", "earliest", (n, j), k)
                diff = boots[:, c1] - boots[:, cj] if enough else np.full(len(boots), np.nan)
                low, high = percentile_interval(diff)
                value = float(means[c1] - means[cj]) if enough else float("nan")
                est = Estimate(value, low, high, n_paired[n], n_paired[n])
                checks.append(
                    SubCheck(
                        name=name,
                        description=f"{n}-token answers, mean earliest layer with rank <= {k}: position 1 minus "
                        f"position {j} (paired facts; inconclusive below {MIN_PAIRED})",
                        estimate=est,
                        threshold=GTR_4.threshold,
                        direction="above",
                    )
                )
                diffs.append(diff)
                names.append(name)
                u1, uj = _column("kept", "earliest", (n, 1), k), _column("kept", "earliest", (n, j), k)
                ulow, uhigh = percentile_interval(boots[:, u1] - boots[:, uj])
                unpaired[name] = {
                    "value": float(means[u1] - means[uj]), "ci_low": ulow, "ci_high": uhigh,
                    "n_position_1": n_in["kept"][(n, 1)], f"n_position_{j}": n_in["kept"][(n, j)],
                }
    point = np.array([c.estimate.value for c in checks])
    weakest = int(np.nanargmin(point)) if not np.isnan(point).all() else 0
    stacked = np.stack(diffs, axis=1)
    if np.isnan(point).any():
        low = high = float("nan")
    else:
        with np.errstate(invalid="ignore"):
            low, high = percentile_interval(np.min(stacked, axis=1))
    n_claim = sum(n_paired.values())
    main = Estimate(float(np.min(point)), low, high, n_claim, n_claim)  # NaN when a length is too small

    table = []
    for set_name in SETS:
        for measure in MEASURES:
            for group in GROUPS:
                for k in K_GRID:
                    col = _column(set_name, measure, group, k)
                    lo, hi = percentile_interval(boots[:, col])
                    table.append(
                        {
                            "claim": GTR_4.id, "model": model, "lens": lens, "dataset": rows.dataset,
                            "set": set_name, "measure": measure, "answer_length": group[0], "position": group[1],
                            "k": k, "layer": means[col], "ci_low": lo, "ci_high": hi,
                            "depth_fraction": means[col] / trace.n_layers, "n_layers": trace.n_layers,
                            "n_kept": n_in[set_name][group], "n_total": n_total[group],
                        }
                    )
    mean_at = {
        f"k{k}": {f"len{n}_pos{j}": float(means[_column("paired", "earliest", (n, j), k)]) for n, j in GROUPS}
        for k in K_CHECKED
    }
    details = {
        "n_layers": trace.n_layers,
        "k_checked": list(K_CHECKED),
        "answer_lengths": list(ANSWER_LENGTHS),
        "min_paired": MIN_PAIRED,
        "n_by_length": dict(rows.n_by_length),
        "n_skipped": dict(rows.n_skipped),
        "n_facts_traced": {str(n): v for n, v in n_facts.items()},
        "n_paired": {str(n): v for n, v in n_paired.items()},
        "n_kept_per_position": {f"len{n}_pos{j}": n_in["kept"][(n, j)] for n, j in GROUPS},
        "kept_share": float(correct.mean()),
        "mean_earliest_layer": mean_at,
        "mean_earliest_depth_fraction": {
            kk: {g: v / trace.n_layers for g, v in d.items()} for kk, d in mean_at.items()
        },
        "weakest_comparison": names[weakest],
        "unpaired_differences": unpaired,
        "examples": {
            "text": "prompt + ' ' + answer, teacher-forced in one forward pass",
            "answer_tokens": "ids(prompt + ' ' + answer) minus ids(prompt)",
            "read_positions": "len(prompt ids) - 1 + j, j = 0 .. answer length - 1",
            "correct": "final prediction == gold answer token",
            "paired": "facts whose every answer position is correct (the claim's set)",
            "kept": "per position, rows whose final prediction is correct (reported only)",
        },
    }
    result = ClaimResult(
        claim=GTR_4, model=model, lens=lens, dataset=rows.dataset, estimate=main, details=details,
        subchecks=tuple(checks),
    )
    return result, pd.DataFrame(table)


def fact_rows(session) -> FactRows:
    """The session's facts as GTR-4 rows: prompt + answer, read at the positions predicting
    each answer token."""
    facts = session.facts
    return session.memo("fact_rows", lambda: fact_request(facts.facts, session.loaded.tokenizer, facts.name, session.config.max_examples))
