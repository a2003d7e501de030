"""The closed-form tuned lens (harness.lens_training.LensFit and the recipes built on it)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.prose import Corpus, Paragraph
from harness.interventions.backend import HookBackend
from harness.lens_training import (
    RECIPES,
    TARGETS,
    LensData,
    LensFit,
    Recipe,
    fit_closed_form,
    fit_lens,
    kl_table,
    obtain_lens,
    resolve_recipe,
)
from harness.lenses import LogitLens
from harness.tuned_lens import TunedLens
from tests.test_adapters import VOCAB as FAMILY_VOCAB
from tests.test_adapters import Case, _close, _forward, case  # noqa: F401  (the per-family fixture)
from tests.test_tuned_lens import _WordTokenizer
from tests.tiny import VOCAB, tiny_llama


def _rows(n: int, d: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, d, generator=gen) + torch.linspace(-3, 3, d)  # a non-zero mean


def _solve(resid: list[torch.Tensor], weights=None, batches: int = 1, **kwargs):
    fit = LensFit(len(resid) - 1, resid[0].shape[1], **kwargs)
    for chunk in zip(*(h.tensor_split(batches) for h in resid), *([] if weights is None else [weights.tensor_split(batches, dim=-1)])):
        fit.add(list(chunk[: len(resid)]), None if weights is None else chunk[-1])
    return fit.solve()


def _params(translators) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in translators.parameters()])


def test_a_zero_residual_fit_is_the_logit_lens():
    """When h_L == h_l at every layer (the target is the input), every translator is zero
    (the ridge shrinks towards the identity, i.e. the logit lens), whatever the ridge."""
    loaded = tiny_llama()
    x = _rows(300, 32, scale=2.0)
    for ridge_scale in (1e-3, 1.0):
        translators = _solve([x] * (loaded.n_layers + 1), ridge_scale=ridge_scale, target="residual")
        assert _params(translators).abs().max() < 1e-5
        lens, logit = TunedLens(loaded, translators), LogitLens(loaded)
        for layer in range(loaded.n_layers + 1):
            assert torch.allclose(lens.logits(x, layer), logit.logits(x, layer), atol=1e-5)


def test_the_fit_recovers_a_known_affine_map():
    d = 16
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(d, d, generator=gen) / 4, torch.randn(d, generator=gen)
    x = _rows(4000, d, seed=2, scale=3.0)
    y = x @ a.T + b + 1e-4 * torch.randn(4000, d, generator=gen)
    (translator,) = _solve([x, y], ridge_scale=1e-9, target="residual")
    assert torch.allclose(translator.weight + torch.eye(d), a, atol=1e-3)
    assert torch.allclose(translator.bias, b, atol=1e-3)


def test_a_weighted_fit_equals_the_unweighted_fit_of_rows_repeated_by_their_weights():
    resid = [_rows(240, 12, seed=s, scale=1 + s) for s in range(3)]
    weights = torch.arange(240) % 4  # 0 .. 3, zero weights included
    weighted = _solve(resid, weights.float(), batches=3, target="residual")
    repeated = _solve([h.repeat_interleave(weights, dim=0) for h in resid], target="residual")
    assert torch.allclose(_params(weighted), _params(repeated), atol=1e-4)


def test_per_layer_weights_fit_each_layer_with_its_own_row():
    resid = [_rows(200, 8, seed=s, scale=1 + s) for s in range(4)]
    gen = torch.Generator().manual_seed(4)
    weights = torch.rand(3, 200, generator=gen) * (torch.rand(3, 200, generator=gen) > 0.2)
    together = _solve(resid, weights, batches=2)
    for layer in range(3):
        alone = _solve(resid, weights[layer], batches=2)
        assert torch.allclose(_params(together[layer : layer + 1]), _params(alone[layer : layer + 1]), atol=1e-5)
    with pytest.raises(ValueError, match="weights of shape"):
        LensFit(3, 8).add(resid, torch.ones(2, 200))


@pytest.mark.parametrize("target", TARGETS)
def test_streaming_in_batches_equals_one_batch(target: str):
    resid = [_rows(300, 12, seed=s, scale=1 + s) for s in range(4)]
    weights = torch.rand(300, generator=torch.Generator().manual_seed(3))
    one = _solve(resid, weights, batches=1, target=target)
    many = _solve(resid, weights, batches=7, target=target)
    assert torch.allclose(_params(one), _params(many), atol=1e-4)


def _random_ids(n: int, seq_len: int, vocab: int, seed: int) -> torch.Tensor:
    return torch.randint(3, vocab, (n, seq_len), generator=torch.Generator().manual_seed(seed))


CLOSED = Recipe(name="tiny-closed", steps=0, seq_len=16, sequences_per_step=3, micro_batch_sequences=3, eval_sequences=4,
                start="closed-form", fit_batch_sequences=16)


def test_the_fitted_lens_beats_the_logit_lens_and_is_exact_at_L(case: Case):  # noqa: F811
    """On every family: fitted on random text, the lens is better than the logit lens at
    every layer before L on other random text, and at L still gives the model's logits."""
    data = LensData("random", "0" * 64, _random_ids(96, 16, FAMILY_VOCAB, 0), _random_ids(8, 16, FAMILY_VOCAB, 1))
    backend = HookBackend(case.loaded)
    lens = TunedLens(case.loaded, fit_closed_form(case.loaded, backend, data, CLOSED).translators)
    table = kl_table({"logit": LogitLens(case.loaded), "tuned": lens}, backend, data.held_out)
    before = table[table.layer < case.n_layers]
    assert (before.tuned_kl < before.logit_kl).all(), table
    run = _forward(case, case.prompts[:2])
    assert _close(lens.logits(run.captured[case.n_layers], case.n_layers), run.logits)


