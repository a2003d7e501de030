"""The depth-efficiency measurements of one model run, computed once and cached.

Each measurement is a dict of arrays stored in the trace cache under a key naming the
model, backend, measurement, its parameters and a hash of the prompt token ids, so a
second run reads them instead of running the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from tqdm.auto import tqdm

from harness.data.math import ProblemSet, digit_sums
from harness.data.tokens import continuation_ids
from harness.interventions import contributions, erasure, gradients, skip
from harness.trace import LayerTrace, ReductionSpec, TraceEngine, TraceRequest

if TYPE_CHECKING:
    from harness.backends.base import Backend
    from harness.cache import TraceCache
    from harness.lenses import Lens
    from harness.models.loading import LoadedModel


class _Options(Protocol):
    @property
    def max_examples(self) -> int | None: ...

    @property
    def data_dir(self) -> Path | None: ...


class Run(Protocol):
    """What the measurements need of a model's run (``harness.session.ModelSession`` is one;
    the session builds the measurements, so this module does not import it)."""

    config: _Options
    loaded: LoadedModel
    backend: Backend
    cache: TraceCache | None
    engine: TraceEngine

    @property
    def name(self) -> str: ...

    def lens(self, name: str) -> Lens: ...

    @property
    def problems(self) -> ProblemSet: ...

@dataclass(frozen=True)
class Sizes:
    """How many prompts each measurement uses (``--max-examples`` caps every one).

    Edited rows start from the recorded clean residual (``harness/interventions/reuse.py``),
    which roughly halves the block runs of the layer skips, residual erasure and integrated
    gradients; part of that went into n."""

    contributions: int = 32  # GSM8K prompts, one forward pass each
    skip: int = 16  # GSM8K prompts; layers x (positions + 1) skipped rows each
    skip_positions: int = 1  # positions t per prompt for the future variant (more prompts beat more t)
    refinement: int = 16  # GSM8K prompts traced at every position
    maps: int = 16  # digit sums for the erasure maps
    gradient_maps: int = 8  # the first of those digit sums for the integrated gradients
    baseline_prompts: int = 10  # GSM8K prompts whose mean residual is the erasure value
    ig_steps: int = 32  # midpoint rule; the completeness error is reported per result

    def capped(self, max_examples: int | None) -> Sizes:
        if max_examples is None:
            return self
        cap = lambda n: min(n, max_examples)
        return Sizes(
            cap(self.contributions), cap(self.skip), self.skip_positions, cap(self.refinement),
            cap(self.maps), cap(self.gradient_maps), cap(self.baseline_prompts), self.ig_steps,
        )


SIZES = Sizes()


@dataclass(frozen=True)
class MapPrompt:
    """One digit-sum prompt of the erasure and gradient maps."""

    tokens: tuple[str, ...]
    answer_len: int

    @property
    def n_question(self) -> int:
        """Tokens before the first position that predicts an answer token."""
        return len(self.tokens) - self.answer_len - 1


# KL(final || lens) and the lens top-5 at every layer and position (the refinement trace).
REFINEMENT_REDUCTIONS = ReductionSpec(topk=5, logprobs=False, kl=True, entropy=False)

# Bump when a measurement's definition changes: part of every cache key.
MEASURE_VERSION = 1
MAPS_DATASET = "digit-sums"


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


class DepthMeasurements:
    def __init__(self, session: Run):
        self.session = session
        self.sizes = SIZES.capped(session.config.max_examples)
        self.computed = 0
        self.cache_hits = 0
        self._memo: dict[str, dict[str, np.ndarray]] = {}

    # ------------------------------------------------------------------ prompts

    @cached_property
    def problems(self) -> ProblemSet:
        return self.session.problems

    def problem_ids(self, n: int) -> list[list[int]]:
        tok = self.session.loaded.tokenizer
        return [list(tok(p.prompt()).input_ids) for p in self.problems.problems[:n]]

    @cached_property
    def map_prompts(self) -> list[tuple[list[int], MapPrompt]]:
        """Digit sums as (prompt + answer ids, MapPrompt)."""
        tok = self.session.loaded.tokenizer
        out = []
        for question, answer in digit_sums(self.sizes.maps):
            q_ids, a_ids = continuation_ids(tok, question, answer)
            ids = q_ids + a_ids
            out.append((ids, MapPrompt(tuple(tok.convert_ids_to_tokens(ids)), len(a_ids))))
        return out

    def data_provenance(self, measure: str) -> dict:
        """The dataset of a measurement and a hash of the prompts it ran on (token ids): a
        snapshot recorded on other prompts (another --max-examples, other data) is not
        compared."""
        if measure in ("erasure", "gradients"):
            n = self.sizes.gradient_maps if measure == "gradients" else self.sizes.maps
            ids = [ids for ids, _ in self.map_prompts[:n]]
            return {"dataset": MAPS_DATASET, "data_hash": _digest(ids)[:16]}
        n = {"contributions": self.sizes.contributions, "skips": self.sizes.skip}[measure]
        return {"dataset": self.problems.name, "data_hash": _digest(self.problem_ids(n))[:16], "data_source": self.problems.source}

    # ------------------------------------------------------------------ caching

    def _cached(self, name: str, params: dict, prompts: list[list[int]], compute) -> dict[str, np.ndarray]:
        if name in self._memo:
            return self._memo[name]
        s = self.session
        key = {
            "measure": name, "version": MEASURE_VERSION, **s.loaded.identity, **s.backend.identity,
            "params": params, "data": _digest(prompts),
        }
        if s.cache is None:
            arrays, hit = compute(), False
        else:
            arrays, hit = s.cache.fetch(key, compute)
        self.cache_hits += hit
        self.computed += not hit
        self._memo[name] = arrays
        return arrays

    def _bar(self, items, what: str):
        return tqdm(items, desc=f"{what} · {self.session.name}", unit="prompt", leave=False)

    # ------------------------------------------------------------------ measurements

    def contributions(self) -> dict[str, np.ndarray]:
        """Sublayer contributions (Csordás et al. 2025, Fig. 2): relative_<part>, cosine_<part>:
        [prompts, L]."""
        prompts = self.problem_ids(self.sizes.contributions)

        def compute():
            c = contributions.measure_contributions(self.session.backend, prompts, lambda p: self._bar(p, "contributions"))
            return {**{f"relative_{p}": v for p, v in c.relative.items()},
                    **{f"cosine_{p}": v for p, v in c.cosine.items()}, "n_tokens": c.n_tokens}

        return self._cached("contributions", {}, prompts, compute)

    def skips(self) -> dict[str, np.ndarray]:
        """Layer skips (Fig. 3): future_map/all_map [prompts, L, L], future_output/all_output [prompts, L]."""
        prompts = self.problem_ids(self.sizes.skip)
        n_pos = self.sizes.skip_positions

        def compute():
            out: dict[str, list] = {"future_map": [], "future_output": [], "all_map": [], "all_output": []}
            for i, ids in enumerate(self._bar(prompts, "layer skips")):
                rng = np.random.default_rng(i)
                groups = [skip.future_positions(len(ids), rng, n_pos), [None]]  # both variants share batches
                future, everywhere = skip.skip_effect_groups(self.session.backend, ids, groups)
                out["future_map"].append(future.future)
                out["future_output"].append(future.output)
                out["all_map"].append(everywhere.future)
                out["all_output"].append(everywhere.output)
            return {k: np.stack(v) for k, v in out.items()}

        return self._cached("skips", {"positions": n_pos, "front": 1, "seed": "prompt index"}, prompts, compute)

    def refinement_trace(self) -> LayerTrace:
        """Second-half refinement (Fig. 4): the logit-lens trace of every position of the problems
        (shared engine)."""
        request = TraceRequest.build(self.problems.name, self.problem_ids(self.sizes.refinement), positions="all")
        return self.session.engine.trace(request, self.session.lens("logit"), REFINEMENT_REDUCTIONS)

    def _padded(self, maps: list[np.ndarray]) -> np.ndarray:
        width = max(m.shape[1] for m in maps)
        out = np.full((len(maps), maps[0].shape[0], width), np.nan, dtype=np.float32)
        for i, m in enumerate(maps):
            out[i, :, : m.shape[1]] = m
        return out

    def unpad(self, maps: np.ndarray) -> list[np.ndarray]:
        """One map per prompt, as many as ``maps`` holds (the gradients use the first
        ``Sizes.gradient_maps`` of the map prompts)."""
        return [maps[i, :, : len(ids)] for i, (ids, _) in zip(range(len(maps)), self.map_prompts)]

    def erasure(self) -> dict[str, np.ndarray]:
        """Residual erasure (Fig. 6b): effect [prompts, L + 1, T_max] (NaN padding)."""
        prompts = [ids for ids, _ in self.map_prompts]
        baseline_ids = self.problem_ids(self.sizes.baseline_prompts)

        def compute():
            backend = self.session.backend
            base = erasure.mean_residuals(backend, baseline_ids)
            maps = [erasure.erasure_map(backend, ids, p.answer_len, base)
                    for ids, p in self._bar(self.map_prompts, "residual erasure")]
            return {"effect": self._padded(maps)}

        params = {"baseline": _digest(baseline_ids)}
        return self._cached("erasure", params, prompts, compute)

    def gradients(self) -> dict[str, np.ndarray]:
        """Integrated gradients (Fig. 6a): attribution [prompts, L + 1, T_max], output_difference
        and completeness_error [prompts, L + 1], on the first ``Sizes.gradient_maps`` map prompts."""
        used = self.map_prompts[: self.sizes.gradient_maps]
        prompts = [ids for ids, _ in used]
        steps = self.sizes.ig_steps

        def compute():
            results = [gradients.integrated_gradients(self.session.backend, ids, p.answer_len, steps)
                       for ids, p in self._bar(used, "integrated gradients")]
            return {"attribution": self._padded([r.values for r in results]),
                    "output_difference": np.stack([r.output_difference for r in results]),
                    "completeness_error": np.stack([r.completeness_error for r in results])}

        return self._cached("gradients", {"steps": steps}, prompts, compute)
