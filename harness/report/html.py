"""The HTML report: ``reports/<model>/index.html`` per model and ``reports/index.html``.

Built from what a run leaves on disk (``claims.json``, the CSVs and PNGs beside it),
never from a model, so ``depth-claims report`` rebuilds it at any time. A model page
starts with a verdict table (one row per claim record), then gives each claim's figure
with a short reading of it in plain English and a link to its CSV, then the provenance.
The index compares every model folder that holds a claims.json.

The pages' structure lives in jinja2 templates (``harness/report/templates/``: ``base.html``
the frame and style, ``cells.html`` the pieces both pages share, ``model.html`` and
``index.html``); this module reads the files and turns numbers and records into text
with small pure functions (:func:`fmt`, :func:`reading`, ...), which the templates use as
filters. Autoescape is on: every piece of text is HTML-escaped. Pages are self-contained
(inline CSS, no scripts, no network); figures are the PNGs beside the page, linked by
relative paths. Files are written atomically.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import math
import pkgutil
import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import jinja2

from harness.claims.base import NOT_SPECIFIC, NOT_SPECIFIC_TEXT
from harness.files import write_text
from harness.report.schema import claims_errors
from harness.stats import Verdict

log = logging.getLogger(__name__)

# The word for a record without a verdict: a measurement the paper shows without a claim.
REPORTED = "reported"
# Every label a badge shows, in the order the pages count them, with its colour: the
# verdicts (harness.stats.Verdict), then a record without one, then "not specific"
# (harness.claims.base).
VERDICT_COLOURS: dict[Verdict, str] = {"replicated": "#1e7b34", "contradicted": "#b02a1e", "inconclusive": "#9a6a00"}
LABEL_COLOURS: dict[str, str] = {**VERDICT_COLOURS, REPORTED: "#5f6b76", NOT_SPECIFIC: "#6b3fa0"}
# The colour of a flag that is not a verdict: a verdict that hinges on one layer, an
# unreliable lens, data sets that disagree.
WARNING_COLOUR = LABEL_COLOURS["contradicted"]
# What a badge says on hover, where its word needs more.
LABEL_TITLES: dict[str, str] = {NOT_SPECIFIC: NOT_SPECIFIC_TEXT}
# What each final verdict means, for the reading.
VERDICT_MEANING: dict[Verdict, str] = {
    "replicated": "the claim replicates on this model.",
    "contradicted": "the claim does not hold on this model: a finding, not a failure of the test.",
    "inconclusive": "the data cannot decide; more prompts (or a different model) are needed.",
}

LENS_QUALITY_PREFIX = "tuned-lens-quality_"  # written by claims/test_tuned_lens.py
LENS_CONVERGENCE_PREFIX = "tuned-lens-convergence_"  # likewise, for a lens fitted here in closed form
MAX_PROBLEM_KINDS = 10  # schema problems listed on a page; the rest are counted


# ----------------------------------------------------------------------- formatting


def fmt(x) -> str:
    """A number for people: about three significant digits."""
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    if isinstance(x, int) or (x.is_integer() and abs(x) < 1e6):
        return str(int(x))
    a = abs(x)
    if a >= 1000 or a < 0.001:
        return f"{x:.3g}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}"


def fmt_threshold(t) -> str:
    """A threshold as the claim states it (0.2, not 0.200)."""
    return f"{t:g}" if _finite(t) else fmt(t)


def href(name: str) -> str:
    """A relative link to a file, percent-encoded (the template escapes it for the attribute)."""
    return quote(name)


def capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def plural(n: int, word: str) -> str:
    """``1 model``, ``2 models``."""
    return f"{n} {word}{'s' if n != 1 else ''}"


def verdict_word(verdict) -> str:
    """The word a badge shows for a verdict or label (None: reported)."""
    return REPORTED if verdict is None else str(verdict)


def badge_class(label) -> str:
    """The CSS class of a badge: its word (dashes for spaces), or ``reported`` for a word
    the report does not know."""
    word = verdict_word(label)
    return css_class(word) if word in LABEL_COLOURS else css_class(REPORTED)


def css_class(word: str) -> str:
    return word.replace(" ", "-")


def label(record: dict):
    """The record's label (its verdict, or "not specific"); records written before labels
    existed have only a verdict."""
    return record.get("label", record.get("verdict"))


def stem(record: dict) -> str:
    """File stem of a record's CSV and PNG (ClaimResult.file_stem)."""
    return f"{record['claim']}_{record['lens']}_{record['dataset']}"


def anchor(record: dict) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", stem(record))


def where(record: dict) -> str:
    lens = record.get("lens")
    return record["dataset"] if lens in (None, "none") else f"{lens} lens · {record['dataset']}"


