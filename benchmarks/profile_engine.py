"""Where TraceEngine's time goes: torch.profiler over one engine trace.

    python benchmarks/profile_engine.py --prompts 2 --batch-size 4 --chunk-mb 32

The model's forward, the lens (final norm + unembedding) and the reductions are wrapped
in ``record_function`` labels from outside the harness (monkeypatched wrappers, nothing
in harness/ changes); every profiled op's self time is attributed to the innermost label
it runs under, and split by op within each label, so the table answers
"forward vs lens matmul vs argmax vs rank comparison". Writes
``reports/benchmarks/engine_profile.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

import harness.trace as trace_mod  # noqa: E402
import lens_tools as lt  # noqa: E402
from harness.lenses import LogitLens  # noqa: E402
from harness.models import DEFAULT_MODEL, load_model, resolve  # noqa: E402
from harness.paths import default_report_dir  # noqa: E402

LABELS = ("forward", "lens", "reduce")


def _labelled(fn, label):
    def wrapper(*args, **kwargs):
        with record_function(label):
            return fn(*args, **kwargs)

    return wrapper


def categorise(label: str, op: str) -> str:
    if label == "forward":
        return "forward pass (whole model, incl. its own head)"
    if label == "lens":
        return "lens matmul (unembedding GEMM)" if op in {"aten::mm", "aten::addmm", "aten::matmul", "aten::linear"} else "lens final norm"
    if label == "reduce":
        if op in {"aten::argmax", "aten::max"}:
            return "argmax (top-1)"
        if op == "aten::gt":
            return "rank: compare (logits > target)"
        if op in {"aten::sum", "aten::copy_", "aten::to", "aten::_to_copy"}:
            return "rank: count (sum of the bool mask; widened to int64 first in harness code)"
        if op in {"aten::add", "aten::stack", "aten::gather", "aten::cat", "aten::empty", "aten::slice", "aten::select"}:
            return "rank: gather / stack / +1"
        return "reduce, other"
    return "engine bookkeeping (capture index, stack, cat, numpy, ...)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=lt.default_data_dir())
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--chunk-mb", type=int, default=128)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads (default: all cores, as the benchmark)")
    ap.add_argument("--out", type=Path, default=default_report_dir() / "benchmarks" / "engine_profile.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    loaded = load_model(resolve(DEFAULT_MODEL), device="cpu", dtype=args.dtype)
    ids = lt.paragraph_ids(args.data_dir, loaded.tokenizer, n_prompts=args.prompts)
    lt.run_engine(loaded, ids[:1], batch_size=1, chunk_bytes=args.chunk_mb << 20)  # warm-up

    # Label the three stages from outside the harness.
    model = loaded.model
    orig_forward, orig_logits, orig_reduce = model.forward, LogitLens.logits, trace_mod.reduce_logits
    model.forward = _labelled(orig_forward, "forward")
    LogitLens.logits = _labelled(orig_logits, "lens")
    trace_mod.reduce_logits = _labelled(orig_reduce, "reduce")
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            lt.run_engine(loaded, ids, batch_size=args.batch_size, chunk_bytes=args.chunk_mb << 20)
            wall = time.perf_counter() - t0
    finally:
        model.forward = orig_forward
        LogitLens.logits = orig_logits
        trace_mod.reduce_logits = orig_reduce

    by_cat: dict[str, float] = defaultdict(float)
    by_op: dict[tuple[str, str], float] = defaultdict(float)
    for ev in prof.events():
        if ev.name in LABELS or ev.name.startswith("ProfilerStep"):
            continue
        label, parent = "", ev.cpu_parent
        while parent is not None:
            if parent.name in LABELS:
                label = parent.name
                break
            parent = parent.cpu_parent
        us = ev.self_cpu_time_total
        by_cat[categorise(label, ev.name)] += us
        by_op[(label or "other", ev.name)] += us
    profiled = sum(by_cat.values()) / 1e6
    tokens = int(ids.size)
    print(f"engine {args.dtype}, {args.threads} thread(s), batch {args.batch_size}, chunk {args.chunk_mb} MB, {tokens} tokens: "
          f"{wall:.2f} s wall under the profiler ({tokens / wall:.1f} tok/s); ops account for {profiled:.2f} s")
    cats = sorted(by_cat.items(), key=lambda kv: -kv[1])
    for cat, us in cats:
        print(f"  {cat:58s} {us / 1e6:7.2f} s  {100 * us / 1e6 / wall:5.1f} %")
    print("  top ops:")
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:15]
    for (label, op), us in top:
        print(f"    {label:8s} {op:32s} {us / 1e6:7.3f} s")
    python_overhead = wall - profiled
    print(f"  {'python / unprofiled':58s} {python_overhead:7.2f} s  {100 * python_overhead / wall:5.1f} %")
    lt.atomic_write_json(args.out, {
        "settings": vars(args) | {"data_dir": str(args.data_dir), "out": str(args.out)},
        "tokens": tokens,
        "wall_s": wall,
        "breakdown_s": {cat: us / 1e6 for cat, us in cats} | {"python / unprofiled": python_overhead},
        "top_ops_s": [{"label": label, "op": op, "s": us / 1e6} for (label, op), us in top],
        "machine": lt.machine_info(),
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
