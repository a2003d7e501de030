"""Claim results on tiny random models of every architecture family (no download).

Shared by ``tests/test_snapshots_tiny.py`` (the snapshots) and
``benchmarks/snapshot_variation.py`` (how much these numbers move between runs, which
the snapshot tolerances are chosen from). Everything is seeded: the same code gives the
same numbers.

Claims computed (all cheap on a 3-layer model with a 211-token vocabulary):

- GTR-1/2 on synthetic prefixes: 12 "paragraphs" of token ids drawn from a Zipf law,
  cut at 3 seeded positions each, with a FrequencyTable counted over 60 such paragraphs
  (all four buckets occur: Top-10, Top-100, Top-1000 and unseen ids);
- CSO-1/2 from the sublayer contributions of 5 prompts;
- CSO-3 from layer skips (future and all-token variants) on 3 prompts;
- CSO-4 from a logit-lens trace of every position of 5 prompts.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from harness.interventions.measurements import REFINEMENT_REDUCTIONS
from harness.claims import cso, gtr
from harness.claims.base import ClaimResult
from harness.frequency import FrequencyTable
from harness.interventions.backend import HookBackend
from harness.interventions.contributions import measure_contributions
from harness.interventions.skip import future_positions, skip_effects
from harness.lenses import LogitLens
from harness.models.adapters import adapter_for
from harness.models.loading import LoadedModel, model_from_config
from harness.models.registry import ModelSpec
from harness.trace import TraceEngine, TraceRequest
from tests.test_adapters import CONFIGS, PAD_ID, VOCAB, _perturb_norms

FAMILIES: tuple[str, ...] = tuple(sorted(CONFIGS))
DATASET = "synthetic"
SNAPSHOT_CLAIMS: tuple[str, ...] = ("GTR-1", "GTR-2", "CSO-1", "CSO-2", "CSO-3", "CSO-4")

N_PARAGRAPHS, N_PREFIX_PARAGRAPHS, PARAGRAPH_TOKENS, CUTS, MIN_CONTEXT = 60, 12, 24, 3, 6
ZIPF_EXPONENT = 1.1


def tiny_model(family: str, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """The per-family model of tests/test_adapters.py (seed 0, perturbed norms), built
    in float32 and cast to ``dtype`` (the same weights whatever the dtype)."""
    model = model_from_config(CONFIGS[family](), seed=0, dtype=torch.float32)
    _perturb_norms(model, seed=1)
    model = model.to(dtype)
    return LoadedModel(
        spec=ModelSpec(name=f"tiny-{family}", source="local", path="/nonexistent"),
        model=model,
        tokenizer=SimpleNamespace(pad_token_id=PAD_ID),
        adapter=adapter_for(model),
        device=torch.device("cpu"),
        dtype=dtype,
        revision="test",
    )


def zipf_corpus(seed: int = 0) -> list[list[int]]:
    """Token-id paragraphs whose frequencies follow a Zipf law over ids 3 .. VOCAB-1
    (a seeded permutation decides which id is frequent), like natural text."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(3, VOCAB))
    p = 1.0 / np.arange(1, len(ids) + 1) ** ZIPF_EXPONENT
    return [rng.choice(ids, size=PARAGRAPH_TOKENS, p=p / p.sum()).tolist() for _ in range(N_PARAGRAPHS)]


def frequency_table(corpus: list[list[int]]) -> FrequencyTable:
    counts = np.bincount(np.concatenate(corpus), minlength=VOCAB)[:VOCAB].astype(np.int64)
    return FrequencyTable("tiny-ids", "zipf-corpus", "synthetic", int(counts.sum()), counts)


def prefix_request(corpus: list[list[int]], seed: int = 0) -> TraceRequest:
    """Like gtr.prefix_request: a few seeded cuts per paragraph, read at the cut."""
    rng = np.random.default_rng(seed)
    token_ids, positions = [], []
    for para in corpus:
        cuts = sorted(rng.choice(np.arange(MIN_CONTEXT, len(para) - 1), size=CUTS, replace=False).tolist())
        token_ids.append(para[: cuts[-1] + 2])
        positions.append(cuts)
    return TraceRequest.build(f"{DATASET}-prefixes", token_ids, positions=positions)


def prompts(n: int, seed: int = 3, low: int = 14, high: int = 22) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (n,), generator=gen)
    return [torch.randint(3, VOCAB, (int(k),), generator=gen).tolist() for k in lengths]


def claim_results(loaded: LoadedModel, batch_size: int = 8) -> dict[str, tuple[ClaimResult, pd.DataFrame]]:
    """Claim id -> (result, table) for SNAPSHOT_CLAIMS on one tiny model."""
    name, lens = loaded.spec.name, LogitLens(loaded)
    backend = HookBackend(loaded)
    engine = TraceEngine(loaded, backend=backend, batch_size=batch_size, progress=False)
    out: dict[str, tuple[ClaimResult, pd.DataFrame]] = {}

    corpus = zipf_corpus()
    freq = frequency_table(corpus)
    trace = engine.trace(prefix_request(corpus[:N_PREFIX_PARAGRAPHS]), lens, gtr.prefix_reductions(freq))
    out["GTR-1"] = gtr.gtr1_early_frequent_guesses(trace, freq, name, "logit", DATASET)
    out["GTR-2"] = gtr.gtr2_early_guesses_get_refined(trace, freq, name, "logit", DATASET)

    c = measure_contributions(backend, prompts(5))
    out["CSO-1"] = cso.cso1_second_half_contributes_less(c.relative, c.cosine, name, DATASET)
    out["CSO-2"] = cso.cso2_cosine_curve(c.cosine, name, DATASET)

    maps: dict[str, list] = {"future_map": [], "future_output": [], "all_map": [], "all_output": []}
    for i, ids in enumerate(prompts(3, seed=5)):
        future = skip_effects(backend, ids, future_positions(len(ids), np.random.default_rng(i), 2))
        everywhere = skip_effects(backend, ids, [None])
        for key, v in (("future_map", future.future), ("future_output", future.output),
                       ("all_map", everywhere.future), ("all_output", everywhere.output)):
            maps[key].append(v)
    m = {k: np.stack(v) for k, v in maps.items()}
    out["CSO-3"] = cso.cso3_skip_effects(m["future_map"], m["future_output"], m["all_map"], m["all_output"], name, DATASET)

    refinement = engine.trace(TraceRequest.build(DATASET, prompts(5), positions="all"), lens, REFINEMENT_REDUCTIONS)
    out["CSO-4"] = cso.cso4_second_half_refines(refinement, name, "logit", DATASET)
    return out