def needs(record: dict) -> str:
    """What the claim needs of the statistic: ``> 0.2``, or that it is only reported."""
    if record.get("threshold") is None:
        return "no claim (reported)"
    return f"{_side(record.get('direction'))} {fmt_threshold(record['threshold'])}"


def counts(records: list[dict]) -> str:
    """``2 replicated, 1 contradicted``: the records' verdicts, in LABEL_COLOURS's order."""
    found: dict[str, int] = {}
    for r in records:
        word = verdict_word(r.get("verdict"))
        found[word] = found.get(word, 0) + 1
    order = list(LABEL_COLOURS)
    return ", ".join(f"{found[k]} {k}" for k in sorted(found, key=lambda k: (order.index(k) if k in order else len(order), k)))


def fidelity_text(fidelity: dict) -> str:
    """The lens's held-out KL at the layers the statistic reads."""
    layers = fidelity["layers"]
    text = f"KL {fmt(fidelity['held_out_kl'])} nats at layers {layers[0]}-{layers[-1]}"
    if fidelity.get("reference_kl") is not None:
        text += f" (tuned lens: {fmt(fidelity['reference_kl'])})"
    if fidelity.get("training_tokens"):
        text += f"; trained on {fidelity['training_tokens']:,} tokens"
    return text


def fidelity_warning(fidelity: dict) -> str | None:
    """The fidelity's label when the lens is unreliable or did not converge, else None."""
    return fidelity["label"] if fidelity["unreliable"] or fidelity.get("converged") is False else None


def provenance_value(value, key: str = "") -> tuple[str, str | None]:
    """A provenance value as (text, full text shown on hover or None): null as a dash,
    objects as 'key: value' pairs, a commit shortened to 12 characters."""
    if value is None:
        return "–", None
    if isinstance(value, dict) and list(value) == ["lens"]:
        return str(value["lens"]), None
    if isinstance(value, dict):
        return ", ".join(f"{k}: {'–' if v is None else v}" for k, v in value.items()) or "–", None
    if isinstance(value, list):
        return json.dumps(value, default=str), None
    if key == "git_commit" and isinstance(value, str) and len(value) == 40:
        return value[:12], value
    return (fmt(value) if isinstance(value, float) else str(value)), None


def json_text(value) -> str:
    return json.dumps(value, indent=1, sort_keys=True, default=str)


def problem_kinds(problems: list[str]) -> list[tuple[str, int]]:
    """Schema problems without their record's number, each kind once with its count."""
    kinds: dict[str, int] = {}
    for p in problems:
        kind = re.sub(r"^record \d+ \(.*?\) ", "", p)
        kinds[kind] = kinds.get(kind, 0) + 1
    return list(kinds.items())


def built_at() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------- reading


def _main_verdict(record: dict):
    from harness.stats import verdict

    t, d, lo, hi = record.get("threshold"), record.get("direction"), record.get("ci_low"), record.get("ci_high")
    if t is None or d is None or not _finite(lo) or not _finite(hi):
        return None
    return verdict(lo, hi, t, d)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _other(direction: str) -> str:
    return "below" if direction == "above" else "above"


def _side(direction) -> str:
    return {"above": ">", "below": "<"}.get(direction, "?")


