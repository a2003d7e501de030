"""How a forward pass is run and read: the one primitive every trace and intervention uses.

A backend runs the model on a padded batch and returns the residual stream
``h_0 .. h_L`` (claims.md, "Layers") and, on request, what each block's attention and
MLP add to it, after applying *edits*: functions that replace a residual point ``h_r``
(``r = 0``: the input of block 0; ``r >= 1``: the output of block ``r - 1``) with a new
tensor of the same shape. Skips, erasures and integrated-gradient interpolations are
all edits (an edit also gets the input of the block that wrote ``h_r``, which is what a
skipped block passes on), so they run unchanged on every backend:

- :class:`HookBackend` (``--backend transformers``, the default): forward hooks on the
  plain transformers model;
- ``harness.interventions.nnsight_backend.NNsightBackend`` (``--backend nnsight``): the
  same reads and edits written as an nnsight trace, locally or on NDIF (``--remote``).

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
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from harness.models.loading import LoadedModel

# An edit gets (h_r, h_{r-1}) -- the residual point and the input of the block that wrote
# it (None at r = 0) -- and returns the new h_r, same shape.
Edit = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]

BACKENDS = ("transformers", "nnsight")


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
        return self.loaded.adapter.residual_to_logits(self.loaded.model, h.to(unembed.weight.device))

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


class HookBackend(Backend):
    """Plain transformers with forward hooks (the default backend)."""

    name = "transformers"

    def forward(self, ids, mask=None, edits=None, sublayers=False) -> ForwardRecord:
        loaded, adapter = self.loaded, self.loaded.adapter
        edits = self._check_edits(edits)
        blocks = adapter.blocks_of(loaded.model)
        n = len(blocks)
        resid: list = [None] * (n + 1)
        mid: list = [None] * n
        attn_out: list = [None] * n

        def block_pre(l):
            def hook(_m, args, kwargs):
                if l == 0 and 0 in edits:
                    args, kwargs = _with_first_input(args, kwargs, edits[0](_first_input(args, kwargs), None))
                    resid[0] = _first_input(args, kwargs)
                    return args, kwargs
                resid[l] = _first_input(args, kwargs)
                return None

            return hook

        def block_post(l):
            def hook(_m, args, kwargs, output):
                if l + 1 in edits:
                    return _replace_output(output, edits[l + 1](block_output(output), _first_input(args, kwargs)))
                return None

            return hook

        def final_pre(_m, args, kwargs):
            resid[n] = _first_input(args, kwargs)

        def store(slot: list, l: int, read):
            def hook(*hook_args):
                slot[l] = read(*hook_args)

            return hook

        with ExitStack() as stack:
            def hooked(handle):
                stack.callback(handle.remove)

            for l, block in enumerate(blocks):
                hooked(block.register_forward_pre_hook(block_pre(l), with_kwargs=True))
                hooked(block.register_forward_hook(block_post(l), with_kwargs=True))
                if sublayers and self.parallel:
                    read = lambda _m, _a, out: block_output(out)  # noqa: E731
                    hooked(adapter.attention_of(block).register_forward_hook(store(attn_out, l, read)))
                elif sublayers:
                    read = lambda _m, args, kwargs: _first_input(args, kwargs)  # noqa: E731
                    hooked(adapter.mlp_residual_of(block).register_forward_pre_hook(store(mid, l, read), with_kwargs=True))
            hooked(adapter.final_norm_of(loaded.model).register_forward_pre_hook(final_pre, with_kwargs=True))
            loaded.model(
                input_ids=ids.to(loaded.device),
                attention_mask=None if mask is None else mask.to(loaded.device),
                logits_to_keep=1,
                use_cache=False,
            )
        return ForwardRecord(
            resid=resid,
            parallel=self.parallel,
            mid=mid if sublayers and not self.parallel else None,
            attn_out=attn_out if sublayers and self.parallel else None,
        )

    # Shared prefixes (harness/interventions/shared_prefix.py): a prefix common to every
    # row of a batch runs once, the rows' own tokens after it on its KV cache. Set
    # ``share_prefix = False`` on an instance for the plain pass only.
    # None: the module's defaults (MIN_SHARED_TOKENS, PREFIX_CACHE_BYTES).
    share_prefix = True
    min_shared_tokens: int | None = None  # shortest shared prefix worth its own pass
    prefix_cache_bytes: int | None = None  # bound on the stored prefixes' tensors

    def read_rows(self, ids, mask, batch_idx, pos_idx):
        from harness.interventions import shared_prefix

        return shared_prefix.read_rows(self, ids, mask, batch_idx, pos_idx, plain=self._read_rows_full)

    def prefix_stats(self) -> dict:
        """What read_rows ran so far (forward calls and token positions, prefixes stored and
        reused); see shared_prefix.PrefixStats."""
        from harness.interventions import shared_prefix

        return shared_prefix.store_of(self).stats.as_dict()

    def clear_prefixes(self) -> None:
        """Drops the stored prefixes (their memory)."""
        from harness.interventions import shared_prefix

        shared_prefix.store_of(self).clear()

    def _read_rows_full(self, ids, mask, batch_idx, pos_idx):
        """The plain pass: every row's every token."""
        loaded, adapter = self.loaded, self.loaded.adapter
        blocks = adapter.blocks_of(loaded.model)
        captured: list = [None] * (len(blocks) + 1)

        def grab(slot: int):
            def hook(_module, args, kwargs):
                h = _first_input(args, kwargs)
                captured[slot] = h[batch_idx.to(h.device), pos_idx.to(h.device)]

            return hook

        # The model's head runs only on the read positions (a boolean logits_to_keep
        # returns them flattened in row-major order).
        keep = torch.zeros(ids.shape, dtype=torch.bool)
        keep[batch_idx, pos_idx] = True
        with ExitStack() as stack:
            for i, b in enumerate(blocks):
                stack.callback(b.register_forward_pre_hook(grab(i), with_kwargs=True).remove)
            norm = adapter.final_norm_of(loaded.model)
            stack.callback(norm.register_forward_pre_hook(grab(len(blocks)), with_kwargs=True).remove)
            out = loaded.model(
                input_ids=ids.to(loaded.device),
                attention_mask=mask.to(loaded.device),
                logits_to_keep=keep.to(loaded.device),
                use_cache=False,
            )
        kept_flat = keep.flatten().nonzero().squeeze(1)
        row = torch.searchsorted(kept_flat, batch_idx * ids.shape[1] + pos_idx)
        return captured, out.logits[row.to(out.logits.device)]


def make_backend(name: str, loaded: LoadedModel, remote: bool = False) -> Backend:
    if name == "transformers":
        if remote:
            raise ValueError("--remote runs through nnsight on NDIF: add --backend nnsight.")
        return HookBackend(loaded)
    if name == "nnsight":
        from harness.interventions.nnsight_backend import NNsightBackend

        return NNsightBackend(loaded, remote=remote)
    raise ValueError(f"Unknown backend {name!r}; available: {', '.join(BACKENDS)}.")
