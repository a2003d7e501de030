"""Shared prefixes in ``HookBackend.read_rows`` (harness/interventions/shared_prefix.py)
give the numbers of the plain pass.

The shared and the plain pass run different kernels on differently shaped tensors
(a batch-1 prefix pass, then the suffixes on its KV cache), so they agree to float
rounding, not bit for bit: residuals and logits are compared with ``allclose`` at
ATOL = RTOL = 1e-4 (float32; the largest difference seen on the tiny models is 2e-5 on
residuals of norm ~10-100, on the default model 1e-4 on logits of size ~20), and the
decisions that claims read (top-1, ranks) must be identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.interventions import shared_prefix
from harness.interventions.backend import HookBackend
from harness.interventions.shared_prefix import common_prefix, prefix_batches
from harness.trace import _pad_batch
from tests.test_adapters import PAD_ID, VOCAB, case  # noqa: F401  (the per-family fixture)

ATOL = RTOL = 1e-4
# The tiny models' prompts are short; a 4-token threshold lets them share.
TINY_MIN_SHARED = 4
PREFIX = 12  # longer than the sliding window (4) of the Mistral and Gemma-2/3 cases


def _backends(loaded, **kw):
    plain = HookBackend(loaded)
    plain.share_prefix = False
    shared = HookBackend(loaded)
    shared.min_shared_tokens = TINY_MIN_SHARED
    for k, v in kw.items():
        setattr(shared, k, v)
    return plain, shared


def _tokens(gen, n):
    return torch.randint(3, VOCAB, (n,), generator=gen).tolist()


def _read(backend, seqs, reads=None):
    """read_rows on the padded batch; ``reads``: (row, position) pairs, default every real token."""
    ids, mask = _pad_batch([tuple(s) for s in seqs], PAD_ID)
    if reads is None:
        batch_idx, pos_idx = mask.nonzero(as_tuple=True)
    else:
        batch_idx = torch.tensor([b for b, _ in reads])
        pos_idx = torch.tensor([p for _, p in reads])
    with torch.inference_mode():
        return backend.read_rows(ids, mask, batch_idx, pos_idx)


def _assert_same(a, b):
    (ca, la), (cb, lb) = a, b
    assert len(ca) == len(cb)
    for r, (x, y) in enumerate(zip(ca, cb)):
        assert x.shape == y.shape
        assert torch.allclose(x, y, atol=ATOL, rtol=RTOL), f"h_{r}: max diff {(x - y).abs().max():.2e}"
    assert la.shape == lb.shape
    assert torch.allclose(la, lb, atol=ATOL, rtol=RTOL), f"logits: max diff {(la - lb).abs().max():.2e}"
    assert torch.equal(la.argmax(-1), lb.argmax(-1))


def test_shared_prefix_equals_the_plain_pass_on_every_family(case):  # noqa: F811
    """Every real token read (positions inside the prefix too), suffixes of different
    lengths (right padding), a prefix longer than the sliding window."""
    gen = torch.Generator().manual_seed(11)
    prefix = _tokens(gen, PREFIX)
    seqs = [prefix + _tokens(gen, n) for n in (1, 6, 3, 9)]
    plain, shared = _backends(case.loaded)
    _assert_same(_read(shared, seqs), _read(plain, seqs))
    stats = shared.prefix_stats()
    assert stats["shared_batches"] == 1 and stats["prefix_passes"] == 1
    assert stats["forward_tokens"] < stats["plain_tokens"]


def test_stored_prefix_serves_later_batches_and_is_extended(case):  # noqa: F811
    """Batch 2 reuses batch 1's prefix as it is; batch 3 shares only its first tokens and
    extends them; batch 4 reads inside a prefix that was stored without residuals."""
    gen = torch.Generator().manual_seed(12)
    prefix = _tokens(gen, PREFIX)
    last = lambda seqs: [(b, len(s) - 1) for b, s in enumerate(seqs)]  # noqa: E731
    plain, shared = _backends(case.loaded)
    batch1 = [prefix + _tokens(gen, n) for n in (5, 2, 7)]
    batch2 = [prefix + _tokens(gen, n) for n in (3, 8)]
    branch = prefix[:8] + _tokens(gen, 6)  # shares 8 tokens with the stored prefix, then 6 more
    batch3 = [branch + _tokens(gen, n) for n in (2, 4, 1)]
    batch4 = [prefix + _tokens(gen, n) for n in (4, 2)]
    reads4 = [(0, 3), (0, 10), (0, 15), (1, 0), (1, PREFIX + 1)]
    for seqs, reads in ((batch1, last(batch1)), (batch2, last(batch2)), (batch3, last(batch3)), (batch4, reads4)):
        _assert_same(_read(shared, seqs, reads), _read(plain, seqs, reads))
    stats = shared.prefix_stats()
    assert stats["shared_batches"] == 4
    # batch 1 runs the prefix, batch 2 reuses it, batch 3 extends its first 8 tokens,
    # batch 4 runs it again with residuals (the stored one has none).
    assert stats["prefix_passes"] == 3 and stats["prefix_reused"] == 1
    assert stats["prefix_tokens"] == PREFIX + 6 + PREFIX


def test_no_common_prefix_runs_the_plain_pass(case):  # noqa: F811
    gen = torch.Generator().manual_seed(13)
    seqs = [_tokens(gen, n) for n in (9, 4, 7)]
    seqs[1][0] = seqs[0][0] + 1 if seqs[0][0] + 1 < VOCAB else 3  # rows differ from the first token
    plain, shared = _backends(case.loaded)
    _assert_same(_read(shared, seqs), _read(plain, seqs))
    stats = shared.prefix_stats()
    assert stats["shared_batches"] == 0 and stats["forward_tokens"] == stats["plain_tokens"]


def test_identical_rows_and_a_single_row():
    """Rows equal to each other share all but their last token; a batch of one row runs
    plain unless a stored prefix serves it."""
    from tests.tiny import tiny_llama

    loaded = tiny_llama()
    gen = torch.Generator().manual_seed(14)
    row = [3 + t % 90 for t in _tokens(gen, 20)]
    plain, shared = _backends(loaded)
    _assert_same(_read(shared, [row, row, row]), _read(plain, [row, row, row]))
    assert shared.prefix_stats()["shared_batches"] == 1
    fresh_plain, fresh = _backends(loaded)
    _assert_same(_read(fresh, [row]), _read(fresh_plain, [row]))
    assert fresh.prefix_stats()["shared_batches"] == 0
    _assert_same(_read(shared, [row[:15] + [5, 6]]), _read(plain, [row[:15] + [5, 6]]))  # stored prefix, 1 row
    assert shared.prefix_stats()["shared_batches"] == 2


def test_changed_weights_empty_the_store():
    from tests.tiny import tiny_llama

    loaded = tiny_llama(seed=1)
    gen = torch.Generator().manual_seed(15)
    prefix = [3 + t % 90 for t in _tokens(gen, 10)]
    seqs = [prefix + [4, 5], prefix + [6]]
    plain, shared = _backends(loaded)
    _read(shared, seqs)
    with torch.no_grad():
        loaded.model.lm_head.weight.mul_(1.5)
        next(iter(loaded.adapter.blocks_of(loaded.model).parameters())).add_(0.1)
    _assert_same(_read(shared, seqs), _read(plain, seqs))
    assert shared.prefix_stats()["prefix_passes"] == 2


def test_gradients_and_left_padding_run_the_plain_pass():
    from tests.tiny import tiny_llama

    loaded = tiny_llama()
    plain, shared = _backends(loaded)
    seqs = [[7] * 10 + [8, 9], [7] * 10 + [5]]
    ids, mask = _pad_batch([tuple(s) for s in seqs], PAD_ID)
    b, p = mask.nonzero(as_tuple=True)
    shared.read_rows(ids, mask, b, p)  # grad mode: no sharing
    left = torch.stack([mask[1].roll(1), mask[0]])
    with torch.inference_mode():
        shared.read_rows(ids, left, b, p)  # not right-padded: no sharing
    assert shared.prefix_stats()["shared_batches"] == 0


def test_memory_bound_evicts_oldest_prefixes():
    from tests.tiny import tiny_llama

    loaded = tiny_llama()
    plain, shared = _backends(loaded)
    gen = torch.Generator().manual_seed(16)
    prefixes = [[3 + t % 90 for t in _tokens(gen, 10)] for _ in range(4)]
    _read(shared, [prefixes[0] + [4], prefixes[0] + [5, 6]])
    one = shared_prefix.store_of(shared).nbytes
    shared.prefix_cache_bytes = 2 * one
    for pre in prefixes[1:]:
        _read(shared, [pre + [4], pre + [5, 6]])
    store = shared_prefix.store_of(shared)
    assert len(store.entries) == 2 and store.nbytes <= 2 * one
    assert [e.tokens.tolist() for e in store.entries.values()] == prefixes[2:]


def test_common_prefix_stops_before_the_shortest_rows_last_token():
    ids, mask = _pad_batch([(5, 6, 7, 8), (5, 6, 7), (5, 6, 9, 9, 9)], PAD_ID)
    assert common_prefix(ids, mask.sum(1)) == 2
    ids, mask = _pad_batch([(5, 6, 7), (5, 6, 7, 8)], PAD_ID)
    assert common_prefix(ids, mask.sum(1)) == 2


def test_batches_group_prompts_that_share_a_prefix():
    gen = torch.Generator().manual_seed(17)
    demos = {task: _tokens(gen, 40) for task in "abc"}
    prompts, task_of = [], []
    for k in range(30):
        task = "abc"[k % 3]
        prompts.append(tuple(demos[task] + _tokens(gen, int(torch.randint(3, 12, (1,), generator=gen)))))
        task_of.append(task)
    loose = [tuple(_tokens(gen, n)) for n in (5, 9, 9, 2)]
    all_prompts = prompts + loose
    batches = prefix_batches(all_prompts, 4, min_shared=32)
    assert sorted(i for b in batches for i in b) == list(range(len(all_prompts)))
    assert all(len(b) <= 4 for b in batches)
    for b in batches:
        tasks = {task_of[i] if i < len(prompts) else "loose" for i in b}
        assert len(tasks) == 1, b  # a batch never mixes tasks, nor tasks and loose prompts
        lengths = [len(all_prompts[i]) for i in b]
        assert lengths == sorted(lengths, reverse=True)  # longest first within a group
    assert sum(len(b) for b in batches if b[0] >= len(prompts)) == 4


def test_batches_without_shared_prefixes_are_todays_batches():
    gen = torch.Generator().manual_seed(18)
    prompts = [tuple(_tokens(gen, int(n))) for n in torch.randint(2, 60, (37,), generator=gen)]
    old = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    assert prefix_batches(prompts, 8) == [old[i : i + 8] for i in range(0, len(old), 8)]


def test_nested_groups_split_by_their_own_demonstrations():
    """A system prompt shared by two tasks, each with its own demonstrations: the tasks
    are batched apart (each batch shares system prompt + demonstrations)."""
    gen = torch.Generator().manual_seed(19)
    system = _tokens(gen, 40)
    demos = [_tokens(gen, 50), _tokens(gen, 50)]
    prompts = [tuple(system + demos[k % 2] + _tokens(gen, 5 + k % 4)) for k in range(12)]
    for b in prefix_batches(prompts, 8, min_shared=32):
        assert len({i % 2 for i in b}) == 1


@pytest.mark.slow
def test_gtr5_trace_equals_the_plain_computation():
    """GTR-5 on the default model, a few prompts per task: shared prefixes (and the
    grouped batch order) give the plain pass's decisions and log-probs."""
    from harness.claims import gtr
    from harness.data.choices import load_choice_tasks
    from harness.lenses import LogitLens
    from harness.models import DEFAULT_MODEL, ModelFileMissing, load_model, loading, resolve
    from harness.trace import TraceEngine

    try:
        loading.gguf_path(resolve(DEFAULT_MODEL))
    except ModelFileMissing as err:
        pytest.skip(str(err))
    loaded = load_model(resolve(DEFAULT_MODEL), device="cpu", dtype="float32")
    tasks, name = load_choice_tasks(None)
    rows = gtr.choice_request(tasks, loaded.tokenizer, name, max_examples=6)
    plain_backend = HookBackend(loaded)
    plain_backend.share_prefix = False
    shared_backend = HookBackend(loaded)
    lens = LogitLens(loaded)
    plain = TraceEngine(loaded, backend=plain_backend, progress=False).trace(rows.request, lens, gtr.CHOICE_REDUCTIONS)
    shared = TraceEngine(loaded, backend=shared_backend, progress=False).trace(rows.request, lens, gtr.CHOICE_REDUCTIONS)
    stats = shared_backend.prefix_stats()
    assert stats["shared_batches"] == stats["batches"] == 3  # one batch of 2 per task
    assert stats["forward_tokens"] < 0.7 * stats["plain_tokens"]
    for field in ("example", "position", "final_id", "top1", "final_rank", "gold_rank", "option_rank"):
        np.testing.assert_array_equal(getattr(shared, field), getattr(plain, field), err_msg=field)
    for field in ("final_logprob", "option_logprob"):
        np.testing.assert_allclose(getattr(shared, field), getattr(plain, field), atol=ATOL, rtol=RTOL, err_msg=field)
    result, _ = gtr.gtr5_shortlist_then_decide(shared, rows, loaded.spec.name, "logit")
    reference, _ = gtr.gtr5_shortlist_then_decide(plain, rows, loaded.spec.name, "logit")
    assert result.estimate.value == reference.estimate.value
