"""Token frequency ranks per tokenizer, counted over a reference corpus (claims.md).

Each tokenizer's own ids are counted over the corpus with special tokens excluded; the
most frequent token has rank 1. Buckets by rank: Top-10, Top-100 (11-100), Top-1000
(101-1000), Rest (everything else, unseen tokens included). The table is cached per
(tokenizer, corpus, token budget) with the corpus name and its token count recorded.

The count reads the claims' corpus, or, for a streamed hub source (``--data wikipedia``),
the source's paragraphs from its start until ``max_tokens`` tokens (the GTR paper counted
about 200M; ``--frequency-tokens``, default DEFAULT_FREQUENCY_TOKENS for a hub source).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.prose import Corpus, Paragraph
from harness.files import atomic_path
from harness.paths import depth_claims_home

BUCKETS: tuple[str, ...] = ("Top-10", "Top-100", "Top-1000", "Rest")
BUCKET_EDGES = (10, 100, 1000)  # inclusive upper ranks of the first three buckets
FREQUENCY_VERSION = 2
DEFAULT_FREQUENCY_TOKENS = 10_000_000  # tokens counted from a streamed hub source unless --frequency-tokens says otherwise


@dataclass(frozen=True)
class FrequencyTable:
    tokenizer_hash: str
    corpus: str
    corpus_hash: str
    n_tokens: int
    counts: np.ndarray  # [V] occurrences of each token id
    max_tokens: int | None = None  # the token budget asked for (None: the whole corpus)

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
        return {"corpus": self.corpus, "corpus_hash": self.corpus_hash[:16], "n_tokens": self.n_tokens, "max_tokens": self.max_tokens}


def bucket_index(ranks: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Bucket of each rank; tokens never seen in the corpus are Rest whatever their rank."""
    b = np.searchsorted(np.array(BUCKET_EDGES), ranks, side="left")
    return np.where(counts > 0, b, len(BUCKETS) - 1).astype(np.int8)


def tokenizer_hash(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


def count_tokens(tokenizer, corpus: Corpus | Iterable[Paragraph], vocab_size: int, max_tokens: int | None = None) -> np.ndarray:
    """Occurrences of each id over the paragraphs (special tokens excluded), stopping after
    exactly ``max_tokens`` counted tokens when the text has that many."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    special = [i for i in tokenizer.all_special_ids if 0 <= i < vocab_size]
    left = max_tokens
    for p in corpus.paragraphs if isinstance(corpus, Corpus) else corpus:
        ids = np.asarray(tokenizer(p.text, add_special_tokens=False).input_ids, dtype=np.int64)
        ids = ids[~np.isin(ids, special)]
        if left is not None:
            ids = ids[:left]
            left -= len(ids)
        counts += np.bincount(ids, minlength=vocab_size)[:vocab_size]
        if left == 0:
            break
    counts[special] = 0
    return counts


def token_frequencies(
    tokenizer, corpus: Corpus, vocab_size: int, cache_dir: Path | None = None, max_tokens: int | None = None,
    stream: Callable[[], Iterable[Paragraph]] | None = None,
) -> FrequencyTable:
    """The frequency table for a tokenizer over a corpus, computed once and cached.
    ``stream``: the corpus's source paragraph by paragraph (a hub source read past the
    claims' paragraphs); counted up to ``max_tokens`` and keyed by ``corpus.source``
    (which names the source's revision) instead of the claims' paragraphs."""
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"The token budget of the frequency count must be positive, got {max_tokens}.")
    tok_hash = tokenizer_hash(tokenizer)
    text_hash = corpus.content_hash if stream is None else hashlib.sha256(corpus.source.encode()).hexdigest()
    cache_dir = Path(cache_dir or depth_claims_home() / "frequency")
    path = cache_dir / f"v{FREQUENCY_VERSION}-{tok_hash[:16]}-{text_hash[:16]}-{max_tokens or 'all'}-{vocab_size}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return FrequencyTable(counts=z["counts"], **meta)
        except Exception:
            path.unlink(missing_ok=True)
    counts = count_tokens(tokenizer, corpus if stream is None else stream(), vocab_size, max_tokens)
    table = FrequencyTable(
        tokenizer_hash=tok_hash,
        corpus=corpus.name,
        corpus_hash=text_hash,
        n_tokens=int(counts.sum()),
        counts=counts,
        max_tokens=max_tokens,
    )
    meta = {k: getattr(table, k) for k in ("tokenizer_hash", "corpus", "corpus_hash", "n_tokens", "max_tokens")}
    with atomic_path(path) as tmp:
        np.savez(tmp, counts=counts, meta=np.array(json.dumps(meta)))
    return table
