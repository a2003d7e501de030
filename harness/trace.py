"""The trace engine: one forward pass per batch, every lens layer, compact reductions.

For a batch of prompts the engine runs the model once (no autograd), captures the
residual stream ``h_0 .. h_L`` at the selected positions only (forward pre-hooks on every
block and on the final norm), then applies the lens layer by layer in row chunks and
keeps per-(layer, position) reductions: top-1, top-k, ranks and log-probs of target
tokens, KL(final || layer), entropy and the probability mass on named token sets.
Full-vocabulary logits never outlive a chunk. The row at ``l = L`` is the model's own
logits from the forward pass, so the final prediction has rank 1 there by construction;
``tests/test_adapters.py`` checks that the lens reproduces those logits.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.lenses import Lens
from harness.models.loading import LoadedModel

if TYPE_CHECKING:
    from harness.cache import TraceCache
    from harness.backends.base import Backend

log = logging.getLogger(__name__)

# Bump when a reduction's meaning or layout changes: it is part of every cache key.
ENGINE_VERSION = 1


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class ReductionSpec:
    """Which per-(layer, position) reductions to keep. Ranks of the final prediction and
    of the gold next token are always kept."""

    topk: int = 10
    logprobs: bool = True
    kl: bool = True
    entropy: bool = True
    # Named token sets whose probability mass is kept, e.g. frequency buckets.
    token_sets: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def needs_log_softmax(self) -> bool:
        return self.kl or self.entropy or bool(self.token_sets)

    @property
    def set_names(self) -> list[str]:
        return [name for name, _ in self.token_sets]

    def key(self) -> dict:
        return {
            "topk": self.topk,
            "logprobs": self.logprobs,
            "kl": self.kl,
            "entropy": self.entropy,
            "token_sets": [[name, _digest(list(ids))] for name, ids in self.token_sets],
        }


# Ranks and log-probs of the targets only: what the earliest-layer and option claims read.
TARGET_RANKS = ReductionSpec(topk=1, logprobs=True, kl=False, entropy=False)


@dataclass(frozen=True)
class TraceRequest:
    """Token ids of the prompts and which positions to read.

    ``positions[i]`` lists the positions read in prompt ``i`` (``None``: all of them).
    ``option_ids[i]`` is an optional set of target tokens scored at every read position of
    prompt ``i`` (same count for every prompt). The gold token at position ``p`` is the
    prompt's token ``p + 1`` (-1 at the last position).
    """

    name: str
    token_ids: tuple[tuple[int, ...], ...]
    positions: tuple[tuple[int, ...], ...] | None = None
    option_ids: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self):
        if not self.token_ids:
            raise ValueError(f"TraceRequest {self.name!r} has no prompts.")
        for i, ids in enumerate(self.token_ids):
            if not ids:
                raise ValueError(f"TraceRequest {self.name!r}: prompt {i} has no tokens.")
        if self.positions is not None:
            if len(self.positions) != len(self.token_ids):
                raise ValueError("positions needs one tuple per prompt.")
            for i, (ids, pos) in enumerate(zip(self.token_ids, self.positions)):
                bad = [p for p in pos if not 0 <= p < len(ids)]
                if bad:
                    raise ValueError(f"Prompt {i} has {len(ids)} tokens; positions {bad} are outside it.")
        if self.option_ids is not None:
            if len(self.option_ids) != len(self.token_ids) or len({len(o) for o in self.option_ids}) != 1:
                raise ValueError("option_ids needs one equally long tuple of token ids per prompt.")

    @classmethod
    def build(cls, name: str, token_ids: Sequence[Sequence[int]], positions="all", option_ids=None) -> "TraceRequest":
        """``positions``: "all", "last", or one list of positions per prompt."""
        ids = tuple(tuple(int(t) for t in seq) for seq in token_ids)
        if positions == "all":
            pos = None
        elif positions == "last":
            pos = tuple((len(seq) - 1,) for seq in ids)
        else:
            pos = tuple(tuple(int(p) for p in ps) for ps in positions)
        opts = None if option_ids is None else tuple(tuple(int(t) for t in o) for o in option_ids)
        return cls(name=name, token_ids=ids, positions=pos, option_ids=opts)

    def positions_of(self, i: int) -> tuple[int, ...]:
        return tuple(range(len(self.token_ids[i]))) if self.positions is None else self.positions[i]

    @property
    def n_rows(self) -> int:
        return sum(len(self.positions_of(i)) for i in range(len(self.token_ids)))

    def content_hash(self) -> str:
        return _digest([self.token_ids, self.positions, self.option_ids])


_ROW_FIELDS = ("example", "position", "input_id", "gold_id", "final_id")


@dataclass
class LayerTrace:
    """Compact per-(layer, row) arrays of one traced request; a row is one read position.

    Layer arrays have shape [L + 1, N] (``topk``: [L + 1, N, k]; ``option_*``:
    [L + 1, N, n_options]; ``set_mass``: [L + 1, N, n_sets]). Rows are ordered by prompt,
    then position. ``gold_rank`` is 0 and ``gold_logprob`` NaN where the gold token is
    unknown (last token of a prompt).
    """

    meta: dict
    example: np.ndarray
    position: np.ndarray
    input_id: np.ndarray
    gold_id: np.ndarray
    final_id: np.ndarray
    top1: np.ndarray
    final_rank: np.ndarray
    gold_rank: np.ndarray
    topk: np.ndarray | None = None
    final_logprob: np.ndarray | None = None
    gold_logprob: np.ndarray | None = None
    option_rank: np.ndarray | None = None
    option_logprob: np.ndarray | None = None
    kl_final: np.ndarray | None = None
    entropy: np.ndarray | None = None
    set_mass: np.ndarray | None = None

    @property
    def n_layers(self) -> int:
        """L: the number of blocks (the arrays have L + 1 layer rows)."""
        return self.top1.shape[0] - 1

    @property
    def n_rows(self) -> int:
        return self.top1.shape[1]

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "meta" and getattr(self, f.name) is not None}

    @classmethod
    def from_arrays(cls, meta: dict, arrays: dict[str, np.ndarray]) -> "LayerTrace":
        """The trace back from its :meth:`arrays` and ``meta`` (a trace cache entry)."""
        return cls(meta=meta, **arrays)

    def set_index(self, name: str) -> int:
        return self.meta["token_sets"].index(name)


def _pad_batch(seqs: list[tuple[int, ...]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


# Rows per block when counting on a CPU: a [64, V] mask stays in cache (measured 3.9x
# faster than one pass over a whole chunk; benchmarks/README.md).
RANK_BLOCK_ROWS = 64


def count_greater(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """int32 [C, T]: for each row and target column, how many logits are strictly larger.

    Counted in row blocks with an int32 accumulator: widening the whole [C, V] mask to
    int64 cost as much as the comparison itself."""
    rows, n_targets = target_logits.shape
    block_rows = RANK_BLOCK_ROWS if logits.device.type == "cpu" else max(rows, 1)
    out = torch.empty(rows, n_targets, dtype=torch.int32, device=logits.device)
    for start in range(0, rows, block_rows):
        sl = slice(start, start + block_rows)
        block = logits[sl]
        for j in range(n_targets):
            out[sl, j] = (block > target_logits[sl, j : j + 1]).sum(-1, dtype=torch.int32)
    return out


def reduce_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    spec: ReductionSpec,
    final: "FinalDistribution | None" = None,
    set_matrix: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-row reductions of one chunk of lens logits [C, V].

    ``targets`` [C, T]: token ids whose rank (1 + number of strictly larger logits, ties
    in the target's favour) and log-prob are kept. ``final``: the final distribution of
    the same rows, for KL(final || layer).
    """
    out: dict[str, torch.Tensor] = {"top1": logits.argmax(-1)}
    if spec.topk > 1:
        out["topk"] = logits.topk(spec.topk, dim=-1).indices
    target_logits = logits.gather(1, targets)
    out["rank"] = count_greater(logits, target_logits) + 1
    if spec.needs_log_softmax:
        logp = torch.log_softmax(logits.float(), dim=-1)
        if spec.logprobs:
            out["logprob"] = logp.gather(1, targets)
        p = logp.exp()
        if spec.entropy:
            out["entropy"] = -torch.einsum("cv,cv->c", p, logp)
        if spec.kl:
            out["kl"] = final.neg_entropy - torch.einsum("cv,cv->c", final.p, logp)
        if set_matrix is not None:
            out["set_mass"] = p @ set_matrix
    elif spec.logprobs:
        out["logprob"] = target_logits.float() - torch.logsumexp(logits.float(), dim=-1, keepdim=True)
    return out


