"""The workload and the four tools the throughput benchmark compares.

Every tool computes, for every residual layer ``l = 0 .. L`` and every position of every
prompt, the logit-lens top-1 token and the rank of the model's final prediction
(rank = 1 + number of vocabulary entries scored strictly higher), and returns two int32
arrays of shape ``[L + 1, n_prompts, n_tokens]``. Row ``l < L`` reads the residual stream
``h_l`` (the input of block ``l``); row ``L`` is the model's own output distribution.

Kept free of pytest so that ``sweep_engine.py`` and ad-hoc scripts can import it.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.files import write_text
from harness.paths import REPO_ROOT

WIKI_FILE = Path("wikipedia") / "squad_v2_dev_contexts.jsonl"
N_PROMPTS = 64
N_TOKENS = 128

# The summary table: filled by the throughput benchmark's report fixture, printed by
# conftest.py's pytest_terminal_summary (so it shows with or without -s).
SUMMARY_LINES: list[str] = []


# --------------------------------------------------------------------------- data


def default_data_dir() -> Path:
    """``$DEPTH_CLAIMS_DATA_DIR``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("DEPTH_CLAIMS_DATA_DIR")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")


def paragraph_ids(data_dir: Path, tokenizer, n_prompts: int = N_PROMPTS, n_tokens: int = N_TOKENS) -> np.ndarray:
    """The first ``n_prompts`` Wikipedia paragraphs with at least ``n_tokens`` tokens,
    cut to their first ``n_tokens`` tokens: int64 ``[n_prompts, n_tokens]``.

    Plain tokenization of the paragraph text (no special tokens; this tokenizer adds
    none by default anyway)."""
    path = Path(data_dir) / WIKI_FILE
    rows: list[list[int]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            ids = tokenizer(json.loads(line)["text"], add_special_tokens=False)["input_ids"]
            if len(ids) >= n_tokens:
                rows.append(list(ids[:n_tokens]))
                if len(rows) == n_prompts:
                    break
    if len(rows) < n_prompts:
        raise ValueError(f"{path} has only {len(rows)} paragraphs of >= {n_tokens} tokens; {n_prompts} needed.")
    return np.asarray(rows, dtype=np.int64)


@dataclass
class LensResult:
    top1: np.ndarray  # int32 [L + 1, n, T]
    rank: np.ndarray  # int32 [L + 1, n, T]

    @property
    def n_prompts(self) -> int:
        return self.top1.shape[1]

    def head(self, n: int) -> "LensResult":
        return LensResult(self.top1[:, :n], self.rank[:, :n])


def _empty(n_layers: int, n: int, t: int) -> LensResult:
    shape = (n_layers + 1, n, t)
    return LensResult(np.zeros(shape, np.int32), np.zeros(shape, np.int32))


def _top1_and_rank(scores: torch.Tensor, final_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores`` [..., V] (logits, probabilities or log-probabilities), ``final_id`` [...]."""
    target = scores.gather(-1, final_id.unsqueeze(-1))
    return scores.argmax(-1), (scores > target).sum(-1) + 1


# --------------------------------------------------------------------------- 1. engine


def run_engine(loaded, ids: np.ndarray, batch_size: int = 8, chunk_bytes: int | None = None) -> LensResult:
    """harness.trace.TraceEngine with the logit lens and only top-1 (+ ranks, always kept)."""
    from harness.lenses import LogitLens
    from harness.trace import ReductionSpec, TraceEngine, TraceRequest

    engine = TraceEngine(loaded, cache=None, batch_size=batch_size, progress=False)
    if chunk_bytes is not None:
        engine.chunk_bytes = chunk_bytes
    request = TraceRequest.build("bench", ids.tolist(), positions="all")
    spec = ReductionSpec(topk=1, logprobs=False, kl=False, entropy=False)
    trace = engine.trace(request, LogitLens(loaded), spec)
    shape = (trace.top1.shape[0], ids.shape[0], ids.shape[1])
    # Rows come back ordered by prompt, then position.
    assert np.array_equal(trace.example.reshape(shape[1:]), np.repeat(np.arange(shape[1]), shape[2]).reshape(shape[1:]))
    return LensResult(trace.top1.reshape(shape).astype(np.int32), trace.final_rank.reshape(shape).astype(np.int32))


# --------------------------------------------------------------------------- 2. paper loop


@torch.inference_mode()
def run_paper_loop(model, ids: np.ndarray) -> LensResult:
    """The usual research-code loop: one prompt at a time, ``output_hidden_states``, a
    Python loop over layers, a full softmax per layer, the rank by comparison.

    ``hidden_states`` has L + 1 entries, and in current transformers the last one is
    already final-normed for Llama-family models, so normalising it again would be wrong:
    rows 0 .. L-1 read ``hidden_states[0 .. L-1]`` (block inputs) and row L is the model's
    own logits."""
    n_layers = model.config.num_hidden_layers
    norm, head = model.model.norm, model.lm_head
    out = _empty(n_layers, *ids.shape)
    for i in range(ids.shape[0]):
        x = torch.as_tensor(ids[i : i + 1])
        res = model(input_ids=x, output_hidden_states=True, use_cache=False)
        final_id = res.logits[0].argmax(-1)  # [T]
        for layer in range(n_layers + 1):
            if layer < n_layers:
                logits = head(norm(res.hidden_states[layer][0]))
            else:
                logits = res.logits[0]
            probs = torch.softmax(logits, dim=-1)
            top1, rank = _top1_and_rank(probs, final_id)
            out.top1[layer, i] = top1.numpy()
            out.rank[layer, i] = rank.numpy()
    return out


# --------------------------------------------------------------------------- 3. nnsight


def wrap_nnsight(loaded):
    """Wrap the already-loaded model. nnsight 0.8 deprecates ``LanguageModel`` in favour of
    ``TransformersModel(model, task="text-generation")`` (same class underneath); passing
    a module instance wraps it without loading anything."""
    from nnsight.modeling.transformers import TransformersModel

    return TransformersModel(loaded.model, tokenizer=loaded.tokenizer, task="text-generation")


def _block_output(value):
    """A decoder layer's output: a bare tensor in transformers >= 5 (Llama), a tuple whose
    first entry is the hidden state in older versions. The seed recipe's
    ``layer.output[0]`` on a bare [B, T, d] tensor silently takes batch row 0."""
    return value[0] if isinstance(value, tuple) else value


def run_nnsight(nn_model, ids: np.ndarray, batch_size: int = 4) -> LensResult:
    """The nnsight logit-lens recipe (the seed's): inside ``model.trace`` over a batch of
    prompts, every layer's output -> final norm -> lm_head -> softmax -> ``.save()``; then
    top-1 and ranks from the saved probabilities. Row 0 reads block 0's input (the recipe
    reads only block outputs, h_1 .. h_L); row L = lens on the last block's output, which
    is exactly the model's own head."""
    n_layers = len(nn_model.model.layers)
    out = _empty(n_layers, *ids.shape)
    for start in range(0, ids.shape[0], batch_size):
        batch = torch.as_tensor(ids[start : start + batch_size])
        saved = []
        with torch.inference_mode(), nn_model.trace(batch):
            hidden = nn_model.model.layers[0].input
            logits = nn_model.lm_head(nn_model.model.norm(hidden))
            saved.append(torch.nn.functional.softmax(logits, dim=-1).save())
            for layer in nn_model.model.layers:
                hidden = _block_output(layer.output)
                logits = nn_model.lm_head(nn_model.model.norm(hidden))
                saved.append(torch.nn.functional.softmax(logits, dim=-1).save())
        with torch.inference_mode():
            final_id = saved[-1].argmax(-1)  # [B, T]
            sl = slice(start, start + batch.shape[0])
            for layer, probs in enumerate(saved):
                top1, rank = _top1_and_rank(probs, final_id)
                out.top1[layer, sl] = top1.numpy()
                out.rank[layer, sl] = rank.numpy()
        del saved
    return out


# --------------------------------------------------------------------------- 4. tuned-lens


def tuned_lens_logit_lens(model):
    """tuned_lens.nn.LogitLens.from_model. tuned-lens 0.2.0 imports and runs unchanged with
    transformers 5 for Llama-family models (its final-norm lookup knows LlamaModel, and
    PredictionTrajectory.from_lens_and_model reads hidden_states[:-1], i.e. exactly the
    block inputs h_0 .. h_{L-1}, plus the model's own log-probs), so no patch is needed.
    Note that the lens deep-copies the final norm and unembedding (~113 MB in float32)."""
    from tuned_lens.nn import LogitLens as TLLogitLens

    return TLLogitLens.from_model(model)


def run_tuned_lens(lens, model, tokenizer, ids: np.ndarray) -> LensResult:
    """tuned-lens's PredictionTrajectory (one prompt at a time; the API takes one sequence)
    with its LogitLens, then top-1 and ranks from the trajectory's log-probabilities
    ([L + 1, T, V] float32 numpy per prompt, ~0.8 GB for 128 tokens)."""
    from tuned_lens.plotting import PredictionTrajectory

    n_layers = model.config.num_hidden_layers
    out = _empty(n_layers, *ids.shape)
    for i in range(ids.shape[0]):
        traj = PredictionTrajectory.from_lens_and_model(lens, model, input_ids=ids[i].tolist(), tokenizer=tokenizer)
        with torch.inference_mode():
            logp = torch.from_numpy(traj.log_probs)  # [L + 1, T, V], zero-copy
            final_id = logp[-1].argmax(-1)
            top1, rank = _top1_and_rank(logp, final_id.expand(logp.shape[0], -1))
        out.top1[:, i] = top1.numpy()
        out.rank[:, i] = rank.numpy()
        del traj, logp
    return out


# --------------------------------------------------------------------------- bound


def flops_per_token(model, n_tokens: int = N_TOKENS) -> dict:
    """FLOPs per token of the work every tool must do.

    forward: 2 * non-embedding parameters + causal attention (QK^T and AV over (T+1)/2
    keys on average) + the model's own head (2 * d * V); lens: L projections
    2 * d * V (rows 0 .. L-1; row L is the forward's own head). Norms, softmax, argmax
    and comparisons are not counted."""
    cfg = model.config
    d, vocab, n_layers = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    head_dim = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    embed = model.get_input_embeddings().weight
    params = {id(p): p.numel() for p in model.parameters()}
    non_embedding = sum(params.values()) - embed.numel()
    out_w = model.get_output_embeddings().weight
    if id(out_w) != id(embed) and id(out_w) in params:  # untied head: not part of the blocks either
        non_embedding -= out_w.numel()
    attn = n_layers * 2 * 2 * cfg.num_attention_heads * head_dim * (n_tokens + 1) / 2
    head = 2 * d * vocab
    forward = 2 * non_embedding + attn + head
    lens = n_layers * head
    return {
        "non_embedding_params": int(non_embedding),
        "forward": float(forward),
        "attention": float(attn),
        "head": float(head),
        "lens": float(lens),
        "total": float(forward + lens),
    }


def gemm_operands(dtype: torch.dtype, rows: int, d: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, d, generator=g).to(dtype)
    w = (torch.randn(vocab, d, generator=g) * d**-0.5).to(dtype)
    return x, w


# --------------------------------------------------------------------------- comparison / io


def compare(a: LensResult, b: LensResult) -> dict:
    """Disagreement counts over the prompts both results cover."""
    n = min(a.n_prompts, b.n_prompts)
    a, b = a.head(n), b.head(n)
    total = a.top1.size
    top1 = int((a.top1 != b.top1).sum())
    rank = int((a.rank != b.rank).sum())
    ra, rb = a.rank.astype(np.int64), b.rank.astype(np.int64)
    diff = rb - ra
    ratio = np.maximum(ra, rb) / np.minimum(ra, rb)
    return {
        "prompts": n,
        "cells": int(total),
        "top1_mismatch": top1,
        "rank_mismatch": rank,
        "top1_mismatch_frac": top1 / total,
        "rank_mismatch_frac": rank / total,
        # b ranks the final prediction better (lower) / worse (higher) than a.
        "rank_lower": int((diff < 0).sum()),
        "rank_higher": int((diff > 0).sum()),
        "rank_off_by_one": int((np.abs(diff) == 1).sum()),
        "rank_within_2x_frac": float((ratio <= 2).mean()),
        "final_id_mismatch": int((a.top1[-1] != b.top1[-1]).sum()),
        "max_abs_rank_diff": int(np.abs(diff).max()),
    }


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_end": load,
    }


def atomic_write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")

