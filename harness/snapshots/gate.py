"""The snapshot gate: ``python -m harness.snapshots.gate REPORT_DIR``.

Prints the snapshot checks of a run (``REPORT_DIR/<model>/snapshot_checks.json``, written
by ``claims/snapshot_fixture.py``) and exits 1 when a snapshot regressed, or when no
check was written at all. The nightly GPU workflow's pass/fail step: claim failures there
are findings, a regressed snapshot is not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.snapshots.store import CHECKS_FILE


def regressions(report_dir: Path) -> list[dict]:
    """Every "regressed" record in ``<report_dir>/*/snapshot_checks.json``."""
    found = []
    for path in sorted(Path(report_dir).glob(f"*/{CHECKS_FILE}")):
        found += [r for r in json.loads(path.read_text(encoding="utf-8")) if r.get("status") == "regressed"]
    return found


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.snapshots.gate REPORT_DIR``: print the snapshot checks of a
    run and exit 1 when a snapshot regressed (the nightly GPU workflow's gate)."""
    argv = sys.argv[1:] if argv is None else argv
    report_dir = Path(argv[0] if argv else "reports")
    files = sorted(report_dir.glob(f"*/{CHECKS_FILE}"))
    if not files:
        print(f"No {CHECKS_FILE} under {report_dir}: no claim result was checked against a snapshot.")
        return 1
    counts: dict[str, int] = {}
    for path in files:
        for r in json.loads(path.read_text(encoding="utf-8")):
            counts[r["status"]] = counts.get(r["status"], 0) + 1
    bad = regressions(report_dir)
    for r in bad:
        print(r["message"], end="\n\n")
    print("snapshot checks: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
