"""Edited rows start from the recorded clean residual instead of from the embeddings.

An edit at residual point ``p`` (a skip of block ``p - 1``, an erasure or an
integrated-gradients path at ``h_p``) leaves ``h_0 .. h_p`` before the edit unchanged, so
blocks ``0 .. p - 1`` compute nothing new. :func:`replayed` makes those blocks return
their output recorded in one clean forward pass (:func:`record_clean`), broadcast to the
batch, by temporarily setting the block's ``forward`` (an instance attribute): the
backend's hooks still run (its edits and reads see the recorded tensors), the model's
masks and position embeddings are computed as usual, and nothing is family-specific.
:func:`plan` groups rows into batches so that a batch shares one start point.

Only :class:`HookBackend` replays; other backends (nnsight, which also runs remotely)
compute every block, as before -- the values agree either way up to float rounding.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from harness.backends.base import Backend, ForwardRecord, _first_input, _replace_output, block_output
from harness.backends.hooks import HookBackend


@dataclass
class Clean:
    """One clean forward pass of a single row: its record (``h_0 .. h_L``, [1, T, D]) and
    each block's raw output (tensor or tuple, as the block returns it)."""

    record: ForwardRecord
    outputs: list | None  # None: the backend does not replay


def supports_reuse(backend: Backend) -> bool:
    return isinstance(backend, HookBackend)


@torch.no_grad()
def record_clean(backend: Backend, ids: list[int], reuse: bool = True) -> Clean:
    """The clean forward pass of ``ids``; block outputs kept when they can be replayed
    (``reuse`` and a backend that replays)."""
    if not (reuse and supports_reuse(backend)):
        return Clean(backend.forward(torch.tensor([ids])), None)
    blocks = backend.loaded.adapter.blocks_of(backend.loaded.model)
    outputs: list = [None] * len(blocks)

    def keep(l):
        def hook(_m, _args, output):
            outputs[l] = output

        return hook

    handles = [b.register_forward_hook(keep(l)) for l, b in enumerate(blocks)]
    try:
        record = backend.forward(torch.tensor([ids]))
    finally:
        for h in handles:
            h.remove()
    return Clean(record, outputs)


def _replay(output, last: bool):
    h = block_output(output).detach()

    def forward(*args, **kwargs):
        batch = _first_input(args, kwargs).shape[0]
        out = h.expand(batch, *h.shape[1:])
        # The first computed block gets its own tensor (a block may add in place).
        return _replace_output(output, out.clone() if last else out)

    return forward


@contextmanager
def replayed(backend: Backend, clean: Clean | None, start: int):
    """Within the block, blocks ``0 .. start - 1`` return their recorded clean output
    instead of computing it (no-op without recorded outputs or at ``start = 0``)."""
    if clean is None or clean.outputs is None or start <= 0:
        yield
        return
    blocks = backend.loaded.adapter.blocks_of(backend.loaded.model)
    saved = [b.__dict__.get("forward") for b in blocks[:start]]
    try:
        for l in range(start):
            blocks[l].forward = _replay(clean.outputs[l], last=l == start - 1)
        yield
    finally:
        for block, forward in zip(blocks[:start], saved):
            if forward is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = forward


# What one run of a block costs beyond its rows, in token-rows (Python, hooks, kernel
# launches): ~13-15 measured for the default model on a 2-core CPU (1 and 2 threads), doubled.
OVERHEAD_TOKENS = 32


def plan(
    points: list[int], max_rows: int, n_layers: int, reuse: bool, n_tokens: int = 1, per_batch: float = 0.0
) -> list[list[int]]:
    """Row indices per batch. Without reuse: consecutive chunks of ``max_rows`` (every
    batch runs all blocks). With reuse: rows sorted by their edit point and cut where
    that saves the most work; a batch runs blocks ``p .. L - 1`` (``p``: its smallest
    point) on its rows plus one clean row, costing
    ``((rows + 1) * n_tokens + OVERHEAD_TOKENS) * (L - p + 1) + per_batch`` token-row
    block runs (the + 1: embeddings, head and edits; ``per_batch``: what the caller does
    once per batch). Dynamic programming over the cuts, O(rows * max_rows)."""
    n = len(points)
    if not reuse:
        return [list(range(i, min(i + max_rows, n))) for i in range(0, n, max_rows)]
    order = sorted(range(n), key=lambda i: points[i])
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - max_rows), j):
            blocks = n_layers - points[order[i]] + 1
            cost = best[i] + ((j - i + 1) * n_tokens + OVERHEAD_TOKENS) * blocks + per_batch
            if cost < best[j]:
                best[j], cut[j] = cost, i
    batches, j = [], n
    while j > 0:
        batches.append(order[cut[j] : j])
        j = cut[j]
    return batches[::-1]
