"""Seconds of the layer-skip, residual-erasure and integrated-gradients measurements before
and after edited rows started from the recorded clean residual
(``harness/interventions/reuse.py``), in one cold process on the default model, with
torch's default threads.

The old code is read from a folder holding the old modules as a package ``old_iv``
(``skip.py``, ``erasure.py``, ``gradients.py`` from an earlier commit, with their
``harness.interventions.skip/erasure`` imports pointed at ``old_iv``)::

    mkdir -p /tmp/old_interventions/old_iv && touch /tmp/old_interventions/old_iv/__init__.py
    for f in skip erasure gradients; do
        git show f0b9d6c:harness/interventions/$f.py > /tmp/old_interventions/old_iv/$f.py; done
    sed -i 's/harness.interventions.skip import/old_iv.skip import/; s/harness.interventions.erasure import/old_iv.erasure import/' \\
        /tmp/old_interventions/old_iv/*.py
    python3 benchmarks/interventions_reuse.py --old /tmp/old_interventions

Old and new run one after the other per measurement at the old sizes (and their results
are compared), then the new code at the new sizes (``Sizes()``). Per run: seconds,
forward passes, and token-row block runs (rows x tokens x blocks actually computed).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch

from harness.interventions.measurements import Sizes
from harness.data.math import load_problems
from harness.interventions.backend import HookBackend
from harness.interventions.measurements import DepthMeasurements
from harness.models import DEFAULT_MODEL, load_model, resolve

OLD_SIZES = Sizes(skip=4, skip_positions=4, maps=4, gradient_maps=4, ig_steps=16)


class Counter:
    """Forward passes through the backend and block runs that compute (a replayed block
    does not call its attention)."""

    def __init__(self, backend: HookBackend):
        self.forwards = self.block_tokens = 0
        original = backend.forward

        def forward(*args, **kwargs):
            self.forwards += 1
            return original(*args, **kwargs)

        backend.forward = forward
        adapter, model = backend.loaded.adapter, backend.loaded.model
        for block in adapter.blocks_of(model):
            adapter.attention_of(block).register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, _m, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        self.block_tokens += h.shape[0] * h.shape[1]

    def reset(self):
        self.forwards = self.block_tokens = 0


def depth(backend, sizes: Sizes) -> DepthMeasurements:
    session = SimpleNamespace(config=SimpleNamespace(max_examples=None, data_dir=None), loaded=backend.loaded,
                              backend=backend, cache=None, name=backend.loaded.spec.name, problems=load_problems(None))
    d = DepthMeasurements(session)
    d.sizes = sizes
    return d


def old_measure(name: str, d: DepthMeasurements, old) -> dict[str, np.ndarray]:
    """The measurement loops of the old ``measurements.py`` with the old modules."""
    backend = d.session.backend
    if name == "skips":
        out = {"future_map": [], "all_map": [], "future_output": [], "all_output": []}
        for i, ids in enumerate(d.problem_ids(d.sizes.skip)):
            positions = old.skip.future_positions(len(ids), np.random.default_rng(i), d.sizes.skip_positions)
            future, everywhere = old.skip.skip_effects(backend, ids, positions), old.skip.skip_effects(backend, ids, [None])
            out["future_map"].append(future.future)
            out["future_output"].append(future.output)
            out["all_map"].append(everywhere.future)
            out["all_output"].append(everywhere.output)
        return {k: np.stack(v) for k, v in out.items()}
    if name == "erasure":
        base = old.erasure.mean_residuals(backend, d.problem_ids(d.sizes.baseline_prompts))
        return {"effect": d._padded([old.erasure.erasure_map(backend, ids, p.answer_len, base) for ids, p in d.map_prompts])}
    results = [old.gradients.integrated_gradients(backend, ids, p.answer_len, d.sizes.ig_steps)
               for ids, p in d.map_prompts[: d.sizes.gradient_maps]]
    return {"attribution": d._padded([r.values for r in results]),
            "completeness_error": np.stack([r.completeness_error for r in results])}


def timed(counter: Counter, run) -> tuple[dict, float]:
    counter.reset()
    started = time.perf_counter()
    out = run()
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="folder holding the old modules as package old_iv (skip the old runs without)")
    parser.add_argument("--only", default="skips,erasure,gradients")
    parser.add_argument("--no-new-sizes", action="store_true")
    args = parser.parse_args()
    old = None
    if args.old:
        sys.path.insert(0, args.old)
        import old_iv.erasure
        import old_iv.gradients
        import old_iv.skip

        old = SimpleNamespace(skip=old_iv.skip, erasure=old_iv.erasure, gradients=old_iv.gradients)
    backend = HookBackend(load_model(resolve(DEFAULT_MODEL), device="cpu", dtype="float32"))
    counter = Counter(backend)
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}", flush=True)
    rows = []

    def report(measure, sizes, code, seconds):
        load = os.getloadavg()[0]
        rows.append((measure, sizes, code, seconds, counter.forwards, counter.block_tokens, load))
        print(f"| {measure} | {sizes} | {code} | {seconds:.0f} | {counter.forwards} | {counter.block_tokens / 1e6:.2f}M "
              f"| {load:.1f} |", flush=True)

    def describe(name, s: Sizes):
        return {"skips": f"{s.skip} problems x {s.skip_positions} t", "erasure": f"{s.maps} sums",
                "gradients": f"{s.gradient_maps} sums x {s.ig_steps} steps"}[name]

    print("| measurement | sizes | code | seconds | forward passes | token-row block runs | load |", flush=True)
    for name in args.only.split(","):
        d = depth(backend, OLD_SIZES)
        if old is not None:
            before, seconds = timed(counter, lambda: old_measure(name, d, old))
            report(name, describe(name, OLD_SIZES), "old", seconds)
        after, seconds = timed(counter, getattr(d, name))
        report(name, describe(name, OLD_SIZES), "new", seconds)
        if old is not None:
            diffs = {k: float(np.nanmax(np.abs(before[k] - after[k]))) for k in before}
            print(f"  old vs new, max |difference|: {diffs}", flush=True)
    if not args.no_new_sizes:
        for name in args.only.split(","):
            d = depth(backend, Sizes())
            _, seconds = timed(counter, getattr(d, name))
            report(name, describe(name, Sizes()), "new", seconds)
    print(dataclasses.asdict(Sizes()))


if __name__ == "__main__":
    main()
