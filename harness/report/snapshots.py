"""Numeric snapshots of claim results, compared with tolerances (syrupy extension).

A snapshot value is one claim result on one model: its claim id and version, verdict,
statistic, interval, n, the statistics of its sub-checks, and its per-layer curves
(``{"share/Top-10": {"x": "layer", "at": [0, 1, ..., "final"], "values": [...]}}``),
taken from the claim's table as its ``Claim.curves`` name them. It is stored as JSON and compared number
by number: a number may move by its claim's :class:`~harness.claims.base.Tolerance` for
that field (``Claim.tolerances``, written next to each claim's registration), never
more. A failure names the claim and its version, the field, the layer, the expected and
the received value and the tolerance, and says how to accept an intended change:

    GTR-1 v1 [tiny-gpt2 · logit · synthetic]: 1 number changed beyond its tolerance
      statistic changed: expected 0.416667, got 0.458333 (|diff| 0.0417 > tolerance rel 0, abs 0.001)
    If the change is intended, run pytest with --snapshot-update to record the new numbers;
    if you changed how GTR-1 is computed, bump its Claim.version (harness/claims/) and run
    --snapshot-update.

The snapshot records the claim's version and definition digest (``Claim.definition_digest``:
threshold, direction, min_n and ``Claim.parameters``), so numbers recorded under another
version are not compared: the failure says that the definition changed and asks for
``--snapshot-update``; a changed digest under the same version asks for a version bump
first; re-running the same code always matches.

Two ways to use it:

- in tests, with syrupy: ``assert snapshot.use_extension(NumericSnapshotExtension) ==
  snapshot_value(result, table)`` (``--snapshot-update`` records new numbers, syrupy's
  normal flow); see ``tests/test_snapshots_tiny.py``;
- for real models in ``claims/``: :class:`ModelSnapshots` keeps one file per (model,
  device and dtype, claim, lens, dataset) under ``claims/recorded_snapshots/`` and compares
  only where a file exists (a model without snapshots reports "no snapshot yet"); see
  ``claims/snapshots.py`` and ``docs/nightly-gpu.md``.

Measured run-to-run variation, which the tolerances are chosen from
(``python benchmarks/snapshot_variation.py``: tiny random models of all 13 families,
float32 on a CPU, the claims of ``tests/test_snapshots_tiny.py``; ``--default-model``:
the embedded default model, GTR-1/2 on 150 prefixes, CSO-1/2 on 8 problems, CSO-4 on 4,
float32 and bfloat16 on a CPU). Details and the resulting ``DECISIONS``, ``CONTINUOUS``
and ``EXACT`` tolerances: ``harness/claims/base.py``.

- the same computation twice: identical to the last bit (float32 and bfloat16);
- 1 vs 2 threads: numbers from argmax / top-k / rank decisions (shares, flip rates,
  overlaps) identical; continuous numbers (contributions, cosines, KL, skip effects) move
  by up to 8.4e-7 (tiny models); the default model: identical, in bfloat16 too;
- batch size 8 vs 1 (tiny) or 3 (default model): decisions identical; KL moves by up to
  1e-6 (default model, values about 10);
- the bootstrap with its fixed seed: identical intervals on identical inputs;
- float64 instead of float32 (float32's rounding error): decisions identical; continuous
  numbers move by up to 1.2e-6 (relative 3.7e-6 on numbers >= 1e-3);
- bfloat16 with batch size 8 vs 3 (other kernel shapes, like a torch or CUDA update on a
  GPU): about 1 decision in 150 flips on the default model (GTR-1 statistic 0.0067, GTR-2
  flip rates 0.018), KL moves by 1.8e-3;
- bfloat16 instead of float32: shares move by 0.03 (default model) to 0.14 (tiny),
  continuous numbers by 1.4e-4 to 6e-2.

So a float32 CPU run reproduces its snapshot to float32 rounding; the tolerances allow
about 10x that for continuous numbers and no flipped decision. bfloat16 runs were
deterministic when repeated (measured on a CPU; assumed for the GPU runner, not measured
here), but a library or driver update flips near-tied decisions: that fails, naming the
torch version the snapshot was recorded with, and is re-recorded.
"""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from harness.claims.base import CLAIMS, Claim, ClaimResult, CurveSpec, Tolerance
from harness.files import write_text

