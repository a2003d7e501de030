"""Named data sources (``--data NAME``): every entry's formatting, run offline on small
local files in that data set's own schema, loaded through ``datasets`` exactly as the hub
rows are; the per-kind files; and the paper's prompt files record for record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("datasets")
import pandas as pd  # noqa: E402

from harness.data import sources  # noqa: E402
from harness.data.choices import ChoiceTask  # noqa: E402
from harness.data.facts import FactSet  # noqa: E402
from harness.data.math import ProblemSet  # noqa: E402
from harness.data.prose import Corpus  # noqa: E402
from harness.data.sources import SOURCES, DataChoice, DataSourceError, load_source, read_kind_file, resolve_data  # noqa: E402
from harness.lens_training import RECIPES, CorpusTooSmall, LensData, check_passes  # noqa: E402

PAPER_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "paper_downstream"
LONG = " ".join(f"word{i}" for i in range(45))  # a paragraph of 45 words


def _parquet(tmp_path: Path, rows: list[dict], name: str = "rows.parquet") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_every_entry_is_complete_and_pinned():
    for src in SOURCES.values():
        assert src.kind in sources.KINDS and src.licence and src.fields and src.description
        assert re.fullmatch(r"[0-9a-f]{40}", src.revision), src.name
        assert src.revision in src.provenance and src.record_name == f"{src.name}-{src.revision[:7]}"
        if src.kind == "choices":
            assert src.format in sources.CHOICE_FORMATS and len(src.shots) == 4 and src.task and src.options
    assert {s.kind for s in SOURCES.values()} == set(sources.KINDS)
    # the papers' bundle covers every kind once
    assert {k: len(v) for k, v in resolve_data(["paper"]).items()} == {"prose": 1, "choices": 3, "facts": 1, "problems": 1}


def test_wikipedia_rows_become_paragraphs(tmp_path):
    rows = [
        {"id": "12", "url": "u", "title": "Anarchism", "text": f"Anarchism\n\n{LONG}.\nShort line.\n{LONG} again."},
        {"id": "25", "url": "u", "title": "Autism", "text": f"{LONG} autism."},
    ]
    corpus = load_source(SOURCES["wikipedia"], local=_parquet(tmp_path, rows))
    assert isinstance(corpus, Corpus) and corpus.name == "wikipedia-b4c4887"
    assert [p.id for p in corpus.paragraphs] == ["12-2", "12-4", "25-0"]
    assert corpus.paragraphs[1].text == f"{LONG} again." and "b4c48878f631fc348dd47a4d89c3d1e4b928a0de" in corpus.source
    assert len(load_source(SOURCES["wikipedia"], local=_parquet(tmp_path, rows), limit=2).paragraphs) == 2


def test_wikitext_skips_headings_and_short_lines(tmp_path):
    rows = [{"text": ""}, {"text": " = Valkyria Chronicles III = \n"}, {"text": f" {LONG} @-@ x \n"}, {"text": " = = Gameplay = = \n"}]
    corpus = load_source(SOURCES["wikitext103"], local=_parquet(tmp_path, rows))
    assert [p.text for p in corpus.paragraphs] == [f"{LONG} @-@ x"] and corpus.paragraphs[0].id == "2-0"


def test_mmlu_prompt_is_four_shot_like_the_paper(tmp_path):
    src = SOURCES["mmlu"]
    rows = [
        {"question": "What is 2 + 2?", "subject": "math", "choices": ["3", "4", "5", "6"], "answer": 1},
        {**src.shots[0], "subject": "math"},  # a shot is never asked
    ]
    (task,) = load_source(src, local=_parquet(tmp_path, rows))
    assert isinstance(task, ChoiceTask) and task.name == "MMLU" and len(task.items) == 1
    item = task.items[0]
    assert item.prompt.startswith("Question: Which expression is equivalent to 4 x 9?\n(A) (4x 4) + (4x5)\n")
    assert item.prompt.count("Question: ") == 5 and item.prompt.count("\nAnswer: ") == 4
    assert item.prompt.endswith("Answer: D\nQuestion: What is 2 + 2?\n(A) 3\n(B) 4\n(C) 5\n(D) 6\nAnswer:")
    assert item.answer == "B" and item.options == ("A", "B", "C", "D")


def test_sst2_keeps_the_papers_missing_space_and_drops_unlabelled_rows(tmp_path):
    rows = [{"idx": 0, "sentence": "a gorgeous film . ", "label": 1}, {"idx": 1, "sentence": "no label ", "label": -1}]
    (task,) = load_source(SOURCES["sst2"], local=_parquet(tmp_path, rows))
    (item,) = task.items
    assert item.prompt.endswith("Sentiment : negative\nReview :a gorgeous film . \nSentiment :")
    assert item.prompt.startswith("Review : an exhilarating futuristic") and item.answer == "positive"


@pytest.mark.parametrize("name,question,answers", [
    ("mrpc", "Are the sentences paraphrases of each other.", ("No", "Yes")),
    ("rte", "Does the first sentence imply the second.", ("Yes", "No")),
])
def test_sentence_pairs(tmp_path, name, question, answers):
    rows = [{"sentence1": "A man runs .", "sentence2": "A person moves .", "label": 0, "idx": 0},
            {"sentence1": "It rains .", "sentence2": "It is dry .", "label": 1, "idx": 1}]
    (task,) = load_source(SOURCES[name], local=_parquet(tmp_path, rows))
    assert [i.answer for i in task.items] == list(answers)
    assert task.items[0].prompt.endswith(f"{question}\nSentence 1: A man runs .\nSentence 2: A person moves .\nAnswer:")
    assert task.items[0].prompt.count(question) == 5


def test_mquake_cases_become_single_hop_facts(tmp_path):
    cases = [
        {"case_id": 1, "requested_rewrite": [{"prompt": "{} is a citizen of", "subject": "X", "target_new": {"str": "A"}, "target_true": {"str": "B"}}],
         "single_hops": [{"question": "q?", "cloze": "The capital of France is", "answer": "Paris", "answer_alias": []},
                         {"question": "q2?", "cloze": "Paris is located in the continent of", "answer": " Europe ", "answer_alias": ["EU"]}],
         "orig": {"triples": [["Q142", "P36", "Q90"], ["Q90", "P30", "Q46"]]}},
        {"case_id": 2, "requested_rewrite": [], "single_hops": [{"question": "q?", "cloze": "The capital of France is", "answer": "Paris", "answer_alias": []}],
         "orig": {"triples": [["Q142", "P36", "Q90"]]}},
    ]
    path = tmp_path / "MQuAKE-CF-3k.json"
    path.write_text(json.dumps(cases))
    facts = load_source(SOURCES["mquake"], local=path)
    assert isinstance(facts, FactSet) and facts.name == "mquake-fb43dad" and facts.n_duplicates == 1
    assert [(f.id, f.relation, f.prompt, f.answer) for f in facts.facts] == [
        ("1-hop0", "P36", "The capital of France is", "Paris"), ("1-hop1", "P30", "Paris is located in the continent of", "Europe")]


def test_counterfact_true_targets(tmp_path):
    rows = [
        {"relation": "The mother tongue of {} is", "relation_prefix": "The mother tongue of ", "relation_suffix": " is",
         "prompt": "The mother tongue of Danielle Darrieux is", "relation_id": "P103", "target_false_id": "Q1860",
         "target_true_id": "Q150", "target_true": " French", "target_false": " English", "subject": "Danielle Darrieux"},
        {"relation": "{} is a product of", "relation_prefix": "", "relation_suffix": " is a product of",
         "prompt": "Toko Yasuda is a product of", "relation_id": "P176", "target_false_id": "Q1", "target_true_id": "Q2",
         "target_true": " Nintendo Entertainment Analysis", "target_false": " Apple", "subject": "Toko Yasuda"},
    ]
    facts = load_source(SOURCES["counterfact"], local=_parquet(tmp_path, rows))
    assert [(f.relation, f.prompt, f.answer) for f in facts.facts] == [
        ("P103", "The mother tongue of Danielle Darrieux is", "French"), ("P176", "Toko Yasuda is a product of", "Nintendo Entertainment Analysis")]


def test_gsm8k_rows_become_problems(tmp_path):
    rows = [{"question": "Tom has 3 apples and buys 2. How many?", "answer": "3 + 2 = <<3+2=5>>5\n#### 5"}]
    problems = load_source(SOURCES["gsm8k"], local=_parquet(tmp_path, rows))
    assert isinstance(problems, ProblemSet) and problems.name == "gsm8k-e53f048"
    assert problems.problems[0].final_answer == "5" and "The final answer is 5" in problems.problems[0].prompt()
    bad = _parquet(tmp_path, [{"question": "q", "answer": "no marker"}], "bad.parquet")
    with pytest.raises(ValueError, match=r"gsm8k\[0\].*####"):
        load_source(SOURCES["gsm8k"], local=bad)


def test_hub_loading_passes_the_pinned_revision_and_streams(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: calls.append((a, kw)) or [{"id": "1", "text": LONG}])
    corpus = load_source(SOURCES["wikipedia"])
    assert calls == [(("wikimedia/wikipedia", "20231101.en"), {"split": "train", "revision": SOURCES["wikipedia"].revision, "streaming": True})]
    assert corpus.paragraphs[0].id == "1-0"
    assert SOURCES["mquake"].revision in SOURCES["mquake"].data_files  # a file URL is pinned by its commit

    def offline(*a, **kw):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataSourceError, match=r"--data gsm8k .*--problems FILE"):
        load_source(SOURCES["gsm8k"])


def test_resolve_data_names_and_conflicts():
    assert resolve_data(["embedded"]) == {}
    chosen = resolve_data(["glue", "sst2", "gsm8k"])
    assert [s.name for s in chosen["choices"]] == ["sst2", "mrpc", "rte"] and chosen["problems"][0].name == "gsm8k"
    with pytest.raises(DataSourceError, match="Unknown --data 'wiki'"):
        resolve_data(["wiki"])
    with pytest.raises(DataSourceError, match="2 facts sources"):
        resolve_data(["mquake", "counterfact"])


def test_kind_files_and_their_precedence(tmp_path):
    prose = tmp_path / "my_prose.jsonl"
    prose.write_text(json.dumps({"id": 1, "text": "A paragraph."}) + "\n")
    choices = tmp_path / "mine.jsonl"
    choices.write_text("\n".join(json.dumps(r) for r in (
        {"prompt": "Is it? Answer:", "options": ["Yes", "No"], "answer": "No", "task": "T1"},
        {"prompt": "Color? Answer:", "options": ["red", "blue", "green"], "answer": "red", "task": "T2"},
        {"prompt": "Was it? Answer:", "options": ["Yes", "No"], "answer": "Yes", "task": "T1"},
    )) + "\n")
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    facts = tmp_path / "f.jsonl"
    facts.write_text(json.dumps({"prompt": "The sky is", "answer": "blue"}) + "\n")
    choice = DataChoice({"prose": prose, "choices": choices, "problems": problems, "facts": facts}, resolve_data(["paper"]))
    assert choice.load("prose").paragraphs[0].text == "A paragraph." and choice.name("prose") == "prose-my_prose"
    assert [(t.name, len(t.items)) for t in choice.load("choices")] == [("T1", 2), ("T2", 1)]
    assert choice.load("problems").problems[0].final_answer == "2" and choice.load("facts").facts[0].answer == "blue"
    assert DataChoice({}, {}).load("prose") is None
    assert DataChoice({}, resolve_data(["mmlu", "sst2"])).name("choices") == "mmlu-c30699e+sst2-0de2392"
    with pytest.raises(ValueError, match="mine.jsonl:1"):
        choices.write_text(json.dumps({"prompt": "x", "options": ["a", "b"], "answer": "c"}) + "\n")
        read_kind_file("choices", choices)


# ---------------------------------------------------------------- the paper's prompt files

_QUERY = {
    "MMLU": (r"Question: (?P<question>.*)\n\(A\) (?P<a>.*)\n\(B\) (?P<b>.*)\n\(C\) (?P<c>.*)\n\(D\) (?P<d>.*)\nAnswer:",
             lambda m, ans: {"question": m["question"], "subject": "", "choices": [m["a"], m["b"], m["c"], m["d"]], "answer": "ABCD".index(ans)}),
    "SST": (r"Review :(?P<sentence>.*)\nSentiment :",
            lambda m, ans: {"idx": 0, "sentence": m["sentence"], "label": ("negative", "positive").index(ans)}),
    "MRPC": (r"Are the sentences paraphrases of each other\.\nSentence 1: (?P<s1>.*)\nSentence 2: (?P<s2>.*)\nAnswer:",
             lambda m, ans: {"idx": 0, "sentence1": m["s1"], "sentence2": m["s2"], "label": ("No", "Yes").index(ans)}),
}
_ENTRY = {"MMLU": "mmlu", "SST": "sst2", "MRPC": "mrpc"}
_SHOTS_END = {"MMLU": "Answer: D\n", "SST": "Sentiment : negative\n", "MRPC": "Answer: No\n"}


@pytest.mark.skipif(not PAPER_DIR.is_dir(), reason="../shared/data/paper_downstream is not here")
@pytest.mark.parametrize("task", ["MMLU", "SST", "MRPC"])
def test_formatting_matches_the_papers_prompt_files(tmp_path, task):
    """Each query of the paper's file, written back in the hub data set's schema and loaded
    through the entry, gives the paper's prompt and answer character for character (the
    shots, separators and spacing come from the entry, only the query's fields from the file)."""
    records = json.loads((PAPER_DIR / f"dset_{task}.json").read_text(encoding="utf-8"))
    pattern, to_row = _QUERY[task]
    shots_end = _SHOTS_END[task]
    rows, expected = [], []
    for rec in records:
        head_end = rec["prompt"].rindex(shots_end) + len(shots_end)  # the query follows the last shot
        m = re.fullmatch(pattern, rec["prompt"][head_end:], re.S)
        if m is None:
            continue
        rows.append(to_row(m, rec["answer"].strip()))
        expected.append((rec["prompt"], rec["answer"].strip()))
    assert len(rows) >= 0.95 * len(records)
    (got,) = load_source(SOURCES[_ENTRY[task]], local=_parquet(tmp_path, rows))
    assert len(got.items) == len(rows)  # no paper query is one of its shots
    mismatched = [i for i, (item, (prompt, answer)) in enumerate(zip(got.items, expected)) if (item.prompt, item.answer) != (prompt, answer)]
    assert not mismatched, f"{len(mismatched)} of {len(rows)} differ, first {mismatched[0]}: {got.items[mismatched[0]].prompt[-300:]!r} vs {expected[mismatched[0]][0][-300:]!r}"


# ---------------------------------------------------------------- lens training reads enough text


def _lens_data(train_tokens: int) -> LensData:
    return LensData("prose-embedded", "0" * 64, torch.zeros(train_tokens // 128, 128, dtype=torch.long), torch.zeros(1, 128, dtype=torch.long))


def test_paper_recipe_refuses_to_cycle_a_small_corpus():
    recipe = RECIPES["paper"]
    with pytest.raises(CorpusTooSmall, match=r"'paper' lens recipe reads 65,536,000 training tokens, 2,048 passes over the 32,000 .*--data wikipedia"):
        check_passes(_lens_data(32_000), recipe)
    check_passes(_lens_data(recipe.steps * recipe.tokens_per_step // 4), recipe)  # four passes: allowed
    check_passes(_lens_data(32_000), RECIPES["closed-form"])  # no SGD steps: reads the corpus once
