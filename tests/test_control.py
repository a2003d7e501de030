"""The untrained control (``<model>+untrained``): really untrained, the same shape, and
every claim runs on it, on tiny models of every architecture family (no download)."""

from __future__ import annotations

import pytest
import torch

from harness.claims.base import NOT_SPECIFIC, ClaimResult, ControlOutcome
from harness.models import load_model, resolve
from harness.models.loading import model_from_config
from harness.models.registry import CONTROL_SEED, UnknownModel, control_of
from harness.stats import Estimate
from tests.snapshot_claims import SNAPSHOT_CLAIMS, claim_results
from tests.test_adapters import CONFIGS, VOCAB

IGNORED_CONFIG_KEYS = {"_name_or_path", "transformers_version", "dtype", "torch_dtype"}


def _word_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB)}
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0")),
        eos_token="w2", bos_token="w1", pad_token="w0",
    )


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def checkpoint(request, tmp_path_factory):
    """A save_pretrained() folder per family: seed 5 with every parameter (biases and
    norms included) moved off its initial value stands in for trained weights."""
    folder = tmp_path_factory.mktemp(request.param)
    model = model_from_config(CONFIGS[request.param](), seed=5)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(folder)
    _word_tokenizer().save_pretrained(folder)
    return folder


def _config(model) -> dict:
    return {k: v for k, v in model.config.to_dict().items() if k not in IGNORED_CONFIG_KEYS}


def test_the_control_is_untrained_with_the_models_config(checkpoint):
    trained = load_model(resolve(str(checkpoint)), device="cpu", dtype="float32")
    control = load_model(resolve(control_of(str(checkpoint))), device="cpu", dtype="float32")
    assert control.spec.control == "untrained" and control.spec.name == control_of(trained.spec.name)
    assert _config(control.model) == _config(trained.model)
    assert control.revision == f"{trained.revision}+untrained-seed{CONTROL_SEED}"
    assert control.identity != trained.identity  # cache keys and reports never mix the two
    ours, theirs = dict(control.model.named_parameters()), dict(trained.model.named_parameters())
    assert ours.keys() == theirs.keys()
    for name, p in ours.items():
        assert p.shape == theirs[name].shape, name
        assert not torch.equal(p, theirs[name]), f"{name} has the trained weights"
    # the model's own initialisation under the control seed: the same weights every time
    fresh = model_from_config(trained.model.config, seed=CONTROL_SEED)
    for name, p in fresh.named_parameters():
        assert torch.equal(p, ours[name]), name
    if getattr(trained.model.config, "tie_word_embeddings", False):
        assert control.model.get_output_embeddings().weight is control.model.get_input_embeddings().weight


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_the_cached_control_weights_equal_a_fresh_draw(family, tmp_path, monkeypatch):
    """The first load draws the control's weights and stores them; the second reads them
    back: both equal model_from_config under the control seed in every parameter and
    buffer, and tied embeddings stay tied."""
    from harness.models.loading import untrained_control

    monkeypatch.setenv("DEPTH_CLAIMS_HOME", str(tmp_path))
    config = CONFIGS[family]()
    fresh = model_from_config(config, seed=CONTROL_SEED)
    drawn = untrained_control(config, torch.float32)
    assert len(list((tmp_path / "models" / "controls").glob("*.safetensors"))) == 1
    torch.manual_seed(123)  # reading back must not depend on the global random state
    read = untrained_control(config, torch.float32)
    expected = {**fresh.state_dict(), **dict(fresh.named_buffers())}
    for model in (drawn, read):
        got = {**model.state_dict(), **dict(model.named_buffers())}
        assert got.keys() == expected.keys()
        for name, tensor in expected.items():
            assert torch.equal(got[name], tensor), f"{family}: {name}"
        if getattr(config, "tie_word_embeddings", False):
            assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert not read.training and not any(p.requires_grad for p in read.parameters())


def test_every_snapshot_claim_runs_on_the_control(checkpoint):
    control = load_model(resolve(control_of(str(checkpoint))), device="cpu", dtype="float32")
    results = claim_results(control)
    assert set(results) == set(SNAPSHOT_CLAIMS)
    for result, table in results.values():
        assert result.model == control.spec.name and len(table) > 0
        assert result.verdict in ("replicated", "contradicted", "inconclusive", None)


def test_control_names():
    assert resolve("gpt2+untrained").repo_id == "openai-community/gpt2"
    assert resolve("gpt2+untrained").tuned_lens is None  # a published lens belongs to the trained weights
    with pytest.raises(UnknownModel, match="control of a control"):
        resolve("gpt2+untrained+untrained")


def _result(verdict_low: float, control_low: float | None) -> ClaimResult:
    from harness.claims.gtr import GTR_1

    interval = lambda low: Estimate(low + 0.05, low, low + 0.1, 100, 100)  # noqa: E731
    control = None
    if control_low is not None:  # the control's own result, judged like any other
        control = ControlOutcome.of(ClaimResult(GTR_1, "m+untrained", "logit", "d", interval(control_low)))
    return ClaimResult(GTR_1, "m", "logit", "d", interval(verdict_low), control=control)


def test_a_claim_that_replicates_on_the_control_too_is_not_specific():
    assert _result(0.3, 0.3).label == NOT_SPECIFIC  # GTR-1: > 0.2 on both
    assert _result(0.3, 0.0).label == "replicated"  # the control does not show it
    assert _result(0.3, None).label == "replicated"  # no control run: nothing to say
    assert _result(0.0, 0.3).label == "contradicted"  # the label only qualifies a replication
    record = _result(0.3, 0.3).record()
    assert record["label"] == NOT_SPECIFIC and record["verdict"] == "replicated"
    assert record["control"]["verdict"] == "replicated" and record["control"]["model"] == "m+untrained"
    assert "NOT SPECIFIC" in _result(0.3, 0.3).summary()
