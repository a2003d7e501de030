"""Token frequency counts: special tokens excluded, cached with corpus provenance."""

from __future__ import annotations

import numpy as np

from harness.data.prose import Corpus, Paragraph
from harness.frequency import count_tokens, token_frequencies


class _CharTokenizer:
    """Token id = byte value; id 0 is a special token (BOS) added to every text."""

    all_special_ids = [0]

    def __call__(self, text, add_special_tokens=True):
        class Enc:
            input_ids = [0] + list(text.encode())

        return Enc()

    def get_vocab(self):
        return {chr(i): i for i in range(256)}


CORPUS = Corpus("letters", (Paragraph("1", "aaab"), Paragraph("2", "ab c")), "mem")


def test_counts_exclude_special_tokens():
    counts = count_tokens(_CharTokenizer(), CORPUS, 256)
    assert counts[0] == 0
    assert counts[ord("a")] == 4 and counts[ord("b")] == 2 and counts[ord(" ")] == 1
    assert counts.sum() == 8


def test_table_is_cached_with_its_corpus_and_token_count(tmp_path):
    first = token_frequencies(_CharTokenizer(), CORPUS, 256, cache_dir=tmp_path)
    assert first.provenance["corpus"] == "letters" and first.n_tokens == 8
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = token_frequencies(_CharTokenizer(), CORPUS, 256, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.counts, again.counts)
    assert again.ranks[ord("a")] == 1 and again.bucket_of_id[ord("a")] == 0
    assert again.bucket_of_id[ord("z")] == 3  # never seen: Rest


def test_token_budget_stops_at_exactly_that_many_tokens(tmp_path):
    counts = count_tokens(_CharTokenizer(), CORPUS, 256, max_tokens=5)  # "aaab" then "a" of "ab c"
    assert counts.sum() == 5 and counts[ord("a")] == 4 and counts[ord("b")] == 1
    table = token_frequencies(_CharTokenizer(), CORPUS, 256, cache_dir=tmp_path, max_tokens=5)
    assert table.provenance["n_tokens"] == 5 and table.provenance["max_tokens"] == 5
    whole = token_frequencies(_CharTokenizer(), CORPUS, 256, cache_dir=tmp_path)
    assert whole.n_tokens == 8 and len(list(tmp_path.glob("*.npz"))) == 2  # one cached table per budget


def test_a_streamed_source_is_counted_past_the_claims_paragraphs(tmp_path):
    """A hub source's frequencies read its stream (here twice the claims' text) up to the budget."""
    stream = lambda: iter(CORPUS.paragraphs * 3)  # noqa: E731
    table = token_frequencies(_CharTokenizer(), CORPUS, 256, cache_dir=tmp_path, max_tokens=20, stream=stream)
    assert table.n_tokens == 20 and table.counts[ord("a")] == 11  # 3 + 1 + ... : a=4 per 8 tokens, 2.5 copies
    assert table.corpus == "letters"
    again = token_frequencies(_CharTokenizer(), CORPUS, 256, cache_dir=tmp_path, max_tokens=20, stream=lambda: iter(()))
    assert again.n_tokens == 20  # read from the cache, keyed by the source and the budget
