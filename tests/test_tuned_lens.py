"""The tuned lens: exactness at L, identity start, alignment, format, hash check, training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.prose import Corpus, Paragraph
from harness.frequency import BUCKETS
from harness.interventions.backend import HookBackend
from harness.lens_training import (
    DOWNWEIGHT_FREQUENT,
    RECIPES,
    TRAINING_VERSION,
    LensData,
    Recipe,
    TunedLensMissing,
    kl_table,
    lens_key,
    obtain_lens,
    position_weights,
    train_lens,
)
from harness.lenses import LogitLens
from harness.tuned_lens import (
    LensMismatch,
    TunedLens,
    load_published,
    read_lens,
    unembed_hash,
    zero_translators,
)
from tests.test_adapters import Case, _close, _forward, case  # noqa: F401  (the per-family fixture)
from tests.tiny import VOCAB, tiny_llama


def random_lens(loaded, seed: int = 0, alignment: str = "correct") -> TunedLens:
    """A lens with non-zero translators, so that a wrong layer or a missing skip shows."""
    d = loaded.adapter.unembed_of(loaded.model).weight.shape[1]
    translators = zero_translators(d, loaded.n_layers)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in translators:
            t.weight.copy_(0.3 * torch.randn(t.weight.shape, generator=gen))
            t.bias.copy_(0.3 * torch.randn(t.bias.shape, generator=gen))
    return TunedLens(loaded, translators, alignment)


def test_tuned_lens_at_L_reproduces_model_logits(case: Case):  # noqa: F811
    """Trap: at l = L every lens is the model's head, whatever its translators (every family)."""
    run = _forward(case, case.prompts[:2])
    L = case.n_layers
    for alignment in ("correct", "paper"):
        lens = random_lens(case.loaded, alignment=alignment)
        assert _close(lens.logits(run.captured[L], L), run.logits)
        # ... and its translators do act below L
        assert not _close(lens.logits(run.captured[L - 1], L - 1), LogitLens(case.loaded).logits(run.captured[L - 1], L - 1))


def test_untrained_tuned_lens_is_the_logit_lens(case: Case):  # noqa: F811
    run = _forward(case, case.prompts[:2])
    lens, logit = TunedLens(case.loaded), LogitLens(case.loaded)
    for layer in range(case.n_layers + 1):
        assert torch.equal(lens.logits(run.captured[layer], layer), logit.logits(run.captured[layer], layer))


def test_paper_alignment_reads_h_l_plus_1_with_translator_l():
    loaded = tiny_llama()
    correct, paper = random_lens(loaded, alignment="correct"), random_lens(loaded, alignment="paper")
    h = torch.randn(5, 32)
    assert paper.translator_for(0) is None  # nothing is trained for a point before the embeddings
    for layer in range(1, loaded.n_layers):
        assert paper.translator_for(layer) is paper.translators[layer - 1]
        assert torch.allclose(paper.logits(h, layer), correct.logits(h, layer - 1))
    assert correct.identity["alignment"] == "correct" and paper.identity["alignment"] == "paper"
    assert correct.identity["lens_hash"] == paper.identity["lens_hash"]