if TYPE_CHECKING:
    from syrupy.types import (
        PropertyFilter,
        PropertyMatcher,
        SerializableData,
        SerializedData,
    )

SNAPSHOT_FORMAT = 1
UPDATE_HINT = "--snapshot-update"
MAX_LISTED = 12  # mismatches listed in a failure message; the rest are counted


# --------------------------------------------------------------------------- values


# For a claim not listed above: x = "layer", the first of these value columns, and one
# curve per combination of the table's text columns (other than these metadata).
FALLBACK_VALUES = ("value", "mean", "share", "flip_rate", "layer")
META_COLUMNS = {"claim", "model", "lens", "dataset", "ci_low", "ci_high", "token", "kl"}


def _label(v: Any) -> int | float | str:
    """An x label or a group value as JSON: integers as ints, other text as is."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return int(v) if float(v).is_integer() else float(v)
    s = str(v)
    return int(s) if s.lstrip("-").isdigit() else s


def _number(v: Any) -> float | str | None:
    """A number as JSON: 8 significant digits (float32 carries about 7); non-finite
    values as the strings "nan", "inf", "-inf"; None stays None."""
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(f"{v:.8g}")


def _float(v: Any) -> float | None:
    """Back from JSON: "nan"/"inf"/"-inf" to floats, None stays None."""
    if v is None:
        return None
    return float(v)


def _fallback_spec(table: pd.DataFrame) -> tuple[CurveSpec, ...]:
    if "layer" not in table.columns:
        return ()
    value = next((c for c in FALLBACK_VALUES if c in table.columns and c != "layer"), None)
    if value is None:
        return ()
    by = tuple(
        c for c in table.columns
        if c not in META_COLUMNS and c not in ("layer", value) and table[c].dtype == object
    )
    return (CurveSpec("layer", value, by),)


def curves_from_table(claim_id: str, table: pd.DataFrame) -> dict[str, dict]:
    """The snapshotted curves of one claim's table: name -> {"x", "at", "values"}.

    A curve's name is its value column, then its group values ("share/Top-10"; numbers
    as "prompt=0"), which is also how ``Claim.tolerances`` keys address it."""
    claim = _claim_of(claim_id)
    specs = (claim.curves if claim is not None else ()) or _fallback_spec(table)
    curves: dict[str, dict] = {}
    for spec in specs:
        rows = table
        for col, val in spec.where.items():
            rows = rows[rows[col] == val]
        if rows.empty:
            continue
        groups = rows.groupby(list(spec.by), sort=False, dropna=False) if spec.by else [((), rows)]
        for key, part in groups:
            key = key if isinstance(key, tuple) else (key,)
            names = [spec.value]
            for col, v in zip(spec.by, key):
                lab = _label(v)
                names.append(f"{col}={lab}" if isinstance(lab, (int, float)) else str(lab))
            curves["/".join(names)] = {
                "x": spec.x,
                "at": [_label(v) for v in part[spec.x]],
                "values": [_number(v) for v in part[spec.value]],
            }
    return curves


def snapshot_value(result: ClaimResult, table: pd.DataFrame | None = None, provenance: dict | None = None) -> dict:
    """What a snapshot keeps of one claim result (JSON-ready).

    ``table``: the claim's long-format table (the curves ``Claim.curves`` names are kept);
    ``provenance``: the result's provenance record, of which the parts that decide the
    numbers (device, dtype, backend, revision, lens, data hash) are recorded under
    ``recorded_with`` -- shown when numbers differ, never compared themselves."""
    e = result.estimate
    value: dict[str, Any] = {
        "format": SNAPSHOT_FORMAT,
        "claim": result.claim.id,
        "version": result.claim.version,
        "definition": result.claim.definition_digest,
        "model": result.model,
        "lens": result.lens,
        "dataset": result.dataset,
        "verdict": result.verdict,
        "statistic": _number(e.value),
        "ci_low": _number(e.ci_low),
        "ci_high": _number(e.ci_high),
        "n": int(e.n),
        "subchecks": {c.name: _number(c.estimate.value) for c in result.subchecks},
        "curves": curves_from_table(result.claim.id, table) if table is not None else {},
    }
    if provenance:
        keep = ("device", "dtype", "backend", "revision", "lens", "data_hash", "engine_version", "torch", "transformers")
        recorded = {k: provenance[k] for k in keep if k in provenance}
        value["recorded_with"] = json.loads(json.dumps(recorded, default=str))
    return value


def dumps(value: Mapping) -> str:
    """Stable, diff-friendly JSON: one line per scalar, per sub-check and per curve."""
    lines = ["{"]
    items = list(value.items())
    for i, (key, v) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(v, Mapping) and v:
            lines.append(f"  {json.dumps(key)}: {{")
            inner = list(v.items())
            for j, (k2, v2) in enumerate(inner):
                c2 = "," if j < len(inner) - 1 else ""
                lines.append(f"    {json.dumps(k2)}: {json.dumps(v2, ensure_ascii=False)}{c2}")
            lines.append(f"  }}{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(v, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Mismatch:
    """One difference between a snapshot and a new value."""

    field: str  # "statistic", "curve share/Top-10", "version", ...
    expected: Any
    got: Any
    tolerance: Tolerance | None = None
    at: str | None = None  # "layer 3 (index 3)" for a curve element

    def describe(self) -> str:
        where = f"{self.field} at {self.at}" if self.at else self.field
        if self.tolerance is None:
            return f"{where} changed: expected {self.expected!r}, got {self.got!r}"
        diff = ""
        if isinstance(self.expected, (int, float)) and isinstance(self.got, (int, float)):
            d = abs(self.got - self.expected)
            if math.isfinite(d):
                diff = f"|diff| {d:.3g} > "
        return (
            f"{where} changed: expected {_fmt(self.expected)}, got {_fmt(self.got)} "
            f"({diff}tolerance {self.tolerance})"
        )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return repr(v) if v is None or isinstance(v, str) else str(v)


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing a new value with its snapshot."""

    claim_id: str
    version: int | None
    title: str  # "GTR-1 v1 [model · lens · dataset]"
    mismatches: tuple[Mismatch, ...] = ()
    version_changed: tuple[int | None, int | None] | None = None  # (snapshot, code)
    context: tuple[str, ...] = ()  # recorded_with differences, as hints
    # (snapshot, code) definition digests that differ under the same version
    definition_changed: tuple[str, str] | None = None

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.version_changed is None and self.definition_changed is None

    def message(self) -> str:
        if self.ok:
            return f"{self.title}: matches its snapshot"
        if self.version_changed is not None:
            old, new = self.version_changed
            lines = [
                (
                    f"{self.claim_id}: the snapshot records v{old}, the code is v{new}: the claim's definition "
                    "changed, so its recorded numbers no longer apply."
                ),
                f"Run pytest with {UPDATE_HINT} to record the numbers of v{new}.",
            ]
            return "\n".join(lines)
        if self.definition_changed is not None:
            old, new = self.definition_changed
            return (
                f"{self.title}: the claim's definition changed (threshold, direction, min_n or a parameter in "
                f"Claim.parameters: digest {old} in the snapshot, {new} in the code) but its version did not. Bump "
                f"{self.claim_id}'s Claim.version (harness/claims/) and run pytest with {UPDATE_HINT}; if the change "
                "does not alter any number, still bump it: the snapshot cannot tell."
            )
        n = len(self.mismatches)
        lines = [f"{self.title}: {n} number{'s' if n != 1 else ''} changed beyond {'their' if n != 1 else 'its'} tolerance"]
        lines += [f"  {m.describe()}" for m in self.mismatches[:MAX_LISTED]]
        if n > MAX_LISTED:
            lines.append(f"  ... and {n - MAX_LISTED} more")
        lines += [f"  (snapshot recorded with {c})" for c in self.context]
        lines.append(
            f"If the change is intended, run pytest with {UPDATE_HINT} to record the new numbers; if you changed "
            f"how {self.claim_id} is computed, bump its Claim.version (harness/claims/) and run {UPDATE_HINT}."
        )
        return "\n".join(lines)


