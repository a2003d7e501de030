"""One forward pass per carrier serves every request that reads prefixes of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.lenses import LogitLens
from harness.shared_pass import capture_shared, plan_carriers
from harness.trace import ReductionSpec, TraceEngine, TraceRequest
from harness.tuned_lens import TunedLens
from tests.test_adapters import Case, case  # noqa: F401  (the per-family fixture)

SPEC = ReductionSpec(topk=3, logprobs=True, kl=True, entropy=True, token_sets=(("low", (3, 4, 5)),))


def _requests(carriers: list[list[int]]) -> list[TraceRequest]:
    prefixes = TraceRequest.build("prefixes", [c[: len(c) - 2] for c in carriers], positions=[[2, len(c) - 4] for c in carriers])
    # the second request reads other positions of the same carriers, and one prompt that is
    # a prefix of no carrier (it must be run on its own tokens)
    stranger = [7, 8, 9, 10, 11, 12]
    other = TraceRequest.build("other", [carriers[0], carriers[1][:5], stranger], positions=[[1, 3], [4], [5]])
    return [prefixes, other]


def test_carriers_serve_prefixes_and_strangers_get_their_own():
    carriers = [[5, 6, 7, 8, 9, 10, 11], [5, 6, 7, 1, 2, 3]]
    requests = [TraceRequest.build("r", [[5, 6, 7, 8], [5, 6, 7, 1], [5, 6, 9]], positions="last")]
    plan = plan_carriers(requests, carriers)
    assert plan.serves == ((0, 1, 2),)
    assert plan.carriers[2] == (5, 6, 9) and plan.reads[0] == {3} and plan.reads[1] == {3}


def test_shared_pass_equals_separate_traces_on_every_family(case: Case):
    gen = torch.Generator().manual_seed(1)
    vocab = case.loaded.vocab_size
    carriers = [torch.randint(3, vocab, (int(n),), generator=gen).tolist() for n in (12, 15, 9, 14)]
    engine = TraceEngine(case.loaded, batch_size=3, progress=False)
    requests = _requests(carriers)
    fitted = []
    rows = capture_shared(engine, requests, carriers, fit_carriers=[True, False, True, False], on_fit_rows=fitted.append)
    # the fit saw every position of carriers 0 and 2, nothing else
    assert sorted(int(r.n_rows) for r in fitted) and sum(r.n_rows for r in fitted) == len(carriers[0]) + len(carriers[2])
    lenses = [LogitLens(case.loaded), TunedLens(case.loaded)]
    with torch.no_grad():
        for t in lenses[1].translators:
            t.weight.normal_(0, 0.05)
    for request in requests:
        for lens in lenses:
            plain = engine.trace(request, lens, SPEC)
            shared = engine.trace(request, lens, SPEC, rows=rows[request.name])
            for name, a in plain.arrays().items():
                b = shared.arrays()[name]
                if a.dtype.kind == "f":
                    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4, err_msg=name)
                else:
                    # decisions agree except where two logits tie to float rounding
                    assert (a == b).mean() > 0.99, name


def test_rows_of_another_request_are_refused():
    from tests.tiny import prompts, tiny_llama

    loaded = tiny_llama()
    engine = TraceEngine(loaded, progress=False)
    a = TraceRequest.build("a", prompts(3), positions="last")
    b = TraceRequest.build("b", prompts(3, seed=9), positions="last")
    with pytest.raises(ValueError, match="another request"):
        engine.trace(b, LogitLens(loaded), SPEC, rows=engine.capture(a))


@pytest.mark.slow
def test_default_model_gtr1_and_gtr3_read_from_one_pass_equal_their_own_traces(tmp_path):
    """On the default model's tokenizer every GTR-1 and GTR-3 prompt is a token prefix of its
    paragraph (so one pass per paragraph serves both), and the traces equal their own."""
    from harness.claims import gtr, gtr_pos
    from harness.models import DEFAULT_MODEL
    from harness.session import ModelSession, RunConfig

    session = ModelSession(RunConfig(models=(DEFAULT_MODEL,), max_examples=24, report_dir=tmp_path), DEFAULT_MODEL)
    session.engine.progress = False
    requests = [gtr.session_prefix_request(session), gtr_pos.pos_request(session)[0]]
    plan = plan_carriers(requests, session.prose_carriers)
    assert len(plan.carriers) == len(session.prose_carriers), "a prompt was not a prefix of its paragraph"
    lens = LogitLens(session.loaded)
    for request, spec in ((requests[0], gtr.prefix_reductions(session.frequency)), (requests[1], gtr_pos.POS_REDUCTIONS)):
        shared = session.engine.trace(request, lens, spec, rows=session.prose_rows()[request.name])
        plain = session.engine.trace(request, lens, spec)
        for name, a in plain.arrays().items():
            b = shared.arrays()[name]
            if a.dtype.kind == "f":
                np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4, err_msg=name)
            else:
                assert (a == b).mean() > 0.999, name