def test_save_and_load_round_trip(tmp_path: Path):
    loaded = tiny_llama()
    lens = random_lens(loaded)
    folder = lens.save(tmp_path / "lens", extra={"note": "test"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "params.pt", "training.json"]
    back = read_lens(folder, loaded)
    assert back.identity["lens_hash"] == lens.identity["lens_hash"]
    assert back.training_record == {"note": "test"}
    h = torch.randn(4, 32)
    for layer in range(loaded.n_layers + 1):
        assert torch.equal(back.logits(h, layer), lens.logits(h, layer))
    assert not list(tmp_path.glob(".lens*")), "no temporary folder is left behind"


def test_hash_check_refuses_a_lens_made_for_another_model(tmp_path: Path):
    folder = random_lens(tiny_llama(seed=0)).save(tmp_path / "lens")
    other = tiny_llama(seed=1)  # same shapes, other weights
    with pytest.raises(LensMismatch, match="trained for .* not for tiny-llama-1.*train-lens"):
        read_lens(folder, other)
    three = random_lens(tiny_llama(seed=0, n_layers=3)).save(tmp_path / "three")
    config = json.loads((three / "config.json").read_text())
    (three / "config.json").write_text(json.dumps({**config, "unembed_hash": None}))  # hash-less, as old lenses are
    with pytest.raises(LensMismatch, match="3 layers; tiny-llama-0 has d_model=32, 4 layers"):
        read_lens(three, tiny_llama(seed=0))


def test_unembed_hash_is_the_tuned_lens_packages():
    from tuned_lens.utils import tensor_hash

    loaded = tiny_llama()
    weight = loaded.model.get_output_embeddings().weight.detach().float().numpy()
    assert unembed_hash(loaded) == tensor_hash(weight)


def test_published_format_matches_the_tuned_lens_package(tmp_path: Path):
    """Our folder loads in the package's TunedLens and gives the same logits; a folder the
    package saved loads in ours (through load_published, as a published lens would)."""
    from tuned_lens.nn.lenses import TunedLens as PackageLens
    from tuned_lens.nn.unembed import Unembed

    loaded = tiny_llama()
    ours = random_lens(loaded, seed=3)
    package = PackageLens.from_unembed_and_pretrained(Unembed(loaded.model), str(ours.save(tmp_path / "ours")))
    h = torch.randn(6, 32)
    with torch.no_grad():
        for layer in range(loaded.n_layers):
            assert torch.allclose(package(h, idx=layer), ours.logits(h, layer), atol=1e-5)
        for t in package.layer_translators:
            t.weight.mul_(-0.5)
    package.save(tmp_path / "package")
    loaded_back = load_published(str(tmp_path / "package"), loaded)
    assert loaded_back.source["kind"] == "folder"
    with torch.no_grad():
        for layer in range(loaded.n_layers):
            assert torch.allclose(package(h, idx=layer), loaded_back.logits(h, layer), atol=1e-5)


def _tiny_data(loaded, n_train: int = 12, n_held: int = 4, seq_len: int = 16) -> LensData:
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(3, VOCAB, (n_train + n_held, seq_len), generator=gen)
    return LensData("tiny", "0" * 64, ids[:n_train], ids[n_train:])


TINY_RECIPE = Recipe(
    name="tiny", steps=12, seq_len=16, sequences_per_step=3, micro_batch_sequences=3, checkpoint_every=4, eval_sequences=4
)


def test_training_lowers_held_out_kl_at_every_layer_before_L():
    loaded = tiny_llama()
    backend = HookBackend(loaded)
    data = _tiny_data(loaded)
    lens, record = train_lens(loaded, backend, data, TINY_RECIPE)
    assert record["tokens"] == 12 * 48 and len(record["mean_kl_per_step"]) == 12
    table = kl_table({"logit": LogitLens(loaded), "tuned": lens}, backend, data.held_out)
    before = table[table.layer < loaded.n_layers]
    assert (before.tuned_kl < before.logit_kl).all(), table
    assert table.tuned_kl.iloc[-1] == pytest.approx(0, abs=1e-5) and table.logit_kl.iloc[-1] == pytest.approx(0, abs=1e-5)


def test_training_resumes_from_its_checkpoint(tmp_path: Path):
    """Stopped after 8 of 12 steps and resumed, training ends where an uninterrupted run does."""
    loaded = tiny_llama()
    backend = HookBackend(loaded)
    data = _tiny_data(loaded)
    full, _ = train_lens(loaded, backend, data, TINY_RECIPE)
    checkpoint = tmp_path / "ckpt.pt"

    class Stop(Exception):
        pass

    calls = {"n": 0}
    original = backend.forward

    def stopping_forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 8:
            raise Stop
        return original(*args, **kwargs)

    backend.forward = stopping_forward
    with pytest.raises(Stop):
        train_lens(loaded, backend, data, TINY_RECIPE, checkpoint=checkpoint)
    backend.forward = original
    assert torch.load(checkpoint, weights_only=False)["step"] == 8
    resumed, record = train_lens(loaded, backend, data, TINY_RECIPE, checkpoint=checkpoint)
    assert len(record["mean_kl_per_step"]) == 12
    for a, b in zip(full.translators.parameters(), resumed.translators.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_missing_lens_names_the_command_and_training_caches_it(tmp_path: Path, monkeypatch):
    loaded = tiny_llama()
    loaded.tokenizer = _WordTokenizer()
    corpus = Corpus("tiny-prose", tuple(Paragraph(str(i), " ".join(f"w{(i * 7 + j) % 50}" for j in range(40))) for i in range(30)), "test")
    recipe = Recipe(name="tiny", steps=3, seq_len=16, sequences_per_step=2, eval_sequences=2)
    with pytest.raises(TunedLensMissing, match="depth-claims train-lens --model tiny-llama-0 --recipe tiny"):
        obtain_lens(loaded, HookBackend(loaded), corpus, recipe, root=tmp_path)
    lens = obtain_lens(loaded, HookBackend(loaded), corpus, recipe, train=True, root=tmp_path)
    assert lens.source["kind"] == "trained" and lens.training_record["steps"] == 3
    assert set(lens.training_record["kl_table"]) >= {"layer", "logit_kl", "tuned_kl"}
    folder = next(p for p in (tmp_path / "tiny-llama-0").iterdir() if not p.name.startswith("."))
    assert json.loads((folder / "config.json").read_text())["unembed_hash"] == unembed_hash(loaded)
    assert [p.name for p in (tmp_path / "tiny-llama-0").glob(".*")] == [f".{folder.name}.lock"], (
        "checkpoint and temporary files are removed (the training's lock file stays)"
    )
    again = obtain_lens(loaded, HookBackend(loaded), corpus, recipe, root=tmp_path)  # from the cache
    assert again.identity == lens.identity


class _WordTokenizer:
    """Maps words w0..w49 to ids 3..52 (enough for packing a corpus)."""

    eos_token_id = 2

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + int(w[1:]) for w in text.split()]}


