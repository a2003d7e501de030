"""Every path option checked once, before any model loads (pytest_configure, the CLI).

:func:`path_problems` returns one line per problem, each saying what is wrong and what to
do; the caller stops with all of them at once (``pytest.UsageError``). Folders the run
writes to are created when missing and must take a file; data files are read and parsed
(they are small), so a bad line is reported here rather than inside a test.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.data.choices import PAPER_CHOICES, TASK_OPTIONS
from harness.data.facts import FACTS_FILE, MQUAKE_FILES
from harness.data.math import GSM8K_FILE
from harness.data.prose import WIKIPEDIA_FILE
from harness.data.sources import KINDS, DataSourceError, read_kind_file, resolve_data
from harness.paths import depth_claims_home

# What --data-dir must hold per kind (facts are optional: the embedded ones are used then).
DATA_DIR_FILES: dict[str, tuple[Path, ...]] = {
    "prose": (WIKIPEDIA_FILE,),
    "choices": tuple(PAPER_CHOICES / f"dset_{task}.json" for task in TASK_OPTIONS),
    "problems": (GSM8K_FILE,),
}
KIND_OPTIONS = {kind: f"--{kind}" for kind in KINDS}


@dataclass(frozen=True)
class PathOptions:
    data_dir: Path | None = None
    data: tuple[str, ...] = ()
    data_files: dict[str, Path] = field(default_factory=dict)  # kind -> --prose/--facts/--choices/--problems file
    report_dir: Path | None = None
    trace_cache: Path | None = None  # None: --no-trace-cache
    tuned_lens: str | None = None
    home: Path | None = None  # converted models, frequency tables, lenses (default depth_claims_home())


def writable_problem(path: Path, what: str, fix: str) -> str | None:
    """None when ``path`` is (or can be made) a folder that takes a new file; else the problem."""
    path = Path(os.path.expanduser(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as err:
        return f"{what} {path} cannot be written ({type(err).__name__}: {err.strerror or err}): {fix}"
    return None


def _looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or value.endswith(("/", os.sep)) or os.sep + os.sep in value


def path_problems(opts: PathOptions) -> list[str]:
    problems: list[str] = []
    try:
        sources = resolve_data(opts.data)
    except DataSourceError as err:
        problems.append(str(err))
        sources = {}
    for kind, path in opts.data_files.items():
        option = KIND_OPTIONS[kind]
        if not Path(path).is_file():
            problems.append(f"{option} {path} is not a file: give a JSON Lines file in the format of harness/data/sources.py.")
            continue
        try:
            read_kind_file(kind, path)
        except (OSError, ValueError) as err:
            problems.append(f"{option} {path} cannot be read: {err}")
    if opts.data_dir is not None:
        data_dir = Path(opts.data_dir)
        if not data_dir.is_dir():
            problems.append(f"--data-dir {data_dir} is not a folder: point it at a copy of ../shared/data (see its README), or leave it out.")
        else:
            have_facts = any((data_dir / p).is_file() for p in (*MQUAKE_FILES, FACTS_FILE))
            missing = {
                kind: files for kind, files in DATA_DIR_FILES.items()
                if kind not in opts.data_files and kind not in sources and not all((data_dir / p).is_file() for p in files)
            }
            if missing and (len(missing) == len(DATA_DIR_FILES) and not have_facts):
                problems.append(
                    f"--data-dir {data_dir} holds none of the data files the claims read "
                    f"({', '.join(str(p) for files in DATA_DIR_FILES.values() for p in files)}): point it at a copy of "
                    "../shared/data, name hub sources with --data, or leave it out to use the embedded fixtures."
                )
            else:
                for kind, files in missing.items():
                    problems.append(
                        f"--data-dir {data_dir} lacks the {kind} data ({' and '.join(str(p) for p in files)}): add it, or give "
                        f"{KIND_OPTIONS[kind]} FILE or a --data source of that kind."
                    )
    folders = [
        (opts.report_dir, "--report-dir", "give a folder you can write to (it is created when missing)."),
        (opts.trace_cache, "--trace-cache", "give a writable folder, or pass --no-trace-cache."),
        (opts.home or depth_claims_home(), "The cache folder",
         "set DEPTH_CLAIMS_HOME to a writable folder (models, token frequencies and lenses are kept there)."),
    ]
    for folder, what, fix in folders:
        problem = None if folder is None else writable_problem(folder, what, fix)
        if problem:
            problems.append(problem)
    if sources:
        problems.extend(_datasets_cache_problems())
    if opts.tuned_lens:
        lens = Path(os.path.expanduser(opts.tuned_lens))
        if lens.exists():
            absent = [f for f in ("config.json", "params.pt") if not (lens / f).is_file()]
            if not lens.is_dir() or absent:
                problems.append(
                    f"--tuned-lens {opts.tuned_lens} is not a tuned-lens folder (it needs config.json and params.pt): "
                    "point it at a folder saved by the tuned-lens package, or give a hub resource id."
                )
        elif _looks_like_path(opts.tuned_lens):
            problems.append(f"--tuned-lens {opts.tuned_lens}: no such folder. Give an existing lens folder, or a hub resource id.")
    return problems


def _datasets_cache_problems() -> list[str]:
    try:
        import datasets.config
    except ImportError:
        return ["--data names hub sources, which are loaded with the `datasets` package: pip install 'depth-claims[hub]' (or pip install datasets)."]
    problem = writable_problem(
        Path(datasets.config.HF_DATASETS_CACHE), "The `datasets` cache", "set HF_DATASETS_CACHE (or HF_HOME) to a writable folder."
    )
    return [problem] if problem else []
