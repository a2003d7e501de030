"""The HTML report: ``reports/<model>/index.html`` per model and ``reports/index.html``.

Built from what a run leaves on disk (``claims.json``, the CSVs and PNGs beside it),
never from a model, so ``depth-claims report`` rebuilds it at any time. A model page
starts with a verdict table (one row per claim record), then gives each claim's figure
with a short reading of it in plain English and a link to its CSV, then the provenance.
The index compares every model folder that holds a claims.json.

Pages are self-contained: inline CSS, no scripts, no network; figures are the PNGs
beside the page, linked by relative paths. Every piece of text is HTML-escaped. Files
are written atomically.
"""

from __future__ import annotations

import functools
import html
import importlib
import json
import logging
import math
import pkgutil
import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from harness.claims.base import NOT_SPECIFIC, NOT_SPECIFIC_TEXT
from harness.report.outputs import atomic_path
from harness.report.schema import claims_errors

log = logging.getLogger(__name__)

VERDICTS = ("replicated", "contradicted", "inconclusive", None)
VERDICT_WORD = {None: "reported"}

CSS = """
:root { --ok: #1e7b34; --bad: #b02a1e; --unsure: #9a6a00; --none: #5f6b76; --line: #d6dbe0; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2329;
       max-width: 1200px; margin: 0 auto; padding: 1.5rem 1.2rem 4rem; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.25rem; margin: 2.4rem 0 .6rem; border-bottom: 1px solid var(--line); padding-bottom: .3rem; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
a { color: #1a5fb4; }
.muted { color: #5f6b76; }
.note { background: #fff6e0; border-left: 4px solid var(--unsure); padding: .5rem .8rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid var(--line); padding: .35rem .5rem; text-align: left; vertical-align: top; }
th { background: #f2f4f7; }
td:first-child { white-space: nowrap; }
table.provenance td { overflow-wrap: anywhere; }
.wide { overflow-x: auto; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: .8rem; color: #fff;
         font-weight: 600; font-size: .85rem; white-space: nowrap; }
.replicated { background: var(--ok); } .contradicted { background: var(--bad); }
.inconclusive { background: var(--unsure); } .reported { background: var(--none); }
.not-specific { background: #6b3fa0; }
.claim { margin-bottom: 2.5rem; }
figure { margin: .8rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: .5rem 0; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: .82rem; }
code { font-size: .9em; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def href(name: str) -> str:
    """A relative link to a file, percent-encoded, then escaped for an attribute."""
    return esc(quote(name))


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


def verdict_word(verdict) -> str:
    return VERDICT_WORD.get(verdict, str(verdict))


def badge(verdict) -> str:
    word = verdict_word(verdict)
    cls = word.replace(" ", "-") if word in ("replicated", "contradicted", "inconclusive", "reported", NOT_SPECIFIC) else "reported"
    title = f' title="{esc(NOT_SPECIFIC_TEXT)}"' if word == NOT_SPECIFIC else ""
    return f'<span class="badge {cls}"{title}>{esc(word)}</span>'


def label(record: dict):
    """The record's label (its verdict, or "not specific"); records written before labels
    existed have only a verdict."""
    return record.get("label", record.get("verdict"))


def fidelity_cell(record: dict) -> str:
    """The lens's held-out KL at the layers the statistic reads, and any warning."""
    f = record.get("lens_fidelity")
    if not f:
        return '<span class="muted">no lens</span>'
    layers = f["layers"]
    text = f"KL {fmt(f['held_out_kl'])} nats at layers {layers[0]}-{layers[-1]}"
    if f.get("reference_kl") is not None:
        text += f" (tuned lens: {fmt(f['reference_kl'])})"
    if f.get("training_tokens"):
        text += f"; trained on {f['training_tokens']:,} tokens"
    warn = f["unreliable"] or f.get("converged") is False
    return (f'<span class="badge contradicted">{esc(f["label"])}</span><br>' if warn else "") + esc(text)


