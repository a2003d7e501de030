"""A real browser opens the HTML report: headless Chromium (Debian's ``chromium``)
driven over the DevTools protocol. Every image must load, the verdict table must have
one row per claim record, and the page must log no console errors; a screenshot of the
page is saved into the report folder (``screenshot.png``)."""

from __future__ import annotations

import json
import shutil

import pytest

from harness.paths import REPO_ROOT
from harness.report.html import build_reports
from tests.browser import Chromium, find_chromium
from tests.report_data import make_full_report, make_report_folder, records

pytest.importorskip("websocket", reason="websocket-client drives Chromium (pip install websocket-client)")

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium binary on PATH (apt-get install -y chromium, as .ci/install does; or set $CHROMIUM)",
)

REAL_REPORTS = sorted(p.parent for p in (REPO_ROOT / "reports").glob("*/claims.json"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with Chromium.launch(CHROMIUM, tmp_path_factory.mktemp("chromium")) as b:
        yield b


def _check_model_page(browser, folder, n_records: int):
    page = browser.open(folder / "index.html")
    images = page.value["images"]
    assert images, "the report shows no figure"
    broken = [img["src"] for img in images if not (img["complete"] and img["width"] > 0)]
    assert broken == [], f"figures that did not load: {broken}"
    assert page.value["verdictRows"] == n_records
    assert page.errors == []
    shot = browser.screenshot(folder / "screenshot.png")
    assert shot.stat().st_size > 1000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return page


def test_the_report_opens_in_chromium(browser, tmp_path):
    make_report_folder(tmp_path, "model-a")
    make_report_folder(tmp_path, "model-b", records("model-b")[:2])
    build_reports(tmp_path)
    page = _check_model_page(browser, tmp_path / "model-a", len(records()))
    assert page.value["title"] == "depth-claims: model-a"
    assert page.value["scripts"] == 0
    index = browser.open(tmp_path / "index.html")
    assert index.errors == []
    assert index.value["modelColumns"] == 2 + 2  # claim, lens · data, then one per model
    assert index.value["claimRows"] == len(records())


def test_a_missing_figure_would_be_caught(browser, tmp_path):
    """The check is real: a page whose image is gone fails it."""
    folder = make_report_folder(tmp_path, "model-a")
    build_reports(tmp_path)
    (folder / "GTR-1_logit_prose-embedded.png").unlink()
    page = browser.open(folder / "index.html")
    assert [img["src"] for img in page.value["images"] if img["width"] == 0] == ["GTR-1_logit_prose-embedded.png"]
    assert any("ERR_FILE_NOT_FOUND" in e for e in page.errors)


def test_a_full_generated_report_opens_in_chromium(browser, tmp_path):
    """Every page of a report with every section (control, leave-one-layer-out, lens
    fidelity, the paper's numbers, the tuned lens's quality, two models, data sets that
    disagree), generated here from hand-made records: runs on a clean checkout."""
    make_full_report(tmp_path)
    for folder in (tmp_path / "model-a", tmp_path / "model-b"):
        page = _check_model_page(browser, folder, len(json.loads((folder / "claims.json").read_text())))
        assert page.value["scripts"] == 0
    index = browser.open(tmp_path / "index.html")
    assert index.errors == [] and index.value["claimRows"] == 6 and index.value["modelColumns"] == 2 + 2


@pytest.mark.skipif(not REAL_REPORTS, reason="no reports/<model>/claims.json in this checkout (run pytest claims/ first)")
@pytest.mark.parametrize("source", REAL_REPORTS, ids=lambda p: p.name)
def test_the_real_report_opens_in_chromium(browser, tmp_path, source):
    """The report of a real run (copied: the test never writes into reports/)."""
    folder = tmp_path / source.name
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("index.html", "screenshot.png", ".*"))
    build_reports(tmp_path)
    n_records = len(json.loads((folder / "claims.json").read_text()))
    _check_model_page(browser, folder, n_records)
    assert browser.open(tmp_path / "index.html").errors == []
