"""Numeric snapshots: claim numbers of tiny random models, and the snapshot extension.

1. For every architecture family, the numbers of GTR-1/2 and CSO-1..4 on its tiny random
   model (``tests/snapshot_claims.py``; deterministic) are compared with
   ``tests/__snapshots__/test_snapshots_tiny/`` within the claims' tolerances. After an
   intended change: ``pytest tests/test_snapshots_tiny.py --snapshot-update`` (bump the
   claim's version first when its definition changed).
2. The extension itself: tolerances accepted and exceeded, the failure message, a
   version change, the syrupy flow end to end, and the real-model snapshots
   (:class:`ModelSnapshots`, "no snapshot yet" for a new model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import pytest

from harness.claims import discover
from harness.claims.base import DEFAULT_TOLERANCE, Claim, Tolerance
from harness.snapshots.gate import main
from harness.snapshots.store import ModelSnapshots, config_tag
from harness.snapshots.syrupy_extension import NumericSnapshotExtension
from harness.snapshots.values import compare, dumps, snapshot_value
from tests.snapshot_claims import FAMILIES, SNAPSHOT_CLAIMS, claim_results, tiny_model

ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=2)
def _results(family: str) -> dict:
    return claim_results(tiny_model(family))


@pytest.fixture
def numeric_snapshot(snapshot):
    return snapshot.use_extension(NumericSnapshotExtension)


# --------------------------------------------------------------------------- 1. tiny models


@pytest.mark.parametrize("claim_id", SNAPSHOT_CLAIMS)
@pytest.mark.parametrize("family", FAMILIES)
def test_claim_numbers_match_their_snapshot(family, claim_id, numeric_snapshot):
    result, table = _results(family)[claim_id]
    assert numeric_snapshot == snapshot_value(result, table)


def test_the_same_code_twice_gives_the_same_snapshot():
    ext = NumericSnapshotExtension()
    first = claim_results(tiny_model("llama"))
    second = claim_results(tiny_model("llama"))
    for cid in SNAPSHOT_CLAIMS:
        a, b = (ext.serialize(snapshot_value(*r[cid])) for r in (first, second))
        assert a == b  # identical text, not only within tolerance
        assert ext.matches(serialized_data=b, snapshot_data=a)


# --------------------------------------------------------------------------- 2. the extension

CLAIM = Claim(
    id="TEST-1", name="a test claim", version=3, paper="", source="", statement="", statistic="", threshold=0.5, direction="above",
    paper_value="", tolerances={"statistic": Tolerance(abs=0.01), "share": Tolerance(rel=0.1),
                                "share/Top-10": Tolerance(abs=0.001)},
)


def _value(**changes) -> dict:
    value = {
        "format": 1, "claim": "TEST-1", "version": 3, "model": "m", "lens": "logit", "dataset": "d",
        "verdict": "replicated", "statistic": 0.8, "ci_low": 0.7, "ci_high": 0.9, "n": 40,
        "subchecks": {"falls": 0.25},
        "curves": {
            "share/Top-10": {"x": "layer", "at": [0, 1, 2, "final"], "values": [0.5, 0.4, 0.3, 0.2]},
            "share/Rest": {"x": "layer", "at": [0, 1, 2, "final"], "values": [0.1, 0.2, "nan", None]},
        },
    }
    for key, v in changes.items():
        value[key] = v
    return json.loads(dumps(value))


def _with_curve(name: str, index: int, new) -> dict:
    value = _value()
    value["curves"][name]["values"][index] = new
    return value


class _Ext(NumericSnapshotExtension):
    @classmethod
    def claim_for(cls, claim_id):
        return CLAIM


def _check(expected: dict, got: dict) -> tuple[bool, str]:
    ext = _Ext()
    a, b = ext.serialize(expected), ext.serialize(got)
    return ext.matches(serialized_data=b, snapshot_data=a), "\n".join(ext.diff_lines(b, a))


def test_tolerance_lookup_takes_the_longest_key():
    assert CLAIM.tolerance("share/Top-10") == Tolerance(abs=0.001)
    assert CLAIM.tolerance("share/Rest") == Tolerance(rel=0.1)
    assert CLAIM.tolerance("flip_rate/all") == DEFAULT_TOLERANCE
    assert CLAIM.tolerance("ci_low") == DEFAULT_TOLERANCE
    assert replace(CLAIM, tolerances={"curves": Tolerance(abs=1)}).tolerance("x/y") == Tolerance(abs=1)
    assert Tolerance(rel=0.1, abs=0.01).allows(1.0, 1.105) and not Tolerance(rel=0.1, abs=0.01).allows(1.0, 1.115)
    assert Tolerance().allows(float("nan"), float("nan")) and not Tolerance(abs=1).allows(float("nan"), 0.0)
    assert Tolerance().allows(None, None) and not Tolerance(abs=1).allows(None, 0.0)
    with pytest.raises(ValueError):
        Tolerance(rel=-1)


# Claims whose tolerances are still to be chosen (in the file that registers them).
TOLERANCES_PENDING: set[str] = set()  # claims whose tolerances are not chosen yet


def test_every_registered_claim_names_its_tolerances():
    for claim in discover().values():
        if claim.id not in TOLERANCES_PENDING:
            assert {"statistic", "ci_low", "ci_high", "n", "curves"} <= set(claim.tolerances), claim.id


def test_numbers_within_tolerance_match():
    assert _check(_value(), _value(statistic=0.809))[0]
    assert _check(_value(), _with_curve("share/Rest", 1, 0.219))[0]  # rel 0.1 of 0.2
    assert _check(_value(), _value())[0]


def test_a_number_beyond_its_tolerance_fails_naming_claim_field_layer_values_and_tolerance():
    ok, message = _check(_value(), _with_curve("share/Top-10", 2, 0.302))
    assert not ok
    assert "TEST-1 v3 [m · logit · d]: 1 number changed beyond its tolerance" in message
    assert "curve share/Top-10 at layer 2 changed: expected 0.3, got 0.302" in message
    assert "tolerance rel 0, abs 0.001" in message
    assert "--snapshot-update" in message and "bump its Claim.version" in message

    ok, message = _check(_value(), _with_curve("share/Top-10", 3, 0.25))
    assert "at layer final (index 3)" in message


def test_a_changed_statistic_without_a_version_bump_fails_clearly():
    ok, message = _check(_value(), _value(statistic=0.85))
    assert not ok
    first = message.splitlines()[0]
    assert first.startswith("TEST-1 v3")
    assert "statistic changed: expected 0.8, got 0.85" in message
    assert "if you changed how TEST-1 is computed, bump its Claim.version (harness/claims/) and run --snapshot-update" in message


def test_a_version_change_is_never_compared_number_by_number():
    ok, message = _check(_value(version=2), _value())
    assert not ok
    assert message.startswith("TEST-1: the snapshot records v2, the code is v3")
    assert "--snapshot-update" in message


def test_a_changed_parameter_without_a_version_bump_fails_and_says_so():
    """The definition digest covers threshold, direction, min_n and Claim.parameters: changing
    one (here a sample size) under the same version is caught before any number is compared."""
    claim = replace(CLAIM, parameters={"prompts": 16})
    changed = replace(claim, parameters={"prompts": 32})
    assert claim.definition_digest != changed.definition_digest
    assert replace(claim, statement="reworded").definition_digest == claim.definition_digest
    assert replace(claim, threshold=0.6).definition_digest != claim.definition_digest
    ok, message = _check(_value(definition=claim.definition_digest), _value(definition=changed.definition_digest))
    assert not ok
    assert message.startswith("TEST-1 v3 [m · logit · d]: the claim's definition changed")
    assert f"digest {claim.definition_digest} in the snapshot, {changed.definition_digest} in the code" in message
    assert "Bump TEST-1's Claim.version" in message
    assert _check(_value(definition=claim.definition_digest), _value(definition=claim.definition_digest))[0]


def test_every_recorded_snapshot_carries_its_claims_current_definition():
    """A recorded snapshot of the default model (and its control) whose version matches the
    code must carry the claim's definition digest: parameters cannot drift unnoticed."""
    from harness.snapshots.values import registered_claim

    paths = sorted((ROOT / "claims" / "recorded_snapshots").rglob("*.json"))
    assert paths
    for path in paths:
        value = json.loads(path.read_text())
        claim = registered_claim(value["claim"])
        assert claim is not None, f"{path}: no registered claim {value['claim']}"
        if claim.version == value["version"]:
            assert value.get("definition") == claim.definition_digest, (
                f"{path}: definition digest {value.get('definition')}, the code's is {claim.definition_digest}: a "
                f"parameter of {claim.id} changed without a version bump"
            )