def robustness_cell(record: dict) -> str:
    rob = record.get("robustness")
    if not rob:
        return '<span class="muted">not a mean over layers</span>'
    if rob["hinges_on"]:
        return f'<span class="badge contradicted">{esc(rob["label"])}</span>'
    return f'robust <span class="muted">({len(rob["drops"])} drops)</span>'


def control_cell(record: dict) -> str:
    """The untrained control's verdict and interval, or why there is none."""
    c = record.get("control")
    if not c:
        return '<span class="muted">not run</span>'
    return f"{badge(c.get('verdict'))}<br><span class=\"num\">{_interval(c)}</span> <span class=\"muted\">n={esc(fmt(c.get('n')))}</span>"


def stem(record: dict) -> str:
    """File stem of a record's CSV and PNG (ClaimResult.file_stem)."""
    return f"{record['claim']}_{record['lens']}_{record['dataset']}"


def anchor(record: dict) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", stem(record))


def where(record: dict) -> str:
    lens = record.get("lens")
    return record["dataset"] if lens in (None, "none") else f"{lens} lens · {record['dataset']}"


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
    subs = [s for s in record.get("subchecks") or [] if isinstance(s, dict)]
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
    meaning = {
        "replicated": "the claim replicates on this model.",
        "contradicted": "the claim does not hold on this model: a finding, not a failure of the test.",
        "inconclusive": "the data cannot decide; more prompts (or a different model) are needed.",
    }.get(final, "")
    text.append(f"Verdict: {verdict_word(final)}" + (f": {meaning}" if meaning else "."))
    return " ".join(text)


# ----------------------------------------------------------------------- pages


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        '<link rel="icon" href="data:,">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _write(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _interval(record: dict) -> str:
    return f"{fmt(record.get('statistic'))} <span class=\"muted\">({fmt(record.get('ci_low'))} to {fmt(record.get('ci_high'))})</span>"


def _threshold(record: dict) -> str:
    if record.get("threshold") is None:
        return "no claim (reported)"
    return f"{_side(record.get('direction'))} {fmt_threshold(record['threshold'])}"


def _counts(records: list[dict]) -> str:
    counts = {}
    for r in records:
        counts[verdict_word(r.get("verdict"))] = counts.get(verdict_word(r.get("verdict")), 0) + 1
    order = ["replicated", "contradicted", "inconclusive", "reported"]
    return ", ".join(f"{counts[k]} {k}" for k in sorted(counts, key=lambda k: (order.index(k) if k in order else 9, k)))


def _value(value, key: str = "") -> str:
    """A provenance value as text: null as a dash, objects as 'key: value' pairs, commits short."""
    if value is None:
        return "–"
    if isinstance(value, dict) and list(value) == ["lens"]:
        return esc(value["lens"])
    if isinstance(value, dict):
        return esc(", ".join(f"{k}: {'–' if v is None else v}" for k, v in value.items()) or "–")
    if isinstance(value, list):
        return esc(json.dumps(value, default=str))
    if key == "git_commit" and isinstance(value, str) and len(value) == 40:
        return f'<code title="{esc(value)}">{esc(value[:12])}</code>'
    return esc(fmt(value) if isinstance(value, float) else value)


def _json_block(value) -> str:
    return f"<pre>{esc(json.dumps(value, indent=1, sort_keys=True, default=str))}</pre>"


HOW_TO_READ = (
    "<p>Each claim from the papers is pinned down as one number (the <em>statistic</em>) with a "
    "threshold. Its 95% interval comes from a bootstrap over the prompts (or groups of prompts). "
    "<strong>Replicated</strong>: the whole interval lies on the side of the threshold the claim predicts "
    "(and every further condition of the claim holds). <strong>Contradicted</strong>: the whole interval lies "
    "on the other side (or a condition fails clearly). <strong>Inconclusive</strong>: the interval contains "
    "the threshold. <strong>Reported</strong>: a measurement the paper shows without a claim.</p>"
)


