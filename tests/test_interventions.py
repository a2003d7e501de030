"""Reads and edits of the residual stream on a random-init model of every family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.interventions.backend import HookBackend
from harness.interventions.contributions import token_contributions
from harness.interventions.erasure import erasure_map, mean_residuals
from harness.interventions.gradients import integrated_gradients
from harness.interventions.skip import SkipRow, output_changes, skip_edit, skip_effects
from tests.test_adapters import ATOL, Case, case  # noqa: F401  (the per-family fixture)


def test_sublayer_contributions_add_up_to_the_layer(case: Case):
    """attention + MLP = what the block adds, for sequential and parallel blocks; the MLP
    is measured against the residual after attention (sequential) or the block input
    (parallel), and h_{l+1} is the block's real output."""
    backend = HookBackend(case.loaded)
    ids = torch.tensor([case.prompts[0]])
    with torch.no_grad():
        record = backend.forward(ids, sublayers=True)
        outputs = case.model(input_ids=ids, output_hidden_states=True).hidden_states
    assert len(record.resid) == case.n_layers + 1
    for l in range(case.n_layers):
        assert torch.allclose(record.attention(l) + record.mlp(l), record.layer(l), atol=ATOL)
        if l + 1 < case.n_layers:  # hidden_states[-1] is final-normed (claims.md, Traps)
            assert torch.allclose(record.resid[l + 1], outputs[l + 1], atol=ATOL)
        expected_mlp_residual = record.resid[l] if backend.parallel else record.resid[l] + record.attention(l)
        assert torch.allclose(record.mlp_residual(l), expected_mlp_residual, atol=ATOL)
        assert record.attention(l).abs().sum() > 0 and record.mlp(l).abs().sum() > 0
    rel, cos = token_contributions(record)
    assert rel["layer"].shape == (case.n_layers, 1, ids.shape[1]) and (cos["mlp"].abs() <= 1 + 1e-5).all()


def test_a_skip_that_covers_no_position_changes_nothing(case: Case):
    backend = HookBackend(case.loaded)
    ids = list(case.prompts[0])
    rows = [SkipRow(layer=s, until=1, measure_from=1) for s in range(case.n_layers)]  # [front=1, 1): empty
    with torch.no_grad():
        record = backend.forward(torch.tensor([ids] * (len(rows) + 1)), edits=skip_edit(rows, 1, len(ids)))
    for h in record.resid:  # rows of one batch agree to float rounding, not bit for bit
        assert torch.allclose(h[1:], h[:1].expand_as(h[1:]), atol=ATOL, rtol=ATOL)


def test_skipping_a_layer_replaces_its_output_by_its_input(case: Case):
    backend = HookBackend(case.loaded)
    ids = list(case.prompts[0])
    s = case.n_layers - 1
    with torch.no_grad():
        record = backend.forward(torch.tensor([ids] * 2), edits=skip_edit([SkipRow(s, len(ids), 0)], 0, len(ids)))
    assert torch.equal(record.resid[s + 1][1], record.resid[s][1])
    effect = skip_effects(backend, ids, [None], front=0)
    assert effect.future.shape == (case.n_layers, case.n_layers)
    assert np.allclose(np.diag(effect.future), 1.0, atol=1e-4)  # the skipped layer adds nothing
    assert np.allclose(np.triu(effect.future, 0)[np.tril_indices(case.n_layers, -1)], 0.0)  # earlier layers untouched
    assert (effect.output > 0).all()


@pytest.mark.parametrize("max_positions", [3, 1024])
def test_output_changes_equal_one_head_per_row(case: Case, max_positions):
    """The head batched over the positions of many rows (cut every ``max_positions``, also
    inside a row) gives each row's largest L2 change of the output distribution, as one
    softmax per row computes it."""
    backend = HookBackend(case.loaded)
    ids = list(case.prompts[0])
    rows = [SkipRow(s, until, until) for s in range(case.n_layers) for until in (1, len(ids) // 2)]
    with torch.no_grad():
        final = backend.forward(torch.tensor([ids] * (len(rows) + 1)), edits=skip_edit(rows, 0, len(ids))).resid[-1]
        clean = torch.softmax(backend.logits(final[0]).float(), -1)
        expected = [(torch.softmax(backend.logits(final[i + 1, r.measure_from :]).float(), -1) - clean[r.measure_from :])
                    .norm(dim=-1).max().item() for i, r in enumerate(rows)]
        got = output_changes(backend, final, [r.measure_from for r in rows], max_positions)
    assert np.allclose(got, expected, atol=1e-6, rtol=1e-5)
    assert max(expected) > 0


def test_erasing_after_the_last_predicting_position_changes_nothing(case: Case):
    """Causality: the answer is read at positions T-3, T-2 (answer of 2 tokens); erasing
    the last token, at any layer, cannot change it."""
    backend = HookBackend(case.loaded)
    ids = list(case.prompts[0])
    baseline = mean_residuals(backend, [list(p) for p in case.prompts[1:3]])
    effect = erasure_map(backend, ids, answer_len=2, baseline=baseline)
    assert effect.shape == (case.n_layers + 1, len(ids))
    assert np.all(effect[:, -1] == 0.0)  # not even run: it cannot change the answer
    assert effect[:, :-1].max() > 1e-3


@pytest.mark.parametrize("steps", [64])
def test_integrated_gradients_are_complete(case: Case, steps):
    """Attributions of each residual point sum to F(real) - F(baseline)."""
    backend = HookBackend(case.loaded)
    ids = list(case.prompts[0])
    result = integrated_gradients(backend, ids, answer_len=2, steps=steps)
    scale = np.abs(result.output_difference).max() + 1e-6
    assert result.values.shape == (case.n_layers + 1, len(ids))
    assert (result.completeness_error <= 0.02 * scale + 1e-6).all(), (result.completeness_error, result.output_difference)
    assert np.all(result.values[:, -1] == 0.0)  # causality again: the last token feeds no answer position
