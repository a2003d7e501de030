"""A tiny random Llama checkpoint folder with a word-level tokenizer over the embedded
prose's words (save_pretrained layout: what ``--model FOLDER`` loads; no download)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch
from transformers import LlamaConfig

from harness.models.loading import model_from_config
from harness.paths import FIXTURES_DIR

SPECIALS = ("<unk>", "<pad>", "<s>", "</s>")


def save_tiny_checkpoint(folder: Path, words: int = 400, seed: int = 0) -> Path:
    """A 2-layer Llama (hidden 32) whose vocabulary is the special tokens plus the
    ``words`` most frequent words of the embedded prose (split on whitespace)."""
    tokenizers = __import__("pytest").importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    counts: Counter[str] = Counter()
    for path in sorted((FIXTURES_DIR / "prose").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            counts.update(json.loads(line)["text"].split())
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for word, _ in counts.most_common(words):
        vocab.setdefault(word, len(vocab))
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=512, initializer_range=0.2,
        pad_token_id=1, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False,
    )
    model = model_from_config(config, seed=seed)
    with torch.no_grad():  # off its initial values, so the untrained control differs from it
        gen = torch.Generator().manual_seed(seed + 1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
