"""GTR-4's pieces: fact loaders (plain and MQuAKE), the teacher-forced request, the metric
on hand-made traces, a real engine run on a tiny model, and the figure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.claims import gtr_facts
from harness.claims.gtr_facts import FactRows, fact_request, gtr4_first_fact_token_deepest
from harness.data.facts import EMBEDDED_FACTS, Fact, load_facts, read_facts_jsonl, read_mquake
from harness.data.prose import DataMissing
from harness.metrics import K_GRID
from harness.trace import LayerTrace

BOS = 1


class _WordTokenizer:
    """One id per whitespace-separated word (its leading space belongs to it), BOS first,
    like a Llama tokenizer that adds BOS on every call. Ids start at 10 (< the tiny
    model's vocabulary of 97 for small tests)."""

    all_special_ids = [BOS]

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def __call__(self, text):
        out = [BOS]
        for w in text.replace(" ", "\0 ").split("\0"):
            if w:
                out.append(self.vocab.setdefault(w, len(self.vocab) + 10))

        class Enc:
            input_ids = out

        return Enc()


def _facts(*pairs: tuple[str, str]) -> list[Fact]:
    return [Fact(f"f{i}", "r", p, a) for i, (p, a) in enumerate(pairs)]


# --- loaders ------------------------------------------------------------------------------


def test_embedded_facts_load():
    facts = load_facts()
    records = [line for line in EMBEDDED_FACTS.read_text().splitlines() if line.strip()]
    assert facts.name == "facts-embedded" and len(facts) == len(records) and facts.n_duplicates == 0
    assert facts.facts[0] == Fact("f-0001", "capital_of", "The capital city of France is", "Paris")
    assert facts.source == str(EMBEDDED_FACTS) and len(facts.content_hash) == 64


def test_plain_jsonl_defaults_normalises_and_drops_repeats(tmp_path):
    path = tmp_path / "mine.jsonl"
    lines = [
        {"prompt": "The sky is ", "answer": " blue "},
        {"id": "x", "relation": "color_of", "prompt": "Grass is", "answer": "green"},
        {"id": "y", "prompt": "The sky is", "answer": "blue"},  # same pair as line 1
    ]
    path.write_text("\n".join(json.dumps(r) for r in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n")
    facts = read_facts_jsonl(path)
    assert facts.name == "facts-mine" and facts.n_duplicates == 1
    assert facts.facts == (Fact("mine-1", "", "The sky is", "blue"), Fact("x", "color_of", "Grass is", "green"))


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "Q"}', r"bad.jsonl:2: .*missing \['answer'\]"),
        ('{"prompt": "Q", "answer": "  "}', r"bad.jsonl:2: 'answer' is empty"),
        ('{"prompt": 3, "answer": "a"}', r"bad.jsonl:2: 'prompt' must be a string"),
        ("{not json", r"bad.jsonl:2: not valid JSON"),
        ('["prompt", "answer"]', r"bad.jsonl:2: expected a JSON object"),
        ('{"id": "a", "prompt": "Q2", "answer": "b"}', r"bad.jsonl:2: id 'a' repeats line 1"),
    ],
)
def test_bad_plain_records_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "prompt": "Q", "answer": "x"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        read_facts_jsonl(path)


def _mquake_case(case_id: int, hops: list[tuple[str, str]]) -> dict:
    """A case in the MQuAKE-CF format (princeton-nlp/MQuAKE README), trimmed."""
    return {
        "case_id": case_id,
        "requested_rewrite": [
            {
                "prompt": "{} is a citizen of", "relation_id": "P27", "subject": "Vince McMahon",
                "target_new": {"str": "Libya", "id": "Q1016"},
                "target_true": {"str": "United States of America", "id": "Q30"},
                "question": "What is the country of citizenship of Vince McMahon?",
            }
        ],
        "questions": ["What city serves as the capital of the country where the CEO of Triple H holds citizenship?"],
        "answer": "Washington, D.C.",
        "answer_alias": ["Washington"],
        "new_answer": "Franklin",
        "single_hops": [
            {"question": f"Q{j}?", "cloze": cloze, "answer": answer, "answer_alias": ["alias"]}
            for j, (cloze, answer) in enumerate(hops)
        ],
        "new_single_hops": [{"question": "Q?", "cloze": "Triple H is employed by", "answer": "NEW"}],
        "orig": {"triples": [["Q1", f"P{100 + j}", "Q2"] for j in range(len(hops))]},
    }


