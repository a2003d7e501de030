"""Bad path options fail before any work, once, with one message per problem.

One test per option on :func:`harness.path_checks.path_problems` (what conftest's
pytest_configure checks), and two runs of pytest in a subprocess (``--collect-only``)
that check the wiring: a usage error (exit code 4) listing every problem, no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.models import UnknownModel, resolve
from harness.path_checks import PathOptions, path_problems

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def blocked(tmp_path) -> Path:
    """A path no one can create a folder at, even root: it lies under a regular file."""
    (tmp_path / "a-file").write_text("x")
    return tmp_path / "a-file" / "sub"


def _problems(tmp_path, **kw) -> list[str]:
    return path_problems(PathOptions(home=tmp_path / "home", **kw))


def test_good_paths_pass_and_folders_are_created(tmp_path):
    assert _problems(tmp_path, report_dir=tmp_path / "r" / "deep", trace_cache=tmp_path / "t") == []
    assert (tmp_path / "r" / "deep").is_dir() and (tmp_path / "t").is_dir() and (tmp_path / "home").is_dir()


def test_model_folder_without_config(tmp_path):
    with pytest.raises(UnknownModel, match="holds no config.json"):
        resolve(str(tmp_path))


def test_report_dir_not_writable(tmp_path, blocked):
    (problem,) = _problems(tmp_path, report_dir=blocked)
    assert problem.startswith(f"--report-dir {blocked} cannot be written (NotADirectoryError")
    assert problem.endswith("give a folder you can write to (it is created when missing).")


def test_trace_cache_not_writable(tmp_path, blocked):
    (problem,) = _problems(tmp_path, trace_cache=blocked)
    assert "--trace-cache" in problem and "--no-trace-cache" in problem


def test_home_cache_not_writable(tmp_path, blocked):
    (problem,) = path_problems(PathOptions(home=blocked))
    assert "DEPTH_CLAIMS_HOME" in problem


def test_data_dir_missing_or_empty(tmp_path):
    (problem,) = _problems(tmp_path, data_dir=tmp_path / "nowhere")
    assert "is not a folder" in problem
    (tmp_path / "empty").mkdir()
    (problem,) = _problems(tmp_path, data_dir=tmp_path / "empty")
    assert "holds none of the data files" in problem and "--data" in problem


def test_data_dir_partly_filled_names_each_missing_kind(tmp_path):
    (tmp_path / "d" / "gsm8k").mkdir(parents=True)
    (tmp_path / "d" / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "a #### 1"}) + "\n")
    problems = _problems(tmp_path, data_dir=tmp_path / "d")
    assert len(problems) == 2 and "prose" in problems[0] and "--prose FILE" in problems[0] and "choices" in problems[1]
    choices = tmp_path / "choices.jsonl"
    choices.write_text(json.dumps({"prompt": "Is it? Answer:", "options": ["Yes", "No"], "answer": "Yes"}) + "\n")
    assert _problems(tmp_path, data_dir=tmp_path / "d", data_files={"prose": _prose_file(tmp_path), "choices": choices}) == []


def test_hub_sources_need_a_writable_datasets_cache(tmp_path, blocked, monkeypatch):
    datasets_config = pytest.importorskip("datasets.config")
    monkeypatch.setattr(datasets_config, "HF_DATASETS_CACHE", blocked)
    (problem,) = _problems(tmp_path, data=("gsm8k",))
    assert problem.startswith("The `datasets` cache") and "HF_DATASETS_CACHE" in problem
    assert _problems(tmp_path, data=("embedded",)) == []  # no hub source: the datasets cache is not needed


def _prose_file(tmp_path) -> Path:
    path = tmp_path / "prose.jsonl"
    path.write_text(json.dumps({"id": 1, "text": "One paragraph."}) + "\n")
    return path


@pytest.mark.parametrize("kind", ["prose", "facts", "choices", "problems"])
def test_kind_file_missing_or_malformed(tmp_path, kind):
    (problem,) = _problems(tmp_path, data_files={kind: tmp_path / "absent.jsonl"})
    assert problem.startswith(f"--{kind} ") and "is not a file" in problem
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nothing": 1}\n')
    (problem,) = _problems(tmp_path, data_files={kind: bad})
    assert problem.startswith(f"--{kind} {bad} cannot be read") and "bad.jsonl:1" in problem


def test_unknown_data_source(tmp_path):
    (problem,) = _problems(tmp_path, data=("wikipdia",))
    assert "Unknown --data 'wikipdia'" in problem and "wikipedia" in problem
    (problem,) = _problems(tmp_path, data=("wikipedia", "wikitext103"))
    assert "pick one" in problem


def test_tuned_lens_folder(tmp_path):
    (problem,) = _problems(tmp_path, tuned_lens=str(tmp_path / "no-lens"))
    assert "no such folder" in problem
    (tmp_path / "lens").mkdir()
    (tmp_path / "lens" / "config.json").write_text("{}")
    (problem,) = _problems(tmp_path, tuned_lens=str(tmp_path / "lens"))
    assert "config.json and params.pt" in problem
    (tmp_path / "lens" / "params.pt").write_bytes(b"")
    assert _problems(tmp_path, tuned_lens=str(tmp_path / "lens")) == []
    assert _problems(tmp_path, tuned_lens="gpt2") == []  # a hub resource id is not checked here


def _collect(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"DEPTH_CLAIMS_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_stats.py", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, **env},
    )


def test_pytest_stops_once_on_an_unwritable_report_dir(tmp_path, blocked):
    run = _collect("--report-dir", str(blocked), "--no-trace-cache", tmp_path=tmp_path)
    assert run.returncode == 4, run.stdout + run.stderr  # pytest's usage error: nothing collected, no model loaded
    out = run.stdout + run.stderr
    assert out.count("--report-dir") == 1 and "Traceback" not in out and "collected" not in out


def test_pytest_lists_every_bad_path_in_one_error(tmp_path):
    (tmp_path / "empty").mkdir()
    run = _collect(
        "--data-dir", str(tmp_path / "empty"), "--facts", str(tmp_path / "none.jsonl"), "--no-trace-cache",
        "--report-dir", str(tmp_path / "reports"), "--model", str(tmp_path / "empty"), tmp_path=tmp_path,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 4, out
    assert "holds none of the data files" in out and "--facts" in out and "holds no config.json" in out
    assert "Traceback" not in out
