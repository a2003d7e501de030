"""The default backend (``--backend transformers``): forward hooks on the plain
transformers model. Reads and edits as :mod:`harness.backends.base` defines them; rows
for the trace engine run shared prefixes once (:mod:`harness.interventions.shared_prefix`)."""

from __future__ import annotations

from contextlib import ExitStack

import torch

from harness.backends.base import (
    Backend,
    ForwardRecord,
    _first_input,
    _replace_output,
    _with_first_input,
    block_output,
)
from harness.interventions import shared_prefix


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
        return shared_prefix.read_rows(self, ids, mask, batch_idx, pos_idx, plain=self._read_rows_full)

    def prefix_stats(self) -> dict:
        """What read_rows ran so far (forward calls and token positions, prefixes stored and
        reused); see shared_prefix.PrefixStats."""
        return shared_prefix.store_of(self).stats.as_dict()

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
