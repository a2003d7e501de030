"""Edited rows that start from the recorded clean residual (``reuse.py``) give the numbers
of the plain computation that runs every block from the embeddings: on every family
(sliding-window and parallel blocks included) and on the default model.

Tolerance: rows of different batches (the plain computation batches rows differently)
agree to float rounding, not bit for bit: |a - b| <= 1e-5 + 1e-4 |b| (float32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.interventions import reuse
from harness.interventions.backend import HookBackend
from harness.interventions.erasure import erasure_map, mean_residuals
from harness.interventions.gradients import integrated_gradients
from harness.interventions.skip import skip_effect_groups, skip_effects
from tests.test_adapters import Case, case  # noqa: F401  (the per-family fixture)

TOL = dict(rtol=1e-4, atol=1e-5)


def _blocks(backend):
    return backend.loaded.adapter.blocks_of(backend.loaded.model)


def test_replayed_blocks_give_the_clean_residual_and_are_restored(case: Case):
    backend = HookBackend(case.loaded)
    ids = list(case.prompts[0])
    clean = reuse.record_clean(backend, ids)
    start = case.n_layers - 1
    with torch.no_grad(), reuse.replayed(backend, clean, start):
        record = backend.forward(torch.tensor([ids] * 3))
    for h, c in zip(record.resid, clean.record.resid):
        assert h.shape == (3, len(ids), c.shape[-1])
        torch.testing.assert_close(h, c.expand_as(h), **TOL)
    assert all("forward" not in b.__dict__ for b in _blocks(backend))  # the class's forward again


def test_skip_effects_with_reuse_equal_the_plain_computation(case: Case):
    backend = HookBackend(case.loaded)
    ids = list(case.prompts[0])  # 9 tokens
    positions = [3, 6, None]
    plain = skip_effects(backend, ids, positions, reuse=False)
    reused = skip_effects(backend, ids, positions)
    np.testing.assert_allclose(reused.future, plain.future, **TOL)
    np.testing.assert_allclose(reused.output, plain.output, **TOL)
    assert plain.output.max() > 1e-3  # not trivially equal
    # Small batches (several start points) and groups sharing batches: the same numbers.
    future, everywhere = skip_effect_groups(backend, ids, [[3, 6], [None]], budget_bytes=1)
    np.testing.assert_allclose(np.maximum(future.future, everywhere.future), plain.future, **TOL)
    np.testing.assert_allclose(np.maximum(future.output, everywhere.output), plain.output, **TOL)


def test_erasure_map_with_reuse_equals_the_plain_computation(case: Case):
    backend = HookBackend(case.loaded)
    ids = list(case.prompts[0])
    baseline = mean_residuals(backend, [list(p) for p in case.prompts[1:3]])
    plain = erasure_map(backend, ids, answer_len=2, baseline=baseline, reuse=False)
    reused = erasure_map(backend, ids, answer_len=2, baseline=baseline)
    np.testing.assert_allclose(reused, plain, **TOL)
    assert plain.max() > 1e-3
    # One row per batch: every residual point is a start point.
    np.testing.assert_allclose(erasure_map(backend, ids, 2, baseline, budget_bytes=1), plain, **TOL)


def test_integrated_gradients_with_reuse_equal_the_plain_computation(case: Case):
    backend = HookBackend(case.loaded)
    ids = list(case.prompts[0])
    plain = integrated_gradients(backend, ids, answer_len=2, steps=8, reuse=False)
    reused = integrated_gradients(backend, ids, answer_len=2, steps=8)
    np.testing.assert_allclose(reused.values, plain.values, **TOL)
    np.testing.assert_allclose(reused.output_difference, plain.output_difference, **TOL)
    assert np.abs(plain.values).max() > 1e-4


def test_plan_shares_one_start_per_batch_and_covers_every_row():
    points = [5, 0, 3, 3, 30, 12, 29, 1]
    batches = reuse.plan(points, max_rows=3, n_layers=30, reuse=True)
    assert sorted(i for b in batches for i in b) == list(range(len(points)))
    assert all(len(b) <= 3 for b in batches)
    assert reuse.plan(points, 3, 30, reuse=False) == [[0, 1, 2], [3, 4, 5], [6, 7]]


@pytest.fixture(scope="module")
def default_backend():
    from harness.models import DEFAULT_MODEL, ModelFileMissing, load_model, loading, resolve

    try:
        loading.gguf_path(resolve(DEFAULT_MODEL))
    except ModelFileMissing as err:
        pytest.skip(str(err))
    return HookBackend(load_model(resolve(DEFAULT_MODEL), device="cpu", dtype="float32"))


@pytest.mark.slow
def test_reuse_equals_the_plain_computation_on_the_default_model(default_backend):
    """One (shortened) problem for the skips, a short digit sum for erasure and gradients."""
    from harness.data.math import load_problems
    from harness.data.tokens import continuation_ids

    backend = default_backend
    tok = backend.loaded.tokenizer
    ids = list(tok(load_problems(None).problems[0].prompt()).input_ids)[:24]
    plain, reused = (skip_effect_groups(backend, ids, [[16], [None]], reuse=flag) for flag in (False, True))
    for a, b in zip(reused, plain):  # 5 batches, 5 start points
        np.testing.assert_allclose(a.future, b.future, **TOL)
        np.testing.assert_allclose(a.output, b.output, **TOL)
    q, a = continuation_ids(tok, "3 + 4 = ", "7")
    sum_ids, answer_len = q + a, len(a)
    baseline = mean_residuals(backend, [ids])
    plain, reused = (erasure_map(backend, sum_ids, answer_len, baseline, reuse=flag) for flag in (False, True))
    np.testing.assert_allclose(reused, plain, **TOL)  # 7 batches, 7 start points
    plain, reused = (integrated_gradients(backend, sum_ids, answer_len, steps=4, reuse=flag) for flag in (False, True))
    np.testing.assert_allclose(reused.values, plain.values, **TOL)
    np.testing.assert_allclose(reused.output_difference, plain.output_difference, **TOL)
