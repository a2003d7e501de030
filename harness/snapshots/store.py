"""The real models' recorded snapshots, and the record of each check of one.

:class:`ModelSnapshots` keeps one file per (model, device and dtype, claim, lens,
dataset) under a root (``claims/recorded_snapshots/``) and compares a claim result with
its file where one exists; each check is a :class:`SnapshotCheck`, recorded per model in
``<report-dir>/<model>/`` :data:`CHECKS_FILE` (read by :mod:`harness.snapshots.gate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.claims.base import ClaimResult
from harness.files import write_text
from harness.snapshots.values import UPDATE_HINT, compare, dumps, loads, snapshot_value

CHECKS_FILE = "snapshot_checks.json"  # a run's checks of one model, one record per claim result


@dataclass(frozen=True)
class SnapshotCheck:
    """What happened to one claim result's snapshot in a run."""

    status: str  # "matched", "regressed", "no snapshot yet", "created", "updated", "not compared"
    path: Path
    message: str

    @property
    def regressed(self) -> bool:
        return self.status == "regressed"

    def record(self, result: ClaimResult) -> dict:
        return {"claim": result.claim.id, "version": result.claim.version, "model": result.model,
                "lens": result.lens, "dataset": result.dataset, "status": self.status,
                "path": str(self.path), "message": self.message}


def config_tag(provenance: Mapping) -> str:
    """The run settings a model's numbers depend on beyond its name: device type and
    dtype, plus the backend when it is not plain transformers ("cuda-bfloat16")."""
    device = str(provenance.get("device", "cpu")).split(":")[0]
    tag = f"{device}-{provenance.get('dtype', 'unknown')}"
    backend = provenance.get("backend")
    if backend and backend != "transformers":
        tag += f"-{backend}"
    return tag


@dataclass
class ModelSnapshots:
    """Snapshots of real models: ``<root>/<model slug>/<device>-<dtype>/<CLAIM>_<lens>_<dataset>.json``.

    Only compares where a snapshot file exists, so a run on a model (or device, dtype)
    nobody recorded reports "no snapshot yet" and fails nothing; a snapshot recorded on
    other prompts (another ``--max-examples`` or ``--data-dir``: another data hash) is
    "not compared". ``update`` (pytest ``--snapshot-update``) writes new and changed
    snapshots."""

    root: Path
    update: bool = False

    def path_for(self, result: ClaimResult, provenance: Mapping) -> Path:
        slug = result.model.replace("/", "__")
        return Path(self.root) / slug / config_tag(provenance) / f"{result.file_stem}.json"

    def check(self, result: ClaimResult, table: pd.DataFrame | None, provenance: Mapping) -> SnapshotCheck:
        value = snapshot_value(result, table, dict(provenance))
        path = self.path_for(result, provenance)
        expected = loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        name = f"{result.claim.id} v{result.claim.version} [{result.model} · {result.lens} · {result.dataset}]"
        if expected is None:
            if self.update:
                self._write(path, value)
                return SnapshotCheck("created", path, f"{name}: snapshot recorded in {path}")
            return SnapshotCheck(
                "no snapshot yet", path,
                f"{name}: no snapshot yet for this model and {config_tag(provenance)} (nothing compared); "
                f"record one with {UPDATE_HINT}",
            )
        e_hash = (expected.get("recorded_with") or {}).get("data_hash")
        g_hash = value.get("recorded_with", {}).get("data_hash")
        if e_hash and g_hash and e_hash != g_hash and not self.update:
            return SnapshotCheck(
                "not compared", path,
                f"{name}: the snapshot was recorded on other prompts (data hash {e_hash}, this run {g_hash}: another "
                f"--max-examples or --data-dir?); nothing compared",
            )
        e_lens, g_lens = _lens_hashes(expected), _lens_hashes(value)
        if e_lens != g_lens and not self.update:
            return SnapshotCheck(
                "not compared", path,
                f"{name}: the snapshot was read through another trained lens (lens hash {e_lens}, this run {g_lens}: "
                "a tuned lens trained or published elsewhere); nothing compared",
            )
        comparison = compare(expected, value)
        recorded_elsewhere = (e_hash and g_hash and e_hash != g_hash) or e_lens != g_lens
        if comparison.ok and self.update and recorded_elsewhere:
            # the same numbers from other prompts or another lens: record what this run read
            self._write(path, value)
            return SnapshotCheck("updated", path, f"{name}: snapshot updated in {path} (its numbers matched; it now "
                                                  "records this run's prompts and lens)")
        if comparison.ok:
            return SnapshotCheck("matched", path, comparison.message())
        if self.update:
            self._write(path, value)
            return SnapshotCheck("updated", path, f"{name}: snapshot updated in {path}\n{comparison.message()}")
        return SnapshotCheck("regressed", path, f"{comparison.message()}\n(snapshot: {path})")

    @staticmethod
    def _write(path: Path, value: Mapping) -> None:
        write_text(path, dumps(value))


def _lens_hashes(value: Mapping) -> tuple[str, ...]:
    """The parameter hashes of the lens(es) a snapshot was read through (none for the logit lens)."""
    lens = (value.get("recorded_with") or {}).get("lens") or {}
    lenses = lens.get("compared", [lens]) if isinstance(lens, Mapping) else []
    return tuple(str(one.get("lens_hash")) for one in lenses if isinstance(one, Mapping) and one.get("lens_hash"))
