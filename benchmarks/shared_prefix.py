"""The multiple-choice trace (few-shot prompts with a fixed option set) with and without shared
prefixes (issue 11, item 3), in one process.

    python3 benchmarks/shared_prefix.py                                  # embedded choices
    python3 benchmarks/shared_prefix.py --data-dir ../shared/data --max-examples 100
    python3 benchmarks/shared_prefix.py --threads 1 --modes plain-old,shared

Modes, each a fresh HookBackend and TraceEngine (no trace cache), logit lens,
``gtr.CHOICE_REDUCTIONS``:

- ``plain-old``: the plain pass with the batch order before this change (longest first);
  what the multiple-choice trace cost before;
- ``plain``: the plain pass with the grouped batch order (``shared_prefix.prefix_batches``);
- ``shared``: shared prefixes (the default now).

Prints seconds (whole trace, and inside ``read_rows``), forward calls and forward token
positions (padding included), and how each mode's decisions and log-probs compare with the
first mode's. ``--overhead`` also times forward calls of a few shapes; ``--threshold`` one batch of 8
rows, plain vs shared, for shared prefixes of 4-128 tokens (what ``MIN_SHARED_TOKENS``
weighs); ``--modes ''`` skips the traces.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from harness.claims import gtr
from harness.data.choices import load_choice_tasks
from harness.interventions.backend import HookBackend
from harness.lenses import LogitLens
from harness.models import DEFAULT_MODEL, load_model, resolve
from harness.trace import TraceEngine

MODES = ("plain-old", "plain", "shared")


def _old_batches(engine: TraceEngine):
    def batches(request):
        order = sorted(range(len(request.token_ids)), key=lambda i: -len(request.token_ids[i]))
        return [order[i : i + engine.batch_size] for i in range(0, len(order), engine.batch_size)]

    return batches


def run_mode(loaded, rows, mode: str, batch_size: int):
    backend = HookBackend(loaded)
    backend.share_prefix = mode == "shared"
    engine = TraceEngine(loaded, backend=backend, batch_size=batch_size, progress=False)
    if mode == "plain-old":
        engine._batches = _old_batches(engine)
    inside = [0.0]
    read_rows = backend.read_rows

    def timed(*args):
        t = time.perf_counter()
        try:
            return read_rows(*args)
        finally:
            inside[0] += time.perf_counter() - t

    backend.read_rows = timed
    t0 = time.perf_counter()
    trace = engine.trace(rows.request, LogitLens(loaded), gtr.CHOICE_REDUCTIONS)
    seconds = time.perf_counter() - t0
    return trace, seconds, inside[0], backend.prefix_stats()


def compare(trace, ref) -> str:
    bad = {f: int((getattr(trace, f) != getattr(ref, f)).sum()) for f in ("top1", "final_rank", "option_rank")}
    diff = np.nanmax(np.abs(trace.option_logprob - ref.option_logprob))
    same = "identical" if not any(bad.values()) else ", ".join(f"{k} {v} differ" for k, v in bad.items() if v)
    return f"decisions {same}; option log-prob max |diff| {diff:.1e}"


def overhead(loaded) -> None:
    model = loaded.model
    for b, t in ((1, 1), (1, 32), (1, 200), (8, 1), (8, 40), (8, 220)):
        ids = torch.randint(100, 1000, (b, t))
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
            start = time.perf_counter()
            for _ in range(3):
                model(input_ids=ids, use_cache=False, logits_to_keep=1)
        dt = (time.perf_counter() - start) / 3
        print(f"forward [{b}, {t}]: {dt * 1000:.0f} ms ({dt / (b * t) * 1000:.2f} ms/token)")


def threshold(loaded, reps: int = 3) -> None:
    """read_rows on a batch of 8 rows (a shared prefix of P tokens, then 40 tokens each,
    last position read), plain vs shared (a fresh store each time: the prefix pass counts)."""
    from harness.trace import _pad_batch

    gen = torch.Generator().manual_seed(0)
    for p in (4, 8, 16, 32, 64, 128):
        prefix = torch.randint(100, 1000, (p,), generator=gen).tolist()
        seqs = [tuple(prefix + torch.randint(100, 1000, (40,), generator=gen).tolist()) for _ in range(8)]
        ids, mask = _pad_batch(seqs, 0)
        b, pos = torch.arange(8), mask.sum(1) - 1
        best = {}
        for share in (False, True):
            times = []
            for _ in range(reps):
                backend = HookBackend(loaded)
                backend.share_prefix, backend.min_shared_tokens = share, 1
                with torch.inference_mode():
                    t = time.perf_counter()
                    backend.read_rows(ids, mask, b, pos)
                    times.append(time.perf_counter() - t)
            best[share] = min(times)
        print(f"P = {p:3d}: plain {best[False] * 1000:6.0f} ms, shared {best[True] * 1000:6.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None, help="holds paper_downstream/ (default: embedded choices)")
    ap.add_argument("--max-examples", type=int, default=None, help="cap on prompts, split evenly over the tasks")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--overhead", action="store_true", help="also time forward calls of a few shapes")
    ap.add_argument("--threshold", action="store_true", help="also time one batch, plain vs shared, by prefix length")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(resolve(DEFAULT_MODEL), device="cpu", dtype="float32")
    tasks, name = load_choice_tasks(args.data_dir)
    rows = gtr.choice_request(tasks, loaded.tokenizer, name, args.max_examples)
    ids = rows.request.token_ids
    print(f"{name}: {len(ids)} prompts, {sum(map(len, ids))} tokens; torch threads {torch.get_num_threads()}")
    if args.overhead:
        overhead(loaded)
    if args.threshold:
        threshold(loaded)
    if not args.modes:
        return
    lines = ["| mode | trace s | read_rows s | forward calls | forward tokens | prefix passes / tokens | vs first mode |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    ref = None
    for mode in args.modes.split(","):
        trace, seconds, inside, stats = run_mode(loaded, rows, mode, args.batch_size)
        versus = "reference" if ref is None else compare(trace, ref)
        ref = trace if ref is None else ref
        line = (f"| {mode} | {seconds:.1f} | {inside:.1f} | {stats['forward_calls']} | {stats['forward_tokens']} "
                f"| {stats['prefix_passes']} / {stats['prefix_tokens']} | {versus} |")
        print(line, flush=True)
        lines.append(line)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
