"""claims.json schema, the HTML report pages, and `depth-claims report` (no model loaded)."""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import replace
from functools import partial
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import numpy as np
import pandas as pd
import pytest

from harness.claims.base import NOT_SPECIFIC, NOT_SPECIFIC_TEXT, Claim, ClaimResult, SubCheck
from harness.cli import main as cli_main
from harness.paths import REPO_ROOT
from harness.report.html import (
    LABEL_COLOURS,
    REPORTED,
    VERDICT_COLOURS,
    NoResults,
    badge_class,
    build_index,
    build_model_report,
    build_reports,
    counts,
    fmt,
    fmt_threshold,
    needs,
    problem_kinds,
    provenance_value,
    reading,
    templates,
)
from harness.report.outputs import ReportWriter, figure_digest, write_figure_once
from harness.report.schema import (
    CLAIMS_SCHEMA,
    RECORD_SCHEMA,
    SchemaError,
    claims_errors,
    record_errors,
    validate_claims,
    validate_record,
)
from harness.stats import Estimate, Verdict
from harness.stats import estimate as bootstrap_estimate
from tests.report_data import make_full_report, make_report_folder, provenance, records, tiny_png

REAL_CLAIMS = sorted((REPO_ROOT / "reports").glob("*/claims.json"))
RUN_TIME_FIELDS = ("finished_at", "run_seconds")


# ----------------------------------------------------------------------- schema


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(RECORD_SCHEMA)
    jsonschema.Draft202012Validator.check_schema(CLAIMS_SCHEMA)


def _documented(schema: dict, where: str = "record") -> list[str]:
    """Properties without a description, recursively."""
    missing = []
    for name, sub in schema.get("properties", {}).items():
        if "description" not in sub:
            missing.append(f"{where}.{name}")
        missing += _documented(sub, f"{where}.{name}")
    items = schema.get("items")
    if isinstance(items, dict):
        missing += _documented(items, f"{where}[]")
    return missing


def test_every_field_of_the_schema_is_documented():
    assert _documented(RECORD_SCHEMA) == []


def test_valid_records_pass():
    recs = records()
    for r in recs:
        validate_record(r)
    assert validate_claims(recs) == recs


