"""How a forward pass is run and read: the one primitive every trace and intervention uses.

A backend runs the model on a padded batch and returns the residual stream
``h_0 .. h_L`` (claims.md, "Layers") and, on request, what each block's attention and
MLP add to it, after applying *edits*: functions that replace a residual point ``h_r``
(``r = 0``: the input of block 0; ``r >= 1``: the output of block ``r - 1``) with a new
tensor of the same shape. Skips, erasures and integrated-gradient interpolations are
all edits (an edit also gets the input of the block that wrote ``h_r``, which is what a
skipped block passes on), so they run unchanged on every backend:

- :class:`harness.backends.hooks.HookBackend` (``--backend transformers``, the default):
  forward hooks on the plain transformers model;
- :class:`harness.backends.nnsight_backend.NNsightBackend` (``--backend nnsight``): the
  same reads and edits written as an nnsight trace, locally or on NDIF (``--remote``).

This module holds what every backend shares (:class:`Backend`, :class:`ForwardRecord`,
edits); :func:`harness.backends.make_backend` builds one by name.

Sublayer contributions, through the adapter (so every family works):

- sequential blocks (``x -> x + attn -> x + attn + mlp``): the residual the MLP is added
  to is ``mid``, the input of the adapter's ``mlp_residual`` module (the pre-MLP norm; for
  OLMo-2, whose norms come after each sublayer, the MLP itself). Attention adds
  ``mid - x``, the MLP ``out - mid``. Reading differences of residuals, not module outputs,
  keeps post-norms (Gemma-2/3, OLMo-2) inside the contribution, where they belong.
- parallel blocks (GPT-NeoX with ``use_parallel_residual``, Phi: ``out = x + attn(x) +
  mlp(x)``): both sublayers read ``x`` and are added to it together, so *the residual the
  MLP is added to is ``x``*, the block input, like the attention's. Attention adds the
  attention module's output, the MLP ``out - x - attn``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from harness.models.loading import LoadedModel

# An edit gets (h_r, h_{r-1}) -- the residual point and the input of the block that wrote
# it (None at r = 0) -- and returns the new h_r, same shape.
Edit = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass
class ForwardRecord:
    """What one forward pass wrote into the residual stream. Tensors are [B, T, D]."""

    resid: list[torch.Tensor]  # h_0 .. h_L (after edits)
    parallel: bool
    mid: list[torch.Tensor] | None = None  # sequential: residual after attention, per block
    attn_out: list[torch.Tensor] | None = None  # parallel: attention output, per block

    @property
    def n_layers(self) -> int:
        return len(self.resid) - 1

    def layer(self, l: int) -> torch.Tensor:
        """What block ``l`` adds: ``h_{l+1} - h_l``."""
        return self.resid[l + 1] - self.resid[l]

    def attention(self, l: int) -> torch.Tensor:
        self._need_sublayers()
        return self.attn_out[l] if self.parallel else self.mid[l] - self.resid[l]

    def mlp(self, l: int) -> torch.Tensor:
        self._need_sublayers()
        if self.parallel:
            return self.resid[l + 1] - self.resid[l] - self.attn_out[l]
        return self.resid[l + 1] - self.mid[l]

    def mlp_residual(self, l: int) -> torch.Tensor:
        """The residual the MLP's output is added to (block input for parallel blocks)."""
        self._need_sublayers()
        return self.resid[l] if self.parallel else self.mid[l]

    def _need_sublayers(self) -> None:
        if self.mid is None and self.attn_out is None:
            raise ValueError("This forward pass did not record sublayers; call forward(..., sublayers=True).")


class Backend(abc.ABC):
    """Runs forward passes of one loaded model."""

    name: str

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.parallel = loaded.adapter.parallel_residual(loaded.model)
        if not self.parallel and loaded.adapter.mlp_residual is None:
            raise ValueError(f"{loaded.adapter.family}: a sequential block needs the adapter's mlp_residual path.")

    @property
    def identity(self) -> dict:
        """Part of every cache key and provenance record."""
        return {"backend": self.name}

    @abc.abstractmethod
    def forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor | None = None,
        edits: Mapping[int, Edit] | None = None,
        sublayers: bool = False,
    ) -> ForwardRecord:
        """Run ``ids`` [B, T] with ``edits`` applied; gradients flow when enabled by the caller."""

    @abc.abstractmethod
    def read_rows(
        self, ids: torch.Tensor, mask: torch.Tensor, batch_idx: torch.Tensor, pos_idx: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """For the trace engine: ``h_0 .. h_L`` at rows (batch_idx, pos_idx), each [N, D],
        and the model's own logits there [N, V] (its head runs on those rows only)."""

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The model's own head (final norm, unembedding, soft-cap) on residuals ``h``."""
        unembed = self.loaded.adapter.unembed_of(self.loaded.model)
        # As one [positions, D] matrix: a strided [B, A, D] slice would otherwise make the
        # unembedding a batched matmul over a broadcast weight (~10x slower on a CPU).
        flat = h.to(unembed.weight.device).reshape(-1, h.shape[-1])
        logits = self.loaded.adapter.residual_to_logits(self.loaded.model, flat)
        return logits.reshape(*h.shape[:-1], logits.shape[-1])

    def _check_edits(self, edits: Mapping[int, Edit] | None) -> dict[int, Edit]:
        edits = dict(edits or {})
        bad = [r for r in edits if not 0 <= r <= self.loaded.n_layers]
        if bad:
            raise ValueError(f"Edits at residual points {bad}: this model has points 0..{self.loaded.n_layers}.")
        return edits


def block_output(value):
    """A block's hidden-state output: a bare tensor in transformers >= 5, the first entry of
    a tuple in older versions (``output[0]`` on a bare tensor would take batch row 0)."""
    return value[0] if isinstance(value, tuple) else value


def _replace_output(value, new: torch.Tensor):
    return (new, *value[1:]) if isinstance(value, tuple) else new


def _first_input(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_first_input(args, kwargs, new: torch.Tensor):
    if args:
        return (new, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": new}