def test_verdict_n_nan_and_shape_changes_fail():
    assert "verdict changed: expected 'replicated', got 'inconclusive'" in _check(_value(), _value(verdict="inconclusive"))[1]
    assert "n changed: expected 40, got 41" in _check(_value(), _value(n=41))[1]
    assert "curve share/Rest at layer 2 changed: expected nan, got 0.5" in _check(_value(), _with_curve("share/Rest", 2, 0.5))[1]
    fewer = _value()
    fewer["curves"]["share/Top-10"] = {"x": "layer", "at": [0, 1, "final"], "values": [0.5, 0.4, 0.2]}
    assert "curve share/Top-10 layer values changed" in _check(_value(), fewer)[1]
    gone = _value()
    del gone["curves"]["share/Rest"]
    assert "curve share/Rest (no longer produced)" in _check(_value(), gone)[1]
    assert "sub-check falls changed" in _check(_value(), _value(subchecks={"falls": 0.3}))[1]


def test_a_missing_snapshot_says_how_to_record_one():
    ext = _Ext()
    lines = list(ext.diff_lines(ext.serialize(_value()), ""))
    assert "no snapshot recorded yet" in lines[0] and "--snapshot-update" in lines[0]


def test_snapshot_files_are_one_line_per_curve_and_round_trip():
    result, table = _results("gpt2")["GTR-1"]
    text = dumps(snapshot_value(result, table))
    assert json.loads(text)["curves"]["share/Top-10"]["at"][-1] == "final"
    assert sum('"share/' in line for line in text.splitlines()) == 4
    assert compare(json.loads(text), json.loads(text)).ok