BROKEN = {
    "verdict not a verdict": (lambda r: r.update(verdict="maybe"), "at verdict: 'maybe' is not one of"),
    "negative n": (lambda r: r.update(n=-1), "at n: -1 is less than the minimum of 0"),
    "missing interval": (lambda r: r.pop("ci_low"), "'ci_low' is a required property"),
    "statistic a string": (lambda r: r.update(statistic="0.3"), "at statistic: '0.3' is not of type 'number'"),
    "no run time": (lambda r: r["provenance"].pop("run_seconds"), "at provenance: 'run_seconds' is a required property"),
    "bad timestamp": (lambda r: r["provenance"].update(finished_at="yesterday"), "at provenance.finished_at: 'yesterday'"),
    "no data hash": (lambda r: r["provenance"].pop("data_hash"), "'data_hash' is a required property"),
    "tuned lens without hash": (
        lambda r: r["provenance"].update(lens={"lens": "tuned", "alignment": "correct"}),
        "at provenance.lens: lens 'tuned' has parameters, so its identity must carry a hash",
    ),
    "lens a string": (lambda r: r["provenance"].update(lens="logit"), "at provenance.lens: 'logit' must be null or an object"),
    "judged without verdict": (lambda r: r.update(verdict=None), "a record with a threshold needs a direction and a verdict"),
    "reported with a verdict": (
        lambda r: r.update(threshold=None),
        "at verdict: 'replicated' must be null: a record without a threshold is reported, not judged",
    ),
    "broken sub-check": (lambda r: r["subchecks"][0].pop("threshold"), "at subchecks[0]: 'threshold' is a required property"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_record_fails_with_a_clear_message(case):
    record = copy.deepcopy(records()[0])
    breaks, expected = BROKEN[case]
    breaks(record)
    with pytest.raises(SchemaError) as err:
        validate_record(record)
    message = str(err.value)
    assert "GTR-1/logit/prose-embedded does not match the schema" in message
    assert expected in message, message


def test_a_tuned_lens_with_its_hash_passes():
    record = copy.deepcopy(records()[0])
    record["lens"] = "tuned"
    record["provenance"]["lens"] = {"lens": "tuned", "lens_hash": "0123abcd", "alignment": "correct", "lens_source": "trained"}
    assert record_errors(record) == []


def test_a_lens_comparison_records_every_lens_with_its_hash():
    record = copy.deepcopy(records()[0])
    record["lens"] = "logit-vs-tuned"
    tuned = {"lens": "tuned", "lens_hash": "0123abcd", "alignment": "correct"}
    record["provenance"]["lens"] = {"compared": [{"lens": "logit"}, tuned]}
    assert record_errors(record) == []
    record["provenance"]["lens"] = {"compared": [{"lens": "logit"}, {"lens": "tuned"}]}
    assert record_errors(record) != []


def test_a_file_with_a_repeated_record_fails():
    recs = records()
    problems = claims_errors([*recs, recs[0]])
    assert problems == ["record 4 (GTR-1/logit/prose-embedded) repeats an earlier (claim, lens, dataset)"]
    assert claims_errors({"claim": "GTR-1"}) == ["claims.json must hold a JSON array of records, not dict"]


def _schema_problems(path: Path) -> list[str]:
    """Schema problems of a claims.json, except the run time that records written before
    it was added to the provenance lack."""
    return [
        p for p in claims_errors(json.loads(path.read_text()))
        if not any(f"'{f}' is a required property" in p for f in RUN_TIME_FIELDS)
    ]


@pytest.mark.skipif(not REAL_CLAIMS, reason="no reports/<model>/claims.json in this checkout (run pytest claims/)")
@pytest.mark.parametrize("path", REAL_CLAIMS, ids=lambda p: p.parent.name)
def test_the_real_claims_json_matches_the_schema(path):
    """Records from a run validate; records written before the run time was added to
    the provenance may lack only that."""
    assert _schema_problems(path) == []


def test_a_generated_claims_json_matches_the_schema(tmp_path):
    """The same check on a claims.json the writer produces here (runs on a clean checkout),
    with every optional part a run records: control, leave-one-layer-out, lens fidelity,
    the paper's numbers, a statistic without data."""
    path = _written_claims(tmp_path / "tiny-model")
    recs = json.loads(path.read_text())
    assert [r["label"] for r in recs] == ["not specific", "inconclusive"]
    gtr1 = recs[0]
    assert gtr1["control"]["verdict"] == "replicated" and gtr1["robustness"]["hinges_on"] == [[1], [1, 2]]
    assert gtr1["lens_fidelity"]["unreliable"] and gtr1["paper_comparison"][0]["paper"] == "> 0.75"
    assert _schema_problems(path) == []
    broken = copy.deepcopy(recs)
    broken[0]["control"]["n"] = -1  # the check can fail
    path.write_text(json.dumps(broken))
    (problem,) = _schema_problems(path)
    assert problem.startswith("record 0 (GTR-1/logit/prose-embedded) at control") and "-1 is less than the minimum of 0" in problem


def _written_claims(folder: Path) -> Path:
    """``folder/claims.json`` as ReportWriter writes it for GTR-1 with an untrained control
    that replicates too, a verdict that hinges on layer 1, an unreliable lens and the
    paper's number; and for GTR-2 on data that gave no measurement."""
    from harness.claims import discover
    from harness.claims.base import ControlOutcome, PaperComparison, leave_layers_out
    from harness.fidelity import lens_fidelity

    claims = discover()
    gtr1, gtr2 = claims["GTR-1"], claims["GTR-2"]
    rng = np.random.default_rng(0)
    values = {l: rng.normal(0.05, 0.01, 200) for l in (1, 2, 3, 4)}
    values[1] = rng.normal(0.95, 0.01, 200)
    mean_of = lambda kept: bootstrap_estimate(np.mean([values[l] for l in kept], axis=0))  # noqa: E731
    full = mean_of([1, 2, 3, 4])
    kl = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 0.0])
    result = ClaimResult(
        gtr1, "tiny-model", "logit", "prose-embedded", full,
        control=ControlOutcome("tiny-model+untrained", full, "replicated"),
        robustness=leave_layers_out(gtr1, [1, 2, 3, 4], mean_of, full),
        fidelity=lens_fidelity("logit", [1, 2, 3, 4], kl, 4096, reference=kl / 4),
        paper=(PaperComparison("Top-10 share gap", "> 0.75", "Pythia-6.9B, tuned lens", 0.27),),
    )
    nan = float("nan")
    empty = ClaimResult(gtr2, "tiny-model", "logit", "prose-embedded", Estimate(nan, nan, nan, 0, 0))
    writer = ReportWriter(folder)
    prov = {k: v for k, v in provenance(lens={"lens": "logit"}).items() if k not in RUN_TIME_FIELDS + ("run_started_at",)}
    for r in (result, empty):
        writer.record(r, prov)
    return folder / "claims.json"


# ----------------------------------------------------------------------- writing


