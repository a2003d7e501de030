"""How far a lens-read verdict can be trusted: the lens's fidelity at the layers read.

A lens reading says something about the model only where the lens tracks the model's
own computation. For every verdict read through a lens we record, at the layers its
statistic reads (the layers it aggregates, else every layer before L):

- ``held_out_kl``: the lens's mean KL(final || lens) there on held-out text (nats);
- ``reference_kl``: the same for the tuned lens, when the verdict was read through
  another lens (the logit lens) and a tuned lens exists;
- ``outside_top1000``: the share of the lens's top-1 tokens there that lie outside the
  Top-1000 frequency bucket of the corpus;
- for a tuned lens fitted here: its training tokens and ``last_half_kl_change``, the
  relative change of its mean held-out KL from (about) half of its training tokens to all
  of them (the last two points of its convergence curve).

The rules, fixed here before looking at any verdict:

- *unreliable reading* when the lens's KL there is more than ``KL_RATIO`` times the tuned
  lens's (the lens is far from what the model computes at those layers), or when more than
  ``OUTSIDE_TOP1000`` of its top-1 tokens there are outside the Top-1000 bucket (the lens
  reads mostly tokens the data almost never has: the verdict then says more about the lens
  than about the model; seen with the logit lens on some model families);
- *not converged* when a tuned lens's mean held-out KL still fell by more than
  ``CONVERGENCE_DROP`` over the last half of its training tokens (2% per quarter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.frequency import BUCKETS

OUTSIDE_BUCKET = BUCKETS.index("Rest")  # tokens outside the Top-1000 of the corpus
KL_RATIO = 3.0
OUTSIDE_TOP1000 = 0.9
CONVERGENCE_DROP = 0.04


@dataclass(frozen=True)
class LensFidelity:
    lens: str
    layers: tuple[int, ...]
    held_out_kl: float
    held_out_tokens: int
    reference_kl: float | None = None  # the tuned lens's, for a verdict read through another lens
    outside_top1000: float | None = None
    training_tokens: int | None = None  # a tuned lens fitted here
    last_half_kl_change: float | None = None

    @property
    def unreliable(self) -> list[str]:
        """Why the reading at these layers says more about the lens than the model (empty: no reason)."""
        reasons = []
        if self.reference_kl is not None and self.held_out_kl > KL_RATIO * self.reference_kl:
            reasons.append(
                f"held-out KL {self.held_out_kl:.2f} nats is {self.held_out_kl / self.reference_kl:.1f}x the tuned "
                f"lens's {self.reference_kl:.2f} (more than {KL_RATIO:g}x)"
            )
        if self.outside_top1000 is not None and self.outside_top1000 > OUTSIDE_TOP1000:
            reasons.append(f"{self.outside_top1000:.0%} of its top-1 tokens are outside the Top-1000 bucket")
        return reasons

    @property
    def converged(self) -> bool | None:
        """None where there is no convergence curve (the logit lens, a published lens)."""
        if self.last_half_kl_change is None:
            return None
        return self.last_half_kl_change >= -CONVERGENCE_DROP

    @property
    def label(self) -> str:
        parts = ["unreliable: " + "; ".join(self.unreliable)] if self.unreliable else ["faithful enough"]
        if self.converged is False:
            parts.append(f"not converged (KL fell {-self.last_half_kl_change:.1%} over the last half of training)")
        return "; ".join(parts)

    def record(self) -> dict:
        return {
            "lens": self.lens, "layers": list(self.layers), "held_out_kl": self.held_out_kl,
            "held_out_tokens": self.held_out_tokens, "reference_kl": self.reference_kl,
            "outside_top1000": self.outside_top1000, "training_tokens": self.training_tokens,
            "last_half_kl_change": self.last_half_kl_change, "unreliable": self.unreliable,
            "converged": self.converged, "label": self.label,
        }


def last_half_change(points: Sequence[dict]) -> float | None:
    """Relative change of the mean held-out KL between the convergence curve's point
    nearest to half of the final tokens and its final point."""
    if len(points) < 2:
        return None
    final = points[-1]
    half = min(points[:-1], key=lambda p: abs(p["tokens"] - final["tokens"] / 2))
    return (final["mean_kl"] - half["mean_kl"]) / half["mean_kl"]


def lens_fidelity(
    lens: str,
    layers: Sequence[int],
    kl: np.ndarray,
    tokens: int,
    reference: np.ndarray | None = None,
    top1_buckets: np.ndarray | None = None,
    training_tokens: int | None = None,
    convergence: Sequence[dict] | None = None,
) -> LensFidelity:
    """``kl`` / ``reference``: held-out KL per residual point (0..L) of the lens and of the
    tuned lens; ``top1_buckets``: frequency bucket index of the lens top-1 per (layer, row)
    of the claim's own trace ([L+1, N]); ``convergence``: a tuned lens's curve points."""
    layers = tuple(int(l) for l in layers)
    idx = list(layers)
    outside = None
    if top1_buckets is not None and top1_buckets.size:
        outside = float((top1_buckets[idx] == OUTSIDE_BUCKET).mean())
    return LensFidelity(
        lens=lens, layers=layers, held_out_kl=float(np.mean(kl[idx])), held_out_tokens=int(tokens),
        reference_kl=None if reference is None else float(np.mean(reference[idx])),
        outside_top1000=outside, training_tokens=training_tokens,
        last_half_kl_change=None if not convergence else last_half_change(convergence),
    )