def _claim_of(claim_id: str) -> Claim | None:
    """The registered claim (its module imported on demand, so that tolerances apply
    wherever a snapshot is compared)."""
    if claim_id not in CLAIMS:
        import harness.claims as package

        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"harness.claims.{module.name}")
    return CLAIMS.get(claim_id)


def compare(expected: Mapping, got: Mapping, claim: Claim | None = None) -> Comparison:
    """Compare a new value (``got``, from the code now) with its snapshot (``expected``).

    Tolerances come from ``claim`` (default: the registered claim of ``got``'s id; none
    registered: :data:`~harness.claims.base.DEFAULT_TOLERANCE` for every number)."""
    claim_id = str(got.get("claim"))
    tol = (claim or _claim_of(claim_id) or _NO_CLAIM).tolerance
    version = got.get("version")
    title = f"{claim_id} v{version} [{got.get('model')} · {got.get('lens')} · {got.get('dataset')}]"
    mismatches: list[Mismatch] = []
    if expected.get("version") != version:
        return Comparison(claim_id, version, title, version_changed=(expected.get("version"), version))
    if expected.get("definition") != got.get("definition"):
        changed = (str(expected.get("definition")), str(got.get("definition")))
        return Comparison(claim_id, version, title, definition_changed=changed)

    for key in ("claim", "model", "lens", "dataset", "verdict"):
        if expected.get(key) != got.get(key):
            mismatches.append(Mismatch(key, expected.get(key), got.get(key)))
    for key in ("statistic", "ci_low", "ci_high", "n"):
        e, g = _float(expected.get(key)), _float(got.get(key))
        t = tol(key)
        if not t.allows(e, g):
            mismatches.append(Mismatch(key, e, g, t))

    e_sub, g_sub = expected.get("subchecks", {}) or {}, got.get("subchecks", {}) or {}
    for name in sorted(set(e_sub) | set(g_sub)):
        if name not in g_sub or name not in e_sub:
            side = "no longer produced" if name not in g_sub else "new, not in the snapshot"
            mismatches.append(Mismatch(f"sub-check {name} ({side})", e_sub.get(name), g_sub.get(name)))
            continue
        t = tol("subchecks")
        e, g = _float(e_sub[name]), _float(g_sub[name])
        if not t.allows(e, g):
            mismatches.append(Mismatch(f"sub-check {name}", e, g, t))

    e_cur, g_cur = expected.get("curves", {}) or {}, got.get("curves", {}) or {}
    for name in list(e_cur) + [n for n in g_cur if n not in e_cur]:
        if name not in g_cur:
            mismatches.append(Mismatch(f"curve {name} (no longer produced)", len(e_cur[name]["values"]), None))
            continue
        if name not in e_cur:
            mismatches.append(Mismatch(f"curve {name} (new, not in the snapshot)", None, len(g_cur[name]["values"])))
            continue
        ec, gc = e_cur[name], g_cur[name]
        if ec.get("at") != gc.get("at"):
            mismatches.append(Mismatch(f"curve {name} {ec.get('x')} values", ec.get("at"), gc.get("at")))
            continue
        t = tol(name)
        for i, (e, g) in enumerate(zip(ec["values"], gc["values"])):
            e, g = _float(e), _float(g)
            if not t.allows(e, g):
                label = ec["at"][i]
                at = f"{ec.get('x')} {label}" + (f" (index {i})" if label != i else "")
                mismatches.append(Mismatch(f"curve {name}", e, g, t, at=at))

    context: list[str] = []
    if mismatches:
        e_rec, g_rec = expected.get("recorded_with", {}) or {}, got.get("recorded_with", {}) or {}
        for key in sorted(set(e_rec) & set(g_rec)):
            if e_rec[key] != g_rec[key]:
                context.append(f"{key} {e_rec[key]!r}; this run: {g_rec[key]!r}")
    return Comparison(claim_id, version, title, tuple(mismatches), None, tuple(context))