CLAIM = Claim(
    id="TST-1", name="something holds", version=2, paper="A paper", source="Fig. 1", statement="Something holds.",
    statistic="a mean", threshold=0.2, direction="above", paper_value="about 0.4",
)


def _result(**changes) -> ClaimResult:
    sub = SubCheck("falls", "it falls", Estimate(0.3, 0.2, 0.4, 10, 10), 0.0, "above")
    base = {
        "claim": CLAIM, "model": "tiny-model", "lens": "logit", "dataset": "toy",
        "estimate": Estimate(0.5, 0.4, 0.6, 10, 5), "subchecks": (sub,),
    }
    return ClaimResult(**{**base, **changes})


def test_the_writer_adds_the_run_time_and_writes_valid_records(tmp_path):
    writer = ReportWriter(tmp_path / "tiny-model")
    prov = {k: v for k, v in provenance(lens={"lens": "logit"}).items() if k not in ("finished_at", "run_seconds", "run_started_at")}
    writer.publish(_result(), pd.DataFrame({"layer": [0, 1], "value": [0.1, 0.2]}), partial(_figure, [0.1, 0.2]), prov)
    writer.record(_result(dataset="other"), prov)
    recs = validate_claims(tmp_path / "tiny-model" / "claims.json")
    assert [(r["claim"], r["dataset"]) for r in recs] == [("TST-1", "other"), ("TST-1", "toy")]
    for r in recs:
        p = r["provenance"]
        assert p["run_seconds"] >= 0 and re.match(r"\d{4}-\d\d-\d\dT", p["finished_at"])
        assert p["run_started_at"] == writer.started_at
        assert {k: p[k] for k in prov} == prov  # the caller's provenance is kept as given
    assert (tmp_path / "tiny-model" / "TST-1_logit_toy.png").is_file()


DRAWN: list = []  # the values each _figure call drew


def _figure(values):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    DRAWN.append(values)
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot(range(len(values)), values)
    return fig


def test_a_figure_is_drawn_again_only_when_what_it_is_drawn_from_changes(tmp_path):
    path, drawn = tmp_path / "fig.png", DRAWN
    drawn.clear()
    table = pd.DataFrame({"layer": [0, 1], "value": [0.1, 0.2]})
    write_figure_once(path, partial(_figure, [0.1, 0.2]))
    first = path.read_bytes()
    write_figure_once(path, partial(_figure, [0.1, 0.2]))
    assert drawn == [[0.1, 0.2]] and path.read_bytes() == first  # same arguments: not drawn again
    write_figure_once(path, partial(_figure, [0.1, 0.3]))
    assert drawn == [[0.1, 0.2], [0.1, 0.3]] and path.read_bytes() != first
    assert figure_digest(partial(_figure, table)) != figure_digest(partial(_figure, table.assign(value=[0.1, 0.25])))
    assert figure_digest(partial(_figure, _result())) != figure_digest(partial(_figure, _result(dataset="other")))
    path.write_bytes(b"not a png")  # a damaged file is drawn again
    write_figure_once(path, partial(_figure, [0.1, 0.3]))
    assert len(drawn) == 3 and path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(TypeError, match="functools.partial"):
        write_figure_once(path, _figure([0.1]))


def test_a_statistic_without_data_is_written_as_null_and_judged_inconclusive(tmp_path):
    writer = ReportWriter(tmp_path / "tiny-model")
    prov = provenance(lens={"lens": "logit"})
    empty = _result(estimate=Estimate(float("nan"), float("nan"), float("nan"), 0, 0), details={"ratio": float("inf")})
    assert empty.verdict == "inconclusive" and empty.too_little_data == ["statistic could not be computed (n=0, needs 1)"]
    writer.record(empty, prov)
    text = (tmp_path / "tiny-model" / "claims.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    (rec,) = validate_claims(json.loads(text))
    assert rec["statistic"] is None and rec["details"]["ratio"] is None
    assert rec["too_little_data"] == ["statistic could not be computed (n=0, needs 1)"]
    few = _result(claim=replace(CLAIM, min_n=20))  # n = 10 < 20: inconclusive, whatever the interval says
    assert few.verdict == "inconclusive" and few.too_little_data[0] == "statistic has n=10, needs 20"
    assert few.subchecks[0].verdict == "inconclusive"  # the claim's min_n reaches its sub-checks
    assert _result().verdict == "replicated" and _result().too_little_data == []


def test_the_writer_refuses_an_invalid_record(tmp_path):
    writer = ReportWriter(tmp_path / "tiny-model")
    prov = provenance(lens={"lens": "logit"})
    del prov["data_hash"]
    with pytest.raises(SchemaError, match=r"TST-1/logit/toy does not match the schema[\s\S]*'data_hash' is a required property"):
        writer.record(_result(), prov)
    assert not (tmp_path / "tiny-model" / "claims.json").exists()


# ----------------------------------------------------------------------- HTML


class _Page(HTMLParser):
    """Collects what the tests look at: verdict rows, images, links, text, and the cells of
    each table (by its id, or else its class)."""

    def __init__(self, text: str):
        super().__init__()
        self.rows, self.images, self.links, self.ids, self.tags, self.data = [], [], [], [], [], []
        self.tables: dict[str, list[list[str]]] = {}
        self._table = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "table":
            self._table = a.get("id") or a.get("class")
            self.tables.setdefault(self._table, [])
        if tag == "tr" and self._table == "verdict-table" and "verdict-row" in (a.get("class") or ""):
            self.rows.append(a.get("data-claim"))
        if tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        if tag in ("td", "th") and self._table is not None:
            self._cell = []
        if tag == "br" and self._cell is not None:
            self._cell.append(" ")
        if tag == "img":
            self.images.append(a["src"])
        if tag == "a":
            self.links.append(a.get("href"))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        self.data.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.data).split())


