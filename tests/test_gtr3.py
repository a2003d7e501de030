"""GTR-3's pieces: POS targets and row alignment, the metric on hand-made traces, the figure."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.claims import gtr_pos
from harness.data import pos
from harness.data.pos import TAGS, POSExample, TaggedCorpus
from harness.data.prose import Corpus, Paragraph
from harness.metrics import K_GRID
from harness.stats import bootstrap_column_means
from harness.trace import LayerTrace


class _ToyTokenizer:
    """GPT-2-like: a token is optional whitespace plus a word, or plus one punctuation
    mark; its span includes the leading whitespace. Ids are small (tiny model's vocab)."""

    pattern = re.compile(r"\s*\w+|\s*[^\w\s]|\s+$")

    def __call__(self, text, return_offsets_mapping=True, truncation=True, max_length=None):
        spans = [m.span() for m in self.pattern.finditer(text)]
        ids = [3 + sum(map(ord, text[s:e])) % 90 for s, e in spans]
        if truncation and max_length is not None:
            ids, spans = ids[:max_length], spans[:max_length]
        return {"input_ids": ids, "offset_mapping": spans}


def _tag(text: str, tags: dict[str, str]) -> tuple[tuple[int, int, str], ...]:
    """Hand tags: spaCy-like tokens (words and single punctuation marks) with tags by word
    (``X`` when not given)."""
    return tuple((m.start(), m.end(), tags.get(m.group(), "X")) for m in re.finditer(r"\w+|[^\w\s]", text))


def _corpus(texts, tag_maps) -> tuple[Corpus, TaggedCorpus]:
    corpus = Corpus("toy", tuple(Paragraph(str(i), t) for i, t in enumerate(texts)), "mem")
    words = tuple(_tag(t, m) for t, m in zip(texts, tag_maps))
    return corpus, TaggedCorpus("hand", "0", corpus.name, corpus.content_hash, words)


SENT = "The cat sat on the mat, quietly (in 1990). It was well-known."
TAGS_SENT = {"The": "DET", "the": "DET", "cat": "NOUN", "sat": "VERB", "on": "ADP", "mat": "NOUN", ",": "PUNCT",
             "in": "ADP", "(": "PUNCT", ")": "PUNCT", ".": "PUNCT", "known": "ADJ", "well": "ADV"}


def test_target_token_rules_on_gpt2_style_offsets():
    # SmolLM2's offsets of SENT: the leading space belongs to the next token; ")." is one token.
    offsets = [(0, 3), (3, 7), (7, 11), (11, 14), (14, 18), (18, 22), (22, 23), (23, 31), (31, 33), (33, 35),
               (35, 36), (36, 37), (37, 38), (38, 39), (39, 40), (40, 42), (42, 45), (45, 49), (49, 54), (54, 55),
               (55, 60), (60, 61)]
    assert pos.target_token(SENT, offsets, 4, glued_ok=False) == 1  # "cat": token " cat"
    assert pos.target_token(SENT, offsets, 22, glued_ok=True) == 6  # ",": glued PUNCT, own token
    assert pos.target_token(SENT, offsets, 22, glued_ok=False) is None  # glued words are skipped
    assert pos.target_token(SENT, offsets, 33, glued_ok=False) is None  # "in" after "(": glued
    assert pos.target_token(SENT, offsets, 32, glued_ok=True) == 8  # "(" after a space: token " ("
    assert pos.target_token(SENT, offsets, 40, glued_ok=True) == 15  # ")" starts the merged token ")."
    assert pos.target_token(SENT, offsets, 41, glued_ok=True) is None  # "." inside ")."
    assert pos.target_token(SENT, offsets, 36, glued_ok=False) == 11  # "1990" after a lone space piece
    assert pos.target_token(SENT, offsets, 999, glued_ok=True) is None  # beyond the (truncated) tokens


def test_examples_take_the_first_usable_word_per_tag():
    corpus, tagged = _corpus([SENT], [TAGS_SENT])
    tok = _ToyTokenizer()
    request, examples = pos.pos_examples(corpus, tagged, tok)
    by_tag = {e.tag: e for e in examples}
    # "The" (position -1) is unusable, so DET is the second "the"; "cat" (p = 0) too early.
    assert {t: (e.word, e.position) for t, e in by_tag.items()} == {
        "DET": ("the", 3),  # "The" has no context; the second "the" is token 4
        "ADP": ("on", 2),
        "NOUN": ("mat", 4),  # "cat" is token 1: too little context
        "PUNCT": (",", 5),  # glued to "mat": the prompt ends with "mat"
    }  # no VERB ("sat" is token 2, the only verb) and no ADJ ("known" is glued to "-")
    enc = tok(SENT)
    for e in examples:
        assert request.token_ids[0][e.position + 1] == e.target_id == enc["input_ids"][e.position + 1]
        prompt_end = enc["offset_mapping"][e.position][1]
        assert SENT[:prompt_end] == SENT[: e.char_start].rstrip()
    assert [e.position for e in examples] == sorted(e.position for e in examples)
    assert len(request.token_ids[0]) == max(e.position for e in examples) + 2


def test_rows_follow_the_trace_order_of_a_real_engine_run():
    """A tiny model traces the request: rows (sorted by the engine by prompt, then
    position, after batching by length) line up with the examples one by one."""
    from harness.lenses import LogitLens
    from harness.trace import TraceEngine
    from tests.tiny import tiny_llama

    texts = [
        "A dog and the cat sat on a mat, then slept.",
        "Short one.",  # no usable example: skipped, not a prompt
        "Rivers of the north run in cold valleys, over old stones and under bridges.",
        "Birds sing.",
        "In the morning the old baker sold bread to the people of a town, and left.",
    ]
    tag_map = {"A": "DET", "a": "DET", "the": "DET", "The": "DET", "dog": "NOUN", "cat": "NOUN", "mat": "NOUN",
               "sat": "VERB", "slept": "VERB", "on": "ADP", "of": "ADP", "in": "ADP", "over": "ADP",
               "under": "ADP", "to": "ADP", ",": "PUNCT", ".": "PUNCT", "old": "ADJ", "cold": "ADJ",
               "run": "VERB", "sold": "VERB", "left": "VERB", "Rivers": "NOUN", "north": "NOUN",
               "valleys": "NOUN", "stones": "NOUN", "bread": "NOUN", "people": "NOUN", "town": "NOUN"}
    corpus, tagged = _corpus(texts, [tag_map] * len(texts))
    request, examples = pos.pos_examples(corpus, tagged, _ToyTokenizer())
    assert len(request.token_ids) == 3 and {e.paragraph for e in examples} == {0, 2, 4}
    loaded = tiny_llama()
    trace = TraceEngine(loaded, batch_size=2, progress=False).trace(request, LogitLens(loaded), gtr_pos.POS_REDUCTIONS)
    gtr_pos.check_alignment(trace, examples)  # raises on any mismatch
    assert trace.n_rows == len(examples)
    with pytest.raises(ValueError, match="row order"):
        gtr_pos.check_alignment(trace, examples[::-1])
    # max_examples caps rows; the last paragraph keeps its earliest positions
    _, capped = pos.pos_examples(corpus, tagged, _ToyTokenizer(), max_examples=len(examples) - 2)
    assert list(capped) == [e for e in examples if e.prompt < 2] + [e for e in examples if e.prompt == 2][:-2]


def test_a_shared_target_token_keeps_the_first_tag():
    """Cannot happen with real tags (one word per start character); a hand-made clash
    keeps the first tag in TAGS order and the positions stay distinct."""
    text = "One two three four five"
    corpus = Corpus("toy", (Paragraph("0", text),), "mem")
    words = ((0, 3, "X"), (4, 7, "X"), (8, 13, "X"), (14, 18, "NOUN"), (14, 18, "DET"), (19, 23, "ADP"))
    _, examples = pos.pos_examples(corpus, TaggedCorpus("hand", "0", "toy", corpus.content_hash, (words,)), _ToyTokenizer())
    assert [(e.tag, e.position) for e in examples] == [("DET", 2), ("ADP", 3)]


WORDS = st.sampled_from(["the", "a", "of", "in", "dog", "river", "runs", "green", "big", "and"])
MARKS = st.sampled_from([",", ".", "(", ")", "-"])


@st.composite
def paragraphs(draw):
    parts, text = [], ""
    for _ in range(draw(st.integers(1, 25))):
        if draw(st.booleans()) or not text:
            sep = " " if text and draw(st.integers(0, 4)) else ""
            parts.append((len(text) + len(sep), draw(WORDS)))
            text += sep + parts[-1][1]
        else:
            sep = " " if draw(st.integers(0, 3)) == 0 else ""
            parts.append((len(text) + len(sep), draw(MARKS)))
            text += sep + parts[-1][1]
    tags = [draw(st.sampled_from(TAGS + ("X",))) for _ in parts]
    return text, tuple((s, s + len(w), t) for (s, w), t in zip(parts, tags))


@settings(max_examples=60, deadline=None)
@given(st.lists(paragraphs(), min_size=1, max_size=4), st.integers(4, 30))
def test_examples_are_first_usable_words_and_read_before_their_target(paras, max_tokens):
    texts = [t for t, _ in paras]
    corpus = Corpus("toy", tuple(Paragraph(str(i), t) for i, t in enumerate(texts)), "mem")
    tagged = TaggedCorpus("hand", "0", "toy", corpus.content_hash, tuple(w for _, w in paras))
    tok = _ToyTokenizer()
    try:
        request, examples = pos.pos_examples(corpus, tagged, tok, max_tokens=max_tokens)
    except ValueError:
        return  # nothing usable anywhere
    rows = [(e.prompt, e.position) for e in examples]
    assert rows == sorted(set(rows)) and request.n_rows == len(examples)
    assert [tuple(request.positions_of(i)) for i in range(len(request.token_ids))] == [
        tuple(e.position for e in examples if e.prompt == i) for i in range(len(request.token_ids))
    ]
    for e in examples:
        text = texts[e.paragraph]
        enc = tok(text, max_length=max_tokens)
        offsets = enc["offset_mapping"]
        assert e.position >= pos.POS_MIN_CONTEXT - 1 and e.position + 1 < max_tokens
        assert request.token_ids[e.prompt][e.position + 1] == e.target_id
        assert text[offsets[e.position][1] : e.char_start].strip() == ""  # prompt ends right before the word
        if e.tag != "PUNCT":
            assert text[e.char_start - 1].isspace()
        # no earlier word with the same tag was usable
        for s, _, t in tagged.words[e.paragraph]:
            if t == e.tag and s < e.char_start:
                j = pos.target_token(text, offsets, s, glued_ok=t == "PUNCT")
                assert j is None or j - 1 < pos.POS_MIN_CONTEXT - 1
    assert len({(e.prompt, e.tag) for e in examples}) == len(examples)


# --- the metric on hand-made traces ---------------------------------------------------

N_LAYERS = 12


def _trace_and_examples(cross: dict[str, list[int]], wrong: dict[str, int] | None = None):
    """One row per (tag, crossing layer): gold rank 5000 before the crossing layer, 1
    from it on. ``wrong[tag]`` extra rows per tag whose final prediction is not the gold
    token (crossing at layer 0: they would pull the means down if they were kept)."""
    rows = [(t, c, True) for t, cs in cross.items() for c in cs]
    rows += [(t, 0, False) for t, n in (wrong or {}).items() for _ in range(n)]
    n = len(rows)
    gold_rank = np.full((N_LAYERS + 1, n), 5000, dtype=np.int32)
    examples = []
    for i, (tag, c, ok) in enumerate(rows):
        gold_rank[c:, i] = 1
        examples.append(POSExample(i // 3, i // 3, str(i // 3), tag, "w", 0, i % 3 + 2, 7))
    final = np.array([7 if ok else 8 for _, _, ok in rows], dtype=np.int32)
    zeros = np.zeros(n, dtype=np.int32)
    trace = LayerTrace(
        meta={}, example=np.array([e.prompt for e in examples]), position=np.array([e.position for e in examples]),
        input_id=zeros, gold_id=np.full(n, 7, dtype=np.int32), final_id=final, top1=np.zeros((N_LAYERS + 1, n), np.int32),
        final_rank=np.ones((N_LAYERS + 1, n), np.int32), gold_rank=gold_rank,
    )
    return trace, examples


def test_gtr3_replicates_when_function_words_cross_early():
    rng = np.random.default_rng(1)
    cross = {t: rng.integers(1, 4, 30).tolist() for t in ("DET", "ADP")}
    cross.update({t: rng.integers(7, 11, 30).tolist() for t in ("NOUN", "VERB", "ADJ")})
    cross["PUNCT"] = [12] * 5
    trace, examples = _trace_and_examples(cross, wrong={"NOUN": 7, "DET": 4})
    result, table = gtr_pos.gtr3_function_words_settle_early(trace, examples, "m", "logit", "d")
    mean = {t: np.mean(c) for t, c in cross.items()}
    diffs = [mean[c] - mean[f] for f in ("DET", "ADP") for c in ("NOUN", "VERB", "ADJ")]
    assert abs(result.estimate.value - min(diffs)) < 1e-9
    assert result.verdict == "replicated" and len(result.subchecks) == 12
    assert all(c.verdict == "replicated" for c in result.subchecks)
    # the min's interval lies below every comparison's own interval (same resamples)
    assert result.estimate.ci_low <= min(c.estimate.ci_low for c in result.subchecks)
    assert result.details["n_kept"]["NOUN"] == 30 and result.details["n_total"]["NOUN"] == 37
    assert result.details["n_total"]["DET"] == 34 and result.details["n_kept"]["PUNCT"] == 5
    assert result.estimate.n == 150
    row = table[(table.tag == "DET") & (table.k == 10) & (table.measure == "earliest")].iloc[0]
    assert abs(row.layer - mean["DET"]) < 1e-9 and row.ci_low <= row.layer <= row.ci_high
    assert row.n_kept == 30 and row.n_total == 34
    assert set(table.k) == set(K_GRID) and len(table) == 2 * len(TAGS) * len(K_GRID)
    # rank drops straight from 5000 to 1: the same layer for every k < 5000, 0 from k = 5000
    det = table[(table.tag == "DET") & (table.measure == "earliest")].set_index("k")["layer"]
    assert det[1] == det[2000] and det[5000] == 0


def test_gtr3_contradicted_when_content_words_cross_first():
    cross = {t: [9, 10, 11] * 10 for t in ("DET", "ADP")}
    cross.update({t: [1, 2, 3] * 10 for t in ("NOUN", "VERB", "ADJ")})
    trace, examples = _trace_and_examples(cross)
    result, _ = gtr_pos.gtr3_function_words_settle_early(trace, examples, "m", "logit", "d")
    assert result.verdict == "contradicted" and abs(result.estimate.value + 8) < 1e-9


def test_gtr3_inconclusive_without_a_tag():
    cross = {t: [1, 2] * 10 for t in ("DET", "ADP", "NOUN", "VERB")}  # no ADJ at all
    trace, examples = _trace_and_examples(cross)
    result, table = gtr_pos.gtr3_function_words_settle_early(trace, examples, "m", "logit", "d")
    assert result.verdict == "inconclusive" and np.isnan(result.estimate.value)
    assert table[table.tag == "ADJ"]["n_kept"].eq(0).all()


def test_settled_layer_differs_from_first_crossing():
    cross = {t: [2] * 6 for t in ("DET", "ADP", "NOUN", "VERB", "ADJ")}
    trace, examples = _trace_and_examples(cross)
    trace.gold_rank[4:8, :] = 500  # the gold token drops out of the top 100 again at layers 4-7
    _, table = gtr_pos.gtr3_function_words_settle_early(trace, examples, "m", "logit", "d")
    at = table[(table.tag == "NOUN") & (table.k == 100)].set_index("measure")["layer"]
    assert at["earliest"] == 2 and at["settled"] == 8


def test_bootstrap_column_means_resamples_groups_jointly():
    rng = np.random.default_rng(0)
    a = rng.normal(size=40)
    groups = np.repeat(np.arange(20), 2)
    # one resample of the groups per replicate, shared by the columns
    means, boots = bootstrap_column_means(np.stack([a, a * 2], axis=1), groups)
    assert boots.shape == (2000, 2) and np.allclose(boots[:, 1], 2 * boots[:, 0])


# --- figure ---------------------------------------------------------------------------


def test_earliest_layer_curves_one_line_per_group():
    import matplotlib.pyplot as plt

    from harness.report.figures_rank import earliest_layer_curves

    cross = {t: [1, 2, 3] * 5 for t in ("DET", "ADP")}
    cross.update({t: [6, 8] * 5 for t in ("NOUN", "VERB", "ADJ", "PUNCT")})
    trace, examples = _trace_and_examples(cross)
    result, table = gtr_pos.gtr3_function_words_settle_early(trace, examples, "m", "logit", "d")
    fig = earliest_layer_curves(result, table, "tag")
    ax = fig.axes[0]
    assert len(ax.get_lines()) >= len(TAGS) and "GTR-3" in ax.get_title() and ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "DET (n = 15)" in labels and "NOUN (n = 10)" in labels
    plt.close(fig)
    # GTR-4 style: one line per (answer length, position), no measure column
    t4 = table[table.measure == "earliest"].drop(columns="measure").copy()
    t4["answer_length"] = np.where(t4.tag.isin(["DET", "ADP"]), 2, 3)
    t4["position"] = np.where(t4.tag == "DET", 1, 2)
    t4 = t4[t4.tag.isin(["DET", "ADP", "NOUN"])]
    fig = earliest_layer_curves(result, t4, ["answer_length", "position"])
    assert len(fig.axes[0].get_legend().get_texts()) == 3 + 1  # three groups and the k marker
    plt.close(fig)


# --- spaCy on real text ---------------------------------------------------------------


def test_spacy_tags_and_targets_of_two_sentences(tmp_path):
    try:
        pos.spacy_package()
    except pos.TaggerMissing as err:
        pytest.skip(str(err))
    texts = [
        "Yesterday the old farmer walked slowly to the market, and he sold fresh eggs.",
        "In winter, a small bird sang loudly in the garden.",
    ]
    corpus = Corpus("two", tuple(Paragraph(str(i), t) for i, t in enumerate(texts)), "mem")
    tagged = pos.tag_corpus(corpus, cache_dir=tmp_path)
    assert [p[1:] for p in tagged.words[0][:5]] == [(9, "NOUN"), (13, "DET"), (17, "ADJ"), (24, "NOUN"), (31, "VERB")]
    assert len(list(tmp_path.glob("*.json"))) == 1
    again = pos.tag_corpus(corpus, cache_dir=tmp_path)  # read back from the cache
    assert again == tagged
    cached = next(tmp_path.glob("*.json"))
    cached.write_text("{damaged")  # a damaged entry is tagged again
    assert pos.tag_corpus(corpus, cache_dir=tmp_path) == tagged and cached.read_text().startswith("{")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    _, examples = pos.pos_examples(corpus, tagged, _ToyTokenizer())
    got = {(e.paragraph, e.tag): (e.word, e.position) for e in examples}
    assert got == {
        # sentence 1: "Yesterday"(0) " the"(1) " old"(2) " farmer"(3) " walked"(4) ... " to"(6) " the"(7) ...
        (0, "NOUN"): ("farmer", 2), (0, "VERB"): ("walked", 3), (0, "ADP"): ("to", 5), (0, "DET"): ("the", 6),
        (0, "PUNCT"): (",", 8), (0, "ADJ"): ("fresh", 12),
        # sentence 2: "In"(0) " winter"(1) ","(2) " a"(3) " small"(4) " bird"(5) " sang"(6) ... " in"(8)
        (1, "DET"): ("a", 2), (1, "ADJ"): ("small", 3), (1, "NOUN"): ("bird", 4), (1, "VERB"): ("sang", 5),
        (1, "ADP"): ("in", 7), (1, "PUNCT"): (".", 10),
    }
