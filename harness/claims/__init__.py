"""Claims as versioned objects, and the code that evaluates each on a trace."""

from harness.claims.base import CLAIMS, Claim, ClaimResult, register

__all__ = ["CLAIMS", "Claim", "ClaimResult", "register"]
