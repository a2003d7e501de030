"""GTR-5's pieces: choice loaders, option tokens, truncation, and the metric on a known trace."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.claims import gtr
from harness.data.choices import ChoiceItem, ChoiceTask, load_choice_tasks, read_generic_jsonl, read_paper_file
from harness.data.prose import DataMissing
from harness.data.tokens import TokenBoundaryError, continuation_ids, truncate_left
from harness.trace import LayerTrace, TraceRequest


class _WordTokenizer:
    """One id per whitespace-separated word (a leading space belongs to the word); BOS = 1."""

    all_special_ids = [1]

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def __call__(self, text):
        words, out = text.replace(" ", "\0 ").split("\0"), [1]
        for w in words:
            if w:
                out.append(self.vocab.setdefault(w, len(self.vocab) + 10))

        class Enc:
            input_ids = out

        return Enc()


def test_embedded_tasks_load_with_their_option_sets():
    tasks, name = load_choice_tasks()
    assert name == "choices-embedded"
    sizes = {t.name: len(t.items) for t in tasks}
    assert sizes["MMLU"] >= 150 and sizes["SST"] >= 150 and sizes["MRPC"] >= 100
    assert {t.name: t.items[0].options for t in tasks}["SST"] == ("positive", "negative")


def test_missing_and_malformed_files_say_what_is_wrong(tmp_path):
    with pytest.raises(DataMissing, match="paper_downstream/dset_MMLU.json"):
        load_choice_tasks(tmp_path)
    bad = tmp_path / "dset_SST.json"
    bad.write_text(json.dumps([{"prompt": "Review : x\\nSentiment :", "answer": "maybe"}]))
    with pytest.raises(ValueError, match="not one of the options"):
        read_paper_file(bad, "SST")
    generic = tmp_path / "g.jsonl"
    generic.write_text('{"prompt": "Q", "options": ["x", "y"], "answer": "y"}\n{"prompt": "Q"}\n')
    with pytest.raises(ValueError, match="g.jsonl:2"):
        read_generic_jsonl(generic)


def test_continuation_tokens_are_the_difference_of_the_two_encodings():
    tok = _WordTokenizer()
    prompt_ids, cont = continuation_ids(tok, "Answer:", " C")
    assert prompt_ids[0] == 1 and len(cont) == 1 and 1 not in cont  # no second BOS


def test_a_merge_across_the_boundary_is_refused():
    class Merging(_WordTokenizer):
        def __call__(self, text):
            enc = super().__call__(text.replace(":C", "@"))
            return enc

    with pytest.raises(TokenBoundaryError):
        continuation_ids(Merging(), "Answer:", "C")


def test_left_truncation_keeps_bos_and_the_end():
    assert truncate_left([1, 5, 6, 7, 8], 3, keep_first=True) == [1, 7, 8]
    assert truncate_left([5, 6, 7, 8], 3, keep_first=False) == [6, 7, 8]
    assert truncate_left([5, 6], 3, keep_first=True) == [5, 6]


def test_choice_request_rows_tasks_and_counts():
    tok = _WordTokenizer()
    long_prompt = " ".join(["w"] * 2000) + " Answer:"
    tasks = [
        ChoiceTask("MMLU", (ChoiceItem("MMLU", "Q1 Answer:", ("A", "B", "C", "D"), "A"),
                            ChoiceItem("MMLU", long_prompt, ("A", "B", "C", "D"), "B")), "mem"),
        ChoiceTask("SST", (ChoiceItem("SST", "Review : good Sentiment :", ("positive", "negative"), "positive"),), "mem"),
    ]
    rows = gtr.choice_request(tasks, tok, "toy")
    assert rows.tasks == ("MMLU", "MMLU", "SST") and rows.n_truncated == {"MMLU": 1, "SST": 0}
    assert len(rows.request.token_ids[1]) == gtr.CHOICE_MAX_TOKENS and rows.request.token_ids[1][0] == 1
    assert rows.option_counts == {"MMLU": 4, "SST": 2} and len(rows.request.option_ids[2]) == 4


def _choice_trace(option_rank: np.ndarray, option_logprob: np.ndarray) -> LayerTrace:
    n_layers1, n = option_rank.shape[:2]
    z = np.zeros(n, dtype=np.int32)
    ones = np.ones((n_layers1, n), dtype=np.int32)
    return LayerTrace(meta={}, example=np.arange(n), position=z, input_id=z, gold_id=z - 1, final_id=z,
                      top1=ones, final_rank=ones, gold_rank=ones * 0, option_rank=option_rank,
                      option_logprob=option_logprob)


def test_gtr5_layers_on_a_known_trace():
    # 8 layers; options leave the far ranks at layer 2 (shortlisted from 2 on), the choice
    # flips to the final option at layer 6 and stays.
    L, n = 8, 30
    rank = np.full((L + 1, n, 2), 5000, dtype=np.int32)
    rank[2:, :, 0] = 3
    rank[-1, :, 0] = 1
    logp = np.full((L + 1, n, 2), -5.0, dtype=np.float32)
    logp[:, :, 1] = -4.0  # option 1 leads ...
    logp[6:, :, 0] = -1.0  # ... until option 0 wins from layer 6 on: the final choice
    rows = gtr.ChoiceRows(TraceRequest.build("x", [[1, 2]] * n, "last", [[3, 4]] * n), "toy",
                          ("SST",) * n, {"SST": 2}, {"SST": 0}, {"SST": 0})
    result, table = gtr.gtr5_shortlist_then_decide(_choice_trace(rank, logp), rows, "m", "logit")
    assert result.details["shortlist_layer_mean"] == 2 and result.details["decision_layer_mean"] == 6
    assert abs(result.estimate.value - 2 / 8) < 1e-12
    assert result.verdict == "replicated"  # 0.25 < 0.5 and the gap (6-2)/8 = 0.5 > 0.1
    agree = table[(table.metric == "agrees_with_final_choice") & (table.task == "SST")].set_index("layer")["value"]
    assert agree[5] == 0.0 and agree[6] == 1.0 and agree[L] == 1.0
