"""Residual erasure. Replace ``h_r`` at one token with an uninformative residual
(the mean over the tokens of other prompts) and measure the largest L2 change of the
answer tokens' output distributions (Csordás et al. 2025, Fig. 6b).

The map has one row per residual point ``r = 0 .. L`` and one column per token. All its
cells run as rows of batched forward passes, each batch with one unedited row; blocks
before a batch's first erased point return the recorded clean residual (``reuse.py``).
"""

from __future__ import annotations

import numpy as np
import torch

from harness.backends.base import Backend
from harness.interventions import reuse as reuse_rows
from harness.interventions.skip import RECORD_BUDGET_BYTES


@torch.no_grad()
def mean_residuals(backend: Backend, prompts: list[list[int]]) -> torch.Tensor:
    """[L + 1, D]: the mean of ``h_r`` over every token of ``prompts`` (float32)."""
    total, count = None, 0
    for ids in prompts:
        record = backend.forward(torch.tensor([ids]))
        sums = torch.stack([h[0].float().sum(0) for h in record.resid])
        total = sums if total is None else total + sums
        count += len(ids)
    return total / count


def answer_positions(n_tokens: int, answer_len: int) -> slice:
    """Positions whose next token is an answer token (the answer ends the prompt)."""
    return slice(n_tokens - answer_len - 1, n_tokens - 1)


def erase_edits(cells: list[tuple[int, int]], baseline: torch.Tensor, row_offset: int = 1):
    """Edits that set ``h_r[row, t] := baseline[r]`` for cell ``(r, t)`` in row ``i + row_offset``."""
    by_point: dict[int, list[tuple[int, int]]] = {}
    for i, (r, t) in enumerate(cells):
        by_point.setdefault(r, []).append((i + row_offset, t))

    def make(r, entries):
        def edit(h: torch.Tensor, _inp) -> torch.Tensor:
            mask = torch.zeros(h.shape[:2] + (1,), dtype=torch.bool, device=h.device)
            for b, t in entries:
                mask[b, t] = True
            return torch.where(mask, baseline[r].to(h.device, h.dtype), h)

        return edit

    return {r: make(r, entries) for r, entries in by_point.items()}


@torch.no_grad()
def erasure_map(
    backend: Backend,
    ids: list[int],
    answer_len: int,
    baseline: torch.Tensor,
    budget_bytes: int = RECORD_BUDGET_BYTES,
    reuse: bool = True,
) -> np.ndarray:
    """[L + 1, T]: the largest L2 change of an answer token's output distribution when
    ``h_r`` at token ``t`` is erased. With ``reuse`` (HookBackend), a batch starts from the
    recorded clean residual at its first erased point (``reuse.py``). Tokens after the
    last answer-predicting position cannot change it (causal attention): they are not
    run, and their column is 0."""
    n_points = backend.loaded.n_layers + 1
    read = answer_positions(len(ids), answer_len)
    run = list(ids[: read.stop])
    n_tokens = len(run)
    cells = [(r, t) for r in range(n_points) for t in range(n_tokens)]
    per_row = n_points * n_tokens * baseline.shape[1] * 4
    rows_per_batch = max(1, budget_bytes // per_row - 1)
    effect = np.zeros((n_points, len(ids)), dtype=np.float32)
    reusing = reuse and reuse_rows.supports_reuse(backend)
    clean = reuse_rows.record_clean(backend, run) if reusing else None
    for batch_cells in reuse_rows.plan([r for r, _ in cells], rows_per_batch, n_points - 1, reusing, n_tokens):
        chunk = [cells[i] for i in batch_cells]
        with reuse_rows.replayed(backend, clean, min(r for r, _ in chunk)):
            record = backend.forward(torch.tensor([run] * (len(chunk) + 1)), edits=erase_edits(chunk, baseline))
        probs = torch.softmax(backend.logits(record.resid[-1][:, read]).float(), -1)  # [B, A, V]
        change = (probs[1:] - probs[:1]).norm(dim=-1).amax(-1)  # [B - 1]
        for (r, t), value in zip(chunk, change.tolist()):
            effect[r, t] = value
    return effect
