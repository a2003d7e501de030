"""Architecture adapters: where each family keeps its blocks, final norm and unembedding.

One small declarative entry per family. The trace engine never touches a model's
internals except through an adapter, so supporting a new family is one entry here plus
its random-init test in ``tests/test_adapters.py``.

Residual-stream points (claims.md, "Layers"): ``h_l`` is the input of block ``l`` for
``l < L`` and ``h_L`` is the input of the final norm (the last block's output, pre-norm).
The adapter reads them with forward pre-hooks, so it never depends on whether a block
returns a tuple or a bare tensor, nor on ``output_hidden_states`` (whose last entry is
already final-normed in current transformers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class UnsupportedArchitecture(ValueError):
    """The model's architecture has no adapter."""


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Where one architecture family keeps the parts the lenses and interventions need.

    Paths are dotted attribute paths from the ``*ForCausalLM`` module.
    """

    family: str
    model_types: tuple[str, ...]
    blocks: str
    final_norm: str
    unembed: str
    attention: str
    mlp: str
    # Name of the config attribute holding the final-logit soft-cap (gemma2/3), if any.
    logit_softcap_attr: str | None = None
    # Config attribute that says attention and MLP read the same block input (gpt_neox,
    # phi); True/False here overrides a missing attribute.
    parallel_residual_attr: str | None = None
    parallel_residual_default: bool = False
    # Path, inside a block, of the module whose first input is the residual the MLP is
    # added to in a sequential block (attention output already added): the pre-MLP norm
    # for most families, the MLP itself for OLMo-2 (post-norms only). None: always parallel.
    mlp_residual: str | None = "post_attention_layernorm"

    def blocks_of(self, model: nn.Module) -> nn.ModuleList:
        return _get(model, self.blocks)

    def final_norm_of(self, model: nn.Module) -> nn.Module:
        return _get(model, self.final_norm)

    def unembed_of(self, model: nn.Module) -> nn.Module:
        return _get(model, self.unembed)

    def n_layers(self, model: nn.Module) -> int:
        return len(self.blocks_of(model))

    def logit_softcap(self, model: nn.Module) -> float | None:
        if self.logit_softcap_attr is None:
            return None
        cap = getattr(_text_config(model.config), self.logit_softcap_attr, None)
        return float(cap) if cap else None

    def parallel_residual(self, model: nn.Module) -> bool:
        if self.parallel_residual_attr is None:
            return self.parallel_residual_default
        return bool(
            getattr(_text_config(model.config), self.parallel_residual_attr, self.parallel_residual_default)
        )

    def attention_of(self, block: nn.Module) -> nn.Module:
        return _get(block, self.attention)

    def mlp_residual_of(self, block: nn.Module) -> nn.Module:
        return _get(block, self.mlp_residual)

    def residual_to_logits(self, model: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """Final norm, unembedding and soft-cap: the model's own head applied to ``h``."""
        logits = self.unembed_of(model)(self.final_norm_of(model)(h))
        cap = self.logit_softcap(model)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _get(root: nn.Module, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _llama_like(
    family: str, *model_types: str, softcap: str | None = None, mlp_residual: str = "post_attention_layernorm"
) -> ArchitectureAdapter:
    return ArchitectureAdapter(
        family=family,
        model_types=model_types or (family,),
        blocks="model.layers",
        final_norm="model.norm",
        unembed="lm_head",
        attention="self_attn",
        mlp="mlp",
        logit_softcap_attr=softcap,
        mlp_residual=mlp_residual,
    )


ADAPTERS: tuple[ArchitectureAdapter, ...] = (
    ArchitectureAdapter(
        family="gpt2",
        model_types=("gpt2",),
        blocks="transformer.h",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        attention="attn",
        mlp="mlp",
        mlp_residual="ln_2",
    ),
    ArchitectureAdapter(
        family="gpt_neox",
        model_types=("gpt_neox",),
        blocks="gpt_neox.layers",
        final_norm="gpt_neox.final_layer_norm",
        unembed="lm_head",  # transformers >= 5 renames the old embed_out
        attention="attention",
        mlp="mlp",
        parallel_residual_attr="use_parallel_residual",
        parallel_residual_default=True,
    ),
    ArchitectureAdapter(
        family="phi",
        model_types=("phi",),
        blocks="model.layers",
        final_norm="model.final_layernorm",
        unembed="lm_head",
        attention="self_attn",
        mlp="mlp",
        parallel_residual_default=True,
        mlp_residual=None,
    ),
    _llama_like("llama"),
    _llama_like("mistral"),
    _llama_like("qwen2"),
    _llama_like("qwen3"),
    _llama_like("olmo2", mlp_residual="mlp"),  # post-norms: the MLP reads the residual itself
    _llama_like("phi3"),
    # Gemma's RMSNorm scales by (1 + w): calling the model's own norm module keeps that right.
    _llama_like("gemma"),
    _llama_like("gemma2", softcap="final_logit_softcapping", mlp_residual="pre_feedforward_layernorm"),
    _llama_like("gemma3_text", softcap="final_logit_softcapping", mlp_residual="pre_feedforward_layernorm"),
)

_BY_MODEL_TYPE = {t: a for a in ADAPTERS for t in a.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def adapter_for(model_or_config) -> ArchitectureAdapter:
    """The adapter for a model (or its config); a clear error for unknown families."""
    config = getattr(model_or_config, "config", model_or_config)
    # The top-level type decides: a multimodal wrapper (e.g. gemma3) keeps its text
    # blocks elsewhere than its text-only sibling, so it is not silently treated as one.
    model_type = getattr(config, "model_type", None)
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UnsupportedArchitecture(
            f"No architecture adapter for model_type {model_type!r}. Supported: "
            f"{', '.join(supported_model_types())}. To add one, append an ArchitectureAdapter "
            "entry to harness/models/adapters.py (paths of the blocks, final norm and "
            "unembedding) and a random-init case to tests/test_adapters.py."
        ) from None
