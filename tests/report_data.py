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
            (folder / f"{stem}.png").write_bytes(tiny_png(40 + 10 * i, 24, (30 + 40 * i, 120, 200)))
        (folder / f"{stem}.csv").write_text("layer,value\n0,0.1\n1,0.2\n")
    return folder
