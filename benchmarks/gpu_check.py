"""The trace engine at scale on a GPU, and the default model's suite on cuda (issue 11).

    python3 -m benchmarks.gpu_check                      # on a machine with a GPU
    python3 -m benchmarks.gpu_check --skip-suite         # the engine timing only
    python3 -m benchmarks.gpu_check --config tiny --device cpu --skip-suite   # the script's own check, seconds

1. *Engine at scale.* A randomly initialised model with pythia-6.9b's config (written out
   below: no weights are downloaded), built directly on the device, is traced by
   :class:`harness.trace.TraceEngine` with the logit lens at every layer over random token
   ids (64 sequences x 512 tokens, every position read; ``tiny``: 16 x 64), at several
   batch sizes, after a warm-up, synchronised around each timing. Two reduction sets:
   ``top1`` (top-1 and the ranks of the final prediction and gold token, as
   ``test_trace_throughput.py``) and ``full`` (the engine's default: top-10, log-probs,
   KL to the final layer, entropy).
   The plain forward pass (no lens, logits at every position) is timed beside it.
   Reported: tokens/s, model FLOPs per token (:class:`FlopCount`), achieved TFLOP/s, the
   share of the GPU's bf16 dense peak (:data:`BF16_PEAK_TFLOPS`, or ``--peak-tflops``;
   null for a device not in the table) and peak memory.
2. *The default model's suite on cuda* (unless ``--skip-suite``):
   ``python3 -m pytest claims/ --device cuda --no-control --train-lens -q`` in a subprocess
   with a fresh ``DEPTH_CLAIMS_TRACE_CACHE``, reports into ``--suite-report-dir`` (so the
   CPU reports under ``reports/`` stay as they are); its wall seconds, exit status and the
   verdicts it wrote to ``<suite-report-dir>/<model>/claims.json``.

Everything goes to ``--out`` (default ``reports/benchmarks/gpu_check.json``, written
atomically) with the machine, and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch

from harness.files import write_text
from harness.lenses import LogitLens
from harness.models.adapters import adapter_for
from harness.models.loading import DTYPES, LoadedModel, resolve_device, resolve_dtype
from harness.models.registry import ModelSpec
from harness.paths import REPO_ROOT, default_report_dir
from harness.trace import ReductionSpec, TraceEngine, TraceRequest

# GPTNeoXConfig arguments. pythia-6.9b as published (EleutherAI/pythia-6.9b config.json;
# transformers 5 spells rotary_pct / rotary_emb_base as rope_parameters).
CONFIGS: dict[str, dict] = {
    "pythia-6.9b": dict(
        vocab_size=50432, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
        intermediate_size=16384, hidden_act="gelu", max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
        use_parallel_residual=True, layer_norm_eps=1e-5, initializer_range=0.02,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=False, attention_bias=True,
    ),
}
# The script's own check on a CPU (seconds): pythia-6.9b's architecture, small.
CONFIGS["tiny"] = {
    **CONFIGS["pythia-6.9b"],
    **dict(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
}
# Configs too large to build in a CPU run by accident (pythia-6.9b: 28 GB in float32).
GPU_ONLY = ("pythia-6.9b",)


@dataclass(frozen=True)
class Workload:
    """Default random-token workload of a config (each overridable on the command line)."""

    sequences: int
    seq_len: int
    batch_sizes: tuple[int, ...]


WORKLOADS: dict[str, Workload] = {
    "pythia-6.9b": Workload(sequences=64, seq_len=512, batch_sizes=(8, 16, 32)),
    "tiny": Workload(sequences=16, seq_len=64, batch_sizes=(8, 16)),
}

# bf16 dense tensor-core peaks (TFLOP/s, no sparsity), first matching pattern of the
# device name wins. H100 SXM names read "NVIDIA H100 80GB HBM3".
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"\bH100\b.*\bPCIe\b", 756.0),
    (r"\bH100\b.*\bNVL\b", 835.0),
    (r"\bH100\b", 989.0),
    (r"\bH200\b", 989.0),
    (r"\bA100\b", 312.0),
    (r"\bL4\b", 121.0),
    (r"\bRTX 4090\b", 165.0),
)

REDUCTIONS: dict[str, ReductionSpec] = {
    "top1": ReductionSpec(topk=1, logprobs=False, kl=False, entropy=False),
    "full": ReductionSpec(),
}

SUITE_ARGS = ("claims/", "--no-control", "--train-lens", "-q")


def peak_tflops(device_name: str, override: float | None = None) -> tuple[float | None, str | None]:
    """(bf16 dense peak in TFLOP/s, where it came from) for a device name; (None, None)
    for a device not in :data:`BF16_PEAK_TFLOPS` and no override."""
    if override is not None:
        if override <= 0:
            raise ValueError(f"--peak-tflops must be positive, got {override}.")
        return float(override), "--peak-tflops"
    for pattern, peak in BF16_PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return peak, f"table: {pattern}"
    return None, None


def build_config(name: str):
    from transformers import GPTNeoXConfig

    try:
        return GPTNeoXConfig(**CONFIGS[name])
    except KeyError:
        raise ValueError(f"Unknown --config {name!r}; use one of {', '.join(CONFIGS)}.") from None


def build_model(config, device: torch.device, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """The model of ``config`` with random weights, allocated directly on ``device``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval().requires_grad_(False)


