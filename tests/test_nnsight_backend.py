"""The nnsight backend gives HookBackend's numbers, for every architecture family.

Reads (``h_0 .. h_L``, sublayers, rows and logits), edits (skips, erasures at the first
and last residual points), gradients through an edit (integrated gradients), nnsight's
local simulation of the remote path, and the NDIF API-key check.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("nnsight", reason="nnsight is not installed: pip install nnsight")

from harness.interventions.backend import HookBackend, make_backend
from harness.interventions.erasure import erase_edits
from harness.interventions.gradients import integrated_gradients
from harness.interventions.nnsight_backend import (
    API_KEY_VARS,
    NDIFKeyMissing,
    NNsightBackend,
    _block_output,
    _replace_output,
)
from harness.interventions.skip import SkipRow, skip_edit
from harness.models.adapters import adapter_for
from harness.models.loading import LoadedModel, model_from_config
from harness.models.registry import ModelSpec
from harness.trace import _pad_batch
from tests.test_adapters import ATOL, CONFIGS, PAD_ID, Case, _perturb_norms, case  # noqa: F401


def _loaded(family: str, spec: ModelSpec | None = None) -> LoadedModel:
    """The same tiny model the ``case`` fixture builds, for tests of one family."""
    model = model_from_config(CONFIGS[family](), seed=0, dtype=torch.float32)
    _perturb_norms(model, seed=1)
    return LoadedModel(
        spec=spec or ModelSpec(name=f"tiny-{family}", source="local", path="/nonexistent"),
        model=model,
        tokenizer=SimpleNamespace(pad_token_id=PAD_ID),
        adapter=adapter_for(model),
        device=torch.device("cpu"),
        dtype=torch.float32,
        revision="test",
    )


def _compose(*edit_dicts):
    """One edit per residual point, applying the given edits there in order."""
    out: dict = {}
    for edits in edit_dicts:
        for r, fn in edits.items():
            prev = out.get(r)
            out[r] = fn if prev is None else (lambda h, inp, a=prev, b=fn: b(a(h, inp), inp))
    return out


def _edits(loaded: LoadedModel, n_tokens: int) -> dict:
    """Batch row 0 clean; row 1 skips block 0, row 2 skips the last block over the first
    half of the tokens; rows 3 and 4 erase h_0 and h_L at token 1 (to a fixed vector)."""
    L = loaded.n_layers
    skips = skip_edit([SkipRow(0, n_tokens, 0), SkipRow(L - 1, n_tokens // 2, 0)], 0, n_tokens)
    d = loaded.model.config.get_text_config().hidden_size
    baseline = torch.linspace(-1.0, 1.0, (L + 1) * d).reshape(L + 1, d)
    erasures = erase_edits([(0, 1), (L, 1)], baseline, row_offset=3)
    return _compose(skips, erasures)


def _assert_records_close(a, b):
    assert len(a.resid) == len(b.resid)
    for l, (x, y) in enumerate(zip(a.resid, b.resid)):
        assert x.shape == y.shape and torch.allclose(x, y, atol=ATOL, rtol=ATOL), f"h_{l}: {(x - y).abs().max()}"
    assert a.parallel == b.parallel
    for name in ("mid", "attn_out"):
        xs, ys = getattr(a, name), getattr(b, name)
        assert (xs is None) == (ys is None), name
        for l, (x, y) in enumerate(zip(xs or [], ys or [])):
            assert torch.allclose(x, y, atol=ATOL, rtol=ATOL), f"{name}[{l}]: {(x - y).abs().max()}"


def _check_against_hook(backend: NNsightBackend, hook: HookBackend, prompts) -> None:
    """Edited forward with sublayers, a padded clean forward, and read_rows."""
    ids = list(prompts[0])
    batch = torch.tensor([ids] * 5)
    edits = _edits(hook.loaded, len(ids))
    with torch.no_grad():
        ours = backend.forward(batch, edits=edits, sublayers=True)
        theirs = hook.forward(batch, edits=edits, sublayers=True)
    _assert_records_close(ours, theirs)
    L = hook.loaded.n_layers
    for row in (1, 2, 3, 4):  # the edits really changed those rows
        assert not torch.allclose(ours.resid[L][row], ours.resid[L][0], atol=1e-3), row
    assert torch.equal(ours.resid[1][1], ours.resid[0][1])  # block 0 skipped: h_1 = h_0

    ids_pad, mask = _pad_batch(list(prompts[:3]), PAD_ID)
    with torch.no_grad():
        _assert_records_close(backend.forward(ids_pad, mask), hook.forward(ids_pad, mask))
    batch_idx, pos_idx = mask.nonzero(as_tuple=True)
    with torch.inference_mode():
        rows, logits = backend.read_rows(ids_pad, mask, batch_idx, pos_idx)
        rows_ref, logits_ref = hook.read_rows(ids_pad, mask, batch_idx, pos_idx)
    assert len(rows) == L + 1
    for l, (x, y) in enumerate(zip(rows, rows_ref)):
        assert x.shape == (len(batch_idx), y.shape[1]) and torch.allclose(x, y, atol=ATOL, rtol=ATOL), l
    assert logits.shape == logits_ref.shape and torch.allclose(logits, logits_ref, atol=ATOL, rtol=ATOL)


def test_matches_hook_backend(case: Case):  # noqa: F811  (the per-family fixture)
    backend = NNsightBackend(case.loaded)
    assert backend.identity == {"backend": "nnsight"}
    _check_against_hook(backend, HookBackend(case.loaded), case.prompts)


def test_integrated_gradients_match_hook_backend():
    """Gradients flow through an edit's leaf tensor to record.resid[-1] (gemma2: soft-cap,
    post-norms)."""
    loaded = _loaded("gemma2")
    ids = [5, 17, 42, 99, 8, 150, 23, 61, 7]
    ours = integrated_gradients(NNsightBackend(loaded), ids, answer_len=2, steps=8)
    theirs = integrated_gradients(HookBackend(loaded), ids, answer_len=2, steps=8)
    assert np.abs(theirs.values).max() > 1e-4  # not trivially zero
    np.testing.assert_allclose(ours.values, theirs.values, atol=ATOL, rtol=1e-4)
    np.testing.assert_allclose(ours.output_difference, theirs.output_difference, atol=ATOL)


def test_remote_local_simulation_matches_hook_backend():
    """remote='local': nnsight serializes the trace (edits included), deserializes it with
    local modules hidden and runs it here."""
    loaded = _loaded("llama")
    backend = make_backend("nnsight", loaded, remote="local")
    assert isinstance(backend, NNsightBackend) and backend.identity == {"backend": "nnsight"}
    prompts = [(5, 17, 42, 99, 8, 150, 23), (61, 7, 33), (12, 13, 14, 15, 16)]
    _check_against_hook(backend, HookBackend(loaded), prompts)


def test_remote_refuses_gradients():
    """Residuals come back from a remote run without a graph; say so instead of failing
    later inside torch.autograd.grad."""
    backend = NNsightBackend(_loaded("llama"), remote="local")
    with pytest.raises(NotImplementedError, match="autograd"):
        integrated_gradients(backend, [5, 17, 42, 99, 8], answer_len=2, steps=2)


def test_missing_api_key_is_a_clear_error(monkeypatch):
    for var in API_KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    loaded = _loaded("llama", ModelSpec(name="llama-tiny", source="hub", repo_id="org/llama-tiny"))
    for build in (lambda: NNsightBackend(loaded, remote=True), lambda: make_backend("nnsight", loaded, remote=True)):
        with pytest.raises(NDIFKeyMissing, match="NDIF_API_KEY") as info:
            build()
        assert isinstance(info.value, ValueError)
        assert "login.ndif.us" in str(info.value) and "NDIF_API" in str(info.value)


def test_api_key_from_env(monkeypatch):
    from nnsight.schema.config import CONFIG

    monkeypatch.setattr(CONFIG.API, "APIKEY", None)  # restored after the test
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setenv("NDIF_API", "test-key")
    loaded = _loaded("llama", ModelSpec(name="llama-tiny", source="hub", repo_id="org/llama-tiny", revision="abc"))
    backend = NNsightBackend(loaded, remote=True)  # builds the request lazily: no network here
    assert backend.identity == {"backend": "nnsight-remote"}
    assert CONFIG.API.APIKEY == "test-key"
    assert (backend.nn_model.repo_id, backend.nn_model.revision) == ("org/llama-tiny", "abc")
    # A model NDIF cannot know (local folder, GGUF) is refused up front.
    with pytest.raises(ValueError, match="hub"):
        NNsightBackend(_loaded("llama"), remote=True)
    # An untrained control would run the hub's trained weights there: refused.
    control = ModelSpec(name="llama-tiny+untrained", source="hub", repo_id="org/llama-tiny", control="untrained")
    with pytest.raises(ValueError, match="untrained control"):
        NNsightBackend(_loaded("llama", control), remote=True)


def test_wrapping_leaves_a_real_tokenizer_as_it_was():
    """nnsight's wrapper left-pads and sets a pad token on the tokenizer it is given; the
    harness's tokenizer is shared with everything else, so it must come back unchanged."""
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "a": 1}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<eos>")),
        eos_token="<eos>",
    )
    assert tokenizer.pad_token is None and tokenizer.padding_side == "right"
    loaded = _loaded("llama")
    loaded.tokenizer = tokenizer
    backend = NNsightBackend(loaded)
    assert tokenizer.pad_token is None and tokenizer.padding_side == "right"
    ids = torch.tensor([[5, 17, 42, 99], [8, 150, 23, 61]])
    with torch.no_grad():
        _assert_records_close(backend.forward(ids, sublayers=True), HookBackend(loaded).forward(ids, sublayers=True))


def test_block_output_trap():
    """A bare-tensor block output is used whole, never output[0] (= batch row 0)."""
    h = torch.randn(3, 4, 5)
    new = torch.zeros_like(h)
    assert _block_output(h) is h
    assert _block_output((h, None)) is h
    assert _replace_output(h, new) is new
    out = _replace_output((h, "cache"), new)
    assert isinstance(out, tuple) and out[0] is new and out[1] == "cache"
