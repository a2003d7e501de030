"""Where depth-claims keeps things on disk (one place for each location)."""

from __future__ import annotations

import os
from pathlib import Path

# The folder holding harness/, claims/ and fixtures/: the checkout, or the site-packages of
# an installed wheel (pyproject.toml ships all three; fixtures/ as depth_claims_fixtures).
REPO_ROOT = Path(__file__).resolve().parent.parent
# The embedded data: fixtures/ of the checkout, installed as the package depth_claims_fixtures.
FIXTURES_DIR = next(
    (d for d in (REPO_ROOT / "fixtures", REPO_ROOT / "depth_claims_fixtures") if d.is_dir()), REPO_ROOT / "fixtures"
)
CLAIMS_DIR = REPO_ROOT / "claims"  # the claim tests (``depth-claims run`` runs pytest on them)
IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "conftest.py").is_file()


def depth_claims_home() -> Path:
    """Converted models, token-frequency tables, lenses: ``$DEPTH_CLAIMS_HOME`` or
    ``~/.cache/depth-claims``."""
    return Path(os.environ.get("DEPTH_CLAIMS_HOME", Path.home() / ".cache" / "depth-claims"))


def default_trace_cache() -> Path:
    return Path(os.environ.get("DEPTH_CLAIMS_TRACE_CACHE", depth_claims_home() / "traces"))


def default_report_dir() -> Path:
    """``reports/`` of the checkout; of the current folder when installed from a wheel."""
    return (REPO_ROOT if IN_CHECKOUT else Path.cwd()) / "reports"
