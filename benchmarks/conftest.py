"""Options and shared fixtures of the benchmarks (run only when named:
``python -m pytest benchmarks/ -p no:cacheprovider --benchmark-only -s``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lens_tools as lt  # noqa: E402


def _add(parser, *args, **kwargs) -> None:
    """Add an option unless a conftest above this one (the root conftest.py may define
    --data-dir and --report-dir) already did; then that one is used."""
    try:
        parser.addoption(*args, **kwargs)
    except (ValueError, argparse.ArgumentError):  # pytest raises either, depending on where the first one was added
        pass


def pytest_addoption(parser):
    group = parser.getgroup("depth-claims benchmarks")
    _add(group, "--data-dir", action="store", default=None,
         help="reference data folder (default: $DEPTH_CLAIMS_DATA_DIR, else ../shared/data beside the repo)")
    _add(group, "--report-dir", action="store", default=None,
         help="where reports go; the benchmarks write <report-dir>/benchmarks/ (default: reports/)")
    _add(group, "--bench-prompts", action="store", type=int, default=None,
         help="paragraphs each tool is timed on (default $DEPTH_CLAIMS_BENCH_PROMPTS or 8; 64 = the whole workload)")
    _add(group, "--bench-rounds", action="store", type=int, default=None,
         help="timed rounds per tool; the best counts (default $DEPTH_CLAIMS_BENCH_ROUNDS or 2)")
    _add(group, "--bench-threads", action="store", type=int, default=None,
         help="torch intra-op threads for every tool (default $DEPTH_CLAIMS_BENCH_THREADS or all cores; run nothing else meanwhile, see benchmarks/README.md)")


def _opt(config, name: str, env: str, default):
    value = config.getoption(name, default=None)
    if value is None:
        value = os.environ.get(env)
    return default if value in (None, "") else value


@pytest.fixture(scope="session")
def bench_settings(pytestconfig) -> dict:
    data_dir = _opt(pytestconfig, "--data-dir", "DEPTH_CLAIMS_DATA_DIR", None)
    report_dir = pytestconfig.getoption("--report-dir", default=None)
    from harness.paths import default_report_dir

    return {
        "data_dir": Path(data_dir) if data_dir else lt.default_data_dir(),
        "report_dir": (Path(report_dir) if report_dir else default_report_dir()) / "benchmarks",
        "prompts": int(_opt(pytestconfig, "--bench-prompts", "DEPTH_CLAIMS_BENCH_PROMPTS", 8)),
        "rounds": int(_opt(pytestconfig, "--bench-rounds", "DEPTH_CLAIMS_BENCH_ROUNDS", 2)),
        "threads": int(_opt(pytestconfig, "--bench-threads", "DEPTH_CLAIMS_BENCH_THREADS", torch.get_num_threads())),
    }


@pytest.fixture(scope="session", autouse=True)
def _bench_threads(bench_settings):
    """Every tool and the GEMM bound run with the same intra-op thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(bench_settings["threads"])
    yield
    torch.set_num_threads(before)


def pytest_terminal_summary(terminalreporter):
    if lt.SUMMARY_LINES:
        terminalreporter.section("trace throughput")
        for line in lt.SUMMARY_LINES:
            terminalreporter.write_line(line)