def test_kl_polish_from_the_closed_form_does_not_raise_held_out_kl():
    """SGD on the KL from the closed form: held-out KL, averaged over layers, does not rise
    (on a random tiny model the closed form is close to the best affine map already)."""
    loaded = tiny_llama()
    backend = HookBackend(loaded)
    data = LensData("tiny", "0" * 64, _random_ids(64, 16, VOCAB, 5), _random_ids(16, 16, VOCAB, 6))
    recipe = replace(CLOSED, sequences_per_step=4, micro_batch_sequences=4)
    closed, record = fit_lens(loaded, backend, data, recipe)
    polished, polished_record = fit_lens(loaded, backend, data, replace(recipe, steps=8))
    assert record["steps"] == 0 and polished_record["sgd"]["steps"] == 8
    assert polished_record["tokens"] == 64 * 16 + 8 * 64
    assert polished_record["closed_form"]["tokens"] == record["tokens"] == 64 * 16
    table = kl_table({"closed": closed, "polished": polished}, backend, data.held_out)
    before = table[table.layer < loaded.n_layers]
    assert before.polished_kl.mean() <= before.closed_kl.mean(), table


def test_a_closed_form_lens_records_its_convergence_and_is_cached(tmp_path: Path, monkeypatch):
    loaded = tiny_llama()
    loaded.tokenizer = _WordTokenizer()
    corpus = Corpus("tiny-prose", tuple(Paragraph(str(i), " ".join(f"w{(i * 7 + j) % 50}" for j in range(40))) for i in range(60)), "test")
    recipe = replace(CLOSED, fit_batch_sequences=2, eval_sequences=2)
    lens = obtain_lens(loaded, HookBackend(loaded), corpus, recipe, train=True, root=tmp_path)
    record = lens.training_record
    points = record["convergence"]["points"]
    assert record["convergence"]["held_out_tokens"] == 2 * 16 and record["convergence"]["logit_mean_kl"] > 0
    assert [p["stage"] for p in points] == ["closed form"] * 3 + ["final"]
    tokens = [p["tokens"] for p in points]
    assert tokens == sorted(tokens) and tokens[-1] == record["tokens"] == record["closed_form"]["tokens"]
    assert all(len(p["kl"]) == loaded.n_layers + 1 for p in points)
    assert points[-1]["kl"] == pytest.approx(record["kl_table"]["tuned_kl"], abs=1e-5)
    folder = next(p for p in (tmp_path / "tiny-llama-0").iterdir() if not p.name.startswith("."))
    assert json.loads((folder / "training.json").read_text())["convergence"]["points"] == points
    assert [p.name for p in (tmp_path / "tiny-llama-0").glob(".*")] == [f".{folder.name}.lock"], (
        "checkpoint and temporary files are removed (the training's lock file stays)"
    )

    # the report: its CSV and figure (as claims/test_tuned_lens.py writes them) get a place in the lens-quality section
    from harness.report.figures_lens import convergence_curves, convergence_table
    from harness.report.html import build_model_report
    from tests.report_data import make_report_folder

    table = convergence_table(record)
    assert len(table) == 4 * (loaded.n_layers + 1) and set(table.stage) == {"closed form", "final"}
    report = make_report_folder(tmp_path / "report")
    fig = convergence_curves(table, "tiny-llama-0", "tuned lens: test")
    assert "n = 32 held-out tokens" in fig.axes[0].get_title() and "nats" in fig.axes[0].get_ylabel()
    fig.savefig(report / "tuned-lens-convergence_tuned_tiny-prose.png")
    table.to_csv(report / "tuned-lens-convergence_tuned_tiny-prose.csv", index=False)
    page = build_model_report(report).read_text()
    assert 'id="lens-quality"' in page and 'id="lens-convergence"' in page
    assert 'src="tuned-lens-convergence_tuned_tiny-prose.png"' in page and 'href="tuned-lens-convergence_tuned_tiny-prose.csv"' in page

    def no_fit(*args, **kwargs):
        raise AssertionError("a cached lens is fitted again")

    monkeypatch.setattr("harness.lens_training.fit_lens", no_fit)
    again = obtain_lens(loaded, HookBackend(loaded), corpus, recipe, root=tmp_path)
    assert again.identity == lens.identity


