"""How much snapshotted claim numbers move between runs (the basis of Claim.tolerances).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/snapshot_variation.py [--families gpt2,llama]

Computes the snapshot claims of ``tests/snapshot_claims.py`` on the tiny random model of
every architecture family under several variants and prints, per variant, claim and
field group, the largest absolute and relative difference to the baseline (float32, one
thread, batch size 8):

- ``repeat``: the same computation again (determinism);
- ``threads2``: two intra-op threads instead of one (another summation order);
- ``batch1``: batch size 1 for the engine traces (no padding, other kernel shapes);
- ``float64``: the model in float64, batch size 1, against float32 at batch size 1 (how
  far float32 rounding moves the numbers; at batch size 1 because tiny-gemma2 in float64
  with padded batches ties soft-capped logits in transformers' eager attention path,
  which float32, the dtype of every CPU run, does not);
- ``bfloat16``: the model in bfloat16 (a change of numerics far beyond rounding noise:
  what a tolerance must *not* hide on a float32 CPU run).

``--default-model`` measures the same on the embedded default model (SmolLM2-135M, one
load per dtype): the early-guess claims (Gupta et al. 2025, Figs. 2 and 3) on 150 prose
prefixes, the layer-contribution claims (Csordás et al. 2025, Fig. 2) on 8 problems and the
second-half refinement claim (Fig. 4) on 4 problems, float32 and bfloat16 (bfloat16 on a CPU
standing in for a GPU run), each under another batch size (8 vs 3) and thread count (1 vs 2),
and bfloat16 vs float32.

The bootstrap is checked on its own: the same inputs give the same intervals (fixed seed).
Numbers are JSON-rounded as in the snapshots (8 significant digits).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.snapshots.values import snapshot_value
from harness.stats import bootstrap_mean
from tests.snapshot_claims import FAMILIES, claim_results, tiny_model

VARIANTS = ("repeat", "threads2", "batch1", "float64", "bfloat16")
REL_FLOOR = 1e-3  # relative differences are taken over numbers at least this large


def values(family: str, dtype=torch.float32, threads: int = 1, batch_size: int = 8) -> dict[str, dict]:
    torch.set_num_threads(threads)
    try:
        results = claim_results(tiny_model(family, dtype), batch_size=batch_size)
    finally:
        torch.set_num_threads(1)
    return {cid: snapshot_value(r, t) for cid, (r, t) in results.items()}


def group_of(curve: str) -> str:
    """Field group of a curve: its value column and first group ("mean/cosine")."""
    parts = curve.split("/")
    return "/".join(parts[:2]) if parts[0] in ("mean", "value", "layer") else parts[0]


def numbers(v: dict) -> dict[tuple[str, str], float]:
    """(field group, exact field) -> number, over every number of a snapshot value."""
    out = {}
    for key in ("statistic", "ci_low", "ci_high", "n"):
        out[(key, key)] = v[key]
    for name, x in v["subchecks"].items():
        out[("subchecks", name)] = x
    for name, c in v["curves"].items():
        for i, x in enumerate(c["values"]):
            out[(group_of(name), f"{name}[{i}]")] = x
    return out


def diffs(a: dict, b: dict) -> dict[str, tuple[float, float, int]]:
    """Per field group: (max |diff|, max relative diff, number of changed values)."""
    out: dict[str, list] = defaultdict(lambda: [0.0, 0.0, 0])
    na, nb = numbers(a), numbers(b)
    for key in na.keys() & nb.keys():
        x, y = na[key], nb[key]
        x = float("nan") if x is None else float(x)
        y = float("nan") if y is None else float(y)
        g = out[key[0]]
        if math.isnan(x) and math.isnan(y):
            continue
        if math.isnan(x) or math.isnan(y):  # a value appeared or vanished
            g[0] = g[1] = float("inf")
            g[2] += 1
            continue
        d = abs(x - y)
        if d > 0:
            g[0] = max(g[0], d)
            if abs(x) >= REL_FLOOR:  # relative differences of numbers near 0 say nothing
                g[1] = max(g[1], d / abs(x))
            g[2] += 1
    return {k: tuple(v) for k, v in out.items()}


def check_bootstrap() -> bool:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    groups = np.repeat(np.arange(10), 5)
    a, b = bootstrap_mean(x, groups), bootstrap_mean(x.copy(), groups.copy())
    return all(np.array_equal(p, q, equal_nan=True) for p, q in zip(a, b))


def default_model_values(dtype: str, threads: int = 1, batch_size: int = 8, loaded=None) -> dict[str, dict]:
    """The early-guess, layer-contribution and second-half refinement claims on small slices of
    the embedded data, default model, keyed by claim id."""
    from harness.claims import cso, gtr
    from harness.data.math import load_problems
    from harness.data.prose import load_prose
    from harness.frequency import token_frequencies
    from harness.interventions.backend import HookBackend
    from harness.interventions.contributions import measure_contributions
    from harness.lenses import LogitLens
    from harness.models import DEFAULT_MODEL, load_model, resolve
    from harness.interventions.measurements import REFINEMENT_REDUCTIONS
    from harness.trace import TraceEngine, TraceRequest

    torch.set_num_threads(threads)
    try:
        loaded = loaded or load_model(resolve(DEFAULT_MODEL), device="cpu", dtype=dtype)
        tok, name, lens = loaded.tokenizer, loaded.spec.name, LogitLens(loaded)
        engine = TraceEngine(loaded, batch_size=batch_size, progress=False)
        corpus = load_prose(None)
        freq = token_frequencies(tok, corpus, loaded.vocab_size)
        trace = engine.trace(gtr.prefix_request(corpus, tok, 150), lens, gtr.prefix_reductions(freq))
        out = {
            gtr.GTR_1.id: gtr.gtr1_early_frequent_guesses(trace, freq, name, "logit", corpus.name),
            gtr.GTR_2.id: gtr.gtr2_early_guesses_get_refined(trace, freq, name, "logit", corpus.name),
        }
        problems = load_problems(None)
        ids = [list(tok(p.prompt()).input_ids) for p in problems.problems[:8]]
        c = measure_contributions(HookBackend(loaded), ids)
        out[cso.CSO_1.id] = cso.cso1_second_half_contributes_less(c.relative, c.cosine, name, problems.name)
        out[cso.CSO_2.id] = cso.cso2_cosine_curve(c.cosine, name, problems.name)
        refinement = engine.trace(TraceRequest.build(problems.name, ids[:4], positions="all"), lens, REFINEMENT_REDUCTIONS)
        out[cso.CSO_4.id] = cso.cso4_second_half_refines(refinement, name, "logit", problems.name)
    finally:
        torch.set_num_threads(1)
    return {cid: snapshot_value(r, t) for cid, (r, t) in out.items()}, loaded


def print_table(table: dict, variants) -> None:
    print(f"{'variant':16} {'claim':6} {'field':34} {'max |diff|':>11} {'max rel':>11} {'changed':>8}")
    for variant in variants:
        for (v, cid, g), (d, r, n) in sorted(table.items()):
            if v == variant and n:
                print(f"{v:16} {cid:6} {g:34} {d:11.3g} {r:11.3g} {n:8d}")
        if not any(v == variant and t[2] for (v, _, _), t in table.items()):
            print(f"{variant:16} (every number identical)")


def add(table: dict, variant: str, ref: dict, other: dict) -> None:
    for cid, value in ref.items():
        if value["verdict"] != other[cid]["verdict"]:
            table[(variant, cid, "verdict")][2] += 1
        for g, (d, r, n) in diffs(value, other[cid]).items():
            t = table[(variant, cid, g)]
            t[0], t[1], t[2] = max(t[0], d), max(t[1], r), t[2] + n


def main_default_model() -> None:
    table: dict[tuple[str, str, str], list] = defaultdict(lambda: [0.0, 0.0, 0])
    variants = []
    base = {}
    for dtype in ("float32", "bfloat16"):
        ref, loaded = default_model_values(dtype)
        base[dtype] = ref
        for variant, kw in (("repeat", {}), ("threads2", {"threads": 2}), ("batch3", {"batch_size": 3})):
            add(table, f"{dtype}:{variant}", ref, default_model_values(dtype, loaded=loaded, **kw)[0])
            variants.append(f"{dtype}:{variant}")
        del loaded
    add(table, "bfloat16-vs-f32", base["float32"], base["bfloat16"])
    print_table(table, [*variants, "bfloat16-vs-f32"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--default-model", action="store_true", help="measure on the embedded default model instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"bootstrap, same inputs twice (fixed seed): identical = {check_bootstrap()}")
    if args.default_model:
        main_default_model()
        return
    families = [f for f in args.families.split(",") if f]
    table: dict[tuple[str, str, str], list] = defaultdict(lambda: [0.0, 0.0, 0])
    for family in families:
        base = values(family)
        batch1 = values(family, batch_size=1)
        runs = {
            "repeat": (base, values(family)),
            "threads2": (base, values(family, threads=2)),
            "batch1": (base, batch1),
            "float64": (batch1, values(family, dtype=torch.float64, batch_size=1)),
            "bfloat16": (base, values(family, dtype=torch.bfloat16)),
        }
        for variant, (ref, other) in runs.items():
            add(table, variant, ref, other)
        print(f"{family}: done", file=sys.stderr)
    print_table(table, VARIANTS)


if __name__ == "__main__":
    main()
