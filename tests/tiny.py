"""A tiny random-init Llama for harness tests (built from a config, no download)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from transformers import LlamaConfig

from harness.models.adapters import adapter_for
from harness.models.loading import LoadedModel, model_from_config
from harness.models.registry import ModelSpec

VOCAB = 97


def tiny_llama(seed: int = 0, n_layers: int = 4) -> LoadedModel:
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
        initializer_range=0.2, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    model = model_from_config(config, seed=seed)
    return LoadedModel(
        spec=ModelSpec(name=f"tiny-llama-{seed}", source="local", path="/nonexistent"),
        model=model,
        tokenizer=SimpleNamespace(pad_token_id=0),
        adapter=adapter_for(model),
        device=torch.device("cpu"),
        dtype=torch.float32,
        revision="test",
    )


def prompts(n: int = 6, seed: int = 3) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (int(k),), generator=gen).tolist() for k in torch.randint(2, 20, (n,), generator=gen)]
