"""Small synthetic report folders (claims.json + tiny PNGs and CSVs) for the report tests."""

from __future__ import annotations

import copy
import json
import struct
import zlib
from pathlib import Path


def tiny_png(width: int = 40, height: int = 24, rgb: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    """A valid, solid-colour RGB PNG."""
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def provenance(model: str = "tiny-model", lens: dict | None = None, **extra) -> dict:
    return {
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "depth_claims": "0.1.0",
        "engine_version": 1,
        "torch": "2.13.0+cpu",
        "transformers": "5.23.0",
        "python": "3.11.7",
        "model": model,
        "model_source": "example/tiny-model",
        "revision": "abc123",
        "dtype": "float32",
        "device": "cpu",
        "backend": "transformers",
        "lens": lens,
        "data_hash": "9998836d571f2b62",
        "run_started_at": "2025-06-01T10:00:00+00:00",
        "finished_at": "2025-06-01T10:00:07+00:00",
        "run_seconds": 7.25,
        **extra,
    }


def records(model: str = "tiny-model") -> list[dict]:
    """Four records: replicated with a sub-check, contradicted, reported-only, and a claim
    id no registry knows, with text that needs escaping."""
    logit = {"lens": "logit"}
    base = {"model": model, "version": 1, "n_groups": 50, "details": {}, "too_little_data": [], "control": None, "robustness": None, "lens_fidelity": None, "paper_comparison": []}
    recs = [
        {
            **base, "claim": "GTR-1", "lens": "logit", "dataset": "prose-embedded",
            "statistic": 0.348, "ci_low": 0.304, "ci_high": 0.392, "threshold": 0.2, "direction": "above",
            "n": 534, "verdict": "replicated",
            "subchecks": [{
                "name": "falls_with_depth", "description": "flip rate, early minus late layers",
                "statistic": 0.32, "ci_low": 0.29, "ci_high": 0.35, "threshold": 0.0, "direction": "above",
                "n": 534, "verdict": "replicated",
            }],
            "provenance": provenance(model, logit, trace_key={"dataset": "prose-embedded-prefixes", "positions": "selected"}),
        },
        {
            **base, "claim": "GTR-5", "lens": "tuned", "dataset": "choices-embedded",
            "statistic": 0.72, "ci_low": 0.712, "ci_high": 0.728, "threshold": 0.5, "direction": "below",
            "n": 472, "verdict": "contradicted", "subchecks": [],
            "provenance": provenance(model, {"lens": "tuned", "lens_hash": "f00dfeed12345678", "alignment": "correct"}),
        },
        {
            **base, "claim": "CSO-2", "lens": "none", "dataset": "embedded-arithmetic",
            "statistic": 0.057, "ci_low": 0.054, "ci_high": 0.06, "threshold": None, "direction": None,
            "n": 16, "verdict": None, "subchecks": [],
            "provenance": provenance(model, None, dataset="embedded-arithmetic"),
        },
        {
            **base, "claim": "ZZZ-9", "lens": "logit", "dataset": "odd<data>",
            "statistic": 1.5, "ci_low": 0.9, "ci_high": 2.1, "threshold": 1.0, "direction": "above",
            "n": 12, "verdict": "inconclusive", "subchecks": [],
            "details": {"note": "<script>alert('x')</script> & \"quotes\""},
            "provenance": provenance(model, logit),
        },
    ]
    return [{**r, "label": r["verdict"]} for r in recs]


def make_report_folder(root: Path, model: str = "tiny-model", recs: list[dict] | None = None, figures: bool = True) -> Path:
    """``root/<model>/`` with claims.json and, per record, a PNG and a CSV."""
    folder = Path(root) / model
    folder.mkdir(parents=True, exist_ok=True)
    recs = copy.deepcopy(records(model) if recs is None else recs)
    (folder / "claims.json").write_text(json.dumps(recs, indent=2) + "\n")
    for i, r in enumerate(recs):
        stem = f"{r['claim']}_{r['lens']}_{r['dataset']}"
        if figures:
            (folder / f"{stem}.png").write_bytes(tiny_png(40 + 10 * i, 24, ((30 + 40 * i) % 256, 120, 200)))
        (folder / f"{stem}.csv").write_text("layer,value\n0,0.1\n1,0.2\n")
    return folder


def control(model: str, verdict: str | None, statistic: float = 0.3, ci: tuple[float, float] = (0.25, 0.35), n: int = 534) -> dict:
    """A claim's outcome on the model's untrained control (``ControlOutcome.record()``)."""
    return {"model": f"{model}+untrained", "statistic": statistic, "ci_low": ci[0], "ci_high": ci[1], "n": n,
            "verdict": verdict, "too_little_data": []}


def robustness(hinges_on: list[list[int]]) -> dict:
    """A leave-one-layer-out outcome over layers 1-4 (``Robustness.record()``)."""
    drops = [{"left_out": s, "statistic": 0.3, "ci_low": 0.25, "ci_high": 0.35, "verdict": "replicated"}
             for s in ([1], [2], [3], [4], [1, 2])]
    label = "robust" if not hinges_on else "hinges on " + ", ".join(
        "layers " + "+".join(map(str, s)) if len(s) > 1 else f"layer {s[0]}" for s in hinges_on)
    return {"label": label, "layers": [1, 2, 3, 4], "hinges_on": hinges_on, "drops": drops}


def lens_fidelity(lens: str, unreliable: list[str], converged: bool | None = None, reference_kl: float | None = None,
                  training_tokens: int | None = None) -> dict:
    """The lens's held-out fidelity at the layers read (``LensFidelity.record()``)."""
    parts = ["unreliable: " + "; ".join(unreliable)] if unreliable else ["faithful enough"]
    if converged is False:
        parts.append("not converged (KL fell 12.0% over the last half of training)")
    return {"lens": lens, "layers": [1, 2, 3, 4], "held_out_kl": 2.4375, "held_out_tokens": 4096,
            "reference_kl": reference_kl, "outside_top1000": 0.125, "training_tokens": training_tokens,
            "last_half_kl_change": -0.12 if converged is False else None, "unreliable": unreliable,
            "converged": converged, "label": "; ".join(parts)}


def full_records(model: str = "tiny-model") -> list[dict]:
    """:func:`records` with every optional part a run can write, so that a page built from
    them shows every section: an untrained control (one that makes GTR-1 "not specific"),
    leave-one-layer-out (robust and hinging), lens fidelity (faithful, unreliable, not
    converged), the paper's numbers, a claim recorded with an older version, a statistic
    that could not be computed, and a failing sub-check."""
    gtr1, gtr5, cso2, unknown = records(model)
    gtr1.update(
        control=control(model, "replicated"), label="not specific", robustness=robustness([[1], [1, 2]]),
        lens_fidelity=lens_fidelity("logit", ["KL above 2 nats"], reference_kl=0.8125),
        paper_comparison=[{"what": "flip rate, early layers", "paper": "> 0.75", "paper_model": "Llama-2 7B, logit lens", "ours": 0.348}],
    )
    gtr5.update(
        control=control(model, "inconclusive", 0.5, (0.45, 0.55), 472), robustness=robustness([]),
        lens_fidelity=lens_fidelity("tuned", [], converged=False, training_tokens=1_250_000),
        subchecks=[{"name": "rises_late", "description": "share in the last third minus the first",
                    "statistic": -0.05, "ci_low": -0.1, "ci_high": 0.0, "threshold": 0.0, "direction": "above",
                    "n": 472, "verdict": "contradicted"}],
    )
    old = {
        **copy.deepcopy(gtr1), "claim": "GTR-2v2", "version": 1, "dataset": "prose-embedded", "control": None,
        "robustness": None, "lens_fidelity": None, "paper_comparison": [], "subchecks": [],
        "statistic": None, "ci_low": None, "ci_high": None, "n": 0, "n_groups": 0, "verdict": "inconclusive",
        "label": "inconclusive", "too_little_data": ["statistic could not be computed (n=0, needs 1)"],
    }
    return [gtr1, gtr5, cso2, unknown, old]


def make_full_report(root: Path) -> Path:
    """``root/`` with two model folders (the second with fewer records and a verdict that
    differs between data sets), the tuned lens's quality and convergence figures, and both
    kinds of page written; returns ``root``."""
    from harness.report.html import build_reports

    folder = make_report_folder(root, "model-a", full_records("model-a"))
    for prefix in ("tuned-lens-quality_", "tuned-lens-convergence_"):
        (folder / f"{prefix}tuned_prose-embedded.png").write_bytes(tiny_png())
        (folder / f"{prefix}tuned_prose-embedded.csv").write_text("layer,logit_kl,tuned_kl\n0,5,1\n")
    recs = records("model-b")[:2]
    other = {**copy.deepcopy(recs[0]), "dataset": "prose-wikipedia", "statistic": 0.1, "ci_low": 0.05,
             "ci_high": 0.15, "verdict": "contradicted", "label": "contradicted", "subchecks": []}
    make_report_folder(root, "model-b", [*recs, other])
    build_reports(root)
    return Path(root)
