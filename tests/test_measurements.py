"""The depth-efficiency measurements' provenance: which prompts a result ran on."""

from __future__ import annotations

import zlib
from types import SimpleNamespace

from harness.data.math import load_problems
from harness.interventions.measurements import DepthMeasurements


class _WordTokenizer:
    """Ids from words (enough for hashing prompts)."""

    def __call__(self, text: str):
        return SimpleNamespace(input_ids=[zlib.crc32(w.encode()) % 50_000 for w in text.split()])


def _measurements(max_examples: int | None) -> DepthMeasurements:
    session = SimpleNamespace(
        config=SimpleNamespace(max_examples=max_examples, data_dir=None),
        loaded=SimpleNamespace(tokenizer=_WordTokenizer()),
        problems=load_problems(None),
    )
    return DepthMeasurements(session)


def test_provenance_hashes_the_prompts_a_measurement_ran_on():
    """--max-examples changes the GSM8K prompts of the contributions and the layer skips,
    so it changes their data hash (a snapshot recorded on other prompts is then not
    compared); the same prompts give the same hash. (The digit-sum maps hash their ids.)"""
    full, capped, again = _measurements(None), _measurements(4), _measurements(None)
    for measure in ("contributions", "skips"):
        assert full.data_provenance(measure)["data_hash"] != capped.data_provenance(measure)["data_hash"], measure
        assert full.data_provenance(measure) == again.data_provenance(measure), measure
