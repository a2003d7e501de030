"""One forward pass per paragraph for every request that reads the same prose.

The early-guess claims read prefixes of the corpus's paragraphs, the part-of-speech claim
reads other positions of the same paragraphs, and a closed-form tuned lens with
``fit_source="prose-pass"`` is fitted on every position of the training paragraphs. With
causal attention the residuals at position ``p`` of a prompt depend only on its tokens
``0..p``, so a prompt that is a token prefix of a longer sequence (a *carrier*) can be
read from the carrier's forward pass. :func:`capture_shared` maps every prompt of every
request to a carrier (a prompt that is a prefix of none becomes its own carrier, so a
tokenisation that differs is never read from the wrong sequence), runs each carrier once,
keeps the residuals at the rows the requests read, and hands the rows of the carriers
marked for fitting to a callback (the lens fits' Gram matrices) before dropping them.
Every lens is then applied to the kept rows (``TraceEngine.trace(..., rows=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.trace import CapturedRows, TraceEngine, TraceRequest

HEAD_TOKENS = 4  # carriers are looked up by their first tokens, then checked in full

# The requests that read prefixes of the prose paragraphs, by name: each builds its request
# from a model's session (``harness.session.ModelSession``). The claim modules that read
# the prose register theirs (harness/claims/); the session's prose pass captures them all
# in one forward pass per paragraph, so that it needs to know no claim.
PROSE_REQUESTS: dict[str, Callable[[Any], TraceRequest]] = {}


@dataclass(frozen=True)
class CarrierPlan:
    """Which carrier serves each prompt, and which positions each carrier must provide."""

    carriers: tuple[tuple[int, ...], ...]
    serves: tuple[tuple[int, ...], ...]  # per request: the carrier of each of its prompts
    reads: tuple[frozenset[int], ...]  # per carrier: positions some request reads


def plan_carriers(requests: Sequence[TraceRequest], carriers: Sequence[Sequence[int]]) -> CarrierPlan:
    """Map each prompt to the first carrier it is a token prefix of (or to itself)."""
    seqs = [tuple(int(t) for t in c) for c in carriers]
    by_head: dict[tuple[int, ...], list[int]] = {}
    for c, seq in enumerate(seqs):
        by_head.setdefault(seq[:HEAD_TOKENS], []).append(c)
    reads: list[set[int]] = [set() for _ in seqs]
    serves = []
    for request in requests:
        mine = []
        for i, prompt in enumerate(request.token_ids):
            found = next(
                (c for c in by_head.get(prompt[:HEAD_TOKENS], ()) if len(seqs[c]) >= len(prompt) and seqs[c][: len(prompt)] == prompt),
                None,
            )
            if found is None:
                found = len(seqs)
                seqs.append(prompt)
                reads.append(set())
                by_head.setdefault(prompt[:HEAD_TOKENS], []).append(found)
            mine.append(found)
            reads[found].update(request.positions_of(i))
        serves.append(tuple(mine))
    return CarrierPlan(tuple(seqs), tuple(serves), tuple(frozenset(r) for r in reads))


FitCallback = Callable[[CapturedRows], None]


@torch.inference_mode()
def capture_shared(
    engine: TraceEngine,
    requests: Sequence[TraceRequest],
    carriers: Sequence[Sequence[int]],
    fit_carriers: Sequence[bool] | None = None,
    on_fit_rows: FitCallback | None = None,
) -> dict[str, CapturedRows]:
    """The captured rows of each request (by name), from one forward pass per carrier.

    ``fit_carriers[c]``: carrier ``c``'s rows at *every* position are passed to
    ``on_fit_rows`` (one call per batch) and then dropped, unless a request reads them.
    Carriers that nothing reads and nothing fits are not run."""
    plan = plan_carriers(requests, carriers)
    n_given = len(carriers)
    fit = [bool(fit_carriers[c]) if fit_carriers is not None and c < n_given else False for c in range(len(plan.carriers))]
    run = [c for c in range(len(plan.carriers)) if plan.reads[c] or fit[c]]
    ids, positions = [], []
    for c in run:
        seq = plan.carriers[c]
        end = len(seq) if fit[c] else max(plan.reads[c]) + 1
        ids.append(seq[:end])
        positions.append(range(end) if fit[c] else sorted(plan.reads[c]))
    if not ids:
        raise ValueError("Nothing to capture: no request reads a row and no carrier is fitted.")
    shared = TraceRequest.build("shared-pass", ids, positions=positions)
    parts = []
    bar = tqdm(engine._batches(shared), desc=f"forward {engine.loaded.spec.name} · shared pass", unit="batch",
               disable=not engine.progress, leave=False)
    for batch in bar:
        rows = engine._capture_batch(shared, batch)
        carrier_of = np.array(run)[rows.example]
        if on_fit_rows is not None:
            fitted = np.array([fit[c] for c in carrier_of], dtype=bool)
            if fitted.any():
                on_fit_rows(_subset(rows, np.flatnonzero(fitted)))
        read = np.array([p in plan.reads[c] for c, p in zip(carrier_of, rows.position)], dtype=bool)
        if read.any():
            parts.append(_subset(rows, np.flatnonzero(read)))
    if not requests:
        return {}
    kept = CapturedRows.concat(parts, shared)
    row_of = {(int(e), int(p)): k for k, (e, p) in enumerate(zip(kept.example, kept.position))}
    slot = {c: j for j, c in enumerate(run)}
    out: dict[str, CapturedRows] = {}
    for request, serves in zip(requests, plan.serves):
        index, example = [], []
        for i, c in enumerate(serves):
            for p in request.positions_of(i):
                index.append(row_of[(slot[c], p)])
                example.append(i)
        out[request.name] = CapturedRows.select(kept, np.array(index, dtype=np.int64), request, np.array(example))
    return out


def _subset(rows: CapturedRows, index: np.ndarray) -> CapturedRows:
    idx = torch.as_tensor(index, dtype=torch.long)
    return CapturedRows(
        request_name=rows.request_name,
        content_hash=rows.content_hash,
        resid=[h[idx.to(h.device)] for h in rows.resid],
        final_logits=rows.final_logits[idx.to(rows.final_logits.device)],
        example=rows.example[index],
        position=rows.position[index],
        input_id=rows.input_id[index],
        gold_id=rows.gold_id[index],
        option_ids=None if rows.option_ids is None else rows.option_ids[index],
    )
