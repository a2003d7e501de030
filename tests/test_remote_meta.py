"""``--backend nnsight --remote`` without local weights: the model is built from its config
on the meta device, every trace goes to NDIF, and what would run it here fails clearly.

Offline: the config is built in the test (Llama-3.1-70B's shape), the tokenizer is a tiny
local one, and NDIF is replaced at the point where nnsight would send the request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, PreTrainedTokenizerFast

import harness.models.loading as loading
from harness.backends import make_backend
from harness.models import RemoteOnly, load_remote_model, resolve
from harness.session import ModelSession, RunConfig

LLAMA_70B = dict(
    hidden_size=8192, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
    intermediate_size=28672, vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0,
)


def llama_70b_config() -> LlamaConfig:
    return LlamaConfig(**LLAMA_70B)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate("the cat sat on a mat".split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")


@pytest.fixture
def offline_hub(monkeypatch):
    """Config and tokenizer from the test; the local weight loader raises if called."""
    monkeypatch.setattr(loading, "load_config", lambda source, revision: llama_70b_config())
    monkeypatch.setattr(loading, "load_tokenizer", lambda source, revision: tiny_tokenizer())

    def no_weights(*args, **kwargs):
        raise AssertionError("the local weight loader was called on the remote path")

    monkeypatch.setattr(loading, "load_weights", no_weights)
    monkeypatch.setenv("NDIF_API_KEY", "test-key")


def test_a_70b_config_builds_on_meta_in_little_memory():
    """In a fresh process (its peak RSS is then this build's): every parameter and buffer on
    meta, 70.6B parameters, and the peak resident memory grows by under 400 MB."""
    script = textwrap.dedent(
        f"""
        import json, resource, torch
        from transformers import LlamaConfig
        from harness.models.loading import meta_model
        torch.ones(1)  # torch's own start-up allocations count before the build
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        model = meta_model(LlamaConfig(**{LLAMA_70B!r}), torch.bfloat16, "llama-70b-shape")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps(dict(
            grown_mb=(after - before) / 1024,
            params=sum(p.numel() for p in model.parameters()),
            all_meta=all(t.is_meta for t in [*model.parameters(), *model.buffers()]),
        )))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["all_meta"]
    assert 70.0e9 < result["params"] < 71.0e9
    assert result["grown_mb"] < 400, result


def test_the_remote_session_builds_without_weights(offline_hub, tmp_path):
    config = RunConfig(models=("llama-3.1-70b",), backend="nnsight", remote=True, report_dir=tmp_path / "reports")
    session = ModelSession(config, "llama-3.1-70b")
    loaded = session.loaded
    assert loaded.weightless and all(p.is_meta for p in loaded.model.parameters())
    assert loaded.n_layers == 80 and loaded.vocab_size == 128256
    assert loaded.dtype == torch.bfloat16 and loaded.device == torch.device("cpu")
    assert session.backend.identity == {"backend": "nnsight-remote"}
    assert session.backend.nn_model.repo_id == "meta-llama/Llama-3.1-70B"


def test_a_trace_is_sent_to_ndif_not_run_here(offline_hub, monkeypatch):
    """The backend's forward ships its trace through nnsight's RemoteBackend (stopped here
    at the network, with the serialized request), never running the meta model."""
    from nnsight.intervention.backends.remote import RemoteBackend
    from nnsight.modeling.huggingface import HuggingFaceModel

    sent = {}

    class Offline(Exception):
        pass

    def request(self, request, tracer):
        sent["model_key"], sent["blob"] = self.model_key, self._serialize(tracer)
        raise Offline

    monkeypatch.setattr(RemoteBackend, "request", request)
    monkeypatch.setattr(
        HuggingFaceModel, "_remoteable_model_key", lambda self: f'{{"repo_id": "{self.repo_id}", "revision": null}}'
    )
    monkeypatch.setattr(loading, "load_config", lambda source, revision: LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
    ))
    loaded = load_remote_model(resolve("llama-3.1-70b"))
    backend = make_backend("nnsight", loaded, remote=True)
    with pytest.raises(Offline):
        backend.forward(torch.tensor([[2, 3, 4]]), edits={2: lambda h, _prev: h * 0})
    assert "meta-llama/Llama-3.1-70B" in sent["model_key"] and len(sent["blob"]) > 1000


def test_what_cannot_run_remotely_fails_clearly(offline_hub, monkeypatch):
    monkeypatch.setattr(loading, "load_config", lambda source, revision: LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    ))
    loaded = load_remote_model(resolve("llama-3.1-70b"))
    # the model's head on residuals here (what a logit lens does)
    with pytest.raises(RemoteOnly, match=r"without weights for NDIF.*model\.norm cannot run on this machine"):
        loaded.adapter.residual_to_logits(loaded.model, torch.zeros(1, 32))
    with pytest.raises(ValueError, match="only through --backend nnsight --remote"):
        make_backend("transformers", loaded)
    with pytest.raises(ValueError, match="only through --backend nnsight --remote"):
        make_backend("nnsight", loaded, remote="local")
    from harness.backends.nnsight_backend import NNsightBackend

    with pytest.raises(ValueError, match="only remote=True"):
        NNsightBackend(loaded, remote="local")
    with pytest.raises(ValueError, match="hub id"):
        load_remote_model(resolve("smollm2-135m-instruct-q4"))
    with pytest.raises(ValueError, match="untrained control"):
        load_remote_model(resolve("llama-3.1-70b+untrained"))
