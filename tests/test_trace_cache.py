"""The trace cache: a second identical request runs no forward pass; corrupt or partial
entries are recomputed; two processes sharing a cache do not corrupt it."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from harness.cache import TraceCache
from harness.lenses import LogitLens
from harness.trace import ReductionSpec, TraceEngine, TraceRequest
from tests.tiny import prompts, tiny_llama

SPEC = ReductionSpec(topk=3, token_sets=(("low", tuple(range(10))),))


def _request(name="tiny"):
    return TraceRequest.build(name, prompts(), positions="all")


@pytest.fixture(scope="module")
def loaded():
    return tiny_llama()


def _engine(loaded, root: Path) -> TraceEngine:
    return TraceEngine(loaded, cache=TraceCache(root), batch_size=4, progress=False)


def _same(a, b):
    assert a.arrays().keys() == b.arrays().keys()
    for k, v in a.arrays().items():
        np.testing.assert_array_equal(v, b.arrays()[k], err_msg=k)


def test_second_identical_request_runs_no_forward_pass(loaded, tmp_path):
    engine = _engine(loaded, tmp_path)
    first = engine.trace(_request(), LogitLens(loaded), SPEC)
    passes = engine.stats.forward_passes
    assert passes > 0
    second = _engine(loaded, tmp_path)  # a fresh engine, as in a second pytest run
    again = second.trace(_request(), LogitLens(loaded), SPEC)
    assert second.stats.forward_passes == 0 and second.stats.cache_hits == 1
    _same(first, again)


def test_anything_the_result_depends_on_changes_the_key(loaded, tmp_path):
    engine = _engine(loaded, tmp_path)
    engine.trace(_request(), LogitLens(loaded), SPEC)
    before = engine.stats.forward_passes
    engine.trace(_request(), LogitLens(loaded), ReductionSpec(topk=5))  # other reductions
    after_spec = engine.stats.forward_passes
    assert after_spec > before
    last = TraceRequest.build("tiny", prompts(), positions="last")  # other positions
    engine.trace(last, LogitLens(loaded), SPEC)
    assert engine.stats.forward_passes > after_spec


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip_byte"])
def test_a_damaged_entry_is_detected_and_recomputed(loaded, tmp_path, damage):
    engine = _engine(loaded, tmp_path)
    first = engine.trace(_request(), LogitLens(loaded), SPEC)
    path = engine.cache.path(engine.cache_key(_request(), LogitLens(loaded), SPEC))
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not an npz")
    else:  # a flipped byte inside an array: only the digest can tell
        pos = data.index(b"top1.npy") + 200
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :])
    fresh = _engine(loaded, tmp_path)
    again = fresh.trace(_request(), LogitLens(loaded), SPEC)
    assert fresh.stats.forward_passes > 0
    _same(first, again)
    assert fresh.cache.get(fresh.cache_key(_request(), LogitLens(loaded), SPEC)) is not None


def test_no_temporary_files_are_left_behind(loaded, tmp_path):
    _engine(loaded, tmp_path).trace(_request(), LogitLens(loaded), SPEC)
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix not in (".npz", ".lock")]
    assert leftovers == []


def _trace_in_child(root: str, queue) -> None:
    loaded = tiny_llama()
    engine = TraceEngine(loaded, cache=TraceCache(root), batch_size=2, progress=False)
    trace = engine.trace(_request(), LogitLens(loaded), SPEC)
    queue.put((engine.stats.forward_passes, int(trace.top1.sum())))


def test_two_processes_sharing_a_cache_compute_once_and_agree(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_trace_in_child, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    passes = sorted(r[0] for r in results)
    assert passes[0] == 0 and passes[1] > 0, "the second process should have waited and read the entry"
    assert results[0][1] == results[1][1]
    assert len(list(tmp_path.rglob("*.npz"))) == 1