def test_tolerances_of_the_registered_claim_apply():
    """A change of a GTR-1 share smaller than its tolerance matches, a larger one does not."""
    result, table = _results("gpt2")["GTR-1"]
    value = json.loads(dumps(snapshot_value(result, table)))
    tol = discover()["GTR-1"].tolerance("share/Top-10")
    moved = json.loads(json.dumps(value))
    moved["curves"]["share/Top-10"]["values"][1] += tol.abs / 2
    assert compare(value, moved).ok
    moved["curves"]["share/Top-10"]["values"][1] += tol.abs
    assert not compare(value, moved).ok


# --------------------------------------------------------------------------- syrupy, end to end

SYRUPY_TEST = """
import os
from harness.snapshots.syrupy_extension import NumericSnapshotExtension

def value(version, statistic):
    return {"claim": "GTR-1", "version": version, "model": "m", "lens": "logit", "dataset": "d",
            "verdict": "replicated", "statistic": statistic, "ci_low": 0.3, "ci_high": 0.5, "n": 10,
            "subchecks": {}, "curves": {"share/Top-10": {"x": "layer", "at": [0, 1], "values": [0.5, 0.25]}}}

def test_statistic(snapshot):
    assert snapshot.use_extension(NumericSnapshotExtension) == value(1, float(os.environ["S"]))

def test_version(snapshot):
    assert snapshot.use_extension(NumericSnapshotExtension) == value(int(os.environ["V"]), 0.4)
"""


def _pytest(path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(path), str(path), *args],
        check=False, capture_output=True, text=True, env=environment, cwd=path, timeout=300,
    )


def test_syrupy_records_compares_and_updates(tmp_path):
    """The syrupy flow end to end (4 pytest runs in a subprocess): record, match within
    tolerance, fail beyond it and on a version change, accept new numbers on update."""
    (tmp_path / "test_numbers.py").write_text(textwrap.dedent(SYRUPY_TEST))
    stored = tmp_path / "__snapshots__" / "test_numbers"
    created = _pytest(tmp_path, "--snapshot-update", S="0.4", V="1")
    assert created.returncode == 0, created.stdout + created.stderr
    assert json.loads((stored / "test_statistic.json").read_text())["statistic"] == 0.4

    tol = discover()["GTR-1"].tolerance("statistic").abs  # GTR-1's own tolerance applies
    within = _pytest(tmp_path, S=str(0.4 + tol / 2), V="1")
    assert within.returncode == 0, within.stdout + within.stderr

    changed = _pytest(tmp_path, S="0.45", V="2")
    assert changed.returncode == 1
    out = changed.stdout
    assert "GTR-1 v1 [m · logit · d]: 1 number changed beyond its tolerance" in out
    assert "statistic changed: expected 0.4, got 0.45 (|diff| 0.05 > tolerance rel 0, abs 0.001)" in out
    assert "bump its Claim.version (harness/claims/) and run --snapshot-update" in out
    assert "GTR-1: the snapshot records v1, the code is v2" in out

    updated = _pytest(tmp_path, "--snapshot-update", S="0.45", V="2")
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert json.loads((stored / "test_statistic.json").read_text())["statistic"] == 0.45
    assert json.loads((stored / "test_version.json").read_text())["version"] == 2


# --------------------------------------------------------------------------- real models