def build_model_report(folder: Path) -> Path:
    """Write ``<folder>/index.html`` from the folder's claims.json, CSVs and PNGs."""
    folder = Path(folder)
    raw = read_claims(folder)
    records = usable(raw)
    registry = claim_registry()
    model = next((r.get("model") for r in records if r.get("model")), folder.name)
    problems = claims_errors(raw)
    built = datetime.now(timezone.utc).isoformat(timespec="seconds")

    out = [
        f"<h1>depth-claims: {esc(model)}</h1>",
        (
            f'<p class="muted">{len(records)} claim record{"s" if len(records) != 1 else ""} '
            f"({esc(_counts(records))}) · report built {esc(built)} · "
            f'<a href="../index.html">all models</a> · <a href="claims.json">claims.json</a></p>'
        ),
    ]
    if problems:
        out.append(_schema_note(problems, len(records)))
    out.append(HOW_TO_READ)

    # the verdict table first
    out.append('<h2 id="verdicts">Verdicts</h2>')
    out.append(
        '<table id="verdict-table"><thead><tr><th>Claim</th><th>Lens · data</th><th>The claim</th>'
        "<th>The paper's number</th><th>Ours (95% interval)</th><th>Needs</th><th>n</th><th>Verdict</th>"
        "<th>Untrained control</th><th>Leave one layer out</th><th>Lens fidelity at the layers read</th></tr></thead><tbody>"
    )
    for r in records:
        claim = registry.get(r["claim"])
        statement = claim.statement if claim else "(this claim id is not in this version's registry)"
        paper = claim.paper_value if claim else "–"
        out.append(
            f'<tr class="verdict-row" data-claim="{esc(r["claim"])}">'
            f'<td><a href="#{esc(anchor(r))}">{esc(r["claim"])}</a></td><td>{esc(where(r))}</td>'
            f"<td>{esc(statement)}</td><td>{esc(paper)}</td><td class=\"num\">{_interval(r)}</td>"
            f"<td class=\"num\">{esc(_threshold(r))}</td><td class=\"num\">{esc(fmt(r.get('n')))}</td>"
            f"<td>{badge(label(r))}</td><td>{control_cell(r)}</td><td>{robustness_cell(r)}</td><td>{fidelity_cell(r)}</td></tr>"
        )
    out.append("</tbody></table>")

    # each claim: figure, reading, CSV
    out.append('<h2 id="claims">The claims, one by one</h2>')
    for r in records:
        out.append(_claim_section(folder, r, registry.get(r["claim"])))

    out.append(_lens_quality_section(folder))
    out.append(_provenance_section(records))
    return _write(folder / "index.html", _page(f"depth-claims: {model}", "\n".join(out)))


LENS_QUALITY_PREFIX = "tuned-lens-quality_"  # written by claims/test_tuned_lens.py
LENS_CONVERGENCE_PREFIX = "tuned-lens-convergence_"  # likewise, for a lens fitted here in closed form


def _lens_quality_section(folder: Path) -> str:
    """The tuned lens's held-out KL against the logit lens's, per layer, when a run wrote it:
    every tuned-lens claim above rests on it. Then, for a lens fitted here, how that KL fell
    with the training tokens."""
    figures = sorted(folder.glob(f"{LENS_QUALITY_PREFIX}*.png"))
    curves = sorted(folder.glob(f"{LENS_CONVERGENCE_PREFIX}*.png"))
    if not figures and not curves:
        return ""
    out = [
        '<h2 id="lens-quality">Tuned lens quality</h2>',
        "<p>KL divergence from the model's final distribution to each lens's distribution, per layer, on "
        "held-out text the tuned lens was not trained on (lower is better; 0 at the last layer by "
        "construction). The tuned-lens claims are only as good as this curve.</p>",
    ]
    out += [_figure(png) for png in figures]
    if curves:
        out.append(
            '<p id="lens-convergence">How the same held-out KL falls with the tokens the lens was fitted on: the '
            "closed-form fit solved after 1/8, 1/4, 1/2 and all of its training tokens, and the final lens "
            "(after any SGD steps). A curve that has flattened says more text would not make the lens better.</p>"
        )
        out += [_figure(png) for png in curves]
    return "\n".join(out)