def test_mquake_single_hops_become_facts(tmp_path):
    path = tmp_path / "MQuAKE-CF-3k.json"
    cases = [
        _mquake_case(2500, [("Triple H is employed by", "WWE"), ("The CEO of WWE is", "Vince McMahon")]),
        _mquake_case(7, [("The CEO of WWE is ", "Vince McMahon"), ("Vince McMahon is a citizen of", "United States of America")]),
    ]
    path.write_text(json.dumps(cases))
    facts = read_mquake(path)
    assert facts.name == "mquake-mquake-cf-3k" and facts.n_duplicates == 1  # the shared hop is kept once
    assert facts.facts == (
        Fact("2500-hop0", "P100", "Triple H is employed by", "WWE"),
        Fact("2500-hop1", "P101", "The CEO of WWE is", "Vince McMahon"),
        Fact("7-hop1", "P101", "Vince McMahon is a citizen of", "United States of America"),
    )  # the edits (requested_rewrite, new_single_hops) are not facts
    loaded = load_facts(tmp_path)
    assert loaded.name == "mquake-mquake-cf-3k" and loaded.facts == facts.facts


@pytest.mark.parametrize(
    "records, message",
    [
        ({"case_id": 1}, r"expected a JSON list"),
        ([{"case_id": 1}], r"MQ.json\[0\]: expected an MQuAKE case"),
        ([{"single_hops": []}, {"single_hops": [{"question": "Q", "answer": "a"}]}], r"MQ.json\[1\].single_hops\[0\]: .*'cloze'"),
        ([{"single_hops": [{"cloze": "C", "answer": ""}]}], r"MQ.json\[0\].single_hops\[0\]: 'answer' is empty"),
        ([{"single_hops": []}], r"no single-hop facts"),
    ],
)
def test_bad_mquake_records_name_file_and_index(tmp_path, records, message):
    path = tmp_path / "MQ.json"
    path.write_text(json.dumps(records))
    with pytest.raises(ValueError, match=message):
        read_mquake(path)


def test_data_dir_without_facts_names_every_path(tmp_path):
    with pytest.raises(DataMissing) as err:
        load_facts(tmp_path)
    text = str(err.value)
    assert str(tmp_path / "MQuAKE-CF-3k.json") in text and str(tmp_path / "facts" / "facts.jsonl") in text
    (tmp_path / "facts").mkdir()
    (tmp_path / "facts" / "facts.jsonl").write_text('{"prompt": "Grass is", "answer": "green"}\n')
    assert load_facts(tmp_path).name == "facts-data-dir"


# --- the request ----------------------------------------------------------------------------


def test_request_teacher_forces_two_and_three_token_answers():
    tok = _WordTokenizer()
    facts = _facts(
        ("The capital of France is", "Paris"),  # 1 token: counted, not traced
        ("The largest city of the USA is", "New York"),  # 2 tokens
        ("The author of Hamlet is", "William Shakespeare"),  # 2 tokens
        ("The official name is the", "United States of America"),  # 4 tokens
        ("A city in England is", "Newcastle upon Tyne"),  # 3 tokens
    )
    rows = fact_request(facts, tok, "toy")
    assert rows.facts == (1, 2, 4) and rows.dataset == "toy" and rows.request.name == "toy-facts"
    assert rows.n_by_length == {"1": 1, "2": 2, "3": 1, "4": 1}
    assert rows.n_skipped == {"answer_1_token": 1, "answer_over_3_tokens": 1, "token_boundary": 0, "empty_prompt": 0}
    assert rows.fact == (1, 1, 2, 2, 4, 4, 4)
    assert rows.answer_length == (2, 2, 2, 2, 3, 3, 3) and rows.position == (1, 2, 1, 2, 1, 2, 3)
    for i, f in enumerate(rows.facts):
        ids = rows.request.token_ids[i]
        prompt_ids = tok(facts[f].prompt).input_ids
        answer_ids = [tok.vocab[" " + w] for w in facts[f].answer.split()]
        assert list(ids) == prompt_ids + answer_ids and ids.count(BOS) == 1 and ids[0] == BOS  # one BOS
        reads = rows.request.positions_of(i)
        assert reads == tuple(len(prompt_ids) - 1 + j for j in range(len(answer_ids)))
        # the gold token at each read position is the answer token at that position
        assert [ids[p + 1] for p in reads] == answer_ids
        assert [g for g, ff in zip(rows.gold_id, rows.fact) if ff == f] == answer_ids
    # position 1 is read on the prompt's last token, position 2 on answer token 1
    i = rows.facts.index(1)
    assert rows.request.token_ids[i][rows.request.positions_of(i)[0]] == tok.vocab[" is"]
    assert rows.request.token_ids[i][rows.request.positions_of(i)[1]] == tok.vocab[" New"]
    capped = fact_request(facts, tok, "toy", max_examples=2)
    assert capped.facts == (1, 2) and capped.n_by_length == {"1": 1, "2": 2}


