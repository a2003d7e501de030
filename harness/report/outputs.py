"""Writing a claim's CSV, figure and claims.json record, atomically.

Every file is written to a temporary name in its folder and renamed into place, so a
crash never leaves half a CSV, figure or claims.json behind; claims.json is updated
under a lock so two pytest processes reporting on the same model do not lose records.
Each record gets the run time in its provenance and is validated against the schema
(:mod:`harness.report.schema`) before it is written: an invalid record is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from harness.claims.base import ClaimResult
from harness.report.schema import validate_record


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to ``path``; move it into place if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


class ReportWriter:
    """Outputs for one model: ``<report_dir>/<model>/``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        # the run of this model starts here (ModelSession creates the writer after loading)
        self.started_at = _utc_now()
        self._started = time.perf_counter()

    def run_time(self) -> dict:
        """Provenance fields of the run time: when this model's run began, when this
        record was written, and the seconds in between."""
        return {
            "run_started_at": self.started_at,
            "finished_at": _utc_now(),
            "run_seconds": round(time.perf_counter() - self._started, 3),
        }

    def write_csv(self, result: ClaimResult, table: pd.DataFrame) -> Path:
        path = self.folder / f"{result.file_stem}.csv"
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
        return path

    def write_figure(self, result: ClaimResult, fig) -> Path:
        import matplotlib.pyplot as plt

        path = self.folder / f"{result.file_stem}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        return path

    def record(self, result: ClaimResult, provenance: dict) -> Path:
        """Add or replace this (claim, lens, dataset) record in claims.json.

        The run time is added to ``provenance`` (values the caller gives win). Raises
        :class:`harness.report.schema.SchemaError` naming each wrong field, and writes
        nothing, when the record does not match the schema."""
        path = self.folder / "claims.json"
        run_time = {k: v for k, v in self.run_time().items() if k not in provenance}
        entry = {**result.record(), "provenance": {**provenance, **run_time}}
        validate_record(entry)
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".claims.json.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = json.loads(path.read_text()) if path.is_file() else []
            same = (entry["claim"], entry["lens"], entry["dataset"])
            records = [r for r in records if (r["claim"], r["lens"], r["dataset"]) != same]
            records.append(entry)
            records.sort(key=lambda r: (r["claim"], r["lens"], r["dataset"]))
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(records, indent=2, default=float) + "\n")
        return path

    def publish(self, result: ClaimResult, table: pd.DataFrame, fig, provenance: dict) -> dict[str, Path]:
        return {
            "csv": self.write_csv(result, table),
            "figure": self.write_figure(result, fig),
            "claims": self.record(result, provenance),
        }


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
