"""--tuned-lens made for another model (the GTR paper read pythia-6.9b through the lens of
pythia-6.9b-deduped): refused with a clear error, accepted only with
--allow-lens-mismatch, and then recorded in the lens identity, the provenance and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from harness.lens_training import TunedLensMissing
from harness.models.registry import control_of
from harness.paths import REPO_ROOT
from harness.report.html import build_model_report
from harness.report.schema import PROVENANCE_SCHEMA, claims_errors
from harness.session import ModelSession, RunConfig
from harness.tuned_lens import LensMismatch, read_lens
from tests.report_data import make_report_folder, records
from tests.test_tuned_lens import random_lens
from tests.tiny import tiny_llama
from tests.tiny_checkpoint import save_tiny_checkpoint

DEDUPED = "EleutherAI/pythia-6.9b-deduped"


def _lens_for(loaded, folder: Path, base_model: str, keep_hash: bool = True) -> Path:
    """A tuned-lens folder (config.json + params.pt) whose config names ``base_model``."""
    folder = random_lens(loaded).save(folder)
    config = json.loads((folder / "config.json").read_text())
    config["base_model_name_or_path"] = base_model
    if not keep_hash:
        config["unembed_hash"] = None
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_lens_of_another_model_is_refused_unless_allowed(tmp_path):
    model, other = tiny_llama(seed=0), tiny_llama(seed=1)  # same shapes, other weights
    folder = _lens_for(other, tmp_path / "lens", DEDUPED)
    with pytest.raises(LensMismatch, match=f"trained for {DEDUPED}, not for tiny-llama-0.*--allow-lens-mismatch"):
        read_lens(folder, model)
    lens = read_lens(folder, model, allow_mismatch=True)
    assert lens.mismatch["lens_model"] == DEDUPED and lens.mismatch["model"] == "tiny-llama-0"
    assert "unembedding hash" in lens.mismatch["reason"]
    assert lens.identity["lens_source"]["model_mismatch"] == lens.mismatch
    assert read_lens(_lens_for(model, tmp_path / "own", DEDUPED), model).mismatch is None  # same hash: its own lens


def test_a_hashless_lens_is_matched_by_its_model_name(tmp_path):
    model = tiny_llama(seed=0)
    assert read_lens(_lens_for(model, tmp_path / "named", "someone/tiny-llama-0", keep_hash=False), model).mismatch is None
    folder = _lens_for(model, tmp_path / "other", DEDUPED, keep_hash=False)
    with pytest.raises(LensMismatch, match="records no unembedding hash"):
        read_lens(folder, model)
    assert read_lens(folder, model, allow_mismatch=True).mismatch["lens_model"] == DEDUPED


def test_the_session_records_an_allowed_mismatch_in_the_provenance(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny-words")
    other = ModelSession(RunConfig(models=("x",), trace_cache=None, report_dir=tmp_path / "r"), str(save_tiny_checkpoint(tmp_path / "other", seed=3)))
    lens_dir = _lens_for(other.loaded, tmp_path / "lens", DEDUPED)
    config = RunConfig(models=(str(checkpoint),), lenses=("tuned",), trace_cache=None, report_dir=tmp_path / "r", tuned_lens=str(lens_dir))
    with pytest.raises(LensMismatch, match="--allow-lens-mismatch"):
        ModelSession(config, str(checkpoint)).lens("tuned")
    allowed = RunConfig(**{**config.__dict__, "allow_lens_mismatch": True})
    session = ModelSession(allowed, str(checkpoint))
    provenance = session.provenance("tuned")
    assert provenance["lens_mismatch"] == {"lens_model": DEDUPED, "model": "tiny-words", "reason": session.lens("tuned").mismatch["reason"]}
    assert provenance["lens"]["lens_source"]["model_mismatch"]["lens_model"] == DEDUPED
    assert "lens_mismatch" not in session.provenance("logit")
    jsonschema.validate({**provenance, "data_hash": "x", "finished_at": "2026-01-01T00:00:00+00:00", "run_seconds": 1.0}, PROVENANCE_SCHEMA)
    # the untrained control fits its own lens: the published one belongs to the trained weights
    with pytest.raises(TunedLensMissing):
        ModelSession(allowed, control_of(str(checkpoint))).lens("tuned")


def test_the_model_page_shows_the_mismatch(tmp_path):
    recs = records()
    mismatch = {"lens_model": DEDUPED, "model": "tiny-model", "reason": "unembedding hash 0123 vs 4567"}
    recs[0]["provenance"]["lens_mismatch"] = mismatch
    folder = make_report_folder(tmp_path, "tiny-model", recs)
    assert claims_errors(recs) == []
    page = build_model_report(folder).read_text()
    assert 'id="lens-mismatch"' in page and DEDUPED in page and "--allow-lens-mismatch" in page
    assert page.count('id="lens-mismatch"') == 1
    plain = build_model_report(make_report_folder(tmp_path, "plain", records())).read_text()
    assert "lens-mismatch" not in plain


def test_a_claims_run_stops_once_on_a_mismatched_lens(tmp_path):
    """Without --allow-lens-mismatch the run stops at the model's first test, once, with
    the way to allow it (a usage error, not an error in every tuned-lens test)."""
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny-words")
    other = ModelSession(RunConfig(models=("x",), trace_cache=None, report_dir=tmp_path / "r"), str(save_tiny_checkpoint(tmp_path / "other", seed=3)))
    lens_dir = _lens_for(other.loaded, tmp_path / "lens", DEDUPED)
    env = {**os.environ, "DEPTH_CLAIMS_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--model", str(checkpoint), "--lens", "tuned", "--tuned-lens", str(lens_dir),
         "--no-control", "--no-trace-cache", "-k", "gtr1 or gtr2", "--max-examples", "4", "-q"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    out = run.stdout + run.stderr
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, out[-3000:]
    assert out.count(f"trained for {DEDUPED}, not for tiny-words") == 1 and "--allow-lens-mismatch" in out
    assert "passed" not in out and "failed" not in out and "Traceback" not in out
