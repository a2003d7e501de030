"""Writing a claim's CSV, figure and claims.json record, atomically.

Every file is written through :mod:`harness.files` (a temporary name in its folder,
renamed into place), so a crash never leaves half a CSV, figure or claims.json behind;
claims.json is updated under :func:`harness.files.file_lock` so two pytest processes
reporting on the same model do not lose records.
Each record gets the run time in its provenance and is validated against the schema
(:mod:`harness.report.schema`) before it is written: an invalid record is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pandas as pd

from harness.claims.base import NOT_SPECIFIC, NOT_SPECIFIC_TEXT, ClaimResult
# atomic_path is imported from here too (harness/report/html.py, claims/test_tuned_lens.py)
from harness.files import atomic_path, file_lock, write_text
from harness.report.schema import strict_json, validate_record


class ReportWriter:
    """Outputs for one model: ``<report_dir>/<model>/``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        # the run of this model starts here (ModelSession creates the writer after loading)
        self.started_at = _utc_now()
        self._started = time.perf_counter()

    def run_time(self) -> dict:
        """Provenance fields of the run time: when this model's run began, when this
        record was written, and the seconds in between."""
        return {
            "run_started_at": self.started_at,
            "finished_at": _utc_now(),
            "run_seconds": round(time.perf_counter() - self._started, 3),
        }

    def write_csv(self, result: ClaimResult, table: pd.DataFrame) -> Path:
        path = self.folder / f"{result.file_stem}.csv"
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
        return path

    def write_figure(self, result: ClaimResult, figure: partial) -> Path:
        """The claim's figure with a footnote on its robustness and its untrained control."""
        return write_figure_once(self.folder / f"{result.file_stem}.png", partial(_with_footnote, figure, result))

    def record(self, result: ClaimResult, provenance: dict) -> Path:
        """Add or replace this (claim, lens, dataset) record in claims.json.

        The run time is added to ``provenance`` (values the caller gives win). Raises
        :class:`harness.report.schema.SchemaError` naming each wrong field, and writes
        nothing, when the record does not match the schema."""
        path = self.folder / "claims.json"
        run_time = {k: v for k, v in self.run_time().items() if k not in provenance}
        entry = {**result.record(), "provenance": {**provenance, **run_time}}
        validate_record(entry)
        with file_lock(path):
            records = json.loads(path.read_text()) if path.is_file() else []
            same = (entry["claim"], entry["lens"], entry["dataset"])
            records = [r for r in records if (r["claim"], r["lens"], r["dataset"]) != same]
            records.append(entry)
            records.sort(key=lambda r: (r["claim"], r["lens"], r["dataset"]))
            write_text(path, strict_json(records, indent=2) + "\n")
        return path

    def publish(self, result: ClaimResult, table: pd.DataFrame, figure: partial, provenance: dict) -> dict[str, Path]:
        """``figure``: the figure function with its arguments, ``partial(f, result, table, ...)``."""
        return {
            "csv": self.write_csv(result, table),
            "figure": self.write_figure(result, figure),
            "claims": self.record(result, provenance),
        }


# The PNG text field that holds the digest of what a figure was drawn from.
DIGEST_KEY = "depth-claims-inputs"


def _figure_code_digest() -> str:
    """The source of the figure modules and the matplotlib version: a change to either
    redraws every figure."""
    import matplotlib

    h = hashlib.sha256(matplotlib.__version__.encode())
    for f in sorted(Path(__file__).parent.glob("figures*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()


def footnote(result: ClaimResult) -> tuple[str, bool]:
    """The figure's footnote: leave-one-layer-out and the untrained control, and whether
    it is a warning (the verdict hinges on layers, or the claim is not specific)."""
    parts, warn = [], False
    rob = result.robustness
    if rob is not None:
        parts.append(f"leave one layer out (layers {rob.layers[0]}-{rob.layers[-1]}): {rob.label}")
        warn |= bool(rob.hinges_on)
    if result.control is not None:
        e = result.control.estimate
        parts.append(f"untrained control: {result.control.verdict} {e.value:.3f} (95% CI {e.ci_low:.3f} to {e.ci_high:.3f}, n={e.n})")
        if result.label == NOT_SPECIFIC:
            parts.append(NOT_SPECIFIC_TEXT.upper())
            warn = True
    return "; ".join(parts), warn


def _with_footnote(figure: partial, result: ClaimResult):
    fig = figure()
    text, warn = footnote(result)
    if text:
        import textwrap

        fig.text(0.01, -0.01, "\n".join(textwrap.wrap(text, 150)), ha="left", va="top", fontsize=8,
                 color="#b02a1e" if warn else "#3a3f44")
    return fig


def _input_text(value) -> str:
    """A figure argument as text for the digest: tables as CSV, results as their record."""
    if isinstance(value, pd.DataFrame):
        return value.to_csv(index=False)
    if isinstance(value, partial):
        return figure_digest(value)
    if isinstance(value, ClaimResult):
        return strict_json(value.record(), sort_keys=True)
    if isinstance(value, (str, int, float, bool, type(None), list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=float)
    raise TypeError(f"Cannot digest a figure argument of type {type(value).__name__}; pass tables, results or plain values.")


def figure_digest(figure: partial) -> str:
    """What a figure is drawn from: the function, every argument (nested partials too),
    the figure code and this module (the footnote)."""
    parts = [f"{figure.func.__module__}.{figure.func.__qualname__}", _figure_code_digest(), Path(__file__).read_text()]
    parts += [_input_text(a) for a in figure.args]
    parts += [f"{k}={_input_text(v)}" for k, v in sorted(figure.keywords.items())]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def write_figure_once(path: Path, figure: partial) -> Path:
    """Draw ``figure()`` into ``path`` (PNG, atomically), with :func:`figure_digest` in
    the PNG's text; when the file there already holds that digest, draw nothing (a second
    run of the same numbers costs no drawing)."""
    import matplotlib.pyplot as plt
    from PIL import Image

    if not isinstance(figure, partial):
        raise TypeError("Pass the figure as functools.partial(figure_function, *arguments), not a drawn figure.")
    digest = figure_digest(figure)
    if path.is_file():
        try:
            with Image.open(path) as old:
                if getattr(old, "text", {}).get(DIGEST_KEY) == digest:
                    return path
        except OSError:  # unreadable: draw it again
            pass
    fig = figure()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight", metadata={DIGEST_KEY: digest})
    finally:
        plt.close(fig)
    return path


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