def reading(record: dict, claim=None) -> str:
    """A short reading of a result in plain English, from its numbers and verdict."""
    v, lo, hi, n = record.get("statistic"), record.get("ci_low"), record.get("ci_high"), record.get("n")
    t, d = record.get("threshold"), record.get("direction")
    groups = record.get("n_groups")
    if not _finite(v):
        return (
            "The statistic could not be computed on this model and data (no usable measurements), "
            f"so there is no verdict to read (n = {fmt(n)})."
        )
    text = [f"On this model the statistic is {fmt(v)}, with a 95% bootstrap interval from {fmt(lo)} to {fmt(hi)}"]
    text[0] += f" over n = {fmt(n)} measurements" + (
        f" ({fmt(groups)} independent groups resampled)." if groups not in (None, n) else "."
    )
    if t is None:
        text.append(
            "The paper states no threshold for this measurement, so it is reported without a verdict; "
            "the figure shows the measurement itself."
        )
        return " ".join(text)
    main = _main_verdict(record)
    if main == "replicated":
        text.append(f"The claim needs it {d} {fmt_threshold(t)}, and the whole interval lies {d} it, so the main test holds.")
    elif main == "contradicted":
        text.append(
            f"The claim needs it {d} {fmt_threshold(t)}, but the whole interval lies {_other(d)} it: "
            "on this model the data point the other way."
        )
    elif main == "inconclusive":
        text.append(f"The claim needs it {d} {fmt_threshold(t)}; the interval contains {fmt_threshold(t)}, so this much data cannot decide.")
    else:
        text.append(f"The claim needs it {d} {fmt_threshold(t)}, but the interval is not defined.")
    subs = subchecks(record)
    if subs:
        held = sum(s.get("verdict") == "replicated" for s in subs)
        text.append(f"{held} of {len(subs)} further condition{'s' if len(subs) != 1 else ''} of the claim hold{'s' if held == 1 else ''}.")
        failing = [s for s in subs if s.get("verdict") != "replicated"]
        for s in failing[:3]:
            what = s.get("description") or s.get("name")
            text.append(
                f"Not held: {what} ({s.get('name')}: {fmt(s.get('statistic'))}, interval {fmt(s.get('ci_low'))} "
                f"to {fmt(s.get('ci_high'))}, needs {_side(s.get('direction'))} {fmt_threshold(s.get('threshold'))}; "
                f"{verdict_word(s.get('verdict'))})."
            )
        if len(failing) > 3:
            text.append(f"{len(failing) - 3} more conditions do not hold (see the table below).")
    final = record.get("verdict")
    meaning = VERDICT_MEANING.get(final, "")
    text.append(f"Verdict: {verdict_word(final)}" + (f": {meaning}" if meaning else "."))
    return " ".join(text)


def subchecks(record: dict) -> list[dict]:
    return [s for s in record.get("subchecks") or [] if isinstance(s, dict)]


# ----------------------------------------------------------------------- reading the folder


@functools.cache
def claim_registry() -> dict:
    """Every registered Claim by id: imports each module of ``harness.claims`` (one that
    fails to import is logged and left out)."""
    import harness.claims as package
    from harness.claims.base import CLAIMS

    for module in pkgutil.iter_modules(package.__path__):
        try:
            importlib.import_module(f"{package.__name__}.{module.name}")
        except Exception as err:  # noqa: BLE001 - a broken claim module must not stop the report
            log.warning("report: could not import harness.claims.%s (%s); its claims show without a statement", module.name, err)
    return dict(CLAIMS)


class NoResults(FileNotFoundError):
    """A folder without claims.json: nothing to report."""


def read_claims(folder: Path) -> list:
    """The parsed content of ``<folder>/claims.json`` (a list, not yet checked)."""
    path = Path(folder) / "claims.json"
    if not path.is_file():
        raise NoResults(f"{path} does not exist: run `pytest claims/` (with --report-dir) to produce results first.")
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}).") from None
    if not isinstance(records, list):
        raise TypeError(f"{path} must hold a JSON array of claim records.")
    return records


def usable(records: list) -> list[dict]:
    """Records the report can show: objects naming their claim, lens and dataset."""
    return [r for r in records if isinstance(r, dict) and {"claim", "lens", "dataset"} <= r.keys()]


def load_records(folder: Path) -> list[dict]:
    return usable(read_claims(folder))


def model_folders(report_dir: Path) -> list[Path]:
    """Subfolders of ``report_dir`` that hold a claims.json, by name."""
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        return []
    return sorted(p for p in report_dir.iterdir() if p.is_dir() and (p / "claims.json").is_file())


def figure_files(folder: Path, prefix: str) -> list[tuple[str, str | None]]:
    """(PNG name, CSV name or None when it is missing) of the figures named ``prefix*``."""
    return [(png.name, png.with_suffix(".csv").name if png.with_suffix(".csv").is_file() else None)
            for png in sorted(folder.glob(f"{prefix}*.png"))]


def provenance_table(records: list[dict]) -> tuple[list[dict], list[str], list[str]]:
    """Each record's provenance, the keys every record shares with one value, and the rest."""
    provs = [r.get("provenance") if isinstance(r.get("provenance"), dict) else {} for r in records]
    keys = list(dict.fromkeys(k for p in provs for k in p))
    common = [k for k in keys if all(k in p for p in provs) and len({json.dumps(p[k], sort_keys=True, default=str) for p in provs}) == 1]
    return provs, common, [k for k in keys if k not in common]


def data_agreement(records: dict[tuple, dict]) -> dict[tuple[str, str], dict]:
    """(claim, lens) -> {"labels": {dataset: label}, "agree": bool} over one model's
    records: does the verdict hold across the data sets the claim ran on?"""
    out: dict[tuple[str, str], dict] = {}
    for (claim, lens, dataset), r in sorted(records.items()):
        out.setdefault((claim, lens), {"labels": {}})["labels"][dataset] = label(r)
    for entry in out.values():
        entry["agree"] = len(set(entry["labels"].values())) <= 1
    return out


