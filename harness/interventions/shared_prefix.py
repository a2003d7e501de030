"""Shared-prefix forward passes for :meth:`HookBackend.read_rows` (issue 11, item 3).

Few-shot prompts of one task share a long prefix (the demonstrations: 74-84% of the
characters of the multiple-choice prompts). With causal attention the keys, values and
residuals of a prefix depend on the prefix alone, so a batch whose rows all start with the
same tokens needs them once:

1. the *prefix pass* runs the shared tokens once (batch 1, with a KV cache) and keeps
   their keys and values (and, when some read falls inside the prefix, ``h_0 .. h_L`` at
   every prefix position);
2. the *suffix pass* runs each row's own tokens after the prefix, batched, on a copy of
   the prefix cache expanded to the batch, with the whole attention mask (prefix + suffix,
   right padding) and the true positions; reads after the prefix are captured there, the
   model's logits with ``logits_to_keep`` as in the plain pass;
3. reads inside the prefix come from the prefix pass (the same for every row), their
   logits from the model's head (``Backend.logits``: final norm, unembedding, soft-cap).

Prefixes are kept in a :class:`PrefixStore` on the backend (least recently used first out,
at most ``HookBackend.prefix_cache_bytes``), so that the many batches of one task run the
demonstrations once. A stored prefix serves any batch whose common prefix starts with some
of its tokens (its first ``q`` keys and values are those of any sequence that starts with
those ``q`` tokens); when the batch shares more, the stored prefix is extended by a
batch-1 pass over the extra tokens. The store is emptied when the model's weights change
(their version counters), its dtype or device.

Stored tensors are never written to: the suffix pass gets a fresh cache whose first update
copies the (expanded) prefix, and every update after that concatenates into new tensors.
Sliding-window layers get full-length keys with the model's sliding-window mask over
absolute positions, which is what the plain pass computes.

The plain pass (``HookBackend._read_rows_full``) still runs a batch when rows are not
right-padded, when gradients are enabled, or when the shared part is shorter than
``HookBackend.min_shared_tokens``.

:func:`prefix_batches` orders a request's prompts so that prompts sharing a prefix land in
the same batches (``TraceEngine._batches``).
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Protocol, Sequence

import torch

if TYPE_CHECKING:
    from harness.models.loading import LoadedModel


class PrefixBackend(Protocol):
    """What the shared-prefix passes need of a backend (``harness.backends.hooks.HookBackend``
    is one; the backend imports this module, not the other way round)."""

    loaded: LoadedModel
    share_prefix: bool
    min_shared_tokens: int | None
    prefix_cache_bytes: int | None

    def logits(self, h: torch.Tensor) -> torch.Tensor: ...

# A batch runs its shared prefix separately only when the prefix (or the part of a stored
# prefix it reuses) has at least this many tokens, and a new or extended prefix is run only
# when it saves at least this many token positions ((rows - 1) x its new tokens). What it
# weighs: one extra forward call (the prefix pass), worth a few token positions of a batch
# on the default model on a CPU, and the stored keys and values. The multiple-choice
# demonstrations are 92-373 tokens long, far above it; shorter shared starts (a chat
# template, a BOS) are left to the plain pass, where they cost little.
MIN_SHARED_TOKENS = 32
# Bound on the keys, values and residuals of stored prefixes, per backend.
PREFIX_CACHE_BYTES = 512 << 20


# --------------------------------------------------------------------------- batching


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_batches(token_ids: Sequence[Sequence[int]], batch_size: int, min_shared: int = MIN_SHARED_TOKENS) -> list[list[int]]:
    """Prompt indices in batches of at most ``batch_size``, prompts sharing a prefix together.

    Prompts are sorted by their token ids, so that prompts with a common prefix are
    neighbours; a *group* is a run of neighbours that share at least ``min_shared``
    tokens. A group whose members share ``min_shared`` more tokens among themselves than
    with the rest of their group is split off recursively (a system prompt shared by
    several tasks, each with its own demonstrations). Each group is batched on its own,
    longest prompts first (only the suffixes are padded, so rows of similar length
    waste the least); groups follow each other in token order, so that a prefix kept by
    the backend serves the next group's batches too. Prompts that share fewer than
    ``min_shared`` tokens with every other prompt are batched as before this order
    existed: longest first, ties in prompt order (a request without shared prefixes gets
    exactly the batches it always got).
    """
    n = len(token_ids)
    if n == 0:
        return []
    min_shared = max(1, min_shared)
    order = sorted(range(n), key=lambda i: tuple(token_ids[i]))
    # neighbour[j]: tokens shared by order[j] and order[j + 1], at most all but one token of
    # the shorter one (every row keeps at least one token for the suffix pass).
    neighbour = [
        min(_lcp(token_ids[a], token_ids[b]), len(token_ids[a]) - 1, len(token_ids[b]) - 1)
        for a, b in zip(order, order[1:])
    ]
    groups: list[list[int]] = []
    loose: list[int] = []

    def split(lo: int, hi: int, depth: int, pool: list[int]) -> None:
        """Sorted positions lo..hi-1: runs sharing >= depth tokens become groups (recursively);
        the rest go to ``pool``."""
        j = lo
        while j < hi:
            k = j
            while k + 1 < hi and neighbour[k] >= depth:
                k += 1
            if k == j:
                pool.append(order[j])
            else:
                shared = min(neighbour[j:k])
                own: list[int] = []
                at = len(groups)
                split(j, k + 1, shared + min_shared, own)
                if own:
                    groups.insert(at, own)
            j = k + 1

    split(0, n, max(min_shared, 1), loose)
    batches: list[list[int]] = []
    for group in groups:
        group = sorted(group, key=lambda i: (-len(token_ids[i]), i))
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    loose.sort(key=lambda i: (-len(token_ids[i]), i))
    batches.extend(loose[i : i + batch_size] for i in range(0, len(loose), batch_size))
    return batches


# --------------------------------------------------------------------------- stored prefixes


@dataclass
class PrefixEntry:
    """The keys and values of a prefix (per layer, [1, heads, P, head_dim]) and, when
    recorded, ``h_0 .. h_L`` at its positions (each [P, D])."""

    tokens: torch.Tensor  # [P] long, on the CPU
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    resid: list[torch.Tensor] | None

    @property
    def length(self) -> int:
        return int(self.tokens.numel())

    @property
    def nbytes(self) -> int:
        tensors = [t for pair in self.kv for t in pair] + list(self.resid or [])
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class PrefixStats:
    """What the backend ran: ``forward_tokens`` counts every token position of every
    forward pass (padding included); ``plain_tokens`` what the plain passes would have run."""

    batches: int = 0
    shared_batches: int = 0
    forward_calls: int = 0
    forward_tokens: int = 0
    plain_tokens: int = 0
    prefix_passes: int = 0
    prefix_tokens: int = 0
    prefix_reused: int = 0

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class PrefixStore:
    """Stored prefixes of one backend, least recently used first out."""

    max_bytes: int = PREFIX_CACHE_BYTES
    entries: "OrderedDict[int, PrefixEntry]" = field(default_factory=OrderedDict)
    stats: PrefixStats = field(default_factory=PrefixStats)
    fingerprint: tuple | None = None
    _next_key: int = 0

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())

    def check(self, model: torch.nn.Module) -> None:
        """Empties the store when the weights (in-place edits bump their version counters),
        their dtype or their device changed."""
        params = list(model.parameters())
        try:
            versions = sum(p._version for p in params)
        except RuntimeError:  # inference tensors keep no version counter
            versions = None
        fp = (
            id(model),
            versions,
            tuple(sorted({str(p.dtype) for p in params})),
            tuple(sorted({str(p.device) for p in params})),
        )
        if fp != self.fingerprint:
            self.entries.clear()
            self.fingerprint = fp

    def best(self, tokens: torch.Tensor, first_read: int) -> tuple[int | None, int]:
        """The stored prefix sharing the most leading tokens with ``tokens``, and how many of
        them it can serve. A prefix stored without residuals serves at most ``first_read``
        tokens (the lowest read position), as it cannot serve reads inside it."""
        best_key, best_q = None, 0
        for key, entry in self.entries.items():
            m = min(entry.length, tokens.numel())
            if entry.resid is None:
                m = min(m, first_read)
            if m <= best_q:
                continue
            diff = (entry.tokens[:m] != tokens[:m]).nonzero()
            q = int(diff[0, 0]) if diff.numel() else m
            if q > best_q:
                best_key, best_q = key, q
        if best_key is not None:
            self.entries.move_to_end(best_key)
        return best_key, best_q

    def put(self, entry: PrefixEntry) -> None:
        size = entry.nbytes
        if size > self.max_bytes:
            return
        while self.entries and self.nbytes + size > self.max_bytes:
            self.entries.popitem(last=False)
        self.entries[self._next_key] = entry
        self._next_key += 1


def store_of(backend: "PrefixBackend") -> PrefixStore:
    store = backend.__dict__.get("_prefix_store")
    if store is None:
        store = backend.__dict__["_prefix_store"] = PrefixStore()
    store.max_bytes = PREFIX_CACHE_BYTES if backend.prefix_cache_bytes is None else backend.prefix_cache_bytes
    return store


def _min_shared(backend: "PrefixBackend") -> int:
    return MIN_SHARED_TOKENS if backend.min_shared_tokens is None else backend.min_shared_tokens


# --------------------------------------------------------------------------- forward segments


@functools.lru_cache(maxsize=None)
def _cache_kwarg(model_class: type) -> str:
    """transformers 5.24 (installed here) calls the cache argument ``cache``; earlier 5.x
    releases ``past_key_values`` (5.24 still takes it, with a deprecation warning)."""
    params = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _new_cache(past: list[tuple[torch.Tensor, torch.Tensor]] | None, rows: int):
    """A DynamicCache of plain (full-length) layers holding ``past`` expanded to ``rows``.

    No config is passed on purpose: with it, sliding-window layers would keep only their
    last ``window - 1`` keys, and a stored prefix must keep them all (to serve batches that
    reuse fewer of its tokens). The model's sliding-window mask (absolute positions) still
    applies, as in the plain pass."""
    from transformers import DynamicCache

    if not past:
        return DynamicCache()
    return DynamicCache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in past])


def _cache_kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def run_segment(
    backend: "PrefixBackend",
    ids: torch.Tensor,
    mask: torch.Tensor,
    start: int,
    past: list[tuple[torch.Tensor, torch.Tensor]] | None,
    read: tuple[torch.Tensor, torch.Tensor] | None,
    keep: torch.Tensor | None,
    want_kv: bool = False,
):
    """Runs positions ``start ..`` of ``ids`` [B, T] after ``past`` (the keys and values of
    positions ``0 .. start - 1``); ``mask`` [B, T] is the whole attention mask.

    ``read``: (batch, position) rows whose ``h_0 .. h_L`` are captured (each [N, D]);
    None captures every position of row 0 (a prefix pass, B = 1). ``keep``: boolean [B,
    T - start] of the positions whose logits the model's head computes (None: no logits).
    Returns (captured, logits or None, keys and values of all T positions or None).
    """
    loaded, adapter = backend.loaded, backend.loaded.adapter
    model, device = loaded.model, loaded.device
    blocks = adapter.blocks_of(model)
    rows, width = ids.shape
    captured: list = [None] * (len(blocks) + 1)

    def grab(slot: int):
        def hook(_module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            if read is None:
                captured[slot] = h[0]
            else:
                captured[slot] = h[read[0].to(h.device), (read[1] - start).to(h.device)]

        return hook

    cache = _new_cache(past, rows)
    positions = torch.arange(start, width, dtype=torch.long).unsqueeze(0).expand(rows, -1)
    with ExitStack() as stack:
        for i, block in enumerate(blocks):
            stack.callback(block.register_forward_pre_hook(grab(i), with_kwargs=True).remove)
        norm = adapter.final_norm_of(model)
        stack.callback(norm.register_forward_pre_hook(grab(len(blocks)), with_kwargs=True).remove)
        out = model(
            input_ids=ids[:, start:].to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            logits_to_keep=1 if keep is None or not bool(keep.any()) else keep.to(device),
            use_cache=True,
            **{_cache_kwarg(type(model)): cache},
        )
    stats = store_of(backend).stats
    stats.forward_calls += 1
    stats.forward_tokens += rows * (width - start)
    logits = None if keep is None or not bool(keep.any()) else out.logits
    return captured, logits, _cache_kv(cache) if want_kv else None


# --------------------------------------------------------------------------- read_rows


def _right_padded_lengths(mask: torch.Tensor) -> torch.Tensor | None:
    """Row lengths when every row is ones then zeros (right padding), else None."""
    mask = mask.to("cpu")
    lengths = mask.sum(1)
    expect = torch.arange(mask.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    if not torch.equal(mask.bool(), expect) or int(lengths.min()) < 1:
        return None
    return lengths


def common_prefix(ids: torch.Tensor, lengths: torch.Tensor) -> int:
    """Tokens shared by every row, at most all but the last token of the shortest row."""
    limit = int(lengths.min()) - 1
    if limit <= 0:
        return 0
    same = (ids[:, :limit] == ids[:1, :limit]).all(0)
    diff = (~same).nonzero()
    return int(diff[0, 0]) if diff.numel() else limit


def _prefix_for(backend: "PrefixBackend", tokens: torch.Tensor, rows: int, first_read: int) -> tuple[PrefixEntry | None, int]:
    """The prefix entry the suffix pass starts from and how many of its tokens it uses
    (the suffix pass starts there), or (None, 0) when sharing does not pay.

    ``tokens``: the batch's common prefix. A stored prefix is reused as far as it matches;
    it is extended over the rest of ``tokens`` (or a new one is run) when that saves at
    least ``min_shared_tokens`` token-forwards. ``first_read``: the lowest read position;
    reads below the returned start are served from the entry's residuals.
    """
    store = store_of(backend)
    stats = store.stats
    min_shared = _min_shared(backend)
    shared = int(tokens.numel())
    key, q = store.best(tokens, first_read)
    base = store.entries[key] if key is not None else None
    extend = rows >= 2 and (rows - 1) * (shared - q) >= min_shared
    start = shared if extend else q
    if start < min_shared:
        return None, 0
    if not extend:
        stats.prefix_reused += 1
        return base, q
    # Extend the stored prefix's first q tokens over tokens q .. shared - 1 (or run it anew).
    want_resid = first_read < shared
    if base is not None and want_resid and base.resid is None:
        base, q = None, 0  # its residuals were not kept: run the whole prefix again
    if base is None:
        q = 0
    past = None if base is None else [(k[:, :, :q], v[:, :, :q]) for k, v in base.kv]
    ids = tokens.unsqueeze(0)
    captured, _, kv = run_segment(backend, ids, torch.ones_like(ids), q, past, read=None, keep=None, want_kv=True)
    resid = None
    if want_resid:
        resid = captured if base is None else [torch.cat([r[:q], c]) for r, c in zip(base.resid, captured)]
    entry = PrefixEntry(tokens=tokens.clone(), kv=kv, resid=resid)
    store.put(entry)
    stats.prefix_passes += 1
    stats.prefix_tokens += shared - q
    return entry, shared


def read_rows(backend: "PrefixBackend", ids, mask, batch_idx, pos_idx, plain):
    """``HookBackend.read_rows``: the shared-prefix passes when they apply and pay, else
    ``plain`` (the plain pass); counts what ran in the store's stats."""
    stats = store_of(backend).stats
    stats.batches += 1
    stats.plain_tokens += ids.numel()
    if backend.share_prefix:
        out = read_rows_shared(backend, ids, mask, batch_idx, pos_idx)
        if out is not None:
            return out
    stats.forward_calls += 1
    stats.forward_tokens += ids.numel()
    return plain(ids, mask, batch_idx, pos_idx)