def test_the_model_page_has_a_verdict_row_per_record_then_figures_then_provenance(tmp_path):
    folder = make_report_folder(tmp_path)
    page_path = build_model_report(folder)
    assert page_path == folder / "index.html"
    text = page_path.read_text()
    page = _Page(text)
    assert page.rows == [r["claim"] for r in records()]  # one row per record, in the file's order
    assert text.index('id="verdict-table"') < text.index("<img") < text.index('id="provenance"')
    # every figure and CSV is beside the page, linked relatively
    assert len(page.images) == len(records())
    for src in page.images + [h for h in page.links if h and h.endswith(".csv")]:
        assert not src.startswith(("/", "http", "file:")) and (folder / _unquote(src)).is_file()
    assert sum(1 for h in page.links if h and h.endswith(".csv")) == len(records())
    # the claim in one sentence and the paper's number, from the registry
    from harness.claims import discover

    gtr1 = discover()["GTR-1"]
    assert gtr1.statement in page.text and gtr1.paper_value in page.text
    assert "not in this version's registry" in page.text  # ZZZ-9 is tolerated
    assert "0.348 (0.304 to 0.392)" in page.text and "> 0.2" in page.text
    for word in ("replicated", "contradicted", "inconclusive", "reported"):
        assert f'class="badge {word}"' in text
    # self-contained: no scripts, no external resources
    assert "script" not in page.tags and "http://" not in text.replace("http://www.w3.org", "")
    assert "lens_hash: f00dfeed12345678" in page.text  # the tuned lens's hash in the provenance
    assert "schema-problems" not in page.ids


def _unquote(href: str) -> str:
    from urllib.parse import unquote

    return unquote(href)


def test_all_text_is_escaped(tmp_path):
    recs = records("evil<b>model")
    recs[0]["subchecks"][0]["description"] = "a < b & \"c\""
    folder = make_report_folder(tmp_path, "evil-model", recs)
    text = build_model_report(folder).read_text()
    assert "<script>" not in text and "<b>model" not in text
    assert "&lt;script&gt;alert(" in text and "evil&lt;b&gt;model" in text and "a &lt; b &amp; &#34;c&#34;" in text
    assert 'a < b & "c"' in _Page(text).text  # escaped, not mangled
    assert 'src="ZZZ-9_logit_odd%3Cdata%3E.png"' in text  # file names are percent-encoded in links


def test_a_missing_figure_is_said_not_linked(tmp_path):
    folder = make_report_folder(tmp_path, figures=False)
    page = _Page(build_model_report(folder).read_text())
    assert page.images == [] and "No figure" in page.text


def test_an_invalid_claims_json_is_flagged_on_the_page(tmp_path):
    recs = records()
    for r in recs:
        del r["provenance"]["finished_at"]
    page = _Page(build_model_report(make_report_folder(tmp_path, recs=recs)).read_text())
    assert "schema-problems" in page.ids
    assert "at provenance: 'finished_at' is a required property (4 of 4 records)" in page.text


def test_many_kinds_of_schema_problem_are_listed_ten_then_counted(tmp_path):
    recs = []
    for i, case in enumerate(sorted(BROKEN)):
        record = copy.deepcopy(records()[0])
        BROKEN[case][0](record)
        recs.append({**record, "dataset": f"data-{i}"})
    kinds = problem_kinds(claims_errors(recs))
    assert len(kinds) > 10
    page = _Page(build_model_report(make_report_folder(tmp_path, recs=recs)).read_text())
    listed = re.findall(r"\((\d+) of \d+ records\)", page.text)
    assert len(listed) == 10 and f"… and {len(kinds) - 10} more kinds of problem" in page.text