def test_boundary_merges_are_skipped_and_no_usable_fact_is_an_error():
    class Merging(_WordTokenizer):
        def __call__(self, text):
            return super().__call__(text.replace("is New", "isNew"))

    rows = fact_request(_facts(("It is", "New York"), ("He is", "Old Jack")), Merging(), "toy")
    assert rows.facts == (1,) and rows.n_skipped["token_boundary"] == 1 and rows.n_by_length == {"0": 1, "2": 1}
    with pytest.raises(ValueError, match="2 or 3-token answer"):
        fact_request(_facts(("It is", "Paris")), _WordTokenizer(), "toy")


WORDS = st.sampled_from(["the", "city", "of", "New", "York", "is", "a", "river", "King", "Jr", "upon"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.lists(WORDS, min_size=1, max_size=6), st.lists(WORDS, min_size=1, max_size=5)), min_size=1, max_size=12),
    st.one_of(st.none(), st.integers(1, 6)),
)
def test_request_rows_read_each_answer_token_once(pairs, cap):
    facts = _facts(*((" ".join(p), " ".join(a)) for p, a in pairs))
    tok = _WordTokenizer()
    try:
        rows = fact_request(facts, tok, "toy", max_examples=cap)
    except ValueError:
        assert not any(len(a) in (2, 3) for _, a in pairs)
        return
    examined = sum(rows.n_by_length.values())
    assert examined - sum(rows.n_skipped.values()) == len(rows.facts)
    assert cap is None or len(rows.facts) <= cap
    assert rows.facts == tuple(i for i in range(examined) if len(pairs[i][1]) in (2, 3))
    for i, f in enumerate(rows.facts):
        ids, reads = rows.request.token_ids[i], rows.request.positions_of(i)
        n = len(pairs[f][1])
        assert len(reads) == n and reads[-1] == len(ids) - 2 and ids.count(BOS) == 1
        assert [ids[p + 1] for p in reads] == [tok.vocab[" " + w] for w in pairs[f][1]]
    assert rows.request.n_rows == rows.n_rows == sum(len(pairs[f][1]) for f in rows.facts)


# --- the metric on hand-made traces -----------------------------------------------------

N_LAYERS = 12


def _rows(lengths: list[int]) -> tuple[FactRows, _WordTokenizer]:
    tok = _WordTokenizer()
    answers = {2: "New York", 3: "Newcastle upon Tyne"}
    facts = _facts(*((f"Fact number {i} is", answers[n]) for i, n in enumerate(lengths)))
    return fact_request(facts, tok, "toy"), tok


def _trace(rows: FactRows, cross: list[list[int]], wrong: set[tuple[int, int]] = frozenset()) -> LayerTrace:
    """Gold rank 5000 before fact i's crossing layer ``cross[i][j - 1]`` at answer position
    j, 1 from it on; the final prediction is the gold token except at (fact, position) in
    ``wrong`` (such a row crosses at layer 0: it would pull a mean down if it were kept)."""
    n = rows.n_rows
    gold_rank = np.full((N_LAYERS + 1, n), 5000, dtype=np.int32)
    gold = np.array(rows.gold_id, dtype=np.int32)
    final = gold.copy()
    for r, (f, j) in enumerate(zip(rows.fact, rows.position)):
        if (f, j) in wrong:
            final[r] = 0
            gold_rank[:, r] = 1
        else:
            gold_rank[cross[f][j - 1] :, r] = 1
    prompt_of = {f: i for i, f in enumerate(rows.facts)}
    zeros = np.zeros(n, dtype=np.int32)
    return LayerTrace(
        meta={}, example=np.array([prompt_of[f] for f in rows.fact]), position=np.array(rows.read_position),
        input_id=zeros, gold_id=gold, final_id=final, top1=np.zeros((N_LAYERS + 1, n), np.int32),
        final_rank=np.ones((N_LAYERS + 1, n), np.int32), gold_rank=gold_rank,
    )


def _crossings(lengths, first, later, seed=1) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(rng.integers(*first))] + [int(rng.integers(*later)) for _ in range(n - 1)] for n in lengths]


