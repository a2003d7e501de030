"""Token frequency ranks per tokenizer, counted over a reference corpus (claims.md).

Each tokenizer's own ids are counted over the corpus with special tokens excluded; the
most frequent token has rank 1. Buckets by rank: Top-10, Top-100 (11-100), Top-1000
(101-1000), Rest (everything else, unseen tokens included). The table is cached per
(tokenizer, corpus) with the corpus name and its token count recorded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.prose import Corpus
from harness.files import atomic_path
from harness.paths import depth_claims_home

BUCKETS: tuple[str, ...] = ("Top-10", "Top-100", "Top-1000", "Rest")
_BUCKET_EDGES = (10, 100, 1000)  # inclusive upper ranks of the first three buckets
FREQUENCY_VERSION = 1


@dataclass(frozen=True)
class FrequencyTable:
    tokenizer_hash: str
    corpus: str
    corpus_hash: str
    n_tokens: int
    counts: np.ndarray  # [V] occurrences of each token id

    @property
    def ranks(self) -> np.ndarray:
        """1-based frequency rank of every id (count descending, then id ascending)."""
        order = np.lexsort((np.arange(len(self.counts)), -self.counts))
        ranks = np.empty(len(self.counts), dtype=np.int64)
        ranks[order] = np.arange(1, len(self.counts) + 1)
        return ranks

    @property
    def bucket_of_id(self) -> np.ndarray:
        """[V] bucket index (0 = Top-10 ... 3 = Rest) of every token id."""
        return bucket_index(self.ranks, self.counts)

    def bucket_ids(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Token ids of each bucket, as named token sets for the trace engine."""
        b = self.bucket_of_id
        return tuple((name, tuple(np.flatnonzero(b == i).tolist())) for i, name in enumerate(BUCKETS))

    @property
    def provenance(self) -> dict:
        return {"corpus": self.corpus, "corpus_hash": self.corpus_hash[:16], "n_tokens": self.n_tokens}


def bucket_index(ranks: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Bucket of each rank; tokens never seen in the corpus are Rest whatever their rank."""
    b = np.searchsorted(np.array(_BUCKET_EDGES), ranks, side="left")
    return np.where(counts > 0, b, len(BUCKETS) - 1).astype(np.int8)


def tokenizer_hash(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


def count_tokens(tokenizer, corpus: Corpus, vocab_size: int) -> np.ndarray:
    counts = np.zeros(vocab_size, dtype=np.int64)
    for p in corpus.paragraphs:
        ids = tokenizer(p.text, add_special_tokens=False).input_ids
        counts += np.bincount(np.asarray(ids, dtype=np.int64), minlength=vocab_size)[:vocab_size]
    special = [i for i in tokenizer.all_special_ids if 0 <= i < vocab_size]
    counts[special] = 0
    return counts


def token_frequencies(tokenizer, corpus: Corpus, vocab_size: int, cache_dir: Path | None = None) -> FrequencyTable:
    """The frequency table for a tokenizer over a corpus, computed once and cached."""
    tok_hash = tokenizer_hash(tokenizer)
    cache_dir = Path(cache_dir or depth_claims_home() / "frequency")
    path = cache_dir / f"v{FREQUENCY_VERSION}-{tok_hash[:16]}-{corpus.content_hash[:16]}-{vocab_size}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return FrequencyTable(counts=z["counts"], **meta)
        except Exception:
            path.unlink(missing_ok=True)
    counts = count_tokens(tokenizer, corpus, vocab_size)
    table = FrequencyTable(
        tokenizer_hash=tok_hash,
        corpus=corpus.name,
        corpus_hash=corpus.content_hash,
        n_tokens=int(counts.sum()),
        counts=counts,
    )
    meta = {k: getattr(table, k) for k in ("tokenizer_hash", "corpus", "corpus_hash", "n_tokens")}
    with atomic_path(path) as tmp:
        np.savez(tmp, counts=counts, meta=np.array(json.dumps(meta)))
    return table