def test_readings_say_what_the_numbers_mean():
    gtr1, gtr5, cso2, unknown = records()
    assert "whole interval lies above it, so the main test holds" in reading(gtr1)
    assert "1 of 1 further condition of the claim holds" in reading(gtr1)
    assert "the whole interval lies above it: on this model the data point the other way" in reading(gtr5)
    assert "does not hold on this model" in reading(gtr5)
    assert "reported without a verdict" in reading(cso2)
    assert "the interval contains 1" in reading(unknown) and "cannot decide" in reading(unknown)
    failing = copy.deepcopy(gtr1)
    failing["subchecks"][0].update(statistic=-0.1, ci_low=-0.2, ci_high=-0.05, verdict="contradicted")
    failing["verdict"] = "contradicted"
    assert "Not held: flip rate, early minus late layers" in reading(failing)
    empty = {**gtr1, "statistic": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    assert "could not be computed" in reading(empty)


def test_the_index_compares_all_models(tmp_path):
    make_report_folder(tmp_path, "model-a")
    only_two = records("model-b")[:2]
    only_two[0].update(statistic=0.1, ci_low=0.05, ci_high=0.15, verdict="contradicted")
    make_report_folder(tmp_path, "model-b", only_two)
    (tmp_path / "benchmarks").mkdir()  # a folder without claims.json is not a model
    index = build_index(tmp_path)
    assert index == tmp_path / "index.html"
    text = index.read_text()
    page = _Page(text)
    assert "model-a/index.html" in page.links and "model-b/index.html" in page.links
    assert "benchmarks" not in text
    assert text.count('class="claim-row"') == len(records())  # union of (claim, lens, dataset)
    assert text.count("not run") == 2
    assert "model-b/index.html#GTR-1_logit_prose-embedded" in page.links
    assert "0.100 (0.050 to 0.150)" in page.text


def test_build_reports_writes_every_model_and_the_index(tmp_path):
    make_report_folder(tmp_path, "model-a")
    make_report_folder(tmp_path, "model-b")
    pages = build_reports(tmp_path)
    assert pages == [tmp_path / "model-a" / "index.html", tmp_path / "model-b" / "index.html", tmp_path / "index.html"]
    assert all(p.is_file() for p in pages)
    assert not list(tmp_path.rglob(".index.html.*"))  # no temporary files left behind


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(NoResults, match="No model folder with a claims.json"):
        build_reports(tmp_path)
    with pytest.raises(NoResults, match="is not a folder"):
        build_reports(tmp_path / "missing")
    with pytest.raises(NoResults, match="claims.json does not exist"):
        build_model_report(tmp_path)


# ----------------------------------------------------------------------- CLI and pytest hook


def test_cli_report_rebuilds_the_pages(tmp_path, capsys):
    make_report_folder(tmp_path, "model-a")
    assert cli_main(["report", "--report-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "model-a" / "index.html") in out and str(tmp_path / "index.html") in out
    assert (tmp_path / "index.html").is_file()
    # one model's folder works too
    assert cli_main(["report", "--report-dir", str(tmp_path / "model-a")]) == 0


def test_cli_report_without_results_says_so(tmp_path, capsys):
    assert cli_main(["report", "--report-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "No model folder with a claims.json" in err and "pytest claims/" in err


def test_cli_report_warns_about_schema_problems(tmp_path, capsys):
    recs = records()
    del recs[0]["provenance"]["run_seconds"]
    make_report_folder(tmp_path, "model-a", recs)
    assert cli_main(["report", "--report-dir", str(tmp_path)]) == 0
    assert "1 schema problem(s)" in capsys.readouterr().err


def _root_conftest(config):
    """The depth-claims pytest plugin (harness/pytest_plugin.py, which the root conftest.py loads)."""
    plugin = config.pluginmanager.get_plugin("harness.pytest_plugin")
    if plugin is None or not hasattr(plugin, "pytest_sessionfinish"):
        pytest.skip("the depth-claims pytest plugin is not loaded")
    return plugin


class _FakePluginManager:
    def __init__(self):
        self.plugins = {}

    def get_plugin(self, name):
        return self.plugins.get(name)

    def unregister(self, name):
        self.plugins.pop(name)

    def register(self, plugin, name):
        self.plugins[name] = plugin


class _FakeReporter:
    def __init__(self):
        self.lines = []

    def section(self, title):
        self.lines.append(f"== {title}")

    def write_line(self, line, **markup):
        self.lines.append(line)


def _session(conftest, report_dir: Path, results: list):
    stash = pytest.Stash()
    stash[conftest.RESULTS] = results
    stash[conftest.RUN_CONFIG] = SimpleNamespace(report_dir=report_dir)
    return SimpleNamespace(config=SimpleNamespace(stash=stash, pluginmanager=_FakePluginManager()))


def _summary(session) -> list[str]:
    reporter = _FakeReporter()
    session.config.pluginmanager.get_plugin("depth-claims-report-summary").pytest_terminal_summary(reporter)
    return reporter.lines


def test_the_session_hook_builds_the_reports(pytestconfig, tmp_path):
    conftest = _root_conftest(pytestconfig)
    folder = make_report_folder(tmp_path, "model-a")
    session = _session(conftest, tmp_path, [(None, {"claims": folder / "claims.json"})])
    conftest.pytest_sessionfinish(session, 0)
    assert (tmp_path / "index.html").is_file() and (folder / "index.html").is_file()
    lines = _summary(session)
    assert lines[0] == "== depth-claims report" and str(tmp_path / "index.html") in lines[1]
    assert str(folder / "index.html") in lines[2]


def test_the_session_hook_never_raises(pytestconfig, tmp_path):
    conftest = _root_conftest(pytestconfig)
    folder = tmp_path / "model-a"
    folder.mkdir()
    (folder / "claims.json").write_text("{not json")
    session = _session(conftest, tmp_path, [(None, {"claims": folder / "claims.json"})])
    conftest.pytest_sessionfinish(session, 1)  # must not raise
    lines = _summary(session)
    assert "WARNING: the HTML report was not built" in lines[1] and "is not valid JSON" in lines[1]
    assert f"depth-claims report --report-dir {tmp_path}" in lines[1]


def test_the_session_hook_does_nothing_without_claim_results(pytestconfig, tmp_path):
    conftest = _root_conftest(pytestconfig)
    make_report_folder(tmp_path, "model-a")
    session = _session(conftest, tmp_path, [])
    conftest.pytest_sessionfinish(session, 0)
    assert not (tmp_path / "index.html").exists()
    assert session.config.pluginmanager.get_plugin("depth-claims-report-summary") is None


def test_the_tuned_lens_quality_figure_gets_its_own_section(tmp_path: Path):
    folder = make_report_folder(tmp_path)
    (folder / "tuned-lens-quality_tuned_prose-embedded.png").write_bytes(tiny_png())
    (folder / "tuned-lens-quality_tuned_prose-embedded.csv").write_text("layer,logit_kl,tuned_kl\n0,5,1\n")
    page = build_model_report(folder).read_text()
    assert 'id="lens-quality"' in page and 'src="tuned-lens-quality_tuned_prose-embedded.png"' in page
    assert 'href="tuned-lens-quality_tuned_prose-embedded.csv"' in page
    assert 'id="lens-quality"' not in build_model_report(make_report_folder(tmp_path / "other")).read_text()


def test_leave_one_layer_out_names_the_layers_a_verdict_hinges_on():
    from harness.claims.base import leave_layers_out
    from harness.claims.gtr import GTR_1

    # per-prefix values per layer: layer 1 alone lifts the mean above the 0.2 threshold
    rng = np.random.default_rng(0)
    values = {l: rng.normal(0.05, 0.01, 200) for l in (1, 2, 3, 4)}
    values[1] = rng.normal(0.95, 0.01, 200)
    mean_of = lambda kept: bootstrap_estimate(np.mean([values[l] for l in kept], axis=0))
    rob = leave_layers_out(GTR_1, [1, 2, 3, 4], mean_of, mean_of([1, 2, 3, 4]))
    assert rob.verdict == "replicated"  # mean 0.275 > 0.2
    assert [d.left_out for d in rob.drops] == [(1,), (2,), (3,), (4,), (1, 2)]
    assert rob.hinges_on == ((1,), (1, 2)) and rob.label == "hinges on layer 1, layers 1+2"
    assert abs(rob.drops[0].estimate.value - 0.05) < 0.01 and rob.drops[0].verdict == "contradicted"
    rec = rob.record()
    assert rec["hinges_on"] == [[1], [1, 2]] and rec["drops"][1]["verdict"] == "replicated"
    flat = lambda kept: bootstrap_estimate(np.full(50, 0.5))  # noqa: E731  (the same whatever is left out)
    even = leave_layers_out(GTR_1, [1, 2, 3], flat, flat([1, 2, 3]))
    assert even.label == "robust" and even.hinges_on == ()
    assert leave_layers_out(GTR_1, [1], mean_of, mean_of([1])) is None  # one layer: nothing to leave out
    result = ClaimResult(GTR_1, "m", "logit", "d", mean_of([1, 2, 3, 4]), robustness=rob)
    assert "leave-one-layer-out: hinges on layer 1" in result.summary()
    assert result.record()["robustness"]["label"] == "hinges on layer 1, layers 1+2"


def test_the_index_flags_data_sets_that_disagree(tmp_path):
    from harness.report.html import build_index, data_agreement

    recs = records()
    other = {**copy.deepcopy(recs[0]), "dataset": "prose-wikipedia", "verdict": "contradicted", "label": "contradicted"}
    same = {**copy.deepcopy(recs[1]), "dataset": "choices-paper"}
    make_report_folder(tmp_path, recs=recs + [other, same])
    by_key = {(r["claim"], r["lens"], r["dataset"]): r for r in recs + [other, same]}
    agreement = data_agreement(by_key)
    assert agreement[("GTR-1", "logit")] == {
        "labels": {"prose-embedded": "replicated", "prose-wikipedia": "contradicted"}, "agree": False,
    }
    assert agreement[("GTR-5", "tuned")]["agree"] is True
    page = build_index(tmp_path).read_text()
    assert 'id="agreement-table"' in page and page.count("data sets disagree") == 1


# ----------------------------------------------------------------------- a full report, generated here


@pytest.fixture
def full_report(tmp_path) -> Path:
    """Two models' pages and the index, from hand-made records with every optional part
    (tests/report_data.py), so that these tests run on a clean checkout."""
    return make_full_report(tmp_path)


def test_the_verdict_table_shows_control_robustness_and_lens_fidelity(full_report):
    page = _Page((full_report / "model-a" / "index.html").read_text())
    header, gtr1, gtr5, cso2, unknown, old = page.tables["verdict-table"]
    assert header == ["Claim", "Lens · data", "The claim", "The paper's number", "Ours (95% interval)", "Needs", "n",
                      "Verdict", "Untrained control", "Leave one layer out", "Lens fidelity at the layers read"]
    assert gtr1[:2] + gtr1[4:] == [
        "GTR-1", "logit lens · prose-embedded", "0.348 (0.304 to 0.392)", "> 0.2", "534", "not specific",
        "replicated 0.300 (0.250 to 0.350) n=534", "hinges on layer 1, layers 1+2",
        "unreliable: KL above 2 nats KL 2.438 nats at layers 1-4 (tuned lens: 0.812)",
    ]
    assert gtr5[7:] == [
        "contradicted", "inconclusive 0.500 (0.450 to 0.550) n=472", "robust (5 drops)",
        "faithful enough; not converged (KL fell 12.0% over the last half of training) "
        "KL 2.438 nats at layers 1-4; trained on 1,250,000 tokens",
    ]
    assert cso2[5:] == ["no claim (reported)", "16", "reported", "not run", "not a mean over layers", "no lens"]
    assert unknown[2:4] == ["(this claim id is not in this version's registry)", "–"]
    assert old[4:8] == ["– (– to –)", "> 0.2", "0", "inconclusive"]


def test_each_claim_section_shows_what_its_record_holds(full_report):
    text = (full_report / "model-a" / "index.html").read_text()
    page = _Page(text)
    assert page.tables["paper-comparison"] == [
        ["Quantity", "The paper", "Ours"], ["flip rate, early layers", "> 0.75 (Llama-2 7B, logit lens)", "0.348"],
    ]
    assert f"{NOT_SPECIFIC_TEXT[0].upper()}{NOT_SPECIFIC_TEXT[1:]}: on the untrained control (model-a+untrained) the claim replicates" in page.text
    assert f'title="{NOT_SPECIFIC_TEXT}"' in text
    assert "Too little data: statistic could not be computed (n=0, needs 1)." in page.text
    assert "Version recorded with claim version 1; the current definition is version 2" in page.text
    assert "0 of 1 further condition of the claim hold. Not held: share in the last third minus the first" in page.text
    # the tuned lens's quality and convergence, each figure with its CSV
    assert {"lens-quality", "lens-convergence"} <= set(page.ids)
    for prefix in ("tuned-lens-quality_", "tuned-lens-convergence_"):
        assert f"{prefix}tuned_prose-embedded.png" in page.images and f"{prefix}tuned_prose-embedded.csv" in page.links
    assert text.index('id="verdict-table"') < text.index('id="lens-quality"') < text.index('id="provenance"')


def test_the_index_shows_every_model_and_the_agreement_across_data_sets(full_report):
    page = _Page((full_report / "index.html").read_text())
    header, *rows = page.tables["model-table"]
    assert header == ["Claim", "Lens · data", "model-a 1 replicated, 1 contradicted, 2 inconclusive, 1 reported",
                      "model-b 1 replicated, 2 contradicted"]
    assert [r[:2] for r in rows][:3] == [["CSO-2", "embedded-arithmetic"], ["GTR-1", "logit lens · prose-embedded"],
                                         ["GTR-1", "logit lens · prose-wikipedia"]]
    assert rows[1][2:] == ["not specific 0.348 (0.304 to 0.392) n=534", "replicated 0.348 (0.304 to 0.392) n=534"]
    assert page.tables["agreement-table"] == [
        ["Claim", "Lens", "model-a", "model-b"],
        ["CSO-2", "none", "embedded-arithmetic: reported", "–"],
        ["GTR-1", "logit", "prose-embedded: not specific",
         "prose-embedded: replicated prose-wikipedia: contradicted data sets disagree"],
        ["GTR-2v2", "logit", "prose-embedded: inconclusive", "–"],
        ["GTR-5", "tuned", "choices-embedded: contradicted", "choices-embedded: contradicted"],
        ["ZZZ-9", "logit", "odd<data>: inconclusive", "–"],
    ]
    assert "ZZZ-9 not in this version of the registry" in page.text


def test_a_page_from_the_writers_claims_json_shows_its_control_and_lens(tmp_path):
    folder = _written_claims(tmp_path / "tiny-model").parent
    page = _Page(build_reports(tmp_path)[0].read_text())
    header, gtr1, gtr2 = page.tables["verdict-table"]
    assert gtr1[7] == NOT_SPECIFIC and gtr1[8].startswith("replicated ") and gtr1[9] == "hinges on layer 1, layers 1+2"
    assert gtr1[10].startswith("unreliable: held-out KL 6.50 nats is 4.0x the tuned lens's 1.62")
    assert gtr2[4] == "– (– to –)" and gtr2[7] == "inconclusive"
    assert (folder / "index.html").is_file() and (tmp_path / "index.html").is_file()


# ----------------------------------------------------------------------- formatting


def test_every_label_has_one_colour_and_a_style():
    from typing import get_args

    assert set(VERDICT_COLOURS) == set(get_args(Verdict))
    assert list(LABEL_COLOURS) == [*get_args(Verdict), REPORTED, NOT_SPECIFIC]
    assert [badge_class(v) for v in (None, "replicated", NOT_SPECIFIC, "maybe")] == ["reported", "replicated", "not-specific", "reported"]
    css = templates().get_template("base.html").render()
    for word, colour in LABEL_COLOURS.items():
        assert f".{badge_class(word)} {{ background: {colour}; }}" in css


def test_numbers_and_values_read_as_text():
    assert [fmt(x) for x in (None, math.nan, 3, 2.0, 0.3481, 12.345, 1234.5, 0.0001234, True)] == [
        "–", "n/a", "3", "2", "0.348", "12.3", "1.23e+03", "0.000123", "True",
    ]
    assert fmt_threshold(0.2) == "0.2" and fmt_threshold(None) == "–"
    assert needs({"threshold": 0.25, "direction": "below"}) == "< 0.25" and needs({"threshold": None}) == "no claim (reported)"
    verdicts = ["inconclusive", None, "replicated", "inconclusive"]
    assert counts([{"verdict": v} for v in verdicts]) == "1 replicated, 2 inconclusive, 1 reported"
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert provenance_value(commit, "git_commit") == ("0123456789ab", commit)
    assert provenance_value(commit, "data_hash") == (commit, None)
    assert provenance_value({"lens": "logit"}) == ("logit", None)
    assert provenance_value({"lens": "tuned", "alignment": None}) == ("lens: tuned, alignment: –", None)
    assert provenance_value([1, "x"]) == ('[1, "x"]', None) and provenance_value(7.25) == ("7.250", None)
    assert provenance_value(None) == ("–", None)
    problems = ["record 0 (A/b/c) at n: -1 is bad", "record 3 (D/e/f) at n: -1 is bad", "claims.json is empty"]
    assert problem_kinds(problems) == [("at n: -1 is bad", 2), ("claims.json is empty", 1)]


def test_the_templates_ship_with_the_package():
    import fnmatch

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    patterns = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["harness.report"]
    package = REPO_ROOT / "harness" / "report"
    files = sorted(p.relative_to(package).as_posix() for p in (package / "templates").iterdir() if p.is_file())
    assert files, "harness/report/templates/ is empty"
    assert [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)] == [], (
        "every template must be listed in pyproject.toml's [tool.setuptools.package-data]"
    )
    assert sorted(templates().list_templates()) == sorted(Path(f).name for f in files)