def _figure(png: Path) -> str:
    csv = png.with_suffix(".csv")
    link = f' · <a href="{href(csv.name)}">{esc(csv.name)}</a>' if csv.is_file() else ""
    return f'<figure><img src="{href(png.name)}" alt="{esc(png.stem)}"><figcaption>{esc(png.stem)}{link}</figcaption></figure>'


def _schema_note(problems: list[str], n_records: int) -> str:
    """Schema problems of claims.json, each kind once with the number of records it hits."""
    kinds: dict[str, int] = {}
    for p in problems:
        kind = re.sub(r"^record \d+ \(.*?\) ", "", p)
        kinds[kind] = kinds.get(kind, 0) + 1
    items = "".join(
        f"<li>{esc(kind)} ({count} of {n_records} record{'s' if n_records != 1 else ''})</li>"
        for kind, count in list(kinds.items())[:10]
    )
    more = f"<li>… and {len(kinds) - 10} more kinds of problem</li>" if len(kinds) > 10 else ""
    return (
        '<div class="note" id="schema-problems"><strong>claims.json does not match the current schema</strong> '
        "(harness/report/schema.py; records written before the schema lack the run time: rerun the claims to "
        f"refresh them):<ul>{items}{more}</ul></div>"
    )


def _claim_section(folder: Path, r: dict, claim) -> str:
    s = stem(r)
    parts = [
        f'<section class="claim" id="{esc(anchor(r))}">',
        f"<h3>{esc(r['claim'])} · {esc(where(r))} {badge(label(r))}</h3>",
    ]
    if claim is not None:
        parts.append(f"<p>{esc(claim.statement)}</p>")
    if label(r) == NOT_SPECIFIC:
        parts.append(f'<p class="note">{esc(NOT_SPECIFIC_TEXT[0].upper() + NOT_SPECIFIC_TEXT[1:])}: on the untrained control '
                     f"({esc(r['control']['model'])}) the claim replicates as well, so this test cannot tell what training "
                     "taught the model from what its architecture does anyway.</p>")
    if r.get("too_little_data"):
        parts.append(f'<p class="note">Too little data: {esc("; ".join(r["too_little_data"]))}.</p>')
    if r.get("paper_comparison"):
        rows = "".join(
            f"<tr><td>{esc(c['what'])}</td><td>{esc(c['paper'])} <span class=\"muted\">({esc(c['paper_model'])})</span></td>"
            f"<td class=\"num\">{esc(fmt(c['ours']))}</td></tr>"
            for c in r["paper_comparison"]
        )
        parts.append('<table class="paper-comparison"><thead><tr><th>Quantity</th><th>The paper</th><th>Ours</th></tr></thead>'
                     f"<tbody>{rows}</tbody></table>")
    facts = []
    if claim is not None:
        facts += [("Statistic", claim.statistic), ("Source", f"{claim.paper}, {claim.source}"), ("Paper's number", claim.paper_value)]
        if claim.version != r.get("version"):
            facts.append(("Version", f"recorded with claim version {r.get('version')}; the current definition is version {claim.version}"))
    facts += [("Ours", None), ("Needs", _threshold(r)), ("n", f"{fmt(r.get('n'))} ({fmt(r.get('n_groups'))} groups resampled)")]
    parts.append('<dl class="facts">')
    for name, value in facts:
        shown = _interval(r) if name == "Ours" else esc(value)
        parts.append(f"<dt>{esc(name)}</dt><dd>{shown}</dd>")
    parts.append("</dl>")
    png = folder / f"{s}.png"
    alt = f"Figure of {r['claim']} on {where(r)}"
    if png.is_file():
        parts.append(
            f'<figure><img src="{href(png.name)}" alt="{esc(alt)}" loading="eager">'
            f"<figcaption class=\"muted\">{esc(png.name)}</figcaption></figure>"
        )
    else:
        parts.append(f'<p class="note">No figure: {esc(png.name)} is missing.</p>')
    parts.append(f'<p class="reading"><strong>Reading.</strong> {esc(reading(r, claim))}</p>')
    csv = folder / f"{s}.csv"
    if csv.is_file():
        parts.append(f'<p>Data behind the figure: <a class="csv" href="{href(csv.name)}">{esc(csv.name)}</a></p>')
    else:
        parts.append(f'<p class="muted">No CSV ({esc(csv.name)} is missing).</p>')
    subs = [c for c in r.get("subchecks") or [] if isinstance(c, dict)]
    if subs:
        parts.append(
            "<table><thead><tr><th>Further condition</th><th>What it measures</th><th>Value (95% interval)</th>"
            "<th>Needs</th><th>n</th><th>Verdict</th></tr></thead><tbody>"
        )
        for c in subs:
            parts.append(
                f"<tr><td>{esc(c.get('name'))}</td><td>{esc(c.get('description'))}</td>"
                f"<td class=\"num\">{_interval(c)}</td><td class=\"num\">{esc(_threshold(c))}</td>"
                f"<td class=\"num\">{esc(fmt(c.get('n')))}</td><td>{badge(c.get('verdict'))}</td></tr>"
            )
        parts.append("</tbody></table>")
    if r.get("details"):
        parts.append(f"<details><summary>Details</summary>{_json_block(r['details'])}</details>")
    parts.append("</section>")
    return "\n".join(parts)


