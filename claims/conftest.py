"""Shared steps of every claim test: publish the outputs, then judge the verdict."""

from __future__ import annotations

import pytest

from dataclasses import replace

from claims.expectations import EXPECTED_NOT_REPLICATED, EXPECTED_NOT_SPECIFIC, expectation
from claims.snapshot_fixture import claim_snapshot, pytest_terminal_summary  # noqa: F401  (fixture, hook)
from harness.claims.base import NOT_SPECIFIC, NOT_SPECIFIC_TEXT, ClaimResult, ControlOutcome, Evidence
from harness.lens_training import TunedLensMissing
from harness.models.registry import control_of


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

    def _publish(evidence: Evidence) -> None:
        """The figure (``evidence.figure``) is drawn unless the report already holds it drawn
        from the same arguments; provenance and the lens's fidelity come from what the
        evidence names (the lens, the engine trace, the prompts, the lenses compared)."""
        result, table = evidence.result, evidence.table
        provenance = model_session.provenance(evidence.lens_name, evidence.trace, evidence.data, evidence.lenses)
        if not evidence.lenses:
            result = replace(result, fidelity=model_session.lens_fidelity(result, evidence.trace, evidence.lens_name))
        else:
            # a comparison of lenses: the tuned lens's fidelity and convergence at the layers
            # its statistic reads (the tuned lens is the reference both comparisons rest on)
            result = replace(result, fidelity=model_session.lens_fidelity(result, None, "tuned"))
        is_control = model_session.loaded.spec.control is not None
        if model_session.config.control and not is_control and not result.claim.compares_with_control:
            result = replace(result, control=_control_of(result, claim_results))
        paths = model_session.writer.publish(result, table, evidence.figure, provenance)
        claim_results.append((result, paths))
        claim_snapshot(result, table, provenance)  # fails on a number that moved beyond its tolerance
        if is_control or result.claim.threshold is None:
            # the untrained control is reported beside the model's result, not judged; a curve
            # the paper states no claim about is reported only
            return
        where = (result.claim.id, result.model, result.lens, result.dataset)
        expected = expectation(EXPECTED_NOT_REPLICATED, *where)
        not_specific = expectation(EXPECTED_NOT_SPECIFIC, *where)
        if result.label == NOT_SPECIFIC:
            if not_specific is None:
                pytest.fail(
                    f"{result.summary()}. The claim replicates on the untrained control too ({NOT_SPECIFIC_TEXT}): "
                    "record it in EXPECTED_NOT_SPECIFIC in claims/expectations.py with the reason."
                )
            pytest.xfail(f"{result.summary()} -- expected not specific: {not_specific}")
        if result.verdict == "replicated":
            assert expected is None, (
                f"{result.summary()} now replicates; remove its entry from claims/expectations.py ({expected})"
            )
            assert not_specific is None or result.control is None, (
                f"{result.summary()}: the untrained control no longer replicates it; remove its entry from "
                f"EXPECTED_NOT_SPECIFIC in claims/expectations.py ({not_specific})"
            )
        elif expected is not None:
            pytest.xfail(f"{result.summary()} -- expected: {expected}")
        else:
            pytest.fail(f"{result.summary()}. If this is a real finding for this model, record it in claims/expectations.py with the reason.")

    return _publish


def _control_of(result: ClaimResult, claim_results: list) -> ControlOutcome:
    """The result of the same claim, lens and data on the model's untrained control (it
    runs first: conftest.pytest_collection_modifyitems)."""
    control = control_of(result.model)
    for other, _ in claim_results:
        if (other.model, other.claim.id, other.lens, other.dataset) == (control, result.claim.id, result.lens, result.dataset):
            return ControlOutcome.of(other)
    pytest.fail(
        f"{result.claim.id} [{result.model} · {result.lens}]: no result of its untrained control {control} in this run "
        "(was it deselected or did it fail?). Run the control too, or pass --no-control."
    )
