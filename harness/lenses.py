"""Lenses: maps from a residual-stream point ``h_l`` to vocabulary logits.

A lens is applied to ``h_l`` (the input of block ``l``; ``h_L`` is the pre-norm output of
the last block). At ``l = L`` every lens is the model's own head, so it gives back the
model's logits. Lenses without parameters register a factory in :data:`LENSES`; the
tuned lens (``harness.tuned_lens``) needs trained translators, so a run obtains it
through ``ModelSession.lens``. :data:`LENS_NAMES` lists every ``--lens`` name.
"""

from __future__ import annotations

import abc
from typing import Callable

import torch

from harness.models.loading import LoadedModel


class Lens(abc.ABC):
    """Residual point ``h_l`` -> logits. Subclasses set ``name`` and implement ``logits``."""

    name: str

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded

    @abc.abstractmethod
    def logits(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """Vocabulary logits for rows ``h`` (shape [n, d_model]) read at residual point ``layer``."""

    @property
    def identity(self) -> dict:
        """What a trace read through this lens depends on, beyond the model (cache keys,
        provenance). Lenses with parameters add a hash of them."""
        return {"lens": self.name}

    @property
    def mismatch(self) -> dict | None:
        """How the model this lens was made for differs from the model it reads (``{"lens_model",
        "model", "reason"}``), for a lens accepted with --allow-lens-mismatch; else None."""
        return None

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """The model's own final norm, unembedding and soft-cap, on the unembedding's device."""
        unembed = self.loaded.adapter.unembed_of(self.loaded.model)
        return self.loaded.adapter.residual_to_logits(self.loaded.model, h.to(unembed.weight.device))


class LogitLens(Lens):
    """nostalgebraist's logit lens: the model's own head applied to every ``h_l``."""

    name = "logit"

    def logits(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        return self.head(h)


LENSES: dict[str, Callable[[LoadedModel], Lens]] = {"logit": LogitLens}
LENS_NAMES: tuple[str, ...] = ("logit", "tuned")


def make_lens(name: str, loaded: LoadedModel) -> Lens:
    try:
        factory = LENSES[name]
    except KeyError:
        raise ValueError(f"Unknown lens {name!r}; available: {', '.join(sorted(LENSES))}.") from None
    return factory(loaded)
