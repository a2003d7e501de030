"""The depth-claims pytest plugin: options, the run's configuration, session fixtures,
collection order, the terminal summary and the HTML report.

    pytest claims/ --model pythia-6.9b --model gpt2-xl --lens logit --device cuda
    depth-claims run --model pythia-6.9b          (the installed command, from any folder)

Registered as the ``pytest11`` entry point ``harness.pytest_plugin`` (pyproject.toml), and
by the checkout's root ``conftest.py`` (``pytest_plugins``) where the package is not
installed with it; pytest registers a plugin once per name, so both together are fine.
Each model is loaded once per run (session-scoped fixtures); claims are parametrised
over ``--model`` and ``--lens``.

The plugin acts only in a run of this project (``is_claims_run``): pytest in a checkout,
or on the claims package wherever it is installed. In another project's pytest run in the
same environment it only adds its options.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.interventions.backend import BACKENDS
from harness.lens_training import RECIPES
from harness.lenses import LENS_NAMES
from harness.models import DEFAULT_MODEL, UnknownModel, resolve
from harness.models.registry import control_of
from harness.data.sources import BUNDLES, EMBEDDED, KINDS, SOURCES
from harness.path_checks import PathOptions, path_problems
from harness.paths import CLAIMS_DIR, IN_CHECKOUT, REPO_ROOT, default_report_dir, default_trace_cache
from harness.session import ModelSession, RunConfig
from harness.tuned_lens import LensMismatch

RESULTS = pytest.StashKey[list]()
SESSIONS = pytest.StashKey[list]()
RUN_CONFIG = pytest.StashKey[RunConfig]()

# Registered here, not in pyproject.toml, whose ini options are absent when the claims run
# from an installed package (``--strict-markers`` needs them).
MARKERS = (
    "slow: needs the real default model (seconds to minutes on a CPU)",
    "claim: a published claim checked on a model",
    "versus_control: a v2 claim that compares a model with its untrained control (runs on the trained models only)",
)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except (OSError, ValueError):
        return False
    return True


def is_claims_run(config: pytest.Config) -> bool:
    """Whether this pytest run is one of depth-claims: rooted in a checkout of it, or
    given a path inside the claims package (``depth-claims run``; ``pytest --pyargs
    claims``). Other projects' runs in the same environment only see the options."""
    if IN_CHECKOUT and _inside(config.rootpath, REPO_ROOT):
        return True
    for arg in config.args:
        target = arg.split("::")[0]
        if config.option.pyargs and (target == "claims" or target.startswith("claims.")):
            return True
        if _inside(config.invocation_params.dir / target, CLAIMS_DIR):
            return True
    return False


