"""What a snapshot keeps of one claim result, and the comparison of two such values.

:func:`snapshot_value` turns a claim result (and its table) into a JSON-ready dict,
:func:`dumps` / :func:`loads` write and read it, and :func:`compare` checks a new value
against a recorded one within the claim's tolerances (:class:`Comparison`, whose
``message`` names every number that moved too far). Overview and measured tolerances:
:mod:`harness.snapshots`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.claims import discover
from harness.claims.base import CLAIMS, Claim, ClaimResult, CurveSpec, Tolerance

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
    claim = registered_claim(claim_id)
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


def loads(data: Any) -> dict | None:
    """A snapshot value back from its JSON text (or a mapping); None when there is none or
    it is not a JSON object."""
    if isinstance(data, Mapping):
        return dict(data)
    if not data:
        return None
    try:
        value = json.loads(data)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


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
    title: str  # "<claim id> v1 [model · lens · dataset]"
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


def registered_claim(claim_id: str) -> Claim | None:
    """The registered claim (its module imported on demand, so that tolerances apply
    wherever a snapshot is compared)."""
    if claim_id not in CLAIMS:
        discover()
    return CLAIMS.get(claim_id)


def compare(expected: Mapping, got: Mapping, claim: Claim | None = None) -> Comparison:
    """Compare a new value (``got``, from the code now) with its snapshot (``expected``).

    Tolerances come from ``claim`` (default: the registered claim of ``got``'s id; none
    registered: :data:`~harness.claims.base.DEFAULT_TOLERANCE` for every number)."""
    claim_id = str(got.get("claim"))
    tol = (claim or registered_claim(claim_id) or _NO_CLAIM).tolerance
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
    id="?", name="unregistered", version=0, paper="", source="", statement="", statistic="", threshold=None, direction=None, paper_value=""
)