@dataclass(frozen=True)
class FinalDistribution:
    """The final distribution of a chunk of rows, computed once and read at every layer."""

    p: torch.Tensor  # [C, V] float32
    neg_entropy: torch.Tensor  # [C]: sum_v p log p

    @classmethod
    def from_logits(cls, logits: torch.Tensor) -> "FinalDistribution":
        logp = torch.log_softmax(logits.float(), -1)
        p = logp.exp()
        return cls(p=p, neg_entropy=torch.einsum("cv,cv->c", p, logp))


@dataclass
class EngineStats:
    forward_passes: int = 0
    cache_hits: int = 0
    traces_computed: int = 0


@dataclass
class TraceEngine:
    """Runs TraceRequests through a model and a lens, with an optional cache."""

    loaded: LoadedModel
    cache: "TraceCache | None" = None
    backend: "Backend | None" = None  # None: plain transformers hooks
    batch_size: int = 8
    # Bytes of full-vocabulary float32 work per chunk; bounds memory and keeps chunks cache-sized.
    chunk_bytes: int = 128 << 20
    progress: bool = True
    stats: EngineStats = field(default_factory=EngineStats)

    def __post_init__(self):
        if self.backend is None:
            from harness.backends.hooks import HookBackend

            self.backend = HookBackend(self.loaded)

    def cache_key(self, request: TraceRequest, lens: Lens, spec: ReductionSpec) -> dict:
        return {
            "engine": ENGINE_VERSION,
            **self.loaded.identity,
            **lens.identity,
            **self.backend.identity,
            "dataset": request.name,
            "data": request.content_hash(),
            "positions": "all" if request.positions is None else "selected",
            "spec": spec.key(),
        }

    def trace(
        self,
        request: TraceRequest,
        lens: Lens,
        spec: ReductionSpec = ReductionSpec(),
        rows: "CapturedRows | Callable[[], CapturedRows] | None" = None,
    ) -> LayerTrace:
        """The trace of ``request`` through ``lens``: from the cache, else computed. ``rows``:
        residuals captured earlier for this request (or a function that captures them, called
        only on a cache miss), so that another lens on the same prompts needs no forward pass."""
        key = self.cache_key(request, lens, spec)

        def compute() -> LayerTrace:
            return self._compute(request, lens, spec, key, rows() if callable(rows) else rows)

        if self.cache is None:
            return compute()
        hit = self.cache.get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return LayerTrace.from_arrays(*hit)
        with self.cache.lock(key):
            hit = self.cache.get(key)  # another process may have finished it meanwhile
            if hit is not None:
                self.stats.cache_hits += 1
                return LayerTrace.from_arrays(*hit)
            result = compute()
            self.cache.put(key, result.arrays(), result.meta)
        return result

    def _set_matrix(self, spec: ReductionSpec, head_device) -> torch.Tensor | None:
        if not spec.token_sets:
            return None
        matrix = torch.zeros(self.loaded.vocab_size, len(spec.token_sets), dtype=torch.float32, device=head_device)
        for j, (_, ids) in enumerate(spec.token_sets):
            matrix[torch.tensor(ids, dtype=torch.long), j] = 1.0
        return matrix

    def _batches(self, request: TraceRequest) -> list[list[int]]:
        # Prompts sharing a prefix (few-shot demonstrations) in the same batches, so that the
        # backend runs the prefix once; the others longest first, as always.
        from harness.interventions.shared_prefix import prefix_batches

        return prefix_batches(request.token_ids, self.batch_size)

    @torch.inference_mode()
    def _compute(self, request: TraceRequest, lens: Lens, spec: ReductionSpec, key: dict, rows: "CapturedRows | None" = None) -> LayerTrace:
        """Forward pass and lens per batch (rows never outlive their batch), or, with
        ``rows``, the lens on residuals captured earlier (no forward pass)."""
        head_device = self.loaded.adapter.unembed_of(self.loaded.model).weight.device
        set_matrix = self._set_matrix(spec, head_device)
        chunk_rows = max(1, self.chunk_bytes // (self.loaded.vocab_size * 4))
        if rows is not None:
            if rows.content_hash != request.content_hash():
                raise ValueError(f"The captured rows are of another request than {request.name!r}.")
            parts = [reduce_rows(rows, lens, spec, set_matrix, chunk_rows)]
        else:
            bar = tqdm(
                self._batches(request),
                desc=f"trace {self.loaded.spec.name} · {lens.name} lens · {request.name}",
                unit="batch",
                disable=not self.progress,
                leave=False,
            )
            parts = [reduce_rows(self._capture_batch(request, batch), lens, spec, set_matrix, chunk_rows) for batch in bar]
        merged = _merge_rows(parts)
        self.stats.traces_computed += 1
        meta = {
            "key": key,
            "n_layers": self.loaded.n_layers,
            "vocab_size": self.loaded.vocab_size,
            "n_prompts": len(request.token_ids),
            "token_sets": spec.set_names,
            "topk": spec.topk,
        }
        return LayerTrace(meta=meta, **merged)

    @torch.inference_mode()
    def capture(self, request: TraceRequest) -> "CapturedRows":
        """The residuals ``h_0 .. h_L`` and the model's logits at every read row of
        ``request`` (one forward pass per batch), kept so that any number of lenses can be
        applied later without running the model again (:meth:`trace` with ``rows``)."""
        bar = tqdm(self._batches(request), desc=f"forward {self.loaded.spec.name} · {request.name}", unit="batch",
                   disable=not self.progress, leave=False)
        parts = [self._capture_batch(request, batch) for batch in bar]
        return CapturedRows.concat(parts, request)

    def _capture_batch(self, request: TraceRequest, batch: list[int]) -> "CapturedRows":
        loaded = self.loaded
        head_device = loaded.adapter.unembed_of(loaded.model).weight.device
        seqs = [request.token_ids[i] for i in batch]
        ids, mask = _pad_batch(seqs, loaded.tokenizer.pad_token_id)
        b_idx, p_idx, example, gold, options = [], [], [], [], []
        for b, i in enumerate(batch):
            for p in request.positions_of(i):
                b_idx.append(b)
                p_idx.append(p)
                example.append(i)
                gold.append(seqs[b][p + 1] if p + 1 < len(seqs[b]) else -1)
                if request.option_ids is not None:
                    options.append(request.option_ids[i])
        captured, final_logits = self.backend.read_rows(ids, mask, torch.tensor(b_idx), torch.tensor(p_idx))
        self.stats.forward_passes += 1
        return CapturedRows(
            request_name=request.name,
            content_hash="",
            resid=[h.to(head_device) for h in captured],
            final_logits=final_logits.to(head_device),
            example=np.array(example, dtype=np.int32),
            position=np.array(p_idx, dtype=np.int32),
            input_id=np.array([seqs[b][p] for b, p in zip(b_idx, p_idx)], dtype=np.int32),
            gold_id=np.array(gold, dtype=np.int32),
            option_ids=None if not options else np.array(options, dtype=np.int64),
        )


@dataclass
class CapturedRows:
    """What a forward pass left at the read rows of a request: ``h_0 .. h_L`` (each
    [N, D], the model's dtype) and the model's own logits [N, V]; rows in the order of
    ``example`` / ``position``. A lens turns them into a LayerTrace (``reduce_rows``)."""

    request_name: str
    content_hash: str  # of the request the rows belong to ("" for one batch's rows)
    resid: list[torch.Tensor]
    final_logits: torch.Tensor
    example: np.ndarray
    position: np.ndarray
    input_id: np.ndarray
    gold_id: np.ndarray
    option_ids: np.ndarray | None = None  # [N, n_options]

    @property
    def n_rows(self) -> int:
        return len(self.example)

    @classmethod
    def concat(cls, parts: list["CapturedRows"], request: TraceRequest) -> "CapturedRows":
        """Rows of several batches, back in prompt order, then position order."""
        example = np.concatenate([p.example for p in parts])
        position = np.concatenate([p.position for p in parts])
        order = np.lexsort((position, example))
        index = torch.as_tensor(order)
        n_points = len(parts[0].resid)
        return cls(
            request_name=request.name,
            content_hash=request.content_hash(),
            resid=[torch.cat([p.resid[r] for p in parts])[index.to(parts[0].resid[r].device)] for r in range(n_points)],
            final_logits=torch.cat([p.final_logits for p in parts])[index.to(parts[0].final_logits.device)],
            example=example[order],
            position=position[order],
            input_id=np.concatenate([p.input_id for p in parts])[order],
            gold_id=np.concatenate([p.gold_id for p in parts])[order],
            option_ids=None if parts[0].option_ids is None else np.concatenate([p.option_ids for p in parts])[order],
        )

    @classmethod
    def select(cls, rows: "CapturedRows", index: np.ndarray, request: TraceRequest, example: np.ndarray) -> "CapturedRows":
        """Rows ``index`` of a shared capture, renumbered as prompts ``example`` of ``request``."""
        idx = torch.as_tensor(index, dtype=torch.long)
        position = rows.position[index]
        gold = np.array(
            [request.token_ids[e][p + 1] if p + 1 < len(request.token_ids[e]) else -1 for e, p in zip(example, position)],
            dtype=np.int32,
        )
        options = None
        if request.option_ids is not None:
            options = np.array([request.option_ids[e] for e in example], dtype=np.int64)
        return cls(
            request_name=request.name,
            content_hash=request.content_hash(),
            resid=[h[idx.to(h.device)] for h in rows.resid],
            final_logits=rows.final_logits[idx.to(rows.final_logits.device)],
            example=np.asarray(example, dtype=np.int32),
            position=position.astype(np.int32),
            input_id=rows.input_id[index],
            gold_id=gold,
            option_ids=options,
        )


def _merge_rows(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    merged = {k: np.concatenate([p[k] for p in parts], axis=-1 if k in _ROW_FIELDS else 1) for k in parts[0]}
    # Rows back in prompt order, then position order.
    row_order = np.lexsort((merged["position"], merged["example"]))
    return {k: v[row_order] if k in _ROW_FIELDS else v[:, row_order] for k, v in merged.items()}


@torch.inference_mode()
def reduce_rows(
    rows: CapturedRows, lens: Lens, spec: ReductionSpec, set_matrix: torch.Tensor | None, chunk_rows: int
) -> dict[str, np.ndarray]:
    """The lens at every layer on captured rows, reduced chunk by chunk (full-vocabulary
    logits never outlive a chunk). At ``l = L`` the row is the model's own logits."""
    final_logits = rows.final_logits
    device = final_logits.device
    final_id = final_logits.argmax(-1)
    gold_t = torch.as_tensor(rows.gold_id, dtype=torch.long, device=device)
    targets = torch.stack([final_id, gold_t.clamp(min=0)], dim=1)
    if rows.option_ids is not None:
        targets = torch.cat([targets, torch.as_tensor(rows.option_ids, dtype=torch.long, device=device)], dim=1)
    n_layers = len(rows.resid) - 1
    pieces: dict[str, list] = {}
    for start in range(0, rows.n_rows, chunk_rows):
        sl = slice(start, start + chunk_rows)
        final = FinalDistribution.from_logits(final_logits[sl]) if spec.kl else None
        per_layer: dict[str, list] = {}
        for layer in range(n_layers + 1):
            logits = final_logits[sl] if layer == n_layers else lens.logits(rows.resid[layer][sl], layer)
            for k, v in reduce_logits(logits, targets[sl], spec, final, set_matrix).items():
                per_layer.setdefault(k, []).append(v.cpu())
        for k, v in per_layer.items():
            pieces.setdefault(k, []).append(torch.stack(v))
    stacked = {k: torch.cat(v, dim=1).numpy() for k, v in pieces.items()}
    unknown_gold = rows.gold_id < 0
    result = {
        "example": rows.example.astype(np.int32),
        "position": rows.position.astype(np.int32),
        "input_id": rows.input_id.astype(np.int32),
        "gold_id": rows.gold_id.astype(np.int32),
        "final_id": final_id.cpu().numpy().astype(np.int32),
        "top1": stacked["top1"].astype(np.int32),
        "final_rank": stacked["rank"][:, :, 0].astype(np.int32),
        "gold_rank": np.where(unknown_gold, 0, stacked["rank"][:, :, 1]).astype(np.int32),
    }
    n_opt = 0 if rows.option_ids is None else rows.option_ids.shape[1]
    if "topk" in stacked:
        result["topk"] = stacked["topk"].astype(np.int32)
    if n_opt:
        result["option_rank"] = stacked["rank"][:, :, 2:].astype(np.int32)
    if "logprob" in stacked:
        lp = stacked["logprob"].astype(np.float32)
        result["final_logprob"] = lp[:, :, 0]
        result["gold_logprob"] = np.where(unknown_gold, np.nan, lp[:, :, 1]).astype(np.float32)
        if n_opt:
            result["option_logprob"] = lp[:, :, 2:]
    for name, k in (("kl_final", "kl"), ("entropy", "entropy"), ("set_mass", "set_mass")):
        if k in stacked:
            result[name] = stacked[k].astype(np.float32)
    return result
