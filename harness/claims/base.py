"""The Claim type, its registry, and the result of checking one claim on one model."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from harness.fidelity import LensFidelity
from harness.stats import Direction, Estimate, Verdict, verdict


@dataclass(frozen=True)
class Tolerance:
    """How far a snapshotted number may move between runs: ``|got - expected| <= abs +
    rel * |expected|`` (``math.isclose`` semantics with both bounds added). NaN matches NaN
    only; ``None`` (a missing number, e.g. a bucket with no guesses) matches ``None`` only."""

    rel: float = 0.0
    abs: float = 0.0

    def __post_init__(self):
        if self.rel < 0 or self.abs < 0 or math.isnan(self.rel) or math.isnan(self.abs):
            raise ValueError(f"Tolerance bounds must be >= 0, got rel={self.rel}, abs={self.abs}.")

    def allows(self, expected: float | None, got: float | None) -> bool:
        if expected is None or got is None:
            return expected is None and got is None
        if math.isnan(expected) or math.isnan(got):
            return math.isnan(expected) and math.isnan(got)
        if math.isinf(expected) or math.isinf(got):
            return expected == got
        return abs(got - expected) <= self.abs + self.rel * abs(expected)

    def __str__(self) -> str:
        return f"rel {self.rel:g}, abs {self.abs:g}"


# The tolerances claims choose from, by the kind of number, from the measured run-to-run
# variation (`python benchmarks/snapshot_variation.py [--default-model]`; tiny random
# models of all 13 families, and the default model on 150 prefixes / 8 problems).
#
# EXACT: counts (n). Never moved but with bfloat16 instead of float32.
EXACT = Tolerance(rel=0.0, abs=0.0)
# DECISIONS: numbers counted from argmax, top-k or rank decisions (shares, flip rates,
# overlaps, earliest layers, rank correlations). Measured: identical to the last digit
# when repeated, with 1 vs 2 threads, with batch size 8 vs 3 (default model) or 1 (tiny
# models), and in float64 instead of float32; also in bfloat16 when repeated or with 2
# threads. The nearest top-1/top-2 logit gap of the tiny models is 1e-4 (100x float32
# noise). What must fail: bfloat16 with another batch size (other kernel shapes, as after
# a torch or CUDA update on the GPU runner) flipped about 1 decision in 150 prefixes of
# the default model (GTR-1 statistic and shares moved by 0.0067 = 1/150, GTR-2 flip rates
# by 0.018, CSO-4 overlaps by 7e-4); bfloat16 instead of float32 moved shares by 0.03
# (default model) to 0.14 (tiny models). 1e-3 is below one flipped decision in the
# default model's 534 prefixes (1.9e-3): no decision may flip on the snapshot's data,
# while float summation and the 8 digits kept in JSON pass.
DECISIONS = Tolerance(rel=0.0, abs=1e-3)
# CONTINUOUS: numbers computed from activations (norms, cosines, KL, probabilities,
# effects of interventions). Measured: max |diff| 8.4e-7 with 1 vs 2 threads (tiny
# models; the default model: identical), 1e-6 with batch size 8 vs 3 (default model, KL
# of about 10, relative 9e-8), 1.2e-6 float32 vs float64 (relative up to 3.7e-6 on
# numbers >= 1e-3; 3.5e-5 for cosines near 1e-3, i.e. 6e-8 absolute). What must fail: bfloat16 with another batch size moved the default model's KL
# by 1.8e-3 (relative 4e-4); bfloat16 instead of float32 moved these numbers by 1.4e-4 to
# 6e-2. About 10x the float32 noise in abs, 100x in rel.
CONTINUOUS = Tolerance(rel=1e-4, abs=1e-5)
# Used for every snapshotted number a claim names no tolerance for.
DEFAULT_TOLERANCE = CONTINUOUS


def snapshot_tolerances(
    statistic: Tolerance, curves: Tolerance, subchecks: Tolerance | None = None, **named: Tolerance
) -> dict[str, Tolerance]:
    """``Claim.tolerances`` for the common case: the statistic and its interval alike, n
    exact, sub-checks like the statistic unless given, one tolerance for all curves;
    ``named`` adds keys for single curves or curve families (``{"mean/kl_final_to_lens": ...}``
    has to go through ``**{...}``)."""
    return {
        "statistic": statistic, "ci_low": statistic, "ci_high": statistic, "n": EXACT,
        "subchecks": subchecks or statistic, "curves": curves, **named,
    }


@dataclass(frozen=True)
class CurveSpec:
    """Which curves of a claim's table its snapshot keeps: one curve per combination of the
    ``by`` columns, ``value`` along ``x`` (in table order); ``where`` selects rows."""

    x: str
    value: str
    by: tuple[str, ...] = ()
    where: Mapping[str, object] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Claim:
    """A published claim, pinned down as a statistic with a threshold.

    Changing how ``statistic`` is computed or what ``threshold`` means bumps ``version``.
    """

    id: str
    # A few words naming the claim (its test: test_<id>_<name with underscores>).
    name: str
    version: int
    paper: str
    source: str
    statement: str
    statistic: str
    threshold: float | None
    direction: Direction | None
    paper_value: str
    # The fewest measurements (Estimate.n) a statistic or sub-check needs before it is judged;
    # below it, or when it could not be computed at all, the verdict is "inconclusive" with
    # the counts that fell short (ClaimResult.too_little_data), never replicated or contradicted.
    min_n: int = 1
    # True for a v2 claim whose statistic compares the model with its untrained control
    # (harness/claims/versus_control.py): it runs on the trained model only, needs the control.
    compares_with_control: bool = False
    # Every other number that changes the statistic's value (sample sizes, k, seeds, cut-offs),
    # by name. With threshold, direction and min_n it makes up ``definition_digest``, which
    # the snapshots compare: a change here without a version bump fails with a message saying so.
    parameters: Mapping[str, object] = field(default_factory=dict, hash=False)
    # The per-layer (or per-k) curves of the claim's table that its snapshot keeps; none
    # named: harness/snapshots/values.py picks them from the table's columns.
    curves: tuple[CurveSpec, ...] = ()
    # Snapshot tolerances (harness/snapshots/values.py), by field: "statistic", "ci_low",
    # "ci_high", "n", "subchecks", "curves", or a curve name or its leading part
    # ("share", "share/Top-10"); the longest matching key wins, DEFAULT_TOLERANCE otherwise.
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict, hash=False)
    # How the claim is checked on one model: ``evidence(run) -> Evidence`` obtains what it
    # reads from ``run.session`` (traces, measurements), computes the statistic and names
    # the figure. claims/test_claims.py makes one test of it per model (and per --lens when
    # ``per_lens``); its docstring is the test's. Not part of the definition (code, not numbers).
    evidence: Callable[[ClaimRun], Evidence] | None = field(default=None, hash=False, compare=False, repr=False)
    per_lens: bool = False

    @property
    def key(self) -> str:
        """``GTR-7v2`` -> ``gtr7v2``: the start of its test's name (``pytest -k gtr7v2``)."""
        return self.id.lower().replace("-", "")

    @property
    def test_name(self) -> str:
        """``test_gtr1_early_layers_guess_frequent_tokens``."""
        return f"test_{self.key}_{self.name.replace(' ', '_')}"

    @property
    def definition(self) -> dict:
        """What decides this claim's numbers and verdict, as JSON-ready values (the wording
        of ``statement`` and ``statistic`` is left out: rewording is not redefining)."""
        return json.loads(json.dumps(
            {"threshold": self.threshold, "direction": self.direction, "min_n": self.min_n,
             "parameters": dict(self.parameters)},
            sort_keys=True, default=repr,
        ))

    @property
    def definition_digest(self) -> str:
        """A short hash of :attr:`definition`, recorded in every snapshot."""
        text = json.dumps(self.definition, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def tolerance(self, name: str) -> Tolerance:
        """The tolerance of one snapshot field or curve (``"share/Top-10"`` falls back to
        ``"share"``, then ``"curves"``)."""
        parts = name.split("/")
        for i in range(len(parts), 0, -1):
            key = "/".join(parts[:i])
            if key in self.tolerances:
                return self.tolerances[key]
        if len(parts) > 1 or name not in SCALAR_FIELDS:
            return self.tolerances.get("curves", DEFAULT_TOLERANCE)
        return DEFAULT_TOLERANCE

    def judge(self, est: Estimate) -> Verdict | None:
        if self.threshold is None or self.direction is None:
            return None
        if shortfall(est, self.min_n, "statistic") is not None:
            return "inconclusive"
        return verdict(est.ci_low, est.ci_high, self.threshold, self.direction)


def shortfall(est: Estimate, min_n: int, what: str) -> str | None:
    """Why ``est`` cannot be judged (no number, or n below ``min_n``), or None: the one
    place that decides "too little data" for every statistic and sub-check."""
    if any(v is None or math.isnan(v) for v in (est.value, est.ci_low, est.ci_high)):
        return f"{what} could not be computed (n={est.n}, needs {min_n})"
    if est.n < min_n:
        return f"{what} has n={est.n}, needs {min_n}"
    return None


@dataclass(frozen=True)
class ClaimRun:
    """What a claim's ``evidence`` function gets: the model's session
    (``harness.session.ModelSession``), the lens this test reads (None for a claim that
    is not ``per_lens``), the untrained control's session for a claim that
    ``compares_with_control`` (else None), and ``need_lens(get)``, which returns
    ``get()`` or skips the test, naming the command that fits a missing tuned lens."""

    session: Any
    lens_name: str | None
    control: Any | None
    need_lens: Callable[[Callable[[], Any]], Any]


@dataclass(frozen=True)
class Evidence:
    """What one claim test publishes: the result and its table, the figure (a
    ``functools.partial`` of a figure function, drawn unless the report already holds it
    drawn from the same arguments), the ``--lens`` name the result was read through (None
    for a result read through no lens, or a comparison of the ``lenses`` it names), the
    engine trace it read, and the provenance of an intervention's prompts (``data``): the
    result's provenance is taken from these, never rebuilt from its labels."""

    result: ClaimResult
    table: Any  # pandas.DataFrame
    figure: Callable[[], Any]
    lens_name: str | None = None
    trace: Any | None = None
    data: dict | None = None
    lenses: list | None = None


# The scalar fields of a snapshot; every other tolerance key names a curve.
SCALAR_FIELDS = ("statistic", "ci_low", "ci_high", "n", "subchecks")

CLAIMS: dict[str, Claim] = {}


def register(claim: Claim) -> Claim:
    if claim.id in CLAIMS:
        raise ValueError(f"Claim {claim.id} is registered twice.")
    CLAIMS[claim.id] = claim
    return claim


@dataclass(frozen=True)
class SubCheck:
    """A second condition of a claim (e.g. "and flip rates fall with depth")."""

    name: str
    description: str
    estimate: Estimate
    threshold: float
    direction: Direction
    min_n: int = 1  # set to the claim's min_n by ClaimResult

    @property
    def too_little_data(self) -> str | None:
        return shortfall(self.estimate, self.min_n, f"sub-check {self.name}")

    @property
    def verdict(self) -> Verdict:
        if self.too_little_data is not None:
            return "inconclusive"
        return verdict(self.estimate.ci_low, self.estimate.ci_high, self.threshold, self.direction)

    def record(self) -> dict:
        e = self.estimate
        return {
            "name": self.name,
            "description": self.description,
            "statistic": e.value,
            "ci_low": e.ci_low,
            "ci_high": e.ci_high,
            "threshold": self.threshold,
            "direction": self.direction,
            "n": e.n,
            "verdict": self.verdict,
        }


def combine(verdicts: list[Verdict]) -> Verdict:
    """All parts of a claim must hold: any contradicted part contradicts it."""
    if "contradicted" in verdicts:
        return "contradicted"
    return "replicated" if all(v == "replicated" for v in verdicts) else "inconclusive"


@dataclass(frozen=True)
class LayerDrop:
    """The statistic recomputed with some of the layers it reads left out."""

    left_out: tuple[int, ...]
    estimate: Estimate
    verdict: Verdict | None


@dataclass(frozen=True)
class Robustness:
    """Leave-one-layer-out: does the verdict hinge on a single layer (or on the first two)?"""

    layers: tuple[int, ...]  # the layers the statistic aggregates
    verdict: Verdict | None  # the verdict of the statistic with every layer
    drops: tuple[LayerDrop, ...]

    @property
    def hinges_on(self) -> tuple[tuple[int, ...], ...]:
        """The left-out sets that change the verdict."""
        return tuple(d.left_out for d in self.drops if d.verdict != self.verdict)

    @property
    def label(self) -> str:
        if not self.hinges_on:
            return "robust"
        return "hinges on " + ", ".join("layers " + "+".join(map(str, s)) if len(s) > 1 else f"layer {s[0]}" for s in self.hinges_on)

    def record(self) -> dict:
        return {
            "label": self.label,
            "layers": list(self.layers),
            "hinges_on": [list(s) for s in self.hinges_on],
            "drops": [
                {"left_out": list(d.left_out), "statistic": d.estimate.value, "ci_low": d.estimate.ci_low,
                 "ci_high": d.estimate.ci_high, "verdict": d.verdict}
                for d in self.drops
            ],
        }


def leave_layers_out(
    claim: Claim, layers: Sequence[int], statistic: Callable[[list[int]], Estimate], full: Estimate
) -> Robustness | None:
    """Recompute ``statistic(kept_layers)`` (from stored per-layer numbers: no forward
    pass) with each layer of ``layers`` left out, and with the first two left out together,
    and judge each like ``full`` (the statistic over all of ``layers``). None when it reads
    a single layer (a small model's early quarter): nothing can be left out."""
    layers = [int(l) for l in layers]
    if len(layers) < 2:
        return None
    sets = [(l,) for l in layers] + ([tuple(layers[:2])] if len(layers) > 2 else [])
    drops = []
    for left_out in sets:
        est = statistic([l for l in layers if l not in left_out])
        drops.append(LayerDrop(left_out, est, claim.judge(est)))
    return Robustness(tuple(layers), claim.judge(full), tuple(drops))


@dataclass(frozen=True)
class PaperComparison:
    """A number the paper states, beside ours in the same units (ours on this model)."""

    what: str  # the quantity, in words and units
    paper: str  # as the paper states it: "> 0.75", "about 0.33", "0.60-0.80"
    paper_model: str  # the paper's model (and lens) behind it
    ours: float

    def record(self) -> dict:
        return {"what": self.what, "paper": self.paper, "paper_model": self.paper_model, "ours": self.ours}


# The label of a claim that replicates on the model and on its untrained control alike.
NOT_SPECIFIC = "not specific"
NOT_SPECIFIC_TEXT = "not specific: an untrained model shows it too"


@dataclass(frozen=True)
class ControlOutcome:
    """The same claim, lens and data on the model's untrained control
    (``<model>+untrained``: same config and tokenizer, seeded random weights)."""

    model: str
    estimate: Estimate
    verdict: Verdict | None
    too_little_data: tuple[str, ...] = ()

    @classmethod
    def of(cls, result: ClaimResult) -> ControlOutcome:
        return cls(result.model, result.estimate, result.verdict, tuple(result.too_little_data))

    def record(self) -> dict:
        e = self.estimate
        return {
            "model": self.model, "statistic": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high, "n": e.n,
            "verdict": self.verdict, "too_little_data": list(self.too_little_data),
        }


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    model: str
    lens: str
    dataset: str
    estimate: Estimate
    details: dict = field(default_factory=dict)
    subchecks: tuple[SubCheck, ...] = ()
    control: ControlOutcome | None = None  # None: no control was run (--no-control)
    # None: the statistic does not aggregate over layers (e.g. an earliest layer per token)
    robustness: Robustness | None = None
    # None: not read through one lens (interventions, lens comparisons)
    fidelity: LensFidelity | None = None
    paper: tuple[PaperComparison, ...] = ()  # where the paper gives a number

    def __post_init__(self):
        # every sub-check is judged with the claim's minimum n
        object.__setattr__(self, "subchecks", tuple(replace(c, min_n=self.claim.min_n) for c in self.subchecks))

    @property
    def too_little_data(self) -> list[str]:
        """What fell short of the claim's minimum n (empty when everything could be judged)."""
        reasons = [shortfall(self.estimate, self.claim.min_n, "statistic")]
        reasons += [c.too_little_data for c in self.subchecks]
        return [r for r in reasons if r is not None]

    @property
    def verdict(self) -> Verdict | None:
        """Inconclusive when the main statistic has too little data, whatever the sub-checks
        say; otherwise every part must hold (a sub-check short of data is inconclusive)."""
        main = self.claim.judge(self.estimate)
        if main is None or not self.subchecks or shortfall(self.estimate, self.claim.min_n, "statistic"):
            return main
        return combine([main, *(c.verdict for c in self.subchecks)])

    @property
    def label(self) -> str | None:
        """The verdict, or "not specific" when the untrained control replicates it too."""
        if self.verdict == "replicated" and self.control is not None and self.control.verdict == "replicated":
            return NOT_SPECIFIC
        return self.verdict

    @property
    def file_stem(self) -> str:
        """Name of this result's CSV and figure files: the claim id first."""
        return f"{self.claim.id}_{self.lens}_{self.dataset}"

    def record(self) -> dict:
        """One entry of ``reports/<model>/claims.json``."""
        e = self.estimate
        return {
            "claim": self.claim.id,
            "version": self.claim.version,
            "model": self.model,
            "lens": self.lens,
            "dataset": self.dataset,
            "statistic": e.value,
            "ci_low": e.ci_low,
            "ci_high": e.ci_high,
            "threshold": self.claim.threshold,
            "direction": self.claim.direction,
            "n": e.n,
            "n_groups": e.n_groups,
            "verdict": self.verdict,
            "label": self.label,
            "control": None if self.control is None else self.control.record(),
            "too_little_data": self.too_little_data,
            "robustness": None if self.robustness is None else self.robustness.record(),
            "lens_fidelity": None if self.fidelity is None else self.fidelity.record(),
            "paper_comparison": [c.record() for c in self.paper],
            "subchecks": [c.record() for c in self.subchecks],
            "details": self.details,
        }

    def summary(self) -> str:
        e = self.estimate
        if self.claim.threshold is None:
            return (
                f"{self.claim.id} [{self.model} · {self.dataset}] reported (no claim): {e.value:.3f} "
                f"(95% CI {e.ci_low:.3f} to {e.ci_high:.3f}, n={e.n}) = {self.claim.statistic}"
            )
        where = self.dataset if self.lens == "none" else f"{self.lens} lens · {self.dataset}"
        side = ">" if self.claim.direction == "above" else "<"
        short = self.too_little_data
        verdict_text = f"{self.verdict} (too little data: {'; '.join(short)})" if short else self.verdict
        text = (
            f"{self.claim.id} [{self.model} · {where}] {verdict_text}: "
            f"{e.value:.3f} (95% CI {e.ci_low:.3f} to {e.ci_high:.3f}, n={e.n}), claim {side} {self.claim.threshold}"
        )
        if len(self.subchecks) > 2:
            held = sum(c.verdict == "replicated" for c in self.subchecks)
            text += f"; sub-checks replicated: {held}/{len(self.subchecks)}"
        else:
            for c in self.subchecks:
                ce, cside = c.estimate, ">" if c.direction == "above" else "<"
                text += f"; {c.name} {ce.value:.3f} ({ce.ci_low:.3f} to {ce.ci_high:.3f}) {cside} {c.threshold}: {c.verdict}"
        if self.robustness is not None and self.robustness.hinges_on:
            text += f"; leave-one-layer-out: {self.robustness.label}"
        if self.fidelity is not None and (self.fidelity.unreliable or self.fidelity.converged is False):
            text += f"; {self.fidelity.lens} lens at layers {self.fidelity.layers[0]}-{self.fidelity.layers[-1]}: {self.fidelity.label}"
        if self.control is not None:
            ce = self.control.estimate
            text += f"; untrained control: {self.control.verdict} {ce.value:.3f} ({ce.ci_low:.3f} to {ce.ci_high:.3f}, n={ce.n})"
            if self.label == NOT_SPECIFIC:
                text += f" -- {NOT_SPECIFIC_TEXT.upper()}"
        return text
