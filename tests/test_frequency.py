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
