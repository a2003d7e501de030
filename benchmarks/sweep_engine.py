"""Sweep TraceEngine settings (dtype, batch_size, chunk_bytes) on a few paragraphs.

    python benchmarks/sweep_engine.py --prompts 4 --repeats 2
    python benchmarks/sweep_engine.py --dtypes bfloat16 --prompts 1 --batch-sizes 1 --chunk-mb 128

Prints tokens/s per setting (best of ``--repeats``) and writes
``reports/benchmarks/engine_sweep.json``. The throughput benchmark uses the best
setting found here as its default (see ENGINE_DEFAULTS in test_trace_throughput.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import lens_tools as lt  # noqa: E402
from harness.models import DEFAULT_MODEL, load_model, resolve  # noqa: E402
from harness.paths import default_report_dir  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=lt.default_data_dir())
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--batch-sizes", default="1,4")
    ap.add_argument("--chunk-mb", default="16,32,64,128,256")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--bf16-prompts", type=int, default=1, help="bf16 is ~5x slower on CPUs without bf16 units")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("DEPTH_CLAIMS_BENCH_THREADS", "1")),
                    help="torch intra-op threads (default 1: see README, 'Threads')")
    ap.add_argument("--out", type=Path, default=default_report_dir() / "benchmarks" / "engine_sweep.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    reference = None
    for dtype in args.dtypes.split(","):
        loaded = load_model(resolve(DEFAULT_MODEL), device="cpu", dtype=dtype)
        ids = lt.paragraph_ids(args.data_dir, loaded.tokenizer, n_prompts=max(args.prompts, args.bf16_prompts))
        n = args.prompts if dtype == "float32" else args.bf16_prompts
        sub = ids[:n]
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            for mb in (int(c) for c in args.chunk_mb.split(",")):
                best, res = float("inf"), None
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    res = lt.run_engine(loaded, sub, batch_size=bs, chunk_bytes=mb << 20)
                    best = min(best, time.perf_counter() - t0)
                row = {
                    "threads": args.threads,
                    "dtype": dtype,
                    "batch_size": bs,
                    "chunk_mb": mb,
                    "chunk_rows": (mb << 20) // (loaded.vocab_size * 4),
                    "prompts": n,
                    "tokens": int(sub.size),
                    "seconds": best,
                    "tokens_per_s": sub.size / best,
                }
                if reference is None and dtype == "float32":
                    reference = res
                if reference is not None:
                    row["vs_first_fp32"] = lt.compare(reference, res)
                rows.append(row)
                print(
                    f"{dtype:9s} batch {bs:2d} chunk {mb:4d} MB ({row['chunk_rows']:4d} rows): "
                    f"{row['tokens_per_s']:6.1f} tok/s  ({best:.1f} s for {sub.size} tokens)",
                    flush=True,
                )
    best = max(rows, key=lambda r: r["tokens_per_s"])
    print(f"best: {best['dtype']} batch {best['batch_size']} chunk {best['chunk_mb']} MB -> {best['tokens_per_s']:.1f} tok/s")
    lt.atomic_write_json(args.out, {"runs": rows, "best": best, "machine": lt.machine_info()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