def test_gtr4_replicates_when_the_first_token_crosses_last():
    lengths = [2] * 30 + [3] * 20
    rows, _ = _rows(lengths)
    cross = _crossings(lengths, (8, 12), (1, 5))
    wrong = {(0, 2), (1, 1), (30, 3)}  # facts 0, 1 (length 2) and 30 (length 3) are not paired
    result, table = gtr4_first_fact_token_deepest(_trace(rows, cross, wrong), rows, "m", "logit")
    paired = [f for f in range(len(lengths)) if f not in {0, 1, 30}]
    mean = {
        (n, j): np.mean([cross[f][j - 1] for f in paired if lengths[f] == n]) for n in (2, 3) for j in range(1, n + 1)
    }
    diffs = [mean[(n, 1)] - mean[(n, j)] for n in (2, 3) for j in range(2, n + 1)]
    assert abs(result.estimate.value - min(diffs)) < 1e-9
    assert result.verdict == "replicated" and len(result.subchecks) == 6
    assert all(c.verdict == "replicated" for c in result.subchecks)
    assert result.estimate.ci_low <= min(c.estimate.ci_low for c in result.subchecks)
    assert result.details["n_paired"] == {"2": 28, "3": 19} and result.estimate.n == 47
    assert result.details["n_facts_traced"] == {"2": 30, "3": 20}
    assert result.details["n_kept_per_position"] == {
        "len2_pos1": 29, "len2_pos2": 29, "len3_pos1": 20, "len3_pos2": 20, "len3_pos3": 19,
    }
    assert result.details["n_by_length"] == {"2": 30, "3": 20}
    earliest = table[(table.measure == "earliest") & (table.k == 10)].set_index(["set", "answer_length", "position"])
    row = earliest.loc[("paired", 2, 1)]
    assert abs(row.layer - mean[(2, 1)]) < 1e-9 and row.ci_low <= row.layer <= row.ci_high
    assert row.n_kept == 28 and row.n_total == 30
    # the unpaired (per-position kept) set keeps fact 0's correct first token
    kept_mean = np.mean([cross[f][0] for f in range(30) if f != 1])
    assert abs(earliest.loc[("kept", 2, 1)].layer - kept_mean) < 1e-9 and earliest.loc[("kept", 2, 1)].n_kept == 29
    assert set(table.k) == set(K_GRID) and len(table) == 2 * 2 * 5 * len(K_GRID)
    un = result.details["unpaired_differences"]["len2_k1_pos1_minus_pos2"]
    assert un["value"] > 0 and un["ci_low"] > 0


def test_gtr4_contradicted_when_the_first_token_crosses_first():
    lengths = [2] * 20 + [3] * 20
    rows, _ = _rows(lengths)
    result, _ = gtr4_first_fact_token_deepest(_trace(rows, _crossings(lengths, (1, 3), (9, 12))), rows, "m", "logit")
    assert result.verdict == "contradicted" and all(c.verdict == "contradicted" for c in result.subchecks)


def test_gtr4_inconclusive_when_a_length_has_too_few_paired_facts():
    lengths = [2] * 20 + [3] * 6
    rows, _ = _rows(lengths)
    cross = _crossings(lengths, (8, 12), (1, 5))
    wrong = {(20, 2), (21, 3)}  # 4 paired 3-token facts: below MIN_PAIRED
    result, table = gtr4_first_fact_token_deepest(_trace(rows, cross, wrong), rows, "m", "logit")
    assert result.details["n_paired"] == {"2": 20, "3": 4}
    by_name = {c.name: c for c in result.subchecks}
    assert by_name["len2_k1_pos1_minus_pos2"].verdict == "replicated"
    for name in ("len3_k1_pos1_minus_pos2", "len3_k10_pos1_minus_pos3"):
        assert by_name[name].verdict == "inconclusive" and np.isnan(by_name[name].estimate.value)
        assert by_name[name].estimate.n == 4
    assert result.verdict == "inconclusive" and np.isnan(result.estimate.value) and np.isnan(result.estimate.ci_low)
    # the means of the small group are still reported
    assert table[(table.set == "paired") & (table.answer_length == 3)]["n_kept"].eq(4).all()
    assert "inconclusive" in result.summary()


def test_gtr4_inconclusive_without_any_paired_fact():
    lengths = [2] * 6 + [3] * 6
    rows, _ = _rows(lengths)
    wrong = {(f, 1) for f in range(len(lengths))}
    result, table = gtr4_first_fact_token_deepest(_trace(rows, _crossings(lengths, (8, 12), (1, 5)), wrong), rows, "m", "logit")
    assert result.verdict == "inconclusive" and result.details["n_paired"] == {"2": 0, "3": 0}
    assert table[table.set == "paired"]["layer"].isna().all()
    assert result.record()["n"] == 0


