"""Random-init tests of every architecture adapter (claims.md, "Layers" and "Traps").

For each family in ``ADAPTERS`` a tiny model is built from a transformers config (no
download), its norm weights are moved away from their init (Gemma scales by ``1 + w``,
so a wrong norm formula would go unnoticed with the init weights), and we check:

1. there are L + 1 residual points, one [n_rows, d_model] tensor each;
2. ``h_{l+1}`` is block ``l``'s output and ``h_L`` is the last block's output *before*
   the final norm, unlike ``output_hidden_states[-1]`` where that one is already normed;
3. the logit lens at ``L`` gives back the model's own logits (soft-cap included);
4. through the engine, the last layer row is the final prediction (rank 1, KL 0);
5. padding in a batch changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Olmo2Config,
    Phi3Config,
    PhiConfig,
    Qwen2Config,
    Qwen3Config,
)

from harness.lenses import LogitLens
from harness.models.adapters import ADAPTERS, UnsupportedArchitecture, adapter_for
from harness.models.loading import LoadedModel, model_from_config
from harness.models.registry import ModelSpec
from harness.interventions.backend import HookBackend
from harness.trace import ReductionSpec, TraceEngine, TraceRequest, _pad_batch

VOCAB = 211
PAD_ID = 0
ATOL = RTOL = 1e-5
# Larger than the usual 0.02, so that logits of a tiny random model are far from uniform.
INIT_STD = 0.2

# Sizes shared by the llama-like configs (explicit head_dim: several default to 128-256).
_LLAMA_SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=64,
    initializer_range=INIT_STD,
    pad_token_id=PAD_ID,
    bos_token_id=1,
    eos_token_id=2,
)

# family id -> config factory. Every model_type in ADAPTERS must appear here.
CONFIGS = {
    "gpt2": lambda: GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=3, n_head=4,
        initializer_range=INIT_STD, bos_token_id=1, eos_token_id=2,
    ),
    "gpt_neox_parallel": lambda: GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=64, use_parallel_residual=True,
        initializer_range=INIT_STD,
    ),
    "gpt_neox_sequential": lambda: GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=64, use_parallel_residual=False,
        initializer_range=INIT_STD,
    ),
    "phi": lambda: PhiConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=64, initializer_range=INIT_STD,
    ),
    "llama": lambda: LlamaConfig(**_LLAMA_SIZES),
    "mistral": lambda: MistralConfig(**_LLAMA_SIZES, sliding_window=4),
    "qwen2": lambda: Qwen2Config(**_LLAMA_SIZES),
    "qwen3": lambda: Qwen3Config(**_LLAMA_SIZES),
    "olmo2": lambda: Olmo2Config(**_LLAMA_SIZES),
    "phi3": lambda: Phi3Config(**_LLAMA_SIZES),
    "gemma": lambda: GemmaConfig(**_LLAMA_SIZES),
    "gemma2": lambda: Gemma2Config(**_LLAMA_SIZES, sliding_window=4, final_logit_softcapping=5.0),
    "gemma3_text": lambda: Gemma3TextConfig(**_LLAMA_SIZES, sliding_window=4, final_logit_softcapping=5.0),
}

# Prompts of different lengths (ids avoid the pad id, so padding is visible as such).
PROMPT_LENGTHS = (9, 4, 7, 1, 6)


def _perturb_norms(model: nn.Module, seed: int) -> None:
    """Random non-zero norm weights (and biases) so that a wrong norm formula shows."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if "norm" not in type(module).__name__.lower():
            continue
        for name, p in module.named_parameters(recurse=False):
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            with torch.no_grad():
                p.copy_(1.0 + 0.5 * noise if name == "weight" else 0.2 * noise)


@dataclass
class Case:
    family: str
    config: object
    loaded: LoadedModel
    prompts: list[tuple[int, ...]]

    @property
    def model(self) -> nn.Module:
        return self.loaded.model

    @property
    def adapter(self):
        return self.loaded.adapter

    @property
    def n_layers(self) -> int:
        return self.loaded.n_layers


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def case(request) -> Case:
    family = request.param
    config = CONFIGS[family]()
    model = model_from_config(config, seed=0, dtype=torch.float32)
    _perturb_norms(model, seed=1)
    loaded = LoadedModel(
        spec=ModelSpec(name=f"tiny-{family}", source="local", path="/nonexistent"),
        model=model,
        tokenizer=SimpleNamespace(pad_token_id=PAD_ID),  # all the engine uses
        adapter=adapter_for(model),
        device=torch.device("cpu"),
        dtype=torch.float32,
        revision="test",
    )
    gen = torch.Generator().manual_seed(2)
    prompts = [tuple(torch.randint(3, VOCAB, (n,), generator=gen).tolist()) for n in PROMPT_LENGTHS]
    return Case(family, config, loaded, prompts)