@dataclass(frozen=True)
class FlopCount:
    """Model FLOPs per token (matmuls only; norms, softmax, argmax and rank counts are
    left out). ``attention``: QK^T and AV under a causal mask, 2 x 2 x d x T/2 per layer.
    ``unembedding``: one [d] x [d, V] product; the engine does L + 1 of them per token
    (the lens at rows 0..L-1 and the model's own head at row L), the forward pass one."""

    non_embedding_params: int
    seq_len: int
    n_layers: int
    hidden: int
    vocab: int

    @property
    def weights(self) -> int:
        return 2 * self.non_embedding_params

    @property
    def attention(self) -> int:
        return 2 * self.n_layers * self.seq_len * self.hidden

    @property
    def unembedding(self) -> int:
        return 2 * self.hidden * self.vocab

    @property
    def forward(self) -> int:
        """The plain forward pass with its head at every position."""
        return self.weights + self.attention + self.unembedding

    @property
    def engine(self) -> int:
        """Forward pass plus the lens at every layer: 2N + 2 L T d + 2 d V (L + 1)."""
        return self.weights + self.attention + self.unembedding * (self.n_layers + 1)

    def record(self) -> dict:
        return asdict(self) | {"weights": self.weights, "attention": self.attention, "unembedding": self.unembedding,
                               "forward": self.forward, "engine": self.engine}


def non_embedding_params(model: torch.nn.Module) -> int:
    """All parameters but the input embedding and the unembedding (counted once if tied)."""
    embeddings = {id(m.weight): m.weight.numel() for m in (model.get_input_embeddings(), model.get_output_embeddings())}
    return sum(p.numel() for p in model.parameters()) - sum(embeddings.values())


def flop_count(model: torch.nn.Module, seq_len: int) -> FlopCount:
    cfg = model.config
    return FlopCount(non_embedding_params=non_embedding_params(model), seq_len=seq_len, n_layers=cfg.num_hidden_layers,
                     hidden=cfg.hidden_size, vocab=model.get_output_embeddings().weight.shape[0])


