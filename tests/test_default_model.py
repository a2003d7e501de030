"""The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF) and the local-folder path."""

from __future__ import annotations

import pytest
import torch

from harness.lenses import LogitLens
from harness.models import DEFAULT_MODEL, ModelFileMissing, load_model, model_from_config, resolve
from harness.models import loading
from harness.trace import ReductionSpec, TraceEngine, TraceRequest


@pytest.fixture(scope="module")
def default():
    try:
        loading.gguf_path(resolve(DEFAULT_MODEL))
    except ModelFileMissing as err:
        pytest.skip(str(err))
    return load_model(resolve(DEFAULT_MODEL), device="cpu", dtype="float32")


def test_conversion_is_cached(default, monkeypatch):
    """A second load reads the converted checkpoint: the GGUF is not dequantised again."""

    def no_conversion(*args, **kwargs):
        raise AssertionError("the GGUF file was converted a second time")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", _guard(no_conversion))
    path, digest = loading.converted_gguf_dir(resolve(DEFAULT_MODEL))
    assert (path / "converted.json").is_file() and default.revision == f"gguf-sha256:{digest[:16]}"


def _guard(fail):
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained

    def wrapped(*args, **kwargs):
        if "gguf_file" in kwargs:
            fail()
        return original(*args, **kwargs)

    return wrapped


def test_default_model_shape_and_lens_at_L(default):
    assert default.adapter.family == "llama" and default.n_layers == 30 and default.vocab_size == 49152
    ids = default.tokenizer("The capital of France is Paris, and the capital of Italy is", return_tensors="pt").input_ids
    with torch.inference_mode():
        from harness.interventions.backend import HookBackend

        record = HookBackend(default).forward(ids)
        logits = default.model(ids).logits[0]
        captured = [h[0] for h in record.resid]
        lens_logits = LogitLens(default).logits(captured[-1], default.n_layers)
    torch.testing.assert_close(lens_logits, logits, atol=1e-4, rtol=1e-4)
    assert default.tokenizer.decode(int(logits[-1].argmax())) == " Rome"


def test_engine_on_the_default_model(default):
    ids = default.tokenizer(["The Eiffel Tower is in", "Water is made of hydrogen and"]).input_ids
    trace = TraceEngine(default, progress=False).trace(TraceRequest.build("t", ids, "last"), LogitLens(default), ReductionSpec())
    assert trace.top1.shape == (default.n_layers + 1, len(ids)) and (trace.final_rank[-1] == 1).all()
    assert (trace.final_rank >= 1).all() and (trace.final_rank <= default.vocab_size).all()


def test_local_checkpoint_folder_loads(default, tmp_path):
    """A save_pretrained() folder given as --model: the same loader as hub ids."""
    from transformers import GPT2Config

    model = model_from_config(GPT2Config(vocab_size=default.vocab_size, n_layer=2, n_embd=32, n_head=4, n_positions=64))
    model.save_pretrained(tmp_path)
    default.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(resolve(str(tmp_path)), device="cpu", dtype="float32")
    assert loaded.adapter.family == "gpt2" and loaded.n_layers == 2 and loaded.revision.startswith("local:")
