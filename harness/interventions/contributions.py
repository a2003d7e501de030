"""How much each attention, MLP and whole layer adds to the residual stream.

Relative contribution = ||what the sublayer adds|| / ||the residual it is added to||, and
the cosine between the two, per token (Csordás et al. 2025, Fig. 2). Which residual
that is for the MLP of a parallel block is documented in ``backend.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from harness.backends.base import Backend, ForwardRecord

PARTS = ("attention", "mlp", "layer")
EPS = 1e-6


@dataclass(frozen=True)
class Contributions:
    """Per-prompt means over tokens, arrays [n_prompts, L] per part."""

    relative: dict[str, np.ndarray]
    cosine: dict[str, np.ndarray]
    n_tokens: np.ndarray  # [n_prompts]


def _pairs(record: ForwardRecord, l: int):
    """(what is added, the residual it is added to) for each part of block ``l``."""
    return {
        "attention": (record.attention(l), record.resid[l]),
        "mlp": (record.mlp(l), record.mlp_residual(l)),
        "layer": (record.layer(l), record.resid[l]),
    }


def token_contributions(record: ForwardRecord) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Relative contribution and cosine per part, each [L, B, T] (float32)."""
    rel: dict[str, list] = {p: [] for p in PARTS}
    cos: dict[str, list] = {p: [] for p in PARTS}
    for l in range(record.n_layers):
        for part, (added, residual) in _pairs(record, l).items():
            added, residual = added.float(), residual.float()
            rel[part].append(added.norm(dim=-1) / residual.norm(dim=-1).clamp(min=EPS))
            cos[part].append(F.cosine_similarity(added, residual, dim=-1))
    return {p: torch.stack(v) for p, v in rel.items()}, {p: torch.stack(v) for p, v in cos.items()}


@torch.no_grad()
def measure_contributions(backend: Backend, prompts: list[list[int]], progress=None) -> Contributions:
    """One forward pass per prompt (no padding to mask); means over each prompt's tokens."""
    rel_rows: dict[str, list] = {p: [] for p in PARTS}
    cos_rows: dict[str, list] = {p: [] for p in PARTS}
    n_tokens = []
    for ids in progress(prompts) if progress else prompts:
        record = backend.forward(torch.tensor([ids]), sublayers=True)
        rel, cos = token_contributions(record)
        for part in PARTS:
            rel_rows[part].append(rel[part][:, 0].mean(-1).cpu().numpy())
            cos_rows[part].append(cos[part][:, 0].mean(-1).cpu().numpy())
        n_tokens.append(len(ids))
    return Contributions(
        relative={p: np.stack(v) for p, v in rel_rows.items()},
        cosine={p: np.stack(v) for p, v in cos_rows.items()},
        n_tokens=np.array(n_tokens),
    )
