"""Both backends give the same numbers on the default model: the engine's lens trace and
every intervention of the depth-efficiency claims, run once through plain transformers
hooks and once through nnsight."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.data.math import load_problems
from harness.data.tokens import continuation_ids
from harness.interventions import contributions, erasure, gradients, skip
from harness.interventions.backend import HookBackend
from harness.lenses import LogitLens
from harness.models import DEFAULT_MODEL, ModelFileMissing, load_model, resolve
from harness.models import loading
from harness.trace import ReductionSpec, TraceEngine, TraceRequest

TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def backends():
    try:
        loading.gguf_path(resolve(DEFAULT_MODEL))
    except ModelFileMissing as err:
        pytest.skip(str(err))
    from harness.interventions.nnsight_backend import NNsightBackend

    loaded = load_model(resolve(DEFAULT_MODEL), device="cpu", dtype="float32")
    return HookBackend(loaded), NNsightBackend(loaded)


@pytest.fixture(scope="module")
def problem_ids(backends):
    tok = backends[0].loaded.tokenizer
    return [list(tok(p.prompt()).input_ids)[:48] for p in load_problems(None).problems[:2]]


@pytest.fixture(scope="module")
def short_sum(backends):
    """A three-term sum: the erasure map runs (L + 1) x tokens rows, and the nnsight backend
    computes each in full (no reuse), so the paper's six-term sum would take minutes."""
    q, a = continuation_ids(backends[0].loaded.tokenizer, "5 + 7 + 5 = ", "17")
    return q + a, len(a)


def test_engine_traces_agree(backends, problem_ids):
    spec = ReductionSpec(topk=5, logprobs=True, kl=True, entropy=False)
    request = TraceRequest.build("parity", problem_ids, positions="all")
    traces = [
        TraceEngine(b.loaded, backend=b, progress=False).trace(request, LogitLens(b.loaded), spec) for b in backends
    ]
    assert traces[0].meta["key"]["backend"] != traces[1].meta["key"]["backend"]  # never shared in the cache
    for name, a in traces[0].arrays().items():
        b = traces[1].arrays()[name]
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, err_msg=name, **TOL)
        else:
            assert np.array_equal(a, b), name


def test_contributions_agree(backends, problem_ids):
    a, b = (contributions.measure_contributions(x, problem_ids) for x in backends)
    for part in contributions.PARTS:
        np.testing.assert_allclose(a.relative[part], b.relative[part], **TOL)
        np.testing.assert_allclose(a.cosine[part], b.cosine[part], **TOL)


def test_layer_skips_agree(backends, problem_ids):
    ids = problem_ids[0][:32]
    a, b = (skip.skip_effects(x, ids, [16, None]) for x in backends)
    np.testing.assert_allclose(a.future, b.future, **TOL)
    np.testing.assert_allclose(a.output, b.output, **TOL)


def test_erasure_and_gradients_agree(backends, problem_ids, short_sum):
    ids, answer_len = short_sum
    base = [erasure.mean_residuals(x, problem_ids) for x in backends]
    torch.testing.assert_close(base[0], base[1], **TOL)
    maps = [erasure.erasure_map(x, ids, answer_len, base[0]) for x in backends]
    np.testing.assert_allclose(maps[0], maps[1], **TOL)
    ig = [gradients.integrated_gradients(x, ids, answer_len, steps=4) for x in backends]
    np.testing.assert_allclose(ig[0].values, ig[1].values, **TOL)