def loaded_model(model: torch.nn.Module, name: str, device: torch.device, dtype: torch.dtype, seed: int) -> LoadedModel:
    return LoadedModel(
        spec=ModelSpec(name=f"random-{name}", source="local", path="/nonexistent", description="random weights, gpu_check"),
        model=model,
        tokenizer=SimpleNamespace(pad_token_id=0),
        adapter=adapter_for(model),
        device=device,
        dtype=dtype,
        revision=f"random-seed{seed}",
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    what: str  # "engine" or "forward"
    reductions: str | None  # a REDUCTIONS key for the engine
    batch_size: int
    tokens: int
    seconds: list[float]  # every timed round
    flops_per_token: int
    peak_tflops: float | None
    peak_memory_gib: float | None

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.best

    @property
    def tflops(self) -> float:
        return self.flops_per_token * self.tokens_per_s / 1e12

    @property
    def share_of_peak(self) -> float | None:
        return None if self.peak_tflops is None else self.tflops / self.peak_tflops

    def record(self) -> dict:
        out = asdict(self)
        del out["peak_tflops"]
        return out | {"best_s": self.best, "tokens_per_s": self.tokens_per_s, "tflops": self.tflops,
                      "share_of_peak": self.share_of_peak}


def time_it(fn: Callable[[], object], warm_up: Callable[[], object], device: torch.device, rounds: int) -> tuple[list[float], float | None]:
    """Seconds of each of ``rounds`` calls of ``fn`` after one ``warm_up`` (synchronised on
    a GPU), and the peak memory in GiB over the timed rounds (None off a GPU)."""
    warm_up()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(rounds):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        seconds.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return seconds, peak


def engine_run(loaded: LoadedModel, ids: torch.Tensor, batch_size: int, spec: ReductionSpec, chunk_bytes: int | None) -> Callable[[], object]:
    """One engine trace of ``ids`` (every position, logit lens, no cache)."""
    request = TraceRequest.build("gpu-check", ids.tolist(), positions="all")
    lens = LogitLens(loaded)

    def run():
        engine = TraceEngine(loaded, cache=None, batch_size=batch_size, progress=False)
        if chunk_bytes is not None:
            engine.chunk_bytes = chunk_bytes
        return engine.trace(request, lens, spec)

    return run


def forward_run(model: torch.nn.Module, ids: torch.Tensor, batch_size: int, device: torch.device) -> Callable[[], object]:
    """The plain forward pass over ``ids`` in batches, logits at every position."""

    @torch.inference_mode()
    def run():
        for start in range(0, ids.shape[0], batch_size):
            model(input_ids=ids[start : start + batch_size].to(device), use_cache=False)

    return run


# ----------------------------------------------------------------------------- the suite


def read_verdicts(report_dir: Path, since: datetime) -> list[dict]:
    """Verdicts of records in ``<report_dir>/*/claims.json`` whose run started at or after
    ``since`` (older records of the same folder are left out)."""
    out = []
    for path in sorted(Path(report_dir).glob("*/claims.json")):
        for r in json.loads(path.read_text()):
            prov = r.get("provenance") or {}
            started = prov.get("run_started_at")
            if started is None or datetime.fromisoformat(started) < since:
                continue
            stat = r.get("statistic")
            where = r["dataset"] if r["lens"] == "none" else f"{r['lens']} lens · {r['dataset']}"
            numbers = "" if stat is None else f": {stat:.3f} (95% CI {r['ci_low']:.3f} to {r['ci_high']:.3f}, n={r['n']})"
            out.append({
                "claim": r["claim"], "model": r["model"], "lens": r["lens"], "dataset": r["dataset"],
                "label": r["label"], "statistic": stat, "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high"), "n": r.get("n"),
                "device": prov.get("device"), "dtype": prov.get("dtype"),
                "line": f"{r['claim']} [{r['model']} · {where}] {r['label']}{numbers}",
            })
    return out


