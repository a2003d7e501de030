"""The whole claims suite's cost: per claim, cold and warm seconds and forward passes.

    python3 -m benchmarks.suite_time                 # the README's claims command, cold then warm
    python3 -m benchmarks.suite_time -- -k gtr1      # extra pytest arguments after --

*Cold*: a fresh ``DEPTH_CLAIMS_HOME`` (so the default model is dequantised again and the
tuned lenses are fitted) and an empty trace cache; *warm*: the same command again on the
same folders. Each run is ``python3 -m pytest claims/ --train-lens`` in its own process
with ``benchmarks/suite_plugin.py``, which records every test's wall seconds and model
forward passes, and the seconds spent fitting lenses. Writes
``reports/benchmarks/suite_time.json`` (with the machine) and prints a markdown table.
Run it alone: two torch processes on this 2-core machine slow each other badly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.files import write_text

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def run_claims(home: Path, cache: Path, reports: Path, record: Path, extra: list[str]) -> dict:
    env = {**os.environ, "DEPTH_CLAIMS_HOME": str(home), "DEPTH_CLAIMS_TRACE_CACHE": str(cache),
           "DEPTH_CLAIMS_SUITE_RECORD": str(record), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "pytest", "claims/", "--train-lens", "--report-dir", str(reports),
           "-p", "benchmarks.suite_plugin", "-q", *extra]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if not record.is_file():
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"pytest wrote no record (exit {proc.returncode})")
    data = json.loads(record.read_text())
    record.unlink()
    data["wall_seconds"] = round(seconds, 1)
    data["exit_code"] = proc.returncode
    data["summary"] = next((line for line in reversed(proc.stdout.splitlines()) if re.search(r"\d+ (passed|failed)", line)), "")
    return data


def claim_of(test: str) -> str:
    """``claims/test_x.py::test_gtr1_early_guesses[smollm2-logit]`` -> ``test_gtr1_early_guesses[smollm2-logit]``."""
    return test.split("::", 1)[-1]


def table(cold: dict, warm: dict) -> str:
    warm_by = {t["test"]: t for t in warm["tests"]}
    lines = ["| test | cold s | warm s | cold forward passes | warm forward passes |", "| --- | --- | --- | --- | --- |"]
    for t in sorted(cold["tests"], key=lambda t: -t["seconds"]):
        w = warm_by.get(t["test"], {})
        lines.append(f"| {claim_of(t['test'])} | {t['seconds']:.1f} | {w.get('seconds', float('nan')):.1f} | "
                     f"{t['forward_passes']} | {w.get('forward_passes', '-')} |")
    lines.append(f"| **whole command** (wall, incl. start-up) | **{cold['wall_seconds']:.0f}** | **{warm['wall_seconds']:.0f}** | "
                 f"{sum(t['forward_passes'] for t in cold['tests'])} | {sum(t['forward_passes'] for t in warm['tests'])} |")
    lines.append(f"| of which fitting the tuned lenses | {cold['lens_seconds']:.1f} | {warm['lens_seconds']:.1f} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks" / "suite_time.json")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    parser.add_argument("--work-dir", type=Path, help="keep the home, trace cache and reports here (must not exist; "
                        "default: a temporary folder, deleted afterwards)")
    args = parser.parse_args(argv)
    if args.work_dir is not None and args.work_dir.exists():
        raise SystemExit(f"--work-dir {args.work_dir} exists: the cold run needs empty folders; name a new one.")
    with (contextlib.nullcontext(str(args.work_dir)) if args.work_dir else tempfile.TemporaryDirectory(prefix="suite-time-")) as tmp:
        tmp = Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        home, cache, reports = tmp / "home", tmp / "traces", tmp / "reports"
        print("cold run (fresh home and trace cache) ...", flush=True)
        cold = run_claims(home, cache, reports, tmp / "cold.json", args.pytest_args)
        print(f"  {cold['wall_seconds']} s: {cold['summary']}", flush=True)
        print("warm run (same folders) ...", flush=True)
        warm = run_claims(home, cache, reports, tmp / "warm.json", args.pytest_args)
        print(f"  {warm['wall_seconds']} s: {warm['summary']}", flush=True)
    result = {"machine": machine(), "command": "python3 -m pytest claims/ --train-lens", "extra_args": args.pytest_args,
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cold": cold, "warm": warm}
    write_text(args.out, json.dumps(result, indent=1))
    print(table(cold, warm))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
