"""The effect of skipping one layer on later layers' computation and on the output.

Skipping block ``s`` replaces its output by its input (``h_{s+1} := h_s``) on the positions
``[front, t)``; then, on the positions from ``t`` on, we measure the largest relative
change of every block's contribution ``h_{l+1} - h_l`` and the largest L2 change of the
output distribution (Csordás et al. 2025, Fig. 3). Two variants:

- *future* (``t`` = a position inside the prompt): only later positions are measured,
  so the change travels through attention from skipped positions -- "does the layer
  build something later tokens reuse?";
- *all tokens* (``t = None``): skip on every position from ``front`` on, measure on all.

The first ``front`` positions are never skipped (as in the paper's notebook: the first
token serves as an attention sink). All (layer, t) interventions of a prompt run as rows
of a few batched forward passes, next to one unedited row in each batch, so every
comparison is made between rows of the same batch (identical kernels). Blocks before a
batch's first skipped block are not run: they return the recorded clean residual
(``reuse.py``); both variants of a prompt share the batches (:func:`skip_effect_groups`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.backends.base import Backend
from harness.interventions import reuse as reuse_rows

EPS = 1e-6
# Recorded residuals of one batch may use this many bytes (sets rows per batch).
RECORD_BUDGET_BYTES = 1 << 30
# Positions whose output distribution is computed at once (each [V] float32: 1024 x 49k ~ 200 MB).
HEAD_POSITIONS = 1024


@dataclass(frozen=True)
class SkipRow:
    layer: int  # block whose output is replaced by its input
    until: int  # skip positions [front, until)
    measure_from: int  # measure positions [measure_from, T)


@dataclass(frozen=True)
class SkipEffect:
    """One prompt's effects, maximised over the sampled positions ``t``.

    ``future[s, l]``: largest relative change of block ``l``'s contribution when block
    ``s`` is skipped; ``output[s]``: largest L2 change of the output distribution."""

    future: np.ndarray  # [L, L]
    output: np.ndarray  # [L]


def future_positions(n_tokens: int, rng: np.random.Generator, n_chunks: int = 4, stride: int = 8) -> list[int]:
    """The positions ``t`` of the future variant: every ``stride``-th position from
    ``stride`` to 4 before the end, ``n_chunks`` of them at random (the notebook's choice)."""
    candidates = list(range(stride, n_tokens - 4, stride))
    if not candidates:
        raise ValueError(f"A prompt of {n_tokens} tokens is too short for the future-effect variant (needs > {stride + 4}).")
    rng.shuffle(candidates)
    return sorted(candidates[:n_chunks])


def skip_edit(rows: list[SkipRow], front: int, n_tokens: int, row_offset: int = 1):
    """Edits that skip ``rows[i].layer`` in batch row ``i + row_offset`` (row 0 stays clean)."""
    by_point: dict[int, list[tuple[int, SkipRow]]] = {}
    for i, row in enumerate(rows):
        by_point.setdefault(row.layer + 1, []).append((i + row_offset, row))

    def make(entries):
        def edit(out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
            mask = torch.zeros(out.shape[:2] + (1,), dtype=torch.bool, device=out.device)
            for b, row in entries:
                mask[b, front : min(row.until, n_tokens)] = True
            return torch.where(mask, inp, out)

        return edit

    return {point: make(entries) for point, entries in by_point.items()}


def output_changes(backend: Backend, final: torch.Tensor, starts: list[int], max_positions: int = HEAD_POSITIONS) -> list[float]:
    """For each edited row ``i + 1`` of ``final`` (``h_L``, [B, T, D]; row 0 clean): the
    largest L2 change of the output distribution over positions ``starts[i]`` .. T - 1.
    The head runs on the positions of many rows at once (one large matmul instead of one
    per row), ``max_positions`` at a time."""
    n_tokens = final.shape[1]
    clean = torch.softmax(backend.logits(final[0]).float(), -1)  # [T, V]
    cells = [(i, t) for i, start in enumerate(starts) for t in range(start, n_tokens)]
    best = [0.0] * len(starts)
    for lo in range(0, len(cells), max_positions):
        part = cells[lo : lo + max_positions]
        rows = torch.tensor([i + 1 for i, _ in part], device=final.device)
        positions = torch.tensor([t for _, t in part], device=final.device)
        probs = torch.softmax(backend.logits(final[rows, positions]).float(), -1)
        j = 0
        while j < len(part):  # each row's positions are consecutive: subtract in place, slice by slice
            i, first = part[j]
            n = next((k for k in range(j, len(part)) if part[k][0] != i), len(part)) - j
            probs[j : j + n].sub_(clean[first : first + n])
            j += n
        for (i, _), value in zip(part, probs.norm(dim=-1).tolist()):
            best[i] = max(best[i], value)
    return best


def skip_effects(
    backend: Backend,
    ids: list[int],
    positions: list[int | None],
    front: int = 1,
    budget_bytes: int = RECORD_BUDGET_BYTES,
    reuse: bool = True,
) -> SkipEffect:
    """Skip every layer at every position ``t`` in ``positions`` (None: all tokens)."""
    return skip_effect_groups(backend, ids, [positions], front, budget_bytes, reuse)[0]


@torch.no_grad()
def skip_effect_groups(
    backend: Backend,
    ids: list[int],
    groups: list[list[int | None]],
    front: int = 1,
    budget_bytes: int = RECORD_BUDGET_BYTES,
    reuse: bool = True,
) -> list[SkipEffect]:
    """One :class:`SkipEffect` per group of positions, maximised within the group; all
    rows of all groups share the batches. With ``reuse`` (HookBackend), a batch starts
    from the recorded clean residual at its first skipped block (``reuse.py``)."""
    n_layers, n_tokens = backend.loaded.n_layers, len(ids)
    rows = [
        (g, SkipRow(s, n_tokens if t is None else t, 0 if t is None else t))
        for g, positions in enumerate(groups)
        for t in positions
        for s in range(n_layers)
    ]
    d_model = backend.loaded.model.config.get_text_config().hidden_size
    per_row = (n_layers + 1) * n_tokens * d_model * 4
    rows_per_batch = max(1, budget_bytes // per_row - 1)
    future = np.zeros((len(groups), n_layers, n_layers), dtype=np.float32)
    output = np.zeros((len(groups), n_layers), dtype=np.float32)
    reusing = reuse and reuse_rows.supports_reuse(backend)
    clean = reuse_rows.record_clean(backend, ids) if reusing else None
    # Each batch also runs the head on every position of its clean row: in block runs,
    # (vocabulary x width) / (parameters of a block) per token.
    block_size = sum(p.numel() for p in backend.loaded.adapter.blocks_of(backend.loaded.model)[0].parameters())
    head = n_tokens * backend.loaded.vocab_size * d_model / block_size
    points = [row.layer + 1 for _, row in rows]
    for batch_rows in reuse_rows.plan(points, rows_per_batch, n_layers, reusing, n_tokens, head):
        chunk = [rows[i] for i in batch_rows]
        start = min(row.layer for _, row in chunk) if reusing else 0
        batch = torch.tensor([ids] * (len(chunk) + 1))
        with reuse_rows.replayed(backend, clean, start + 1):
            record = backend.forward(batch, edits=skip_edit([row for _, row in chunk], front, n_tokens))
        for l in range(start, n_layers):  # blocks before the first skipped one are unchanged
            contribution = record.layer(l).float()  # [B, T, D]
            change = (contribution[1:] - contribution[:1]).norm(dim=-1) / contribution[:1].norm(dim=-1).clamp(min=EPS)
            for i, (g, row) in enumerate(chunk):
                value = change[i, row.measure_from :].max().item()
                future[g, row.layer, l] = max(future[g, row.layer, l], value)
        changes = output_changes(backend, record.resid[-1], [row.measure_from for _, row in chunk])
        for (g, row), value in zip(chunk, changes):
            output[g, row.layer] = max(output[g, row.layer], value)
    return [SkipEffect(future=future[g], output=output[g]) for g in range(len(groups))]