def _forward(case: Case, prompts, *, output_hidden_states: bool = False):
    """One padded forward pass, capturing h_0 .. h_L at every real position.

    Also records each block's output with a forward hook, handling the tuple/tensor trap:
    ``output[0]`` on a bare tensor would silently take the first batch row.
    """
    ids, mask = _pad_batch(list(prompts), PAD_ID)
    batch_idx, pos_idx = mask.nonzero(as_tuple=True)  # real tokens only, prompt then position
    block_outputs: list = [None] * case.n_layers

    def record(slot: int):
        def hook(_module, _args, output):
            out = output[0] if isinstance(output, tuple) else output
            assert out.shape == ids.shape + (case.config.hidden_size,)
            block_outputs[slot] = out[batch_idx, pos_idx]

        return hook

    blocks = case.adapter.blocks_of(case.model)
    handles = [b.register_forward_hook(record(i)) for i, b in enumerate(blocks)]
    try:
        with torch.inference_mode():
            captured, logits = HookBackend(case.loaded).read_rows(ids, mask, batch_idx, pos_idx)
            out = case.model(
                input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=output_hidden_states
            )
            # The backend's head ran on the read rows only; it must agree with the full pass.
            assert torch.allclose(logits, out.logits[batch_idx, pos_idx], atol=ATOL, rtol=RTOL)
    finally:
        for h in handles:
            h.remove()
    return SimpleNamespace(
        captured=captured,
        block_outputs=block_outputs,
        logits=out.logits[batch_idx, pos_idx],
        hidden_states=None if out.hidden_states is None else [h[batch_idx, pos_idx] for h in out.hidden_states],
        n_rows=len(batch_idx),
    )


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, atol=ATOL, rtol=RTOL)


def test_every_adapter_family_has_a_case():
    covered = {CONFIGS[f]().model_type for f in CONFIGS}
    assert covered == {t for a in ADAPTERS for t in a.model_types}


def test_adapter_matches_config(case):
    assert case.config.model_type in case.adapter.model_types
    assert case.n_layers == case.config.num_hidden_layers
    assert case.loaded.vocab_size == VOCAB
    if case.family.startswith("gpt_neox"):
        assert case.adapter.parallel_residual(case.model) == case.config.use_parallel_residual
    if case.family in ("gemma2", "gemma3_text"):
        assert case.adapter.logit_softcap(case.model) == 5.0


def test_logits_are_not_flat(case):
    """Guards the other tests: near-uniform logits would make every comparison trivial."""
    run = _forward(case, case.prompts[:2])
    assert (run.logits.max(-1).values - run.logits.min(-1).values).min() > 0.5


def test_l_plus_one_residual_points(case):
    run = _forward(case, case.prompts[:2])
    assert run.n_rows == sum(PROMPT_LENGTHS[:2])
    assert len(run.captured) == case.n_layers + 1
    for h in run.captured:
        assert h is not None
        assert h.shape == (run.n_rows, case.config.hidden_size)


def test_residual_points_are_block_outputs_pre_norm(case):
    run = _forward(case, case.prompts[:2], output_hidden_states=True)
    L = case.n_layers
    for layer in range(L):
        assert torch.equal(run.captured[layer + 1], run.block_outputs[layer]), f"h_{layer + 1} != block {layer} output"

    h_L, last_hs = run.captured[L], run.hidden_states[-1]
    assert len(run.hidden_states) == L + 1
    assert _close(case.adapter.residual_to_logits(case.model, h_L), run.logits)

    # transformers' last hidden state is either pre-norm (== h_L) or already final-normed.
    final_norm = case.adapter.final_norm_of(case.model)
    hs_is_normed = _close(last_hs, final_norm(h_L))
    assert hs_is_normed or _close(last_hs, h_L), "hidden_states[-1] is neither h_L nor norm(h_L)"
    if hs_is_normed:
        # The trap: norming it a second time gives wrong logits.
        assert not _close(h_L, last_hs)
        assert not _close(case.adapter.residual_to_logits(case.model, last_hs), run.logits)


def test_logit_lens_at_L_reproduces_model_logits(case):
    run = _forward(case, case.prompts[:2])
    L = case.n_layers
    lens_logits = LogitLens(case.loaded).logits(run.captured[L], L)
    assert lens_logits.shape == run.logits.shape
    assert _close(lens_logits, run.logits), (lens_logits - run.logits).abs().max()


def _trace(case: Case, prompts, batch_size: int):
    engine = TraceEngine(case.loaded, cache=None, batch_size=batch_size, progress=False)
    return engine.trace(TraceRequest.build(case.family, prompts), LogitLens(case.loaded), ReductionSpec())


def test_engine_last_layer_is_final_prediction(case):
    trace = _trace(case, case.prompts, batch_size=4)
    L, N = case.n_layers, sum(PROMPT_LENGTHS)
    assert trace.n_layers == L
    for name in ("top1", "final_rank", "gold_rank", "kl_final", "entropy", "final_logprob"):
        assert getattr(trace, name).shape == (L + 1, N), name
    assert (trace.final_rank[L] == 1).all()
    np.testing.assert_array_equal(trace.top1[L], trace.final_id)
    np.testing.assert_allclose(trace.kl_final[L], 0.0, atol=1e-5)
    # The lens rows below L are really computed (not copies of the final row).
    assert not np.allclose(trace.kl_final[:L], 0.0, atol=1e-3)


def test_padding_does_not_change_results(case):
    together = _trace(case, case.prompts, batch_size=4)
    alone = [_trace(case, [p], batch_size=1) for p in case.prompts]
    for name in ("top1", "final_rank", "gold_rank"):
        np.testing.assert_array_equal(getattr(together, name), np.concatenate([getattr(t, name) for t in alone], axis=1), name)
    for name in ("kl_final", "entropy", "final_logprob"):
        np.testing.assert_allclose(
            getattr(together, name), np.concatenate([getattr(t, name) for t in alone], axis=1), atol=1e-4, rtol=1e-4,
            err_msg=name,
        )
    np.testing.assert_array_equal(together.example, np.repeat(np.arange(len(PROMPT_LENGTHS)), PROMPT_LENGTHS))
    np.testing.assert_array_equal(together.position, np.concatenate([np.arange(n) for n in PROMPT_LENGTHS]))


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(UnsupportedArchitecture, match="harness/models/adapters.py"):
        adapter_for(BertConfig())