def test_no_verdict_without_a_number_even_when_sub_checks_decide(tmp_path):
    """The case seen on a public fact set: no paired 2-token fact, 9 paired 3-token facts
    whose checks contradict the claim. The main statistic cannot be computed, so the claim
    is inconclusive with the counts that fell short (it was "contradicted" with NaN before),
    and claims.json holds null, not NaN."""
    lengths = [2] * 4 + [3] * 9
    rows, _ = _rows(lengths)
    wrong = {(f, 1) for f in range(4)}
    result, _ = gtr4_first_fact_token_deepest(_trace(rows, _crossings(lengths, (1, 3), (9, 12)), wrong), rows, "m", "logit")
    by_name = {c.name: c for c in result.subchecks}
    assert by_name["len3_k1_pos1_minus_pos2"].verdict == "contradicted"  # decided on its own 9 facts
    assert by_name["len2_k1_pos1_minus_pos2"].verdict == "inconclusive"
    assert result.verdict == "inconclusive"
    short = result.too_little_data
    assert short[0] == "statistic could not be computed (n=9, needs 5)"
    assert "sub-check len2_k1_pos1_minus_pos2 could not be computed (n=0, needs 5)" in short
    assert "too little data: statistic could not be computed" in result.summary()
    from harness.report.schema import strict_json

    text = strict_json(result.record())
    assert "NaN" not in text
    record = json.loads(text)
    assert record["statistic"] is None and record["ci_low"] is None and record["verdict"] == "inconclusive"


def test_settled_layer_differs_from_first_crossing():
    lengths = [2] * 8
    rows, _ = _rows(lengths)
    trace = _trace(rows, [[2, 2]] * 8)
    trace.gold_rank[4:8, :] = 500  # the gold token drops out of the top 100 at layers 4-7
    _, table = gtr4_first_fact_token_deepest(trace, rows, "m", "logit")
    at = table[(table.set == "paired") & (table.k == 100) & (table.answer_length == 2) & (table.position == 1)].set_index("measure")["layer"]
    assert at["earliest"] == 2 and at["settled"] == 8


def test_rows_must_match_the_trace():
    rows, _ = _rows([2, 3])
    trace = _trace(rows, [[3, 1], [3, 1, 1]])
    gtr_facts.check_alignment(trace, rows)
    trace.gold_id[0] += 1
    with pytest.raises(ValueError, match="gold tokens"):
        gtr_facts.check_alignment(trace, rows)
    other, _ = _rows([3, 2])
    with pytest.raises(ValueError, match="row order"):
        gtr_facts.check_alignment(_trace(rows, [[3, 1], [3, 1, 1]]), other)


def test_rows_follow_the_trace_order_of_a_real_engine_run():
    from harness.lenses import LogitLens
    from harness.trace import TraceEngine
    from tests.tiny import tiny_llama

    lengths = [3, 2, 2, 3, 2]
    rows, _ = _rows(lengths)
    loaded = tiny_llama()
    trace = TraceEngine(loaded, batch_size=2, progress=False).trace(rows.request, LogitLens(loaded), gtr_facts.FACT_REDUCTIONS)
    gtr_facts.check_alignment(trace, rows)  # raises on any mismatch
    result, _ = gtr4_first_fact_token_deepest(trace, rows, "tiny", "logit")  # runs on whatever it predicts
    assert result.verdict in ("replicated", "contradicted", "inconclusive")


# --- figure ---------------------------------------------------------------------------------


def test_earliest_layer_curves_one_line_per_answer_position():
    import matplotlib.pyplot as plt

    from harness.report.figures_rank import earliest_layer_curves

    lengths = [2] * 10 + [3] * 10
    rows, _ = _rows(lengths)
    result, table = gtr4_first_fact_token_deepest(_trace(rows, _crossings(lengths, (8, 12), (1, 5))), rows, "m", "logit")
    fig = earliest_layer_curves(
        result, table[table.set == "paired"], ["answer_length", "position"], colors=gtr_facts.FIGURE_COLORS,
        what="first answer token needs the most depth",
    )
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "answer_length 2 · position 1 (n = 10)" in labels and len(labels) == 5 + 1
    assert "GTR-4" in ax.get_title()
    assert ax.get_lines()[0].get_color() == gtr_facts.FIGURE_COLORS["answer_length 2 · position 1"]
    plt.close(fig)
