"""Shared steps of every claim test: publish the outputs, then judge the verdict."""

from __future__ import annotations

import pytest

from claims.expectations import EXPECTED_NOT_REPLICATED
from claims.snapshots import claim_snapshot, pytest_terminal_summary  # noqa: F401  (fixture, hook)
from harness.claims.base import ClaimResult
from harness.lens_training import TunedLensMissing


@pytest.fixture
def need_lens():
    """Call ``get()`` for a lens; skip the test, naming the command that trains the lens,
    when the cache has none (rerun with --train-lens to train it on the spot)."""

    def _need(get):
        try:
            return get()
        except TunedLensMissing as err:
            pytest.skip(str(err))

    return _need


@pytest.fixture(autouse=True)
def _lens_available(request, need_lens):
    """Tests parametrised with --lens tuned skip (with the command) when no tuned lens exists."""
    if "lens_name" in request.fixturenames and request.getfixturevalue("lens_name") != "logit":
        session = request.getfixturevalue("model_session")
        need_lens(lambda: session.lens(request.getfixturevalue("lens_name")))


@pytest.fixture
def publish(model_session, claim_results, claim_snapshot):  # noqa: F811  (the imported fixture)
    """Write the CSV, figure and claims.json record, then assert the verdict."""

    def _publish(result: ClaimResult, table, figure, trace=None, data: dict | None = None, lenses=None) -> None:
        """``figure``: ``partial(figure_function, result, table, ...)``, drawn unless the
        report already holds it drawn from the same arguments; ``trace``: the engine trace
        the result read; ``data``: provenance of the prompts of an intervention result;
        ``lenses``: the lenses a comparison read."""
        provenance = model_session.provenance(None if lenses else model_session.lens_of_label(result.lens), trace, data, lenses)
        paths = model_session.writer.publish(result, table, figure, provenance)
        claim_results.append((result, paths))
        claim_snapshot(result, table, provenance)  # fails on a number that moved beyond its tolerance
        if result.claim.threshold is None:
            return  # a curve the paper states no claim about: reported, not judged
        key = (result.claim.id, result.model, result.lens)
        expected = EXPECTED_NOT_REPLICATED.get((*key, result.dataset), EXPECTED_NOT_REPLICATED.get(key))
        if result.verdict == "replicated":
            assert expected is None, (
                f"{result.summary()} now replicates; remove its entry from claims/expectations.py ({expected})"
            )
        elif expected is not None:
            pytest.xfail(f"{result.summary()} -- expected: {expected}")
        else:
            pytest.fail(f"{result.summary()}. If this is a real finding for this model, record it in claims/expectations.py with the reason.")

    return _publish
