"""Where depth-claims keeps things on disk (one place for each location)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = REPO_ROOT / "fixtures"


def depth_claims_home() -> Path:
    """Converted models, token-frequency tables, lenses: ``$DEPTH_CLAIMS_HOME`` or
    ``~/.cache/depth-claims``."""
    return Path(os.environ.get("DEPTH_CLAIMS_HOME", Path.home() / ".cache" / "depth-claims"))


def default_trace_cache() -> Path:
    return Path(os.environ.get("DEPTH_CLAIMS_TRACE_CACHE", depth_claims_home() / "traces"))


def default_report_dir() -> Path:
    return REPO_ROOT / "reports"
