"""GTR-1's pieces on hand-made inputs: word boundaries, buckets, shares, the statistic."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from harness.claims import gtr
from harness.data.prose import Corpus, Paragraph
from harness.frequency import FrequencyTable, bucket_index
from harness.trace import LayerTrace


def _freq(counts) -> FrequencyTable:
    return FrequencyTable("tok", "test", "hash", int(np.sum(counts)), np.asarray(counts))


def test_buckets_follow_frequency_rank_and_unseen_tokens_are_rest():
    counts = np.zeros(1500, dtype=int)
    counts[:1200] = np.arange(1200, 0, -1)  # id 0 most frequent ... id 1199 least
    b = _freq(counts).bucket_of_id
    assert (b[:10] == 0).all() and (b[10:100] == 1).all() and (b[100:1000] == 2).all()
    assert (b[1000:] == 3).all()


def test_ties_break_by_id_and_zero_counts_never_leave_rest():
    assert bucket_index(np.array([1, 2, 3]), np.array([0, 5, 5])).tolist() == [3, 0, 0]
    assert _freq(np.array([5, 5, 7])).ranks.tolist() == [2, 3, 1]


def test_word_initial_tokens_from_offsets():
    text = "The cat sat, quietly."
    offsets = [(0, 0), (0, 3), (3, 7), (7, 11), (11, 12), (12, 20), (20, 21)]  # BOS first
    assert gtr.word_initial_tokens(text, offsets).tolist() == [False, True, True, True, False, True, False]


def test_early_layers_are_the_first_quarter_after_h0():
    assert gtr.early_layers(30).tolist() == list(range(1, 8))
    assert gtr.early_layers(2).tolist() == [1]


def _trace(top1: np.ndarray, final: np.ndarray, example: np.ndarray) -> LayerTrace:
    n = top1.shape[1]
    zeros = np.zeros(n, dtype=np.int32)
    return LayerTrace(
        meta={}, example=example, position=zeros, input_id=zeros, gold_id=zeros, final_id=final,
        top1=top1, final_rank=np.ones_like(top1), gold_rank=np.ones_like(top1),
    )


def test_gtr1_statistic_on_a_known_trace():
    # 8 layers (early = 1..2), vocab of 2000 where ids < 10 are Top-10 and id 1500 is Rest.
    counts = np.zeros(2000, dtype=int)
    counts[:1200] = np.arange(1200, 0, -1)
    n = 40
    top1 = np.full((9, n), 1500)
    top1[1:3, : 3 * n // 4] = 3  # 75% of early guesses are Top-10
    final = np.full(n, 1500)
    final[: n // 4] = 4  # 25% of final predictions are Top-10
    top1[-1] = final
    result, table = gtr.gtr1_early_frequent_guesses(_trace(top1, final, np.arange(n)), _freq(counts), "m", "logit", "d")
    assert abs(result.estimate.value - 0.5) < 1e-9
    assert result.verdict == "replicated" and result.estimate.n == n
    final_rows = table[table.layer == "final"].set_index("bucket")["share"]
    assert final_rows["Top-10"] == 0.25 and final_rows["Rest"] == 0.75
    np.testing.assert_allclose(table.groupby("layer")["share"].sum(), 1.0)


def test_gtr1_contradicted_when_early_guesses_are_rare_tokens():
    counts = np.zeros(2000, dtype=int)
    counts[:1200] = np.arange(1200, 0, -1)
    n = 60
    top1 = np.full((9, n), 1500)
    final = np.full(n, 2)  # every final prediction is Top-10, no early guess is
    top1[-1] = final
    result, _ = gtr.gtr1_early_frequent_guesses(_trace(top1, final, np.arange(n)), _freq(counts), "m", "logit", "d")
    assert result.verdict == "contradicted" and result.estimate.value == -1.0


class _WordTokenizer:
    """Splits on spaces; each word is one token whose span includes its leading space."""

    def __call__(self, text, return_offsets_mapping=True, truncation=True, max_length=None):
        ids, offsets, start = [], [], 0
        for word in text.split(" "):
            end = start + len(word)
            offsets.append((max(start - 1, 0), end))
            ids.append(len(word) + 3)
            start = end + 1
        return {"input_ids": ids[:max_length], "offset_mapping": offsets[:max_length]}


def test_prefixes_cut_before_a_word_with_enough_context_and_are_capped():
    corpus = Corpus("c", tuple(Paragraph(str(i), " ".join(["word"] * 30)) for i in range(5)), "mem")
    req = gtr.prefix_request(corpus, _WordTokenizer())
    assert len(req.token_ids) == 5
    for ids, pos in zip(req.token_ids, req.positions):
        assert len(pos) == gtr.PREFIX_CUTS_PER_PARAGRAPH and min(pos) >= gtr.PREFIX_MIN_CONTEXT - 1
        assert len(ids) == max(pos) + 2
    assert gtr.prefix_request(corpus, _WordTokenizer(), max_examples=4).n_rows == 4


def test_gtr2_flip_rates_on_a_known_trace():
    counts = np.zeros(2000, dtype=int)
    counts[:1200] = np.arange(1200, 0, -1)
    n = 40
    top1 = np.full((9, n), 1500)
    top1[1:3] = 3  # every early guess is the Top-10 token 3 ...
    final = np.full(n, 1500)
    final[: n // 5] = 3  # ... which is the final prediction for 20% of prompts
    top1[-1] = final
    result, table = gtr.gtr2_early_guesses_get_refined(_trace(top1, final, np.arange(n)), _freq(counts), "m", "logit", "d")
    assert abs(result.estimate.value - 0.8) < 1e-9
    assert result.details["flip_rate_at_L"] == 0.0
    assert result.verdict == "replicated"  # 0.8 > 0.6, and flips fall from early to late layers
    top10 = table[(table.bucket == "Top-10") & (table.layer == 1)].iloc[0]
    assert abs(top10.flip_rate - 0.8) < 1e-9 and top10.n_guesses == n


@settings(max_examples=30, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(2, 9), st.integers(1, 25)), elements=st.integers(0, 1999)))
def test_flip_rate_is_zero_at_the_last_layer(top1):
    counts = np.zeros(2000, dtype=int)
    counts[:1200] = np.arange(1200, 0, -1)
    final = top1[-1].copy()  # the last layer row is the model's own prediction
    result, table = gtr.gtr2_early_guesses_get_refined(
        _trace(top1, final, np.arange(top1.shape[1])), _freq(counts), "m", "logit", "d"
    )
    last = table[(table.layer == top1.shape[0] - 1) & (table.bucket == "all")].iloc[0]
    assert last.flip_rate == 0.0 and result.details["flip_rate_at_L"] == 0.0
    rates = table["flip_rate"].dropna()
    assert ((rates >= 0) & (rates <= 1)).all()