def run_suite(device: str, report_dir: Path) -> dict:
    """``pytest claims/`` on ``device`` in a subprocess with a fresh trace cache; its
    output is passed through and its last lines kept."""
    cmd = [sys.executable, "-m", "pytest", *SUITE_ARGS, "--device", device, "--report-dir", str(report_dir)]
    since = datetime.now(timezone.utc).replace(microsecond=0)
    tail: deque[str] = deque(maxlen=40)
    print("$ " + " ".join(cmd), flush=True)
    with tempfile.TemporaryDirectory(prefix="depth-claims-traces-") as cache:
        env = dict(os.environ, DEPTH_CLAIMS_TRACE_CACHE=cache)
        t0 = time.perf_counter()
        with subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:
                print(line, end="", flush=True)
                tail.append(line.rstrip("\n"))
            returncode = proc.wait()
        wall = time.perf_counter() - t0
    return {
        "command": " ".join(["python3", "-m", "pytest", *SUITE_ARGS, "--device", device, "--report-dir", str(report_dir)]),
        "trace_cache": "fresh temporary folder",
        "wall_s": wall,
        "exit_status": returncode,
        "report_dir": str(report_dir),
        "verdicts": read_verdicts(report_dir, since),
        "output_tail": list(tail),
    }


# ----------------------------------------------------------------------------- report