# ----------------------------------------------------------------------- pages


@functools.cache
def templates() -> jinja2.Environment:
    """The report's templates, with the formatting functions above as filters."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        fmt=fmt, href=href, capitalized=capitalized, word=verdict_word,
        badge_class=badge_class, css_class=css_class, label=label, anchor=anchor, where=where, needs=needs,
        counts=counts, fidelity_text=fidelity_text, fidelity_warning=fidelity_warning,
        provenance_value=provenance_value, json_text=json_text, reading=reading, subchecks=subchecks, plural=plural,
        stem=stem, file_stem=lambda name: Path(name).stem,
    )
    env.globals.update(
        label_colours=LABEL_COLOURS, warning_colour=WARNING_COLOUR, label_titles=LABEL_TITLES,
        NOT_SPECIFIC=NOT_SPECIFIC, NOT_SPECIFIC_TEXT=NOT_SPECIFIC_TEXT, zip=zip,
    )
    return env


def render(template: str, **context) -> str:
    return templates().get_template(template).render(**context)


def lens_mismatches(records: list[dict]) -> list[dict]:
    """Each tuned lens made for another model that records were read through
    (``provenance.lens_mismatch``, --allow-lens-mismatch), once, with those records' claims."""
    found: dict[tuple, dict] = {}
    for r in records:
        prov = r.get("provenance") if isinstance(r.get("provenance"), dict) else {}
        m = prov.get("lens_mismatch")
        if not isinstance(m, dict):
            continue
        key = (m.get("lens_model"), m.get("model"), m.get("reason"))
        entry = found.setdefault(key, {**m, "records": []})
        entry["records"].append(r)
    return list(found.values())


def build_model_report(folder: Path) -> Path:
    """Write ``<folder>/index.html`` from the folder's claims.json, CSVs and PNGs."""
    folder = Path(folder)
    raw = read_claims(folder)
    records = usable(raw)
    registry = claim_registry()
    provenances, common, varying = provenance_table(records)
    page = render(
        "model.html",
        model=next((r.get("model") for r in records if r.get("model")), folder.name),
        records=records,
        claims=[registry.get(r["claim"]) for r in records],
        files={p.name for p in folder.iterdir() if p.is_file()},  # the figures and CSVs that exist
        built=built_at(),
        problems=problem_kinds(claims_errors(raw)),
        max_problem_kinds=MAX_PROBLEM_KINDS,
        lens_quality=figure_files(folder, LENS_QUALITY_PREFIX),
        lens_convergence=figure_files(folder, LENS_CONVERGENCE_PREFIX),
        mismatches=lens_mismatches(records),
        provenances=provenances,
        common=common,
        varying=varying,
    )
    return write_text(folder / "index.html", page)


def build_index(report_dir: Path) -> Path:
    """Write ``<report_dir>/index.html``: claims (with lens and data) by models."""
    report_dir = Path(report_dir)
    folders = model_folders(report_dir)
    if not folders:
        raise NoResults(f"No model folder with a claims.json under {report_dir}: run `pytest claims/` first.")
    by_model = {f.name: {(r["claim"], r["lens"], r["dataset"]): r for r in load_records(f)} for f in folders}
    names = {f.name: next((r.get("model") for r in by_model[f.name].values() if r.get("model")), f.name) for f in folders}
    rows = sorted({key for recs in by_model.values() for key in recs})
    agreement = {f.name: data_agreement(by_model[f.name]) for f in folders}
    page = render(
        "index.html",
        folders=[f.name for f in folders],
        names=names,
        by_model=by_model,
        rows=rows,
        # one record of each (claim, lens, dataset), for its "lens · data"
        some={key: next(recs[key] for recs in by_model.values() if key in recs) for key in rows},
        registry=claim_registry(),
        claim_ids=list(dict.fromkeys(k[0] for k in rows)),
        agreement=agreement,
        agreement_keys=sorted({k for a in agreement.values() for k in a}),
        built=built_at(),
    )
    return write_text(report_dir / "index.html", page)


def build_reports(report_dir: Path) -> list[Path]:
    """Every model page under ``report_dir``, then the index; returns the pages written
    (the index last). Raises :class:`NoResults` when no folder holds a claims.json."""
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        raise NoResults(f"{report_dir} is not a folder: run `pytest claims/` first, or pass the --report-dir it used.")
    folders = model_folders(report_dir)
    if not folders:
        raise NoResults(f"No model folder with a claims.json under {report_dir}: run `pytest claims/` first.")
    pages = [build_model_report(f) for f in folders]
    pages.append(build_index(report_dir))
    return pages