def read_rows_shared(backend: "PrefixBackend", ids, mask, batch_idx, pos_idx):
    """``read_rows`` with the batch's shared prefix run once, or None when that does not
    apply or pay (the caller then runs the plain pass)."""
    if torch.is_grad_enabled():
        return None  # a read that gradients flow through needs the whole graph
    ids_cpu = ids.to("cpu")
    lengths = _right_padded_lengths(mask)
    if lengths is None:
        return None
    shared = common_prefix(ids_cpu, lengths)
    if shared < _min_shared(backend):
        return None
    store = store_of(backend)
    store.check(backend.loaded.model)
    batch_idx, pos_idx = batch_idx.to("cpu"), pos_idx.to("cpu")
    first_read = int(pos_idx.min()) if pos_idx.numel() else ids.shape[1]
    entry, start = _prefix_for(backend, ids_cpu[0, :shared], ids.shape[0], first_read)
    if entry is None:
        return None
    rows, width = ids.shape
    store.stats.shared_batches += 1
    inside = pos_idx < start
    outside = ~inside
    keep = torch.zeros(rows, width - start, dtype=torch.bool)
    keep[batch_idx[outside], pos_idx[outside] - start] = True
    past = [(k[:, :, :start], v[:, :, :start]) for k, v in entry.kv]
    captured, logits, _ = run_segment(
        backend, ids_cpu, mask, start, past, read=(batch_idx[outside], pos_idx[outside]), keep=keep
    )
    n_points = len(captured)
    n = batch_idx.numel()
    # Residual points may live on different devices (a model spread over several).
    out = [torch.empty(n, c.shape[-1], dtype=c.dtype, device=c.device) for c in captured]
    sel_out = outside.nonzero().squeeze(1)
    for r in range(n_points):
        out[r][sel_out.to(out[r].device)] = captured[r]
    final = None
    if logits is not None:
        kept_flat = keep.flatten().nonzero().squeeze(1)
        order = torch.searchsorted(kept_flat, batch_idx[outside] * (width - start) + pos_idx[outside] - start)
        own = logits[order.to(logits.device)]
        final = torch.empty(n, own.shape[-1], dtype=own.dtype, device=own.device)
        final[sel_out.to(own.device)] = own
    if bool(inside.any()):
        sel_in = inside.nonzero().squeeze(1)
        at = pos_idx[inside]
        for r in range(n_points):
            out[r][sel_in.to(out[r].device)] = entry.resid[r][at.to(entry.resid[r].device)].to(out[r].device)
        h_last = out[n_points - 1]
        head = backend.logits(h_last[sel_in.to(h_last.device)])
        if final is None:
            final = torch.empty(n, head.shape[-1], dtype=head.dtype, device=head.device)
        final[sel_in.to(final.device)] = head.to(final.dtype)
    return out, final
