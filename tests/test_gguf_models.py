"""``--model PATH.gguf`` and ``--revision``: any GGUF file of a family transformers' GGUF
loader reads, converted once and cached by content hash.

The GGUF files are written here, with the ``gguf`` package, from tiny random models of
three families (llama, qwen2, gpt2), in float32, so the converted model must give the
source model's logits up to float rounding. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config
from transformers.convert_slow_tokenizer import bytes_to_unicode

from harness.models import UnknownModel, load_model, resolve
from harness.models.loading import converted_gguf_dir

# A byte-level BPE vocabulary (llama.cpp's "gpt2" tokenizer model): the 256 byte symbols,
# two merges and an end-of-text control token.
TOKENS = [*bytes_to_unicode().values(), "Ġt", "he", "<|endoftext|>"]
TOKEN_TYPES = [1] * (len(TOKENS) - 1) + [3]  # 1 normal, 3 control
MERGES = ["Ġ t", "h e"]
EOT = len(TOKENS) - 1

CONFIGS = {
    "llama": lambda: LlamaConfig(
        vocab_size=len(TOKENS), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False, initializer_range=0.2,
    ),
    "qwen2": lambda: Qwen2Config(
        vocab_size=len(TOKENS), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, initializer_range=0.2,
    ),
    # GGUF's gpt2 metadata has no position-table size: transformers keeps GPT-2's 1024.
    "gpt2": lambda: GPT2Config(vocab_size=len(TOKENS), n_embd=32, n_layer=2, n_head=4, n_positions=1024, initializer_range=0.2),
}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (interleaved rotary halves), as its converter writes it."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, path: Path, arch: str) -> Path:
    """``model`` as a float32 GGUF file of architecture ``arch``, as llama.cpp's converter
    lays it out (tensor names from gguf's own name map)."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny-{arch}")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2" if arch == "qwen2" else "default")
    w.add_token_list(TOKENS)
    w.add_token_types(TOKEN_TYPES)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(EOT)
    w.add_eos_token_id(EOT)
    n_layers = cfg.num_hidden_layers
    w.add_block_count(n_layers)
    w.add_embedding_length(cfg.hidden_size)
    w.add_head_count(cfg.num_attention_heads)
    if arch == "gpt2":
        w.add_context_length(cfg.n_positions)
        w.add_feed_forward_length(4 * cfg.n_embd)
        w.add_layer_norm_eps(cfg.layer_norm_epsilon)
    else:
        w.add_context_length(cfg.max_position_embeddings)
        w.add_feed_forward_length(cfg.intermediate_size)
        w.add_head_count_kv(cfg.num_key_value_heads)
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
        w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
        w.add_vocab_size(cfg.vocab_size)
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_id, n_layers)
    written = 0
    for name, tensor in model.state_dict().items():
        base, suffix = name.rsplit(".", 1)
        target = names.get_name(base)
        if target is None or (target == "output" and cfg.tie_word_embeddings):
            continue  # buffers (attention masks) and a tied head are not stored
        a = tensor.float().numpy()
        if arch == "llama" and target.endswith("attn_q"):
            a = _permute(a, cfg.num_attention_heads)
        elif arch == "llama" and target.endswith("attn_k"):
            a = _permute(a, cfg.num_key_value_heads)
        elif arch == "gpt2" and suffix == "weight" and target.split(".")[-1] in ("attn_qkv", "attn_output", "ffn_up", "ffn_down"):
            a = a.T  # GPT-2's Conv1D stores [in, out]; GGUF stores [out, in]
        w.add_tensor(f"{target}.{suffix}", np.ascontiguousarray(a))
        written += 1
    assert written > 4 * n_layers, f"only {written} tensors mapped for {arch}"
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh depth-claims home: conversions land here, not in the user's cache."""
    monkeypatch.setenv("DEPTH_CLAIMS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _source_model(arch: str):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(CONFIGS[arch](), dtype=torch.float32).eval()


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_a_gguf_file_of_each_family_loads_with_its_source_models_logits(arch, tmp_path, home):
    source = _source_model(arch)
    path = write_gguf(source, tmp_path / f"tiny-{arch}.gguf", arch)

    spec = resolve(str(path))
    assert (spec.source, spec.name) == ("gguf-file", f"tiny-{arch}")
    loaded = load_model(spec, device="cpu", dtype="float32")

    assert loaded.model.config.model_type == arch
    assert loaded.revision == "gguf-sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    ids = torch.tensor([loaded.tokenizer("the cat sat on the mat")["input_ids"]])
    assert ids.shape[1] > 5 and int(ids.max()) < len(TOKENS)
    with torch.no_grad():
        want, got = source(ids).logits, loaded.model(ids).logits
    assert want.abs().max() > 0.1  # a real comparison, not of two near-zero tensors
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_conversion_is_cached_by_content_hash(tmp_path, home, monkeypatch):
    path = write_gguf(_source_model("qwen2"), tmp_path / "model.gguf", "qwen2")
    spec = resolve(str(path))
    first, digest = converted_gguf_dir(spec)
    assert first.parent == home / "models" and first.name.endswith(digest[:16])

    conversions = []
    real = AutoModelForCausalLM.from_pretrained

    def counting(*args, **kwargs):
        if kwargs.get("gguf_file"):
            conversions.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counting)
    loaded = load_model(spec, device="cpu", dtype="float32")
    assert conversions == []  # the second load reads the converted folder
    assert loaded.revision.endswith(digest)

    # Other content under the same path: converted again, into a folder of its new hash.
    write_gguf(_source_model("llama"), path, "llama")
    second, new_digest = converted_gguf_dir(resolve(str(path)))
    assert new_digest != digest and second != first and len(conversions) == 1


def test_a_missing_or_non_gguf_file_is_a_clear_error(tmp_path):
    with pytest.raises(UnknownModel, match="no such file"):
        resolve(str(tmp_path / "absent.gguf"))
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"PK\x03\x04 a zip, not a GGUF")
    with pytest.raises(UnknownModel, match="not a GGUF file"):
        resolve(str(not_gguf))


def test_an_unsupported_gguf_architecture_is_refused_before_converting(tmp_path, home):
    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(str(path), "mpt")  # a real llama.cpp architecture transformers does not read
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="'mpt'.*cannot read"):
        load_model(resolve(str(path)), device="cpu", dtype="float32")
    assert not list((home / "models").glob("odd-*"))


def test_revision_of_hub_models():
    spec = resolve("pythia-70m", "step1000")
    assert (spec.name, spec.repo_id, spec.revision) == ("pythia-70m@step1000", "EleutherAI/pythia-70m", "step1000")
    assert resolve("pythia-70m@step1000") == spec
    assert resolve("EleutherAI/pythia-70m@main").revision == "main"
    control = resolve("pythia-70m@step1000+untrained")
    assert (control.name, control.revision, control.control) == ("pythia-70m@step1000+untrained", "step1000", "untrained")
    assert resolve("pythia-70m").revision is None
    with pytest.raises(UnknownModel, match="once"):
        resolve("pythia-70m@step1000", "step2000")


def test_revision_of_a_file_or_folder_is_refused(tmp_path):
    path = write_gguf(_source_model("llama"), tmp_path / "m.gguf", "llama")
    with pytest.raises(UnknownModel, match="hub models only"):
        resolve(str(path), "main")
    with pytest.raises(UnknownModel, match="hub models only"):
        resolve("smollm2-135m-instruct-q4", "main")