_NO_CLAIM = Claim(
    id="?", version=0, paper="", source="", statement="", statistic="", threshold=None, direction=None, paper_value=""
)


def _parse(data: Any) -> dict | None:
    if isinstance(data, Mapping):
        return dict(data)
    if not data:
        return None
    try:
        value = json.loads(data)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# --------------------------------------------------------------------------- syrupy


class NumericSnapshotExtension(SingleFileSnapshotExtension):
    """One JSON file per snapshot; numbers compared with the claim's tolerances.

    ``assert snapshot(extension_class=NumericSnapshotExtension) == snapshot_value(result, table)``;
    ``--snapshot-update`` records new numbers (only where they moved beyond a tolerance,
    or the version changed: numbers within tolerance keep their recorded values)."""

    _write_mode = WriteMode.TEXT
    file_extension = "json"

    @classmethod
    def claim_for(cls, claim_id: str) -> Claim | None:
        """The claim whose tolerances apply (subclasses may supply their own)."""
        return _claim_of(claim_id)

    def serialize(
        self,
        data: SerializableData,
        *,
        exclude: PropertyFilter | None = None,
        include: PropertyFilter | None = None,
        matcher: PropertyMatcher | None = None,
    ) -> SerializedData:
        if isinstance(data, ClaimResult):
            data = snapshot_value(data)
        if not isinstance(data, Mapping) or "claim" not in data:
            raise TypeError(
                "NumericSnapshotExtension snapshots a claim result: pass snapshot_value(result, table) "
                f"(a dict with 'claim', 'version', ...), not {type(data).__name__}."
            )
        return dumps(data)

    def _comparison(self, serialized_data: Any, snapshot_data: Any) -> Comparison | None:
        got, expected = _parse(serialized_data), _parse(snapshot_data)
        if got is None or expected is None:
            return None
        return compare(expected, got, self.claim_for(str(got.get("claim"))))

    def matches(self, *, serialized_data: SerializableData, snapshot_data: SerializableData) -> bool:
        comparison = self._comparison(serialized_data, snapshot_data)
        return comparison is not None and comparison.ok

    def diff_lines(self, serialized_data: SerializedData, snapshot_data: SerializedData) -> Iterator[str]:
        got = _parse(serialized_data)
        if _parse(snapshot_data) is None:
            claim = got.get("claim") if got else "?"
            yield f"{claim}: no snapshot recorded yet (or it is not valid JSON); run pytest with {UPDATE_HINT} to record it."
            return
        comparison = self._comparison(serialized_data, snapshot_data)
        if comparison is None:
            yield "The received value is not a claim snapshot value."
            return
        yield from comparison.message().splitlines()


# --------------------------------------------------------------------------- real models


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
        expected = _parse(path.read_text(encoding="utf-8")) if path.is_file() else None
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


CHECKS_FILE = "snapshot_checks.json"


def regressions(report_dir: Path) -> list[dict]:
    """Every "regressed" record in ``<report_dir>/*/snapshot_checks.json``."""
    found = []
    for path in sorted(Path(report_dir).glob(f"*/{CHECKS_FILE}")):
        found += [r for r in json.loads(path.read_text(encoding="utf-8")) if r.get("status") == "regressed"]
    return found


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.report.snapshots REPORT_DIR``: print the snapshot checks of a
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
