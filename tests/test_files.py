"""One way to write a file (harness/files.py): nothing half-written is ever left behind,
read-modify-write updates shared by processes lose nothing, and a tuned lens two
processes ask for at once is trained once."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.files import atomic_dir, atomic_path, file_lock, lock_path, write_bytes, write_text


class Boom(RuntimeError):
    pass


# --------------------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("existing", [None, "old contents\n"])
def test_a_failed_block_leaves_no_temporary_file_and_no_partial_target(tmp_path: Path, existing):
    target = tmp_path / "out" / "table.csv"
    if existing is not None:
        write_text(target, existing)
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp != target and tmp.suffix == ".csv"
            tmp.write_text("half of a ")
            raise Boom
    assert sorted(p.name for p in target.parent.iterdir()) == ([] if existing is None else ["table.csv"])
    if existing is not None:
        assert target.read_text() == existing  # the old file, untouched


def test_a_successful_write_replaces_the_target_and_leaves_nothing_else(tmp_path: Path):
    target = tmp_path / "claims.json"
    write_text(target, "[]\n")
    write_bytes(target, b"[1]\n")
    assert target.read_bytes() == b"[1]\n"
    assert [p.name for p in tmp_path.iterdir()] == ["claims.json"]
    assert target.stat().st_mode & 0o644 == 0o644  # the mode a plain open() gives, not mkstemp's 0600


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path: Path):
    target = tmp_path / "lens"
    with pytest.raises(Boom):
        with atomic_dir(target) as tmp:
            (tmp / "params.pt").write_bytes(b"x")
            raise Boom
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("first")
    # another process built it first (named by what it holds): ours is discarded
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("second")
    assert (target / "config.json").read_text() == "first"
    # replace=True: ours takes its place
    with atomic_dir(target, replace=True) as tmp:
        (tmp / "config.json").write_text("third")
    assert (target / "config.json").read_text() == "third"
    assert [p.name for p in tmp_path.iterdir()] == ["lens"]


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path):
    target = tmp_path / "snapshot_checks.json"
    with file_lock(target):
        with file_lock(target):
            write_text(target, "[]")
    assert lock_path(target) == tmp_path / ".snapshot_checks.json.lock"


# --------------------------------------------------------------------------- snapshot_checks.json

RECORDS_PER_PROCESS = 40


def _append_checks(path: str, who: str, start, done) -> None:
    from claims.snapshot_fixture import _record
    from harness.snapshots.store import SnapshotCheck

    start.wait()
    for i in range(RECORDS_PER_PROCESS):
        result = SimpleNamespace(claim=SimpleNamespace(id=f"{who}-{i}", version=1), model="tiny", lens="logit", dataset="d")
        _record(Path(path), False, result, SnapshotCheck("matched", Path(path), f"{who} {i}"))
    done.put(who)


def test_two_processes_adding_snapshot_checks_lose_no_record(tmp_path: Path):
    path = tmp_path / "tiny" / "snapshot_checks.json"
    ctx = mp.get_context("spawn")
    start, done = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_append_checks, args=(str(path), who, start, done)) for who in ("a", "b")]
    for p in procs:
        p.start()
    finished = sorted(done.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert finished == ["a", "b"]
    claims = sorted(r["claim"] for r in json.loads(path.read_text()))
    assert claims == sorted(f"{who}-{i}" for who in "ab" for i in range(RECORDS_PER_PROCESS))
    assert sorted(p.name for p in path.parent.iterdir()) == [".snapshot_checks.json.lock", "snapshot_checks.json"]


# --------------------------------------------------------------------------- one tuned lens, trained once


class _WordTokenizer:
    """Maps words w0..w49 to ids 3..52, as in tests/test_tuned_lens.py."""

    eos_token_id = 2

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + int(w[1:]) for w in text.split()]}


def _obtain_lens_in_child(root: str, start, out) -> None:
    import torch

    import harness.lens_training as lt
    from harness.backends.hooks import HookBackend
    from harness.data.prose import Corpus, Paragraph
    from tests.tiny import tiny_llama

    torch.set_num_threads(1)
    loaded = tiny_llama()
    loaded.tokenizer = _WordTokenizer()
    corpus = Corpus("tiny-prose", tuple(Paragraph(str(i), " ".join(f"w{(i * 7 + j) % 50}" for j in range(40))) for i in range(30)), "test")
    # the closed-form recipe of tests/test_lens_fit.py (CLOSED), measured on fewer sequences
    recipe = lt.Recipe(name="tiny-closed", steps=0, seq_len=16, sequences_per_step=3, micro_batch_sequences=3,
                       eval_sequences=2, start="closed-form", fit_batch_sequences=16)
    fits = []
    fit_lens = lt.fit_lens

    def counted_fit(*args, **kwargs):
        fits.append(1)
        time.sleep(1.5)  # keep the lens missing while the other process arrives
        return fit_lens(*args, **kwargs)

    lt.fit_lens = counted_fit
    folder = lt.lens_folder(loaded, lt.pack_corpus(corpus, loaded.tokenizer, recipe.seq_len), recipe, "standard", Path(root))
    start.wait()
    existed = (folder / "config.json").is_file()
    lens = lt.obtain_lens(loaded, HookBackend(loaded), corpus, recipe, train=True, root=Path(root))
    params = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in lens.translators.parameters())).hexdigest()
    out.put({"fits": len(fits), "existed_before": existed, "params": params, "identity": lens.identity})


def test_two_processes_asking_for_the_same_lens_train_it_once(tmp_path: Path):
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_obtain_lens_in_child, args=(str(tmp_path), start, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert not any(r["existed_before"] for r in results), "both processes asked before the lens existed"
    assert sorted(r["fits"] for r in results) == [0, 1], "one process trained, the other waited and read its lens"
    assert results[0]["params"] == results[1]["params"] and results[0]["identity"] == results[1]["identity"]
    lenses = [p for p in (tmp_path / "tiny-llama-0").iterdir() if not p.name.startswith(".")]
    assert len(lenses) == 1 and (lenses[0] / "config.json").is_file()
