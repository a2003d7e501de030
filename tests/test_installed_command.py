"""The installed command: a wheel of this checkout, installed into a fresh virtual
environment, runs the claims from an empty folder (``depth-claims run``) and writes the
report to ./reports there, and nothing into the checkout. Also: the plugin stays inert in
another project's pytest run, and ``run`` isolates pytest from the current folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import cli
from harness.paths import CLAIMS_DIR, REPO_ROOT
from tests.tiny_checkpoint import save_tiny_checkpoint

SHIPPED = ("pyproject.toml", "README.md", "harness", "claims", "fixtures")


def _sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 600), **kw)
    assert run.returncode == 0, f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv (system site-packages: torch etc. come from there) with this checkout's wheel
    installed. The wheel is built from a copy of the sources, so the build writes nothing
    into the checkout."""
    root = tmp_path_factory.mktemp("installed")
    src = root / "src"
    for name in SHIPPED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(source, src / name)
    _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(root / "wheels")])
    (wheel,) = (root / "wheels").glob("depth_claims-*.whl")
    venv = root / "venv"
    _sh([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    # the system pip, run by the venv's python, installs into the venv
    _sh([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)])
    return venv


def _clean_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DEPTH_CLAIMS_"))}
    env.update(
        DEPTH_CLAIMS_HOME=str(tmp / "home"), DEPTH_CLAIMS_TRACE_CACHE=str(tmp / "traces"),
        MPLCONFIGDIR=str(tmp / "mpl"), PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _checkout_files_since(started: float, slug: str) -> list[Path]:
    """Files of the checkout a claims run would write (reports, pytest's cache, the model's
    snapshots) that changed since ``started``."""
    suspects = [REPO_ROOT / "reports", REPO_ROOT / ".pytest_cache", REPO_ROOT / "claims" / "recorded_snapshots"]
    changed = [p for d in suspects if d.exists() for p in d.rglob("*") if p.is_file() and p.stat().st_mtime >= started]
    return changed + [p for p in REPO_ROOT.rglob(f"*{slug}*")]


@pytest.mark.slow  # about 70 s on 2 cores: the wheel, the venv and a pytest run (CI runs it: `pytest tests/`)
def test_the_installed_command_runs_the_claims_from_an_empty_folder(venv, tmp_path):
    model = save_tiny_checkpoint(tmp_path / "models" / "tiny-installed-words")
    work = tmp_path / "work"
    work.mkdir()
    env = _clean_env(tmp_path)
    where = _sh(
        [str(venv / "bin" / "python"), "-c", "import harness, claims, depth_claims_fixtures as f; from harness.paths import FIXTURES_DIR; print(harness.__file__, claims.__file__, f.__file__, FIXTURES_DIR)"],
        cwd=work, env=env,
    ).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), f"imported from outside the venv: {where}"
    started = time.time() - 1
    run = subprocess.run(
        [str(venv / "bin" / "depth-claims"), "run", "--model", str(model), "--lens", "logit", "--no-control",
         "-k", "cso1 or gtr1", "--max-examples", "2"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )
    out = run.stdout + run.stderr
    # a random model need not replicate a claim (a failed claim is a finding): exit 0 or 1, not an error
    assert run.returncode in (0, 1), out[-4000:]
    assert "depth-claims verdicts" in out and "depth-claims report" in out, out[-4000:]
    report = work / "reports" / "tiny-installed-words"
    records = json.loads((report / "claims.json").read_text())
    assert {r["claim"] for r in records} == {"CSO-1", "GTR-1"}, out[-4000:]
    assert all(r["model"] == "tiny-installed-words" and r["control"] is None for r in records)
    assert (report / "index.html").is_file() and (work / "reports" / "index.html").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["reports"]  # no .pytest_cache, nothing else
    assert _checkout_files_since(started, "tiny-installed-words") == []


def test_the_plugin_is_inert_in_another_projects_run(tmp_path):
    """Loaded (as its entry point would be) into an unrelated project's pytest run, the
    plugin adds its options but checks nothing and creates no folder."""
    (tmp_path / "test_other.py").write_text("def test_other():\n    assert True\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "-p", "no:benchmark", "test_other.py"],
        cwd=tmp_path, env=_clean_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_other.py"]


def test_run_isolates_pytest_and_reports_to_the_current_folder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pytest, "main", lambda args: calls.append(args) or 0)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--model", "gpt2", "-k", "gtr1"]) == 0
    assert cli.main(["run", "--report-dir=/elsewhere", "--co"]) == 0
    first, second = calls
    assert str(CLAIMS_DIR) in first and first[-4:] == ["--model", "gpt2", "-k", "gtr1"]
    assert first[first.index("--report-dir") + 1] == str(tmp_path / "reports")
    assert first[first.index("--confcutdir") + 1] == str(CLAIMS_DIR) and first[first.index("-c") + 1] == os.devnull
    assert "no:cacheprovider" in first and "no:benchmark" in first and "harness.pytest_plugin" in first
    assert "--report-dir" not in second and second[-1] == "--co"


def test_the_wheel_lists_every_package_of_the_checkout():
    """pyproject.toml names the packages explicitly (fixtures/ installs under another name):
    a new subpackage must be added there, or the installed command would miss it."""
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    rename = {folder: name for name, folder in config["package-dir"].items()}
    found = set()
    for init in REPO_ROOT.glob("*/**/__init__.py"):
        folder = init.parent.relative_to(REPO_ROOT)
        if folder.parts[0] in ("harness", "claims", "fixtures"):
            dotted = ".".join(folder.parts)
            found.add(rename.get(dotted, dotted))
    assert found == set(config["packages"])
    assert "fixtures" not in config["packages"]  # would shadow the PyPI package "fixtures"
