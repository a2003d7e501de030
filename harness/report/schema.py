"""The schema of ``reports/<model>/claims.json``, and its validation.

claims.json is a JSON array with one record per (claim, lens, dataset) that ran on the
model, sorted by those three keys. Each record is the verdict of one claim
(:meth:`harness.claims.base.ClaimResult.record`) plus the provenance of the numbers
(:meth:`harness.session.ModelSession.provenance`, completed by
:meth:`harness.report.outputs.ReportWriter.record` with the run time).

:data:`RECORD_SCHEMA` is a JSON Schema (draft 2020-12) of one record; every property
carries a ``description``, so the schema is its own documentation (``reports/README.md``
summarises it). :func:`validate_record` checks a record against it and raises
:class:`SchemaError` naming the record and every field that is wrong;
:func:`validate_claims` checks a whole file (also that no (claim, lens, dataset)
appears twice). ``ReportWriter.record`` refuses to write an invalid record.

Records may carry more keys than the schema names (new fields can be added without a
schema change); the listed ones are required with the stated types. Bump
:data:`SCHEMA_VERSION` when a required field changes meaning.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

SCHEMA_VERSION = 1

# A number that could not be computed (no data) is null: files are strict JSON (no NaN).
_NUMBER = {"type": ["number", "null"]}
_VERDICT = {"enum": ["replicated", "contradicted", "inconclusive"]}
_VERDICT_OR_NULL = {"enum": ["replicated", "contradicted", "inconclusive", None]}
_DIRECTION = {"enum": ["above", "below"]}

SUBCHECK_SCHEMA: dict = {
    "type": "object",
    "description": "A second condition of a claim (e.g. 'and flip rates fall with depth'); the claim "
    "replicates only when its main statistic and every sub-check do.",
    "required": ["name", "description", "statistic", "ci_low", "ci_high", "threshold", "direction", "n", "verdict"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "description": "Short identifier of the sub-check."},
        "description": {"type": "string", "description": "What the sub-check measures, in words."},
        "statistic": {**_NUMBER, "description": "The sub-check's statistic."},
        "ci_low": {**_NUMBER, "description": "Lower end of its 95% bootstrap interval."},
        "ci_high": {**_NUMBER, "description": "Upper end of its 95% bootstrap interval."},
        "threshold": {**_NUMBER, "description": "The value the interval must clear."},
        "direction": {**_DIRECTION, "description": "Whether the interval must lie above or below the threshold."},
        "n": {"type": "integer", "minimum": 0, "description": "Number of measurements behind the statistic."},
        "verdict": {**_VERDICT, "description": "Verdict of this sub-check alone."},
    },
}

CONTROL_SCHEMA: dict = {
    "type": "object",
    "required": ["model", "statistic", "ci_low", "ci_high", "n", "verdict", "too_little_data"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "description": "The control's model name (<model>+untrained)."},
        "statistic": {**_NUMBER, "description": "The claim's statistic on the control."},
        "ci_low": {**_NUMBER, "description": "Lower end of its 95% bootstrap interval."},
        "ci_high": {**_NUMBER, "description": "Upper end of its 95% bootstrap interval."},
        "n": {"type": "integer", "minimum": 0, "description": "Number of measurements behind it."},
        "verdict": {**_VERDICT_OR_NULL, "description": "The claim's verdict on the control."},
        "too_little_data": {"type": "array", "items": {"type": "string"}, "description": "What fell short on the control."},
    },
}

ROBUSTNESS_SCHEMA: dict = {
    "type": "object",
    "required": ["label", "layers", "hinges_on", "drops"],
    "properties": {
        "label": {"type": "string", "pattern": "^(robust|hinges on .+)$", "description": "'robust', or the layers the verdict hinges on."},
        "layers": {"type": "array", "items": {"type": "integer"}, "description": "The layers the statistic aggregates."},
        "hinges_on": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}},
                      "description": "Left-out layer sets that change the verdict."},
        "drops": {"type": "array", "items": {
            "type": "object", "required": ["left_out", "statistic", "ci_low", "ci_high", "verdict"],
            "properties": {"left_out": {"type": "array", "items": {"type": "integer"}}, "statistic": _NUMBER,
                           "ci_low": _NUMBER, "ci_high": _NUMBER, "verdict": _VERDICT_OR_NULL},
        }},
    },
}

FIDELITY_SCHEMA: dict = {
    "type": "object",
    "required": ["lens", "layers", "held_out_kl", "held_out_tokens", "reference_kl", "outside_top1000",
                 "training_tokens", "last_half_kl_change", "unreliable", "converged", "label"],
    "properties": {
        "lens": {"type": "string"},
        "layers": {"type": "array", "items": {"type": "integer"}, "description": "The layers the statistic reads."},
        "held_out_kl": {**_NUMBER, "description": "Mean held-out KL(final || lens) at those layers, nats."},
        "held_out_tokens": {"type": "integer", "minimum": 0},
        "reference_kl": {**_NUMBER, "description": "The tuned lens's KL there (for a verdict read through another lens)."},
        "outside_top1000": {**_NUMBER, "description": "Share of the lens top-1 there outside the Top-1000 bucket."},
        "training_tokens": {"type": ["integer", "null"], "description": "Training tokens of a tuned lens fitted here."},
        "last_half_kl_change": {**_NUMBER, "description": "Relative change of its mean held-out KL over the last half of training."},
        "unreliable": {"type": "array", "items": {"type": "string"}, "description": "Why the reading is unreliable (empty: no reason)."},
        "converged": {"type": ["boolean", "null"], "description": "Whether a tuned lens's KL stopped falling (null: no curve)."},
        "label": {"type": "string"},
    },
}

_ONE_LENS: dict = {
    "type": "object",
    "required": ["lens"],
    "properties": {"lens": {"type": "string", "minLength": 1, "description": "Lens name."}},
    "if": {"properties": {"lens": {"const": "logit"}}},
    "then": True,
    # "some property name contains 'hash'" == "not every property name lacks it"
    "else": {"not": {"propertyNames": {"not": {"pattern": "hash"}}}},
}

LENS_IDENTITY_SCHEMA: dict = {
    "description": "The lens the layers were read with: null for claims that read no lens (interventions), "
    "else the lens's identity, or {\"compared\": [identity, ...]} for claims that compare two lenses. "
    "Every lens with parameters (anything but the logit lens, e.g. a tuned lens) must carry a hash of them, "
    "in a property whose name contains 'hash'; a tuned lens also records its alignment and source.",
    "oneOf": [
        {"type": "null"},
        _ONE_LENS,
        {
            "type": "object",
            "required": ["compared"],
            "properties": {"compared": {"type": "array", "minItems": 2, "items": _ONE_LENS}},
        },
    ],
}

PROVENANCE_SCHEMA: dict = {
    "type": "object",
    "description": "Where the numbers came from: enough to rerun them and to tell two runs apart. Extra "
    "keys are allowed (e.g. trace_key, data_source, engine_version, a backend's own fields).",
    "required": [
        "git_commit", "depth_claims", "torch", "transformers", "python", "model", "model_source",
        "revision", "dtype", "device", "backend", "lens", "data_hash", "finished_at", "run_seconds",
    ],
    "properties": {
        "git_commit": {"type": "string", "description": "HEAD of the depth-claims checkout ('unknown' outside git)."},
        "depth_claims": {"type": "string", "description": "Version of the depth-claims package."},
        "engine_version": {"type": "integer", "description": "Version of the trace engine's cache format."},
        "torch": {"type": "string", "description": "torch version."},
        "transformers": {"type": "string", "description": "transformers version."},
        "python": {"type": "string", "description": "Python version."},
        "model": {"type": "string", "minLength": 1, "description": "The model's name in depth-claims."},
        "model_source": {"type": ["string", "null"], "description": "Hub id, PyPI package or local folder the weights came from."},
        "revision": {"type": ["string", "null"], "description": "Hub commit, or a hash of the weight file; null when unknown."},
        "dtype": {"type": "string", "description": "dtype the model ran in (e.g. float32, bfloat16)."},
        "device": {"type": "string", "description": "Device of the model's first parameters (cpu, cuda:0, ...)."},
        "backend": {"type": "string", "description": "How forward passes ran: transformers, nnsight or nnsight-remote."},
        "lens": LENS_IDENTITY_SCHEMA,
        "lens_mismatch": {
            "type": "object",
            "required": ["lens_model", "model", "reason"],
            "properties": {
                "lens_model": {"type": "string", "minLength": 1, "description": "The model the tuned lens was trained for."},
                "model": {"type": "string", "minLength": 1, "description": "The model it read (this record's model)."},
                "reason": {"type": "string", "description": "How they differ (unembedding hash or name)."},
            },
            "description": "Present only when a tuned lens made for another model was read with "
            "--allow-lens-mismatch (e.g. the GTR paper's pythia-6.9b read through the lens of pythia-6.9b-deduped).",
        },
        "data_hash": {"type": "string", "minLength": 1, "description": "Hash of the prompts the result was computed on."},
        "dataset": {"type": "string", "description": "Dataset name of an intervention result."},
        "data_source": {"type": "string", "description": "File the prompts were read from."},
        "trace_key": {"type": "object", "description": "Dataset and positions of the engine trace the result read."},
        "finished_at": {
            "type": "string",
            "format": "date-time",
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}",
            "description": "When the record was written (ISO 8601, UTC).",
        },
        "run_started_at": {
            "type": "string",
            "format": "date-time",
            "description": "When this model's run began (the report writer was created, right after the model loaded).",
        },
        "run_seconds": {
            "type": "number",
            "minimum": 0,
            "description": "Wall-clock seconds from the start of this model's run to this record: the run time "
            "up to and including this claim.",
        },
    },
}

RECORD_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://depth-claims.invalid/schema/claims-record.json",
    "title": "depth-claims claims.json record",
    "description": "The verdict of one claim on one model, read with one lens, on one dataset, with the "
    "provenance of its numbers. claims.json is an array of these.",
    "type": "object",
    "required": [
        "claim", "version", "model", "lens", "dataset", "statistic", "ci_low", "ci_high", "threshold",
        "direction", "n", "n_groups", "verdict", "label", "control", "too_little_data", "robustness", "lens_fidelity",
        "paper_comparison", "subchecks", "details", "provenance",
    ],
    "properties": {
        "claim": {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9]*-[0-9]+[A-Za-z0-9]*$", "description": "The claim's id (harness/claims/)."},
        "version": {"type": "integer", "minimum": 1, "description": "Claim version: bumped whenever the statistic or threshold changes meaning."},
        "model": {"type": "string", "minLength": 1, "description": "Model name."},
        "lens": {"type": "string", "minLength": 1, "description": "Lens the layers were read with ('none' for interventions)."},
        "dataset": {"type": "string", "minLength": 1, "description": "Dataset the claim ran on."},
        "statistic": {**_NUMBER, "description": "The claim's statistic (Claim.statistic says what it is)."},
        "ci_low": {**_NUMBER, "description": "Lower end of the 95% bootstrap interval of the statistic."},
        "ci_high": {**_NUMBER, "description": "Upper end of the 95% bootstrap interval of the statistic."},
        "threshold": {"type": ["number", "null"], "description": "Value the interval must clear; null for a curve reported without a claim."},
        "direction": {"enum": ["above", "below", None], "description": "Side of the threshold the claim predicts; null when there is no threshold."},
        "n": {"type": "integer", "minimum": 0, "description": "Number of measurements (prompts, positions) behind the statistic."},
        "n_groups": {"type": "integer", "minimum": 0, "description": "Number of units the bootstrap resampled (e.g. paragraphs)."},
        "verdict": {
            "enum": ["replicated", "contradicted", "inconclusive", None],
            "description": "replicated: the interval (and every sub-check) lies on the claimed side; contradicted: "
            "the interval (or a sub-check) lies wholly on the other side; inconclusive: otherwise; null: reported "
            "only (no threshold).",
        },
        "label": {
            "enum": ["replicated", "contradicted", "inconclusive", "not specific", None],
            "description": "The verdict, except 'not specific' where the claim replicates on the model's untrained "
            "control too: an untrained network of the same shape shows it, so the test measures the architecture, "
            "not what training taught.",
        },
        "control": {
            "oneOf": [{"type": "null"}, CONTROL_SCHEMA],
            "description": "The claim on the model's untrained control (same config, tokenizer, data and lens kind; "
            "seeded random weights); null when no control was run (--no-control).",
        },
        "robustness": {
            "oneOf": [{"type": "null"}, ROBUSTNESS_SCHEMA],
            "description": "Leave-one-layer-out: the statistic recomputed with each layer it aggregates left out (and the "
            "first two together); null for a statistic that does not aggregate over layers.",
        },
        "paper_comparison": {
            "type": "array",
            "items": {"type": "object", "required": ["what", "paper", "paper_model", "ours"],
                      "properties": {
                          "what": {"type": "string", "description": "The quantity, in words and units."},
                          "paper": {"type": "string", "description": "The paper's number as it states it (e.g. '> 0.75')."},
                          "paper_model": {"type": "string", "description": "The paper's model (and lens) behind it."},
                          "ours": {**_NUMBER, "description": "Ours on this model, in the same units."},
                      }},
            "description": "Numbers the paper states, each beside ours in the same units.",
        },
        "lens_fidelity": {
            "oneOf": [{"type": "null"}, FIDELITY_SCHEMA],
            "description": "How faithful the lens is at the layers the statistic reads (harness/fidelity.py); for a "
            "comparison of lenses the tuned lens's, which both comparisons rest on; null for results "
            "read through no lens (interventions).",
        },
        "too_little_data": {
            "type": "array", "items": {"type": "string"},
            "description": "What fell short of the claim's minimum n (Claim.min_n), e.g. 'statistic could not be "
            "computed (n=0, needs 10)'; empty when all was judged. A statistic short of data is inconclusive.",
        },
        "subchecks": {"type": "array", "items": SUBCHECK_SCHEMA, "description": "Further conditions of the claim."},
        "details": {"type": "object", "description": "Claim-specific extra numbers (free form)."},
        "provenance": PROVENANCE_SCHEMA,
    },
    # A judged claim has a threshold, a direction and a verdict; a reported curve has none of them.
    "if": {"properties": {"threshold": {"type": "null"}}},
    "then": {"properties": {"direction": {"const": None}, "verdict": {"const": None}}},
    "else": {"properties": {"direction": _DIRECTION, "verdict": _VERDICT}},
}

CLAIMS_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "depth-claims claims.json",
    "description": "All claim records of one model, sorted by (claim, lens, dataset), each key once.",
    "type": "array",
    "items": RECORD_SCHEMA,
}


class SchemaError(ValueError):
    """A claims.json record (or file) does not match the schema."""


def _validator(schema: dict):
    import jsonschema

    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _where(path) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[") or "(record)"


def record_label(record) -> str:
    if not isinstance(record, dict):
        return repr(record)[:60]
    return "/".join(str(record.get(k, "?")) for k in ("claim", "lens", "dataset"))


def record_errors(record) -> list[str]:
    """Everything wrong with one record, one line each ('at provenance.run_seconds: ...')."""
    record = _as_json(record)
    errors = sorted(_validator(RECORD_SCHEMA).iter_errors(record), key=lambda e: list(map(str, e.absolute_path)))
    # a field wrong by its own type needs no second line from the threshold/verdict rule
    plain = {_where(e.absolute_path) for e in errors if next(iter(e.schema_path), None) not in ("then", "else")}
    errors = [e for e in errors if next(iter(e.schema_path), None) not in ("then", "else") or _where(e.absolute_path) not in plain]
    return list(dict.fromkeys(f"at {_where(e.absolute_path)}: {_message(e)}" for e in errors))


def _message(error) -> str:
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        # provenance.lens is an object: say what is wrong with it as an object
        inner = [e for e in error.context if e.relative_schema_path and e.relative_schema_path[0] == 1]
        return "; ".join(_message(e) for e in inner) or error.message
    if error.validator == "oneOf":
        return f"{error.instance!r} must be null or an object with a 'lens' name"
    if error.validator == "not" and "propertyNames" in json.dumps(error.validator_value):
        lens = error.instance.get("lens") if isinstance(error.instance, dict) else None
        return f"lens {lens!r} has parameters, so its identity must carry a hash of them (a key containing 'hash')"
    branch = next(iter(error.schema_path), None)
    if branch == "then":
        return f"{error.instance!r} must be null: a record without a threshold is reported, not judged"
    if branch == "else":
        return f"{error.instance!r} is not one of {error.validator_value}: a record with a threshold needs a direction and a verdict"
    return error.message


def validate_record(record) -> None:
    """Raise :class:`SchemaError` naming the record and each wrong field."""
    errors = record_errors(record)
    if errors:
        raise SchemaError(
            f"claims.json record {record_label(record)} does not match the schema "
            f"(harness/report/schema.py, version {SCHEMA_VERSION}):\n  " + "\n  ".join(errors)
        )


def claims_errors(records) -> list[str]:
    """Everything wrong with the content of a claims.json file."""
    if not isinstance(records, list):
        return [f"claims.json must hold a JSON array of records, not {type(records).__name__}"]
    problems, seen = [], set()
    for i, record in enumerate(records):
        problems += [f"record {i} ({record_label(record)}) {e}" for e in record_errors(record)]
        if isinstance(record, dict):
            key = (record.get("claim"), record.get("lens"), record.get("dataset"))
            if key in seen:
                problems.append(f"record {i} ({record_label(record)}) repeats an earlier (claim, lens, dataset)")
            seen.add(key)
    return problems


def validate_claims(records_or_path) -> list[dict]:
    """Validate a claims.json (its path or its parsed content); return the records."""
    records = records_or_path
    where = "claims.json"
    if isinstance(records_or_path, (str, Path)):
        where = str(records_or_path)
        records = json.loads(Path(records_or_path).read_text())
    problems = claims_errors(records)
    if problems:
        raise SchemaError(f"{where} does not match the schema (harness/report/schema.py):\n  " + "\n  ".join(problems))
    return records


def _as_json(record):
    """The record as it is written (:func:`strict_json`)."""
    return json.loads(strict_json(record))


def strict_json(value, **kwargs) -> str:
    """``value`` as strict JSON: numpy scalars as Python numbers, NaN and infinities as
    null (``allow_nan=False``: a float that slips through raises instead of writing NaN)."""
    return json.dumps(_finite(value), allow_nan=False, default=_default, **kwargs)


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _default(value):
    if hasattr(value, "tolist"):  # numpy array
        return _finite(value.tolist())
    return float(value)
