"""Claims as versioned objects, one module per group of claims; each claim carries its
statistic's definition, its parameters and how it is checked (``Claim.evidence``)."""

import importlib
import pkgutil

from harness.claims.base import CLAIMS, Claim, ClaimResult, register


def discover() -> dict[str, Claim]:
    """Every claim, by id: imports each module of this package (each registers its claims)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(CLAIMS)


__all__ = ["CLAIMS", "Claim", "ClaimResult", "discover", "register"]