def machine(device: torch.device) -> dict:
    import transformers

    info = {
        "device": str(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": props.name,
            "gpu_count": torch.cuda.device_count(),
            "gpu_memory_gib": props.total_memory / 2**30,
            "compute_capability": f"{props.major}.{props.minor}",
            "cudnn": torch.backends.cudnn.version(),
        }
    return info


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def table(result: dict) -> str:
    peak = result["peak_tflops"]
    rows = [
        f"{result['config']['name']} ({result['settings']['dtype']}, {result['machine'].get('gpu', result['machine']['device'])}): "
        f"{result['settings']['sequences']} x {result['settings']['seq_len']} tokens; "
        f"FLOPs/token engine {result['flops_per_token']['engine'] / 1e9:.4g} G, forward {result['flops_per_token']['forward'] / 1e9:.4g} G; "
        f"bf16 peak {'unknown' if peak is None else f'{peak:g} TFLOP/s'}",
        "",
        "| run | reductions | batch | tokens/s | TFLOP/s | share of bf16 peak | peak memory GiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["runs"]:
        share = "n/a" if r["share_of_peak"] is None else f"{100 * r['share_of_peak']:.1f} %"
        mem = "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f}"
        rows.append(f"| {r['what']} | {r['reductions'] or '-'} | {r['batch_size']} | {r['tokens_per_s']:,.0f} | "
                    f"{r['tflops']:.3g} | {share} | {mem} |")
    suite = result.get("suite")
    if suite is not None:
        rows += ["", f"suite on {result['settings']['device']}: exit status {suite['exit_status']}, {suite['wall_s']:.0f} s "
                     f"(`{suite['command']}`)", ""]
        rows += [f"- {v['line']}" for v in suite["verdicts"]] or ["- (no verdicts written)"]
    return "\n".join(rows)


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, e.g. 8,16,32; got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, e.g. 8,16,32; got {text!r}")
    return values


def _reductions(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [n for n in names if n not in REDUCTIONS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"unknown reductions {bad or text!r}; use a comma-separated subset of {', '.join(REDUCTIONS)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (cuda when torch sees one; default)")
    ap.add_argument("--config", default="pythia-6.9b", choices=list(CONFIGS), help="model config (random weights; default pythia-6.9b)")
    ap.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="auto: bfloat16 on a GPU, float32 on a CPU")
    ap.add_argument("--sequences", type=int, default=None, help="random sequences traced per timing (default: 64 for pythia-6.9b, 16 for tiny)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: 512 for pythia-6.9b, 64 for tiny)")
    ap.add_argument("--batch-sizes", type=_positive_ints, default=None, help="engine batch sizes (default: 8,16,32 for pythia-6.9b, 8,16 for tiny)")
    ap.add_argument("--reductions", type=_reductions, default=list(REDUCTIONS), help=f"engine reduction sets: {', '.join(REDUCTIONS)} (default both)")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds per setting after one warm-up; the best counts (default 2)")
    ap.add_argument("--chunk-mb", type=int, default=None, help="engine chunk of float32 full-vocabulary work, MiB (default: the engine's)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 dense peak, TFLOP/s (default: from the built-in table)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=default_report_dir() / "benchmarks" / "gpu_check.json")
    ap.add_argument("--skip-suite", action="store_true", help="do not run the default model's claims suite")
    ap.add_argument("--suite-report-dir", type=Path, default=default_report_dir() / "benchmarks" / "gpu_suite",
                    help="--report-dir of the suite run (default reports/benchmarks/gpu_suite, apart from the CPU reports)")
    args = ap.parse_args(argv)
    preset = WORKLOADS[args.config]
    args.sequences = preset.sequences if args.sequences is None else args.sequences
    args.seq_len = preset.seq_len if args.seq_len is None else args.seq_len
    args.batch_sizes = list(preset.batch_sizes) if args.batch_sizes is None else args.batch_sizes
    for name in ("sequences", "seq_len", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.chunk_mb is not None and args.chunk_mb < 1:
        ap.error(f"--chunk-mb must be at least 1, got {args.chunk_mb}.")
    limit = CONFIGS[args.config]["max_position_embeddings"]
    if args.seq_len > limit:
        ap.error(f"--seq-len {args.seq_len} is longer than {args.config}'s {limit} positions.")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
    except RuntimeError as err:  # --device cuda without a CUDA device
        raise SystemExit(str(err)) from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if args.config in GPU_ONLY and device.type != "cuda":
        raise SystemExit(f"--config {args.config} is meant for a GPU (its random weights alone take 14 GB in bf16); "
                         f"torch sees no CUDA device here. Use --config tiny --device cpu to check the script on a CPU.")
    dtype = resolve_dtype(args.dtype, device)
    peak, peak_source = peak_tflops(device_name(device), args.peak_tflops)

    t0 = time.perf_counter()
    config = build_config(args.config)
    model = build_model(config, device, dtype, args.seed)
    _sync(device)
    build_s = time.perf_counter() - t0
    loaded = loaded_model(model, args.config, device, dtype, args.seed)
    weights_gib = torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None
    flops = flop_count(model, args.seq_len)
    gen = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, flops.vocab, (args.sequences, args.seq_len), generator=gen)
    tokens = ids.numel()
    chunk_bytes = None if args.chunk_mb is None else args.chunk_mb << 20

    timings: list[Timing] = []
    for batch in args.batch_sizes:
        for name in args.reductions:
            spec = REDUCTIONS[name]
            seconds, mem = time_it(engine_run(loaded, ids, batch, spec, chunk_bytes),
                                   engine_run(loaded, ids[:batch], batch, spec, chunk_bytes), device, args.rounds)
            timings.append(Timing("engine", name, batch, tokens, seconds, flops.engine, peak, mem))
        seconds, mem = time_it(forward_run(model, ids, batch, device), forward_run(model, ids[:batch], batch, device),
                               device, args.rounds)
        timings.append(Timing("forward", None, batch, tokens, seconds, flops.forward, peak, mem))
    chunk_rows = max(1, (chunk_bytes or TraceEngine.chunk_bytes) // (flops.vocab * 4))
    del loaded, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the suite's process needs the memory

    result = {
        "config": {"name": args.config, "architecture": "GPTNeoXForCausalLM", **CONFIGS[args.config]},
        "settings": {"device": str(device), "dtype": str(dtype).removeprefix("torch."), "sequences": args.sequences,
                     "seq_len": args.seq_len, "tokens": tokens, "batch_sizes": args.batch_sizes, "reductions": args.reductions,
                     "rounds": args.rounds, "chunk_rows": chunk_rows, "seed": args.seed, "positions": "all", "lens": "logit"},
        "build_s": build_s,
        "weights_gib": weights_gib,
        "flops_per_token": flops.record(),
        "peak_tflops": peak,
        "peak_source": peak_source,
        "runs": [t.record() for t in timings],
        "suite": None if args.skip_suite else run_suite(device.type, args.suite_report_dir),
        "machine": machine(device),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    suite = main()["suite"]
    raise SystemExit(0 if suite is None or suite["exit_status"] == 0 else 1)