def _split(values: list[str] | None, default: list[str]) -> tuple[str, ...]:
    items = [v.strip() for value in (values or default) for v in value.split(",") if v.strip()]
    return tuple(dict.fromkeys(items))


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("depth-claims")
    g.addoption("--model", action="append", help=f"model name, hub id (NAME@REV for a revision), local folder or GGUF file; repeat or comma-separate for several (default {DEFAULT_MODEL})")
    g.addoption("--revision", default=None, help="branch, tag or commit of the hub model(s) in --model (NAME@REV does the same for one)")
    g.addoption("--lens", action="append", help=f"lens(es) to read layers with: {', '.join(LENS_NAMES)} (default both)")
    g.addoption("--tuned-lens", default=None, metavar="FOLDER_OR_ID", help="a published tuned lens for the (single) --model: a local folder with config.json + params.pt, or a resource id of the tuned-lens hub space (default: the model's published lens if the registry names one, else the lens this suite trained)")
    g.addoption("--allow-lens-mismatch", action="store_true", help="accept a --tuned-lens trained for another model than --model (e.g. the GTR paper read pythia-6.9b through the lens of pythia-6.9b-deduped); recorded in every result's provenance and shown in the report")
    g.addoption("--train-lens", action="store_true", help="train the tuned lenses a claim needs when the cache lacks them (default: skip those claims and print the command that trains them)")
    g.addoption("--lens-recipe", default="auto", choices=["auto", *RECIPES], help="training recipe of self-trained tuned lenses (auto: 'paper' on a GPU, 'closed-form' on CPU)")
    g.addoption("--lens-alignment", default="correct", choices=["correct", "paper"], help="tuned lens translator l reads h_l (correct) or h_{l+1} as in the paper's code (paper); recorded in every result")
    g.addoption("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the model runs (default auto)")
    g.addoption("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="model dtype (auto: bfloat16 on GPU, float32 on CPU)")
    g.addoption("--batch-size", type=int, default=8, help="prompts per forward pass (default 8)")
    g.addoption("--max-examples", type=int, default=None, help="cap on prompts per claim (default: all)")
    g.addoption("--data-dir", type=Path, default=None, help="folder laid out like ../shared/data (default: the embedded fixtures)")
    g.addoption("--data", action="append", metavar="NAME", help=f"named public data sources, repeat or comma-separate: {', '.join([EMBEDDED, *SOURCES, *BUNDLES])} (default embedded; kinds not named use --data-dir or the fixtures; harness/data/sources.py)")
    for kind in KINDS:
        g.addoption(f"--{kind}", type=Path, default=None, metavar="FILE", help=f"{kind} from a JSON Lines file (format: harness/data/sources.py); overrides --data and --data-dir for {kind}")
    g.addoption("--frequency-tokens", type=int, default=None, help="tokens of the prose source the frequency ranks count (default: the whole corpus; 10M of a hub source)")
    g.addoption("--trace-cache", type=Path, default=None, help=f"trace cache folder (default {default_trace_cache()})")
    g.addoption("--no-trace-cache", action="store_true", help="compute every trace afresh and store nothing")
    g.addoption("--backend", default="transformers", choices=list(BACKENDS), help="how forward passes run: plain transformers hooks or nnsight (default transformers)")
    g.addoption("--remote", action="store_true", help="run the nnsight backend on NDIF (needs --backend nnsight and NDIF_API_KEY)")
    g.addoption("--control", default="untrained", choices=["untrained"], help="run every claim also on each model's untrained control (same config, tokenizer, data and lens kind; seeded random weights) and label a claim that replicates there too 'not specific' (default untrained)")
    g.addoption("--no-control", action="store_true", help="skip the untrained control (halves the cost of a run; no claim can then be labelled 'not specific')")
    g.addoption("--report-dir", type=Path, default=None, help=f"where CSVs, figures and claims.json go (default {default_report_dir()})")


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    if not is_claims_run(config):
        return
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:gguf.*")
    config.stash[RESULTS] = []
    config.stash[SESSIONS] = []
    models = _split(config.getoption("--model"), [DEFAULT_MODEL])
    problems = []  # the models' and every path option's problems, reported together
    for name in models:
        try:
            resolve(name, config.getoption("--revision"))
        except UnknownModel as err:
            problems.append(str(err))
    lenses = _split(config.getoption("--lens"), list(LENS_NAMES))
    unknown = [name for name in lenses if name not in LENS_NAMES]
    if unknown:
        raise pytest.UsageError(f"Unknown --lens {', '.join(unknown)}; available: {', '.join(LENS_NAMES)}.")
    if config.getoption("--tuned-lens") and len(models) > 1:
        raise pytest.UsageError("--tuned-lens names one model's lens: run one --model at a time with it.")
    if config.getoption("--allow-lens-mismatch") and not config.getoption("--tuned-lens"):
        raise pytest.UsageError("--allow-lens-mismatch applies to the lens --tuned-lens names: add --tuned-lens FOLDER_OR_ID.")
    for opt in ("--batch-size", "--max-examples", "--frequency-tokens"):
        value = config.getoption(opt)
        if value is not None and value < 1:
            raise pytest.UsageError(f"{opt} must be a positive integer, got {value}.")
    data_dir = config.getoption("--data-dir")
    data = _split(config.getoption("--data"), [EMBEDDED])
    data_files = {kind: config.getoption(f"--{kind}") for kind in KINDS if config.getoption(f"--{kind}") is not None}
    no_cache = config.getoption("--no-trace-cache")
    report_dir = config.getoption("--report-dir") or default_report_dir()
    trace_cache = None if no_cache else (config.getoption("--trace-cache") or default_trace_cache())
    problems += path_problems(PathOptions(data_dir, data, data_files, report_dir, trace_cache, config.getoption("--tuned-lens")))
    if problems:  # every path problem at once, before any model loads
        raise pytest.UsageError("\n".join(problems))
    if config.getoption("--remote") and config.getoption("--backend") != "nnsight":
        raise pytest.UsageError("--remote runs through nnsight on NDIF: add --backend nnsight.")
    if config.getoption("--remote") and not config.getoption("--no-control"):
        raise pytest.UsageError(
            "--remote runs the hub's trained weights on NDIF, so the untrained control cannot run there: "
            "add --no-control (or run the control locally on a machine that can hold the model)."
        )
    config.stash[RUN_CONFIG] = RunConfig(
        models=models,
        revision=config.getoption("--revision"),
        lenses=lenses,
        device=config.getoption("--device"),
        dtype=config.getoption("--dtype"),
        batch_size=config.getoption("--batch-size"),
        max_examples=config.getoption("--max-examples"),
        data_dir=data_dir,
        data=data,
        data_files=tuple(data_files.items()),
        frequency_tokens=config.getoption("--frequency-tokens"),
        trace_cache=trace_cache,
        report_dir=report_dir,
        backend=config.getoption("--backend"),
        remote=config.getoption("--remote"),
        tuned_lens=config.getoption("--tuned-lens"),
        allow_lens_mismatch=config.getoption("--allow-lens-mismatch"),
        train_lens=config.getoption("--train-lens"),
        lens_recipe=config.getoption("--lens-recipe"),
        lens_alignment=config.getoption("--lens-alignment"),
        control=None if config.getoption("--no-control") else config.getoption("--control"),
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    run = metafunc.config.stash.get(RUN_CONFIG, None)
    if run is None:  # not a depth-claims run (is_claims_run)
        return
    if "model_name" in metafunc.fixturenames:
        models = run.models
        claim = metafunc.definition.get_closest_marker("claim")
        if run.control and claim and not metafunc.definition.get_closest_marker("versus_control"):
            # each model's control first: the model's own test then finds the control's result
            models = tuple(m for name in run.models for m in (control_of(name), name))
        metafunc.parametrize("model_name", models, scope="session")
    if "lens_name" in metafunc.fixturenames:
        metafunc.parametrize("lens_name", run.lenses, scope="session")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """All tests of one model run together, in --model order with each model's control
    just before it: a model is loaded once, and a claim's control result exists when the
    model's own test reports (stable: pytest's grouping by lens is kept within a model)."""
    run = config.stash.get(RUN_CONFIG, None)
    if run is None:
        return
    order = {m: i for i, m in enumerate(m for name in run.models for m in (control_of(name), name))}

    def model_rank(item):
        params = getattr(getattr(item, "callspec", None), "params", {})
        return order.get(params.get("model_name"), -1)

    items.sort(key=model_rank)


@pytest.fixture(scope="session")
def run_config(pytestconfig: pytest.Config) -> RunConfig:
    run = pytestconfig.stash.get(RUN_CONFIG, None)
    if run is None:
        raise pytest.UsageError(
            "depth-claims fixtures need a depth-claims run: run pytest in its checkout, or `depth-claims run`."
        )
    return run


@pytest.fixture(scope="session")
def model_session(pytestconfig: pytest.Config, run_config: RunConfig, model_name: str) -> ModelSession:
    """The model, its engine and shared traces: loaded once per run."""
    return _session_named(pytestconfig, run_config, model_name)


def _session_named(pytestconfig: pytest.Config, run_config: RunConfig, name: str) -> ModelSession:
    """The run's session of model ``name``: the one already loaded, else a new one."""
    for session in pytestconfig.stash[SESSIONS]:
        if session.name == name:
            return session
    session = ModelSession(run_config, name)
    pytestconfig.stash[SESSIONS].append(session)
    if run_config.tuned_lens and "tuned" in run_config.lenses and session.loaded.spec.control is None:
        try:  # a --tuned-lens made for another model stops the run once, not every test with an error
            session.lens("tuned")
        except LensMismatch as err:
            pytest.exit(f"--tuned-lens {run_config.tuned_lens}: {err}", returncode=pytest.ExitCode.USAGE_ERROR)
    return session


@pytest.fixture
def control_session(pytestconfig: pytest.Config, run_config: RunConfig, model_session: ModelSession) -> ModelSession:
    """The untrained control of the test's model (a v2 claim compares the two), the
    session its own claims ran in when they ran first in this run."""
    if not run_config.control:
        pytest.skip("this claim compares the model with its untrained control: run without --no-control")
    return _session_named(pytestconfig, run_config, control_of(model_session.name))


@pytest.fixture
def claim_results(pytestconfig: pytest.Config) -> list:
    """Claim results of this run, printed in the terminal summary."""
    return pytestconfig.stash[RESULTS]


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, [])
    if not results:
        return
    terminalreporter.section("depth-claims verdicts")
    for result, paths in results:
        terminalreporter.write_line(result.summary())
        terminalreporter.write_line(f"    -> {paths['csv'].parent}/{result.file_stem}.{{csv,png}}")
    for session in config.stash.get(SESSIONS, []):
        s = session.engine.stats
        terminalreporter.write_line(
            f"{session.name}: loaded in {session.load_seconds:.1f} s; traces computed {s.traces_computed}, "
            f"read from cache {s.cache_hits}; forward passes {s.forward_passes}; intervention measurements "
            f"computed {session.depth.computed}, read from cache {session.depth.cache_hits}"
        )


class _ReportSummary:
    """Says in the terminal summary where the HTML report went, or why it was not built."""

    def __init__(self, lines: list[str], ok: bool):
        self.lines, self.ok = lines, ok

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.section("depth-claims report")
        for line in self.lines:
            terminalreporter.write_line(line, yellow=not self.ok)


def pytest_sessionfinish(session: pytest.Session, exitstatus) -> None:
    """After a run that checked claims, build reports/<model>/index.html for every model
    folder and reports/index.html. Never fails the run: a problem becomes a warning."""
    import logging

    config = session.config
    results = config.stash.get(RESULTS, [])
    if not results:
        return
    report_dir = None
    try:
        from harness.report.html import build_reports

        report_dir = Path(config.stash[RUN_CONFIG].report_dir)
        pages = build_reports(report_dir)
        ran = {Path(paths["claims"]).parent.resolve() for _, paths in results if "claims" in paths}
        lines = [f"index of all models: {pages[-1]}"] + [
            f"{p.parent.name}: {p}" for p in pages[:-1] if p.parent.resolve() in ran
        ]
        ok = True
    except Exception as err:  # noqa: BLE001 - the report must never break the run
        lines = [
            (
                f"WARNING: the HTML report was not built ({type(err).__name__}: {err}). "
                f"Rebuild it with: depth-claims report --report-dir {report_dir or 'reports'}"
            )
        ]
        ok = False
        logging.getLogger("depth-claims").warning(lines[0])
    try:
        name = "depth-claims-report-summary"
        if config.pluginmanager.get_plugin(name) is not None:
            config.pluginmanager.unregister(name=name)
        config.pluginmanager.register(_ReportSummary(lines, ok), name)
    except Exception as err:  # noqa: BLE001 - printing the summary is best effort
        logging.getLogger("depth-claims").warning("could not add the report summary: %s", err)