def test_the_cpu_default_recipe_is_the_closed_form():
    recipe = resolve_recipe("auto", torch.device("cpu"))
    assert recipe is RECIPES["closed-form"] and recipe.start == "closed-form"
    assert resolve_recipe("auto", torch.device("cuda")).start == "closed-form"  # paper: SGD from the closed form
    assert RECIPES["cpu-small"].start == "zero"


@pytest.mark.slow
def test_the_closed_form_lens_beats_the_logit_lens_on_the_default_model():
    """On a part of the embedded prose (3,072 training tokens, for time), on held-out text."""
    from harness.data.prose import load_prose
    from harness.lens_training import pack_corpus
    from harness.models import load_model, resolve

    loaded = load_model(resolve("smollm2-135m-instruct-q4"), device="cpu", dtype="float32")
    recipe = replace(RECIPES["closed-form"], fit_sequences=24)
    data = pack_corpus(load_prose(None), loaded.tokenizer, recipe.seq_len)
    backend = HookBackend(loaded)
    lens = TunedLens(loaded, fit_closed_form(loaded, backend, data, recipe).translators)
    table = kl_table({"logit": LogitLens(loaded), "tuned": lens}, backend, data.held_out[:1])
    before = table[table.layer < loaded.n_layers]
    assert (before.tuned_kl < before.logit_kl).all(), table


@pytest.mark.parametrize("weighting", ["standard", "downweight-frequent"])
def test_a_fit_on_the_shared_pass_equals_the_fit_on_its_own_passes(case: Case, weighting: str):  # noqa: F811
    """On every family: the ``prose-pass`` fit (RowFit fed by ``capture_shared`` with every
    sequence marked for fitting) equals ``fit_closed_form`` on the same sequences, weighted
    (GTR-7's buckets of the final prediction) or not, and so does its convergence curve;
    so does ``fit_packed``, which fits several weightings on one pass."""
    from harness.frequency import FrequencyTable
    from harness.lens_training import RowFit
    from harness.shared_pass import capture_shared
    from harness.trace import TraceEngine

    ids = _random_ids(12, 16, FAMILY_VOCAB, 3)
    data = LensData("random", "0" * 64, ids, ids[:2])
    vocab = case.loaded.vocab_size
    freq = FrequencyTable("tiny", "random", "0" * 64, vocab, np.arange(vocab)[::-1].copy()) if weighting != "standard" else None
    backend = HookBackend(case.loaded)
    recipe = replace(CLOSED, fit_batch_sequences=3, fit_source="prose-pass")
    plain = fit_closed_form(case.loaded, backend, data, recipe, weighting, freq, fractions=(0.25, 0.5))
    row_fit = RowFit(case.loaded, recipe, weighting, freq, total_tokens=ids.numel(), fractions=(0.25, 0.5))
    engine = TraceEngine(case.loaded, backend=backend, batch_size=3)
    engine.progress = False
    assert capture_shared(engine, [], ids.tolist(), [True] * len(ids), row_fit.add) == {}
    shared = row_fit.result()
    assert shared.tokens == plain.tokens == ids.numel()
    torch.testing.assert_close(_params(shared.translators), _params(plain.translators), rtol=1e-4, atol=1e-4)
    assert [t for t, _ in shared.curve] == [t for t, _ in plain.curve][: len(shared.curve)] and len(shared.curve) == 2
    for (_, a), (_, b) in zip(shared.curve, plain.curve):
        torch.testing.assert_close(_params(a), _params(b), rtol=1e-4, atol=1e-4)
    # fit_packed: one pass over the packed sequences feeds both lenses, each equal to its own fit
    from harness.lens_training import fit_packed

    both = {w: RowFit(case.loaded, recipe, w, freq, total_tokens=ids.numel()) for w in ("standard", weighting)}
    fit_packed(case.loaded, backend, data, recipe, both)
    torch.testing.assert_close(_params(both[weighting].result().translators), _params(plain.translators), rtol=1e-4, atol=1e-4)
