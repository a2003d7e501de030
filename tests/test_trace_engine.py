"""The trace engine's reductions against a direct computation on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.lenses import LogitLens, make_lens
from harness.trace import ReductionSpec, TraceEngine, TraceRequest, reduce_logits
from tests.tiny import VOCAB, prompts, tiny_llama


@pytest.fixture(scope="module")
def loaded():
    return tiny_llama()


def test_reductions_match_a_direct_computation(loaded):
    ps = prompts(4)
    sets = (("low", tuple(range(20))), ("high", tuple(range(50, VOCAB))))
    options = [(5, 6, 7)] * len(ps)
    req = TraceRequest.build("tiny", ps, positions="all", option_ids=options)
    trace = TraceEngine(loaded, batch_size=3, progress=False, chunk_bytes=VOCAB * 4 * 5).trace(
        req, LogitLens(loaded), ReductionSpec(topk=4, token_sets=sets)
    )
    model, L = loaded.model, loaded.n_layers
    for i, ids in enumerate(ps):
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True)
        final = out.logits[0]
        rows = np.flatnonzero(trace.example == i)
        assert trace.position[rows].tolist() == list(range(len(ids)))
        # h_0..h_{L-1} are hidden_states[0..L-1]; h_L is pre-norm (hidden_states[-1] is normed).
        for layer in range(L + 1):
            logits = final if layer == L else LogitLens(loaded).logits(out.hidden_states[layer][0], layer)
            logp = torch.log_softmax(logits, -1)
            np.testing.assert_array_equal(trace.top1[layer, rows], logits.argmax(-1).numpy())
            fid = final.argmax(-1)
            rank = (logits > logits.gather(1, fid[:, None])).sum(-1) + 1
            np.testing.assert_array_equal(trace.final_rank[layer, rows], rank.numpy())
            kl = (torch.softmax(final, -1) * (torch.log_softmax(final, -1) - logp)).sum(-1)
            np.testing.assert_allclose(trace.kl_final[layer, rows], kl.numpy(), atol=1e-5)
            p = logp.exp()
            np.testing.assert_allclose(trace.set_mass[layer, rows, 0], p[:, :20].sum(-1).numpy(), atol=1e-5)
            np.testing.assert_allclose(trace.option_logprob[layer, rows], logp[:, [5, 6, 7]].numpy(), atol=1e-5)
            gold = torch.tensor(ids[1:])
            np.testing.assert_allclose(
                trace.gold_logprob[layer, rows[:-1]], logp[:-1].gather(1, gold[:, None])[:, 0].numpy(), atol=1e-5
            )
        assert trace.gold_rank[:, rows[-1]].tolist() == [0] * (L + 1)  # no next token
        assert np.isnan(trace.gold_logprob[:, rows[-1]]).all()
    assert (trace.final_rank[-1] == 1).all()
    np.testing.assert_allclose(trace.kl_final[-1], 0, atol=1e-6)


def test_rank_counts_strictly_larger_logits_ties_in_the_targets_favour():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    out = reduce_logits(logits, torch.tensor([[2, 3], [0, 3]]), ReductionSpec(topk=1, logprobs=False, kl=False, entropy=False))
    assert out["rank"].tolist() == [[1, 4], [1, 1]]


def test_selected_positions_only(loaded):
    ps = prompts(5)
    every = TraceEngine(loaded, progress=False).trace(TraceRequest.build("t", ps, "all"), LogitLens(loaded))
    last = TraceEngine(loaded, progress=False).trace(TraceRequest.build("t", ps, "last"), LogitLens(loaded))
    assert last.n_rows == len(ps)
    rows = [np.flatnonzero((every.example == i) & (every.position == len(p) - 1))[0] for i, p in enumerate(ps)]
    np.testing.assert_array_equal(last.top1, every.top1[:, rows])
    np.testing.assert_allclose(last.kl_final, every.kl_final[:, rows], atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(token_ids=[]), "no prompts"),
        (dict(token_ids=[[1, 2], []]), "no tokens"),
        (dict(token_ids=[[1, 2]], positions=[[2]]), "outside"),
        (dict(token_ids=[[1, 2], [3]], option_ids=[[1, 2], [3]]), "option_ids"),
    ],
)
def test_bad_requests_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TraceRequest.build("bad", **kwargs)


def test_unknown_lens_names_the_available_ones(loaded):
    with pytest.raises(ValueError, match="available: logit"):
        make_lens("tuned-typo", loaded)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.integers(3, VOCAB - 1), min_size=1, max_size=12), min_size=1, max_size=4))
def test_ranks_lie_in_one_to_vocab_and_the_final_prediction_is_rank_one_at_L(loaded, token_ids):
    trace = TraceEngine(loaded, progress=False).trace(
        TraceRequest.build("h", token_ids, "all", option_ids=[[3, 4]] * len(token_ids)), LogitLens(loaded)
    )
    for ranks in (trace.final_rank, trace.option_rank):
        assert ranks.min() >= 1 and ranks.max() <= loaded.vocab_size
    known = trace.gold_id >= 0
    assert (trace.gold_rank[:, known] >= 1).all() and (trace.gold_rank[:, ~known] == 0).all()
    assert (trace.final_rank[-1] == 1).all() and (trace.top1[-1] == trace.final_id).all()