def test_position_weights_follow_the_target_bucket():
    class Freq:
        bucket_of_id = np.array([0, 1, 2, 3, 0], dtype=np.int8)

    logits = torch.zeros(5, 5)
    logits[torch.arange(5), torch.arange(5)] = 1.0  # argmax of row i is token i
    w = position_weights(logits, Freq(), DOWNWEIGHT_FREQUENT)
    expected = [DOWNWEIGHT_FREQUENT[BUCKETS[b]] for b in Freq.bucket_of_id]
    assert w.tolist() == pytest.approx(expected)
    assert position_weights(logits, Freq(), None) is None


def test_micro_batches_accumulate_to_the_same_step():
    """A step split into one-sequence forward passes trains the same lens as one pass."""
    from dataclasses import replace

    loaded = tiny_llama()
    backend = HookBackend(loaded)
    data = _tiny_data(loaded)
    whole, _ = train_lens(loaded, backend, data, replace(TINY_RECIPE, steps=4))
    split, _ = train_lens(loaded, backend, data, replace(TINY_RECIPE, steps=4, micro_batch_sequences=1))
    for a, b in zip(whole.translators.parameters(), split.translators.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_train_lens_command_refuses_an_unknown_model(capsys):
    from harness.cli import main

    assert main(["train-lens", "--model", "no-such-model-xyz"]) == 2
    assert "Unknown model 'no-such-model-xyz'" in capsys.readouterr().err


def test_training_starts_from_given_translators_and_leaves_them_alone():
    """The KL/SGD loop can polish a given start (the closed form); the caller's translators
    are copied, not trained in place."""
    from dataclasses import replace

    loaded = tiny_llama()
    backend = HookBackend(loaded)
    data = _tiny_data(loaded)
    init = random_lens(loaded, seed=4).translators
    before = [p.detach().clone() for p in init.parameters()]
    lens, record = train_lens(loaded, backend, data, replace(TINY_RECIPE, steps=2), init=init)
    assert all(torch.equal(a, b) for a, b in zip(before, init.parameters()))
    moved = [(a - b).abs().max().item() for a, b in zip(lens.translators.parameters(), before)]
    assert 0 < max(moved) < 0.5, "two clipped steps move the start a little"
    from_zero, _ = train_lens(loaded, backend, data, replace(TINY_RECIPE, steps=2))
    assert not torch.allclose(from_zero.translators[0].weight, lens.translators[0].weight)
    assert record["tokens"] == 2 * TINY_RECIPE.tokens_per_step


def test_every_recipe_field_is_part_of_the_lens_key():
    from dataclasses import replace

    loaded = tiny_llama()
    data = _tiny_data(loaded)
    recipe = RECIPES["closed-form"]
    assert recipe.key()["training_version"] == TRAINING_VERSION >= 2
    keys = {lens_key(loaded, data, r, "standard") for r in (
        recipe, replace(recipe, ridge_scale=1e-2), replace(recipe, target="normalised"), replace(recipe, steps=4),
        replace(recipe, fit_sequences=8), replace(recipe, start="zero"), replace(recipe, fit_source="prose-pass"),
        replace(recipe, fit_max_tokens=256),
    )}
    assert len(keys) == 8
    assert lens_key(loaded, data, recipe, "standard") != lens_key(loaded, data, recipe, "downweight-frequent")


def test_train_lens_command_lists_the_recipes(capsys):
    from harness.cli import main

    with pytest.raises(SystemExit):
        main(["train-lens", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ("auto", "closed-form", "paper", "cpu-small"))