def _provenance_section(records: list[dict]) -> str:
    provs = [r.get("provenance") if isinstance(r.get("provenance"), dict) else {} for r in records]
    keys = list(dict.fromkeys(k for p in provs for k in p))
    common = [k for k in keys if all(k in p for p in provs) and len({json.dumps(p[k], sort_keys=True, default=str) for p in provs}) == 1]
    varying = [k for k in keys if k not in common]
    out = ['<h2 id="provenance">Provenance</h2>', "<p>Shared by every record:</p>", '<table class="provenance"><tbody>']
    out += [f"<tr><th>{esc(k)}</th><td>{_value(provs[0][k], k)}</td></tr>" for k in common]
    out.append("</tbody></table>")
    if varying:
        out.append("<p>Per record:</p><div class=\"wide\"><table class=\"provenance\"><thead><tr><th>Claim</th><th>Lens · data</th>")
        out += [f"<th>{esc(k)}</th>" for k in varying]
        out.append("</tr></thead><tbody>")
        for r, p in zip(records, provs):
            out.append(f"<tr><td>{esc(r['claim'])}</td><td>{esc(where(r))}</td>")
            out += [f"<td>{_value(p.get(k), k)}</td>" for k in varying]
            out.append("</tr>")
        out.append("</tbody></table></div>")
    return "\n".join(out)