PROVENANCE = {"device": "cuda:0", "dtype": "bfloat16", "backend": "transformers", "revision": "abc",
              "data_hash": "h1", "torch": "2.5.0"}


def test_model_snapshots_report_no_snapshot_yet_then_record_and_compare(tmp_path):
    result, table = _results("llama")["CSO-1"]
    checks = ModelSnapshots(tmp_path)
    first = checks.check(result, table, PROVENANCE)
    assert first.status == "no snapshot yet" and not first.regressed
    assert "no snapshot yet" in first.message and not first.path.exists()

    created = ModelSnapshots(tmp_path, update=True).check(result, table, PROVENANCE)
    assert created.status == "created"
    assert created.path == tmp_path / "tiny-llama" / "cuda-bfloat16" / f"{result.file_stem}.json"
    assert checks.check(result, table, PROVENANCE).status == "matched"

    other_data = checks.check(result, table, {**PROVENANCE, "data_hash": "h2"})
    assert other_data.status == "not compared" and "other prompts" in other_data.message
    # --snapshot-update with the same numbers from other prompts records the new prompts' hash
    rehashed = ModelSnapshots(tmp_path, update=True).check(result, table, {**PROVENANCE, "data_hash": "h2"})
    assert rehashed.status == "updated" and "numbers matched" in rehashed.message
    assert checks.check(result, table, {**PROVENANCE, "data_hash": "h2"}).status == "matched"
    assert ModelSnapshots(tmp_path, update=True).check(result, table, PROVENANCE).status == "updated"  # and back

    moved = replace(result, estimate=replace(result.estimate, value=result.estimate.value * 1.5))
    regressed = checks.check(moved, table, {**PROVENANCE, "torch": "2.6.0"})
    assert regressed.regressed
    assert "CSO-1 v1 [tiny-llama · none · synthetic]" in regressed.message
    assert "statistic changed" in regressed.message
    assert "snapshot recorded with torch '2.5.0'; this run: '2.6.0'" in regressed.message

    assert ModelSnapshots(tmp_path, update=True).check(moved, table, PROVENANCE).status == "updated"
    assert checks.check(moved, table, PROVENANCE).status == "matched"


def test_config_tag_and_the_regression_gate(tmp_path, capsys):
    assert config_tag({"device": "cpu", "dtype": "float32", "backend": "transformers"}) == "cpu-float32"
    assert config_tag({"device": "cuda:1", "dtype": "bfloat16", "backend": "nnsight"}) == "cuda-bfloat16-nnsight"
    assert main([str(tmp_path)]) == 1  # nothing was checked: the gate fails
    model = tmp_path / "m"
    model.mkdir()
    (model / "snapshot_checks.json").write_text(json.dumps([{"status": "matched", "message": "ok"}]))
    assert main([str(tmp_path)]) == 0
    (model / "snapshot_checks.json").write_text(json.dumps([{"status": "regressed", "message": "GTR-1 moved"}]))
    assert main([str(tmp_path)]) == 1
    assert "GTR-1 moved" in capsys.readouterr().out


def test_the_claims_hook_fails_only_on_a_regression_and_writes_its_checks(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from claims.snapshot_fixture import CHECKS, make_claim_snapshot

    monkeypatch.setenv("DEPTH_CLAIMS_SNAPSHOT_DIR", str(tmp_path / "snapshots"))
    result, table = _results("llama")["CSO-1"]
    session = SimpleNamespace(config=SimpleNamespace(report_dir=tmp_path / "reports"),
                              loaded=SimpleNamespace(spec=SimpleNamespace(slug="tiny-llama")))

    def run(update: bool, res=result):
        config = SimpleNamespace(option=SimpleNamespace(update_snapshots=update), stash=pytest.Stash())
        check = make_claim_snapshot(config, session)(res, table, PROVENANCE)
        assert config.stash[CHECKS] == [check]
        written = json.loads((tmp_path / "reports" / "tiny-llama" / "snapshot_checks.json").read_text())
        assert [r["status"] for r in written] == [check.status]  # each run starts the file afresh
        return check

    assert run(False).status == "no snapshot yet"  # a new model: nothing fails
    assert run(True).status == "created"
    assert run(False).status == "matched"
    moved = replace(result, estimate=replace(result.estimate, ci_low=result.estimate.ci_low - 0.01))
    with pytest.raises(pytest.fail.Exception, match="ci_low changed"):
        run(False, moved)
    written = json.loads((tmp_path / "reports" / "tiny-llama" / "snapshot_checks.json").read_text())
    assert written[0]["status"] == "regressed" and "CSO-1 v1" in written[0]["message"]
