"""The pytest glue of the real models' snapshots: the ``claim_snapshot`` fixture and the
terminal summary of its checks (the store itself: :mod:`harness.snapshots.store`).

Each model's claim numbers are checked when a claim result is published.

Wiring (claims/conftest.py)::

    from claims.snapshot_fixture import claim_snapshot, pytest_terminal_summary  # noqa: F401  (fixture, hook)

    @pytest.fixture
    def publish(model_session, claim_results, claim_snapshot):
        def _publish(result, table, fig, trace=None, data=None):
            ...
            claim_results.append((result, paths))
            claim_snapshot(result, table, provenance)  # before the verdict is judged
            ...

Snapshots live in ``claims/recorded_snapshots/<model>/<device>-<dtype>/<CLAIM>_<lens>_<dataset>.json``
(``DEPTH_CLAIMS_SNAPSHOT_DIR`` moves them). A result is compared only where its file
exists: a model, device or dtype nobody recorded reports "no snapshot yet" in the
terminal summary and fails nothing; a snapshot recorded on other prompts (another
``--max-examples`` or ``--data-dir``) is "not compared". A number that moved beyond its
tolerance fails the test with the claim, field, layer, expected and received value;
``pytest claims/ --snapshot-update`` records new numbers. Every check is also written to
``<report-dir>/<model>/snapshot_checks.json``, which
``python -m harness.snapshots.gate <report-dir>`` turns into a pass/fail gate (the
nightly GPU workflow's, where claim failures are findings, not regressions).

These files are not syrupy's: no test in claims/ uses syrupy's ``snapshot`` fixture.
The folder is deliberately not named ``__snapshots__``: syrupy's ``--snapshot-update``
deletes every file under a ``__snapshots__`` folder that no syrupy assertion used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.claims.base import ClaimResult
from harness.files import file_lock, write_text
from harness.snapshots.store import CHECKS_FILE, ModelSnapshots, SnapshotCheck

SNAPSHOT_DIR = Path(__file__).resolve().parent / "recorded_snapshots"
CHECKS = pytest.StashKey[list]()
WRITTEN = pytest.StashKey[set]()


def snapshot_dir() -> Path:
    return Path(os.environ.get("DEPTH_CLAIMS_SNAPSHOT_DIR") or SNAPSHOT_DIR)


def _record(path: Path, fresh: bool, result: ClaimResult, check: SnapshotCheck) -> None:
    """Add one check to the model's snapshot_checks.json (started afresh by each run).
    Read, changed and written under a lock: processes adding checks at once lose none."""
    entry = check.record(result)
    key = (entry["claim"], entry["lens"], entry["dataset"])
    with file_lock(path):
        records = [] if fresh or not path.is_file() else json.loads(path.read_text(encoding="utf-8"))
        records = [r for r in records if (r["claim"], r["lens"], r["dataset"]) != key] + [entry]
        write_text(path, json.dumps(records, indent=1))


def make_claim_snapshot(config, model_session):
    """The checker behind :func:`claim_snapshot` (``config``: the pytest config)."""
    update = bool(getattr(config.option, "update_snapshots", False))
    snapshots = ModelSnapshots(snapshot_dir(), update=update)
    checks = config.stash.setdefault(CHECKS, [])
    written = config.stash.setdefault(WRITTEN, set())
    checks_path = Path(model_session.config.report_dir) / model_session.loaded.spec.slug / CHECKS_FILE

    def _check(result: ClaimResult, table, provenance: dict) -> SnapshotCheck:
        check = snapshots.check(result, table, provenance)
        checks.append(check)
        _record(checks_path, checks_path not in written, result, check)
        written.add(checks_path)
        if check.regressed:
            pytest.fail(check.message, pytrace=False)
        return check

    return _check


@pytest.fixture
def claim_snapshot(pytestconfig: pytest.Config, model_session):
    """``claim_snapshot(result, table, provenance) -> SnapshotCheck``: compare a published
    result with its model's snapshot; fail the test on a regression."""
    return make_claim_snapshot(pytestconfig, model_session)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    checks = config.stash.get(CHECKS, [])
    if not checks:
        return
    terminalreporter.section("depth-claims snapshots")
    counts: dict[str, int] = {}
    for check in checks:
        counts[check.status] = counts.get(check.status, 0) + 1
        if check.status != "matched":
            terminalreporter.write_line(f"{check.status}: {check.message.splitlines()[0]}")
    terminalreporter.write_line(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
