"""The Claim type, its registry, and the result of checking one claim on one model."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.stats import Direction, Estimate, Verdict, verdict


@dataclass(frozen=True)
class Claim:
    """A published claim, pinned down as a statistic with a threshold.

    Changing how ``statistic`` is computed or what ``threshold`` means bumps ``version``.
    """

    id: str
    version: int
    paper: str
    source: str
    statement: str
    statistic: str
    threshold: float | None
    direction: Direction | None
    paper_value: str

    def judge(self, est: Estimate) -> Verdict | None:
        if self.threshold is None or self.direction is None:
            return None
        return verdict(est.ci_low, est.ci_high, self.threshold, self.direction)


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

    @property
    def verdict(self) -> Verdict:
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
class ClaimResult:
    claim: Claim
    model: str
    lens: str
    dataset: str
    estimate: Estimate
    details: dict = field(default_factory=dict)
    subchecks: tuple[SubCheck, ...] = ()

    @property
    def verdict(self) -> Verdict | None:
        main = self.claim.judge(self.estimate)
        if main is None or not self.subchecks:
            return main
        return combine([main, *(c.verdict for c in self.subchecks)])

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
        text = (
            f"{self.claim.id} [{self.model} · {where}] {self.verdict}: "
            f"{e.value:.3f} (95% CI {e.ci_low:.3f} to {e.ci_high:.3f}, n={e.n}), claim {side} {self.claim.threshold}"
        )
        if len(self.subchecks) > 2:
            held = sum(c.verdict == "replicated" for c in self.subchecks)
            return text + f"; sub-checks replicated: {held}/{len(self.subchecks)}"
        for c in self.subchecks:
            ce, cside = c.estimate, ">" if c.direction == "above" else "<"
            text += f"; {c.name} {ce.value:.3f} ({ce.ci_low:.3f} to {ce.ci_high:.3f}) {cside} {c.threshold}: {c.verdict}"
        return text
