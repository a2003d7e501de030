"""pytest plugin used by ``benchmarks/suite_time.py``: per test, wall seconds and how many
forward passes the model ran; per run, the seconds spent obtaining self-trained tuned lenses.

Loaded with ``-p benchmarks.suite_plugin``; writes JSON to ``$DEPTH_CLAIMS_SUITE_RECORD``.
It counts forward passes with a pre-hook on each session's model (every call of the model,
traces and interventions alike) and times ``ModelSession.trained_lens`` (fitting a missing
self-trained lens, or reading it from the cache).
"""

from __future__ import annotations

import json
import os
import time

import pytest

import harness.session as _session
from harness.files import write_text

_FORWARDS = {"n": 0}
_LENS_SECONDS = {"s": 0.0}
_RECORDS: list[dict] = []


def _count(*_args) -> None:
    _FORWARDS["n"] += 1


_original_init = _session.ModelSession.__init__
_original_fit = _session.ModelSession.trained_lens


def _init(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    self.loaded.model.register_forward_pre_hook(_count)


def _fit(self, *args, **kwargs):
    started = time.perf_counter()
    try:
        return _original_fit(self, *args, **kwargs)
    finally:
        _LENS_SECONDS["s"] += time.perf_counter() - started


_session.ModelSession.__init__ = _init
_session.ModelSession.trained_lens = _fit


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    started, forwards, lens = time.perf_counter(), _FORWARDS["n"], _LENS_SECONDS["s"]
    yield
    _RECORDS.append({
        "test": item.nodeid,
        "seconds": round(time.perf_counter() - started, 2),
        "forward_passes": _FORWARDS["n"] - forwards,
        "lens_seconds": round(_LENS_SECONDS["s"] - lens, 2),
    })


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("DEPTH_CLAIMS_SUITE_RECORD")
    if out:
        write_text(out, json.dumps({"tests": _RECORDS, "lens_seconds": round(_LENS_SECONDS["s"], 2),
                                         "exitstatus": int(exitstatus)}, indent=1))
