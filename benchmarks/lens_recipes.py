"""Tuned-lens recipes on the default model: held-out KL(final || lens) per layer, and seconds.

    python3 -m benchmarks.lens_recipes [--threads 1] [--polish 4,16] [--cpu-small FOLDER | --no-cpu-small]

Fits, on the embedded prose's training split (``pack_corpus``: 128-token sequences, every
tenth paragraph held out), and measures on the same 1,024 held-out tokens as the
``cpu-small`` recipe's table (its 8 evaluation sequences):

- the logit lens;
- least squares on cpu-small's 12,288 training tokens (its first 96 sequences), ``h_L``
  target, ridge 1e-3: the lens the default must beat at every layer before L;
- the closed form on the whole training split with each target (``residual``,
  ``normalised``, ``scale-free``), and the ``closed-form`` recipe's solution after 1/8,
  1/4 and 1/2 of the tokens (its convergence curve);
- the ``closed-form`` recipe followed by k KL/SGD steps (``--polish``);
- ``cpu-small`` (48 SGD steps from zero): read from ``--cpu-small FOLDER`` (a lens folder
  whose ``training.json`` has its seconds), else fitted now through the lens cache;
- the frequency-down-weighted lens (frequent targets' loss weighted down) with the
  ``closed-form`` recipe.

The closed-form variants share one forward pass per batch (sequences in cpu-small's
order); each variant's seconds are the forward passes it needs plus its own sums, solve
and (weighted) final-prediction buckets, which is what it costs alone. Seconds are
wall-clock and process CPU seconds of fitting, not of measuring. Writes
``reports/benchmarks/lens_recipes.json`` and ``lens_recipes.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.data.prose import load_prose
from harness.files import write_text
from harness.frequency import token_frequencies
from harness.interventions.backend import HookBackend
from harness.lens_training import (
    CURVE_FRACTIONS,
    DOWNWEIGHT_FREQUENT,
    RECIPES,
    TARGETS,
    LensFit,
    fit_weights,
    kl_table,
    obtain_lens,
    pack_corpus,
    position_weights,
    train_lens,
)
from harness.lenses import LogitLens
from harness.models import DEFAULT_MODEL, load_model, resolve
from harness.paths import default_report_dir
from harness.tuned_lens import TunedLens, read_lens

LAYERS = (0, 1, 2, 4, 8, 12, 16, 20, 24, 27, 29)
BASELINE = "least squares, cpu-small's 12,288 tokens"


@dataclass
class Clock:
    """Wall-clock and process CPU seconds, added up over the calls it times."""

    wall: float = 0.0
    cpu: float = 0.0

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c

    def plus(self, *others: Clock) -> Clock:
        return Clock(self.wall + sum(o.wall for o in others), self.cpu + sum(o.cpu for o in others))


@dataclass
class Row:
    name: str
    lens: object
    tokens: int
    clock: Clock
    note: str = ""


def closed_form_rows(loaded, backend, data, freq, default_target: str) -> list[Row]:
    """Every closed-form variant from one pass over the training split."""
    recipe = RECIPES["closed-form"]
    d = loaded.adapter.unembed_of(loaded.model).weight.shape[1]
    order = np.random.default_rng(RECIPES["cpu-small"].seed).permutation(len(data.train))
    baseline_sequences = RECIPES["cpu-small"].steps * RECIPES["cpu-small"].sequences_per_step
    fits = {t: LensFit(loaded.n_layers, d, recipe.ridge_scale, t) for t in TARGETS}
    fits["baseline"] = LensFit(loaded.n_layers, d, 1e-3, "residual")
    fits["down-weighted"] = LensFit(loaded.n_layers, d, recipe.ridge_scale, default_target)
    clocks = {name: Clock() for name in fits}
    forward, forward_baseline, buckets = Clock(), Clock(), Clock()
    batch = recipe.fit_batch_sequences
    starts = list(range(0, len(order), batch))
    marks = {max(1, int(np.ceil(f * len(starts)))): f for f in CURVE_FRACTIONS if f < 1}
    rows: list[Row] = []
    head = LogitLens(loaded)
    for i, start in enumerate(tqdm(starts, desc="closed-form variants, one pass")):
        rows_ids = order[start:start + batch]
        with forward, torch.no_grad():
            resid = [h.reshape(-1, d) for h in backend.forward(data.train[rows_ids]).resid]
        if start < baseline_sequences:
            forward_baseline.wall, forward_baseline.cpu = forward.wall, forward.cpu
        with buckets, torch.no_grad():
            down = fit_weights(position_weights(head.head(resid[-1]).float(), freq, DOWNWEIGHT_FREQUENT), loaded.n_layers, len(rows_ids), data.train.shape[1])
        for name, fit in fits.items():
            if name == "baseline" and start >= baseline_sequences:
                continue
            with clocks[name]:
                if name == "baseline":  # plain least squares, as the earlier probe
                    fit.add(resid)
                else:
                    fit.add(resid, down if name == "down-weighted" else fit_weights(None, loaded.n_layers, len(rows_ids), data.train.shape[1]))
        if i + 1 in marks:
            with Clock() as c:
                translators = fits[default_target].solve()
            rows.append(Row(f"closed-form after {fits[default_target].tokens:,} tokens ({marks[i + 1]:g})",
                            TunedLens(loaded, translators), fits[default_target].tokens, forward.plus(clocks[default_target], c)))
    for name, fit in fits.items():
        with clocks[name]:
            translators = fit.solve()
        lens = TunedLens(loaded, translators)
        if name == "baseline":
            rows.append(Row(BASELINE, lens, fit.tokens, forward_baseline.plus(clocks[name]), "target residual, ridge 1e-3"))
        elif name == "down-weighted":
            rows.append(Row("frequency-down-weighted, closed-form", lens, fit.tokens,
                            forward.plus(clocks[name], buckets),
                            f"target {default_target}, weights {DOWNWEIGHT_FREQUENT}"))
        else:
            label = "closed-form (recipe)" if name == default_target else f"closed form, target {name}"
            rows.append(Row(label, lens, fit.tokens, forward.plus(clocks[name]), f"target {name}, ridge {recipe.ridge_scale:g}"))
    return rows


def table_markdown(result: dict) -> str:
    layers = result["layers"]
    head = "| lens | tokens | seconds (wall / CPU) | " + " | ".join(str(layer) for layer in layers) + " | mean 0..L-1 |"
    lines = [head, "| " + " | ".join(["---"] * (len(layers) + 4)) + " |"]
    for row in result["rows"]:
        kl = " | ".join(f"{row['kl'][str(layer)]:.2f}" for layer in layers)
        seconds = f"{row['seconds']:.0f} / {row['cpu_seconds']:.0f}" if row["seconds"] is not None else "-"
        lines.append(f"| {row['name']} | {row['tokens']:,} | {seconds} | {kl} | {row['mean_kl']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--polish", default="4,16", help="KL/SGD step counts after the closed form (comma-separated; '' for none)")
    parser.add_argument("--cpu-small", type=Path, default=None, help="a cpu-small lens folder trained earlier (its training.json has the seconds)")
    parser.add_argument("--no-cpu-small", action="store_true", help="leave cpu-small out")
    parser.add_argument("--out", type=Path, default=default_report_dir() / "benchmarks")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    loaded = load_model(resolve(DEFAULT_MODEL), device="cpu", dtype="float32")
    backend = HookBackend(loaded)
    corpus = load_prose(None)
    recipe = RECIPES["closed-form"]
    data = pack_corpus(corpus, loaded.tokenizer, recipe.seq_len)
    freq = token_frequencies(loaded.tokenizer, corpus, loaded.vocab_size)
    eval_ids = data.held_out[: recipe.eval_sequences]

    rows = [Row("logit lens", LogitLens(loaded), 0, Clock())]
    rows += closed_form_rows(loaded, backend, data, freq, recipe.target)
    start = next(r for r in rows if r.name == "closed-form (recipe)")
    for steps in [int(k) for k in args.polish.split(",") if k.strip()]:
        with Clock() as sgd:
            lens, _ = train_lens(loaded, backend, data, replace(recipe, steps=steps), init=start.lens.translators)
        rows.append(Row(f"closed-form + {steps} KL steps", lens, start.tokens + steps * recipe.tokens_per_step, start.clock.plus(sgd)))
    if not args.no_cpu_small:
        if args.cpu_small is not None:
            lens = read_lens(args.cpu_small, loaded)
            record = lens.training_record or {}
            clock = Clock(record.get("seconds", float("nan")), record.get("cpu_seconds", float("nan")))
            rows.append(Row("cpu-small (48 SGD steps from zero)", lens, record.get("tokens", 0), clock, f"trained earlier: {args.cpu_small}"))
        else:
            with Clock() as clock:
                lens = obtain_lens(loaded, backend, corpus, RECIPES["cpu-small"], train=True)
            rows.append(Row("cpu-small (48 SGD steps from zero)", lens, lens.training_record["tokens"], clock))

    table = kl_table({str(i): row.lens for i, row in enumerate(rows)}, backend, eval_ids)
    n_layers = loaded.n_layers
    result = {
        "model": DEFAULT_MODEL, "threads": args.threads, "held_out_tokens": int(table["tokens"].iloc[0]),
        "layers": list(LAYERS), "default_recipe": recipe.name, "recipe": recipe.key(),
        "note": "seconds measured on a shared 2-core CPU (other jobs running): compare within a run",
        "rows": [],
    }
    for i, row in enumerate(rows):
        kl = table[f"{i}_kl"].to_numpy()
        result["rows"].append({
            "name": row.name, "tokens": int(row.tokens), "seconds": round(row.clock.wall, 1), "cpu_seconds": round(row.clock.cpu, 1),
            "note": row.note, "kl": {str(layer): round(float(kl[layer]), 4) for layer in range(n_layers + 1)},
            "mean_kl": round(float(kl[:n_layers].mean()), 4),
        })
    baseline = next(r for r in result["rows"] if r["name"] == BASELINE)
    for row in result["rows"]:
        row["beats_baseline_everywhere"] = all(row["kl"][str(layer)] < baseline["kl"][str(layer)] for layer in range(n_layers))
    write_text(args.out / "lens_recipes.json", json.dumps(result, indent=2) + "\n")
    markdown = table_markdown(result)
    write_text(
        args.out / "lens_recipes.md",
        f"Held-out KL(final || lens), nats, {DEFAULT_MODEL}, {result['held_out_tokens']:,} held-out tokens; "
        f"{result['note']}.\n\n{markdown}"
    )
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
