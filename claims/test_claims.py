"""The claims of both papers as tests: one test per claim spec in ``harness/claims/``.

Each registered :class:`~harness.claims.base.Claim` carries its ``evidence`` function,
which obtains what the claim reads from the model's session, computes the statistic and
names the figure; this module makes a test of it, named for the claim
(``test_gtr1_early_layers_guess_frequent_tokens[<model>-<lens>]``, so ``-k gtr1`` selects
it) and documented by the evidence function's docstring. ``publish`` (claims/conftest.py)
writes the CSV, figure and ``claims.json`` record, checks the snapshot and judges the
verdict against ``claims/expectations.py``.

A claim that is ``per_lens`` runs once per ``--lens``; a claim that
``compares_with_control`` (a v2 claim) runs on the trained model only, with the untrained
control's session beside it.
"""

from __future__ import annotations

import inspect

import pytest

from harness.claims import Claim, discover
from harness.claims.base import ClaimRun


def claim_test(claim: Claim):
    """The test function of one claim, with the fixtures it needs as its parameters."""

    def test(model_session, publish, need_lens, lens_name=None, control_session=None) -> None:
        publish(claim.evidence(ClaimRun(model_session, lens_name, control_session, need_lens)))

    names = ["model_session", "publish", "need_lens"]
    names += ["lens_name"] * claim.per_lens + ["control_session"] * claim.compares_with_control
    test.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    test.__name__ = test.__qualname__ = claim.test_name
    test.__doc__ = claim.evidence.__doc__
    test = pytest.mark.claim(test)
    return pytest.mark.versus_control(test) if claim.compares_with_control else test


def paper_order(claim: Claim) -> tuple:
    """By the id's paper prefix (Csordás et al.'s claims, then Gupta et al.'s); within a paper the
    claims in number order, then their v2 claims in number order."""
    paper, number = claim.id.split("-", 1)
    return paper, "v" in number, int(number.split("v")[0])


for _claim in sorted(discover().values(), key=paper_order):
    globals()[_claim.test_name] = claim_test(_claim)