def build_index(report_dir: Path) -> Path:
    """Write ``<report_dir>/index.html``: claims (with lens and data) by models."""
    report_dir = Path(report_dir)
    folders = model_folders(report_dir)
    if not folders:
        raise NoResults(f"No model folder with a claims.json under {report_dir}: run `pytest claims/` first.")
    registry = claim_registry()
    by_model = {f.name: {(r["claim"], r["lens"], r["dataset"]): r for r in load_records(f)} for f in folders}
    names = {f.name: next((r.get("model") for r in by_model[f.name].values() if r.get("model")), f.name) for f in folders}
    rows = sorted({key for recs in by_model.values() for key in recs})
    built = datetime.now(timezone.utc).isoformat(timespec="seconds")

    out = [
        "<h1>depth-claims: all models</h1>",
        (
            f'<p class="muted">{len(folders)} model{"s" if len(folders) != 1 else ""}, {len(rows)} '
            f"(claim, lens, data) combinations · built {esc(built)}</p>"
        ),
        HOW_TO_READ,
        '<div class="wide"><table id="model-table"><thead><tr><th>Claim</th><th>Lens · data</th>',
    ]
    for f in folders:
        recs = list(by_model[f.name].values())
        out.append(
            f'<th><a href="{href(f.name)}/index.html">{esc(names[f.name])}</a>'
            + (f' <span class="muted">({esc(f.name)}/)</span>' if names[f.name] != f.name else "")
            + f'<br><span class="muted">{esc(_counts(recs))}</span></th>'
        )
    out.append("</tr></thead><tbody>")
    for key in rows:
        claim_id = key[0]
        claim = registry.get(claim_id)
        title = esc(claim.statement) if claim else ""
        some = next(recs[key] for recs in by_model.values() if key in recs)
        out.append(f'<tr class="claim-row"><td title="{title}">{esc(claim_id)}</td><td>{esc(where(some))}</td>')
        for f in folders:
            r = by_model[f.name].get(key)
            if r is None:
                out.append('<td class="muted">not run</td>')
                continue
            link = f"{href(f.name)}/index.html#{esc(anchor(r))}"
            out.append(
                f'<td><a href="{link}">{badge(label(r))}</a><br>'
                f'<span class="num">{_interval(r)}</span> <span class="muted">n={esc(fmt(r.get("n")))}</span></td>'
            )
        out.append("</tr>")
    out.append("</tbody></table></div>")
    out.append(_agreement_table(folders, by_model, names))
    out.append("<h2>The claims</h2><dl class=\"facts\">")
    for claim_id in dict.fromkeys(k[0] for k in rows):
        claim = registry.get(claim_id)
        out.append(f"<dt>{esc(claim_id)}</dt><dd>{esc(claim.statement if claim else 'not in this version of the registry')}</dd>")
    out.append("</dl>")
    return _write(report_dir / "index.html", _page("depth-claims: all models", "\n".join(out)))


def data_agreement(records: dict[tuple, dict]) -> dict[tuple[str, str], dict]:
    """(claim, lens) -> {"labels": {dataset: label}, "agree": bool} over one model's
    records: does the verdict hold across the data sets the claim ran on?"""
    out: dict[tuple[str, str], dict] = {}
    for (claim, lens, dataset), r in sorted(records.items()):
        out.setdefault((claim, lens), {"labels": {}})["labels"][dataset] = label(r)
    for entry in out.values():
        entry["agree"] = len(set(entry["labels"].values())) <= 1
    return out


def _agreement_table(folders: list[Path], by_model: dict, names: dict) -> str:
    """Per claim and lens, per model: the verdict on each data set, disagreements flagged."""
    agreement = {f.name: data_agreement(by_model[f.name]) for f in folders}
    keys = sorted({k for a in agreement.values() for k in a})
    out = [
        '<h2 id="agreement">Agreement across data sets</h2>',
        '<p class="muted">Each claim\'s verdict on every data set it ran on (embedded fixtures, <code>--data-dir</code>). '
        "A claim whose verdict differs between data sets is flagged: read both before trusting either.</p>",
        '<div class="wide"><table id="agreement-table"><thead><tr><th>Claim</th><th>Lens</th>',
    ]
    out += [f"<th>{esc(names[f.name])}</th>" for f in folders]
    out.append("</tr></thead><tbody>")
    for claim, lens in keys:
        out.append(f'<tr class="agreement-row"><td>{esc(claim)}</td><td>{esc(lens)}</td>')
        for f in folders:
            entry = agreement[f.name].get((claim, lens))
            if entry is None:
                out.append('<td class="muted">–</td>')
                continue
            cells = "<br>".join(f"{esc(d)}: {badge(v)}" for d, v in entry["labels"].items())
            flag = "" if entry["agree"] else '<br><span class="badge contradicted">data sets disagree</span>'
            out.append(f"<td>{cells}{flag}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


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
