"""Integrated gradients of the answer's probability with respect to each residual
point, per token (Csordás et al. 2025, Fig. 6a).

For residual point ``r`` the path runs from a baseline (the mean of ``h_r`` over the
prompt's tokens, at every token) to the real ``h_r``; the attribution of token ``t`` is
``sum_d (h_r - b)[t, d] * mean_alpha dF/dh_r[t, d]`` with ``F`` = the summed probability
of the answer tokens (teacher-forced). The midpoint rule over ``steps`` points makes the
attributions of a point sum to ``F(h_r) - F(b)`` up to the discretisation error
(completeness, tested), which each result reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.backends.base import Backend
from harness.interventions import reuse as reuse_rows
from harness.interventions.erasure import answer_positions

STEPS = 16


@dataclass(frozen=True)
class Attribution:
    values: np.ndarray  # [L + 1, T]
    output_difference: np.ndarray  # [L + 1]: F(real) - F(baseline) at each point
    completeness_error: np.ndarray  # [L + 1]: |sum_t values - output_difference|


def answer_probability(backend: Backend, h_final: torch.Tensor, ids: list[int], answer_len: int) -> torch.Tensor:
    """[B]: the summed probability of the answer tokens, read from ``h_L`` [B, T, D]."""
    read = answer_positions(len(ids), answer_len)
    targets = torch.tensor(ids[read.start + 1 : read.stop + 1], device=h_final.device)
    probs = torch.softmax(backend.logits(h_final[:, read]).float(), -1)  # [B, A, V]
    return probs.gather(-1, targets.expand(probs.shape[0], -1).unsqueeze(-1).to(probs.device)).squeeze(-1).sum(-1)


def integrated_gradients(
    backend: Backend, ids: list[int], answer_len: int, steps: int = STEPS, reuse: bool = True
) -> Attribution:
    """The ``steps`` points of a path run as one batch per residual point ``r``; with
    ``reuse`` (HookBackend) that batch and the two end rows start from the recorded clean
    residual ``h_r`` (blocks ``0 .. r - 1`` are replayed, ``reuse.py``), so forward and
    backward run through blocks ``r .. L - 1`` only."""
    n_points = backend.loaded.n_layers + 1
    batch = torch.tensor([ids])
    clean = reuse_rows.record_clean(backend, ids, reuse)
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    values, differences, errors = [], [], []
    for r in range(n_points):
        real = clean.record.resid[r][0].detach()  # [T, D]
        base = real.mean(0, keepdim=True).expand_as(real)
        a = alphas.to(real.device, real.dtype)[:, None, None]
        path = (base + a * (real - base)).requires_grad_(True)  # [steps, T, D]
        with torch.enable_grad(), reuse_rows.replayed(backend, clean, r):
            record = backend.forward(batch.expand(steps, -1), edits={r: lambda _h, _inp, path=path: path})
            prob = answer_probability(backend, record.resid[-1], ids, answer_len)
            (grad,) = torch.autograd.grad(prob.sum(), path)
        attribution = ((real - base).float() * grad.float().mean(0)).sum(-1)  # [T]
        with torch.no_grad(), reuse_rows.replayed(backend, clean, r):
            ends = backend.forward(torch.tensor([ids] * 2), edits={r: lambda _h, _inp: torch.stack([base, real])})
            f_base, f_real = answer_probability(backend, ends.resid[-1], ids, answer_len).tolist()
        values.append(attribution.detach().cpu().numpy())
        differences.append(f_real - f_base)
        errors.append(abs(float(attribution.sum()) - (f_real - f_base)))
    return Attribution(np.stack(values), np.array(differences, dtype=np.float32), np.array(errors, dtype=np.float32))
