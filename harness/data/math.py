"""Maths prompts for the depth-efficiency claims (Csordás et al. 2025).

- Word problems in the GSM8K format, ``{"question": str, "answer": str}`` with the answer
  ending in ``#### <number>``: ``gsm8k/test.jsonl`` under ``--data-dir``, else the
  project's own problems in ``fixtures/arithmetic/problems.jsonl``. Each is formatted as
  question plus worked answer, as in the paper's notebook (the LM evaluation harness
  prompt).
- Digit sums for the erasure and gradient maps: the paper's ``"5 + 7 + 5 + 3 + 1 + 7 = "``
  with answer ``"28"`` first, then more sums of six digits drawn with a fixed seed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from harness.data.jsonl import jsonl_records
from harness.data.prose import DataMissing
from harness.paths import FIXTURES_DIR

EMBEDDED_PROBLEMS = FIXTURES_DIR / "arithmetic" / "problems.jsonl"
GSM8K_FILE = Path("gsm8k") / "test.jsonl"
PAPER_SUM = ("5 + 7 + 5 + 3 + 1 + 7 = ", "28")


@dataclass(frozen=True)
class MathProblem:
    id: str
    question: str
    answer: str  # worked solution, ending "#### <number>"

    @property
    def final_answer(self) -> str:
        return self.answer.split("####")[-1].strip()

    def prompt(self) -> str:
        """Question + worked answer, formatted like the paper's notebook."""
        work = self.answer.split("####")[0]
        return (
            "Given the following problem, reason and give a final answer to the problem.\n"
            f"Problem: {self.question}\n"
            'Your response should end with "The final answer is [answer]" where [answer] is the response to the problem.\n'
            f"\n{work}The final answer is {self.final_answer}"
        )


@dataclass(frozen=True)
class ProblemSet:
    name: str
    problems: tuple[MathProblem, ...]
    source: str

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for p in self.problems:
            h.update(f"{p.id}\0{p.question}\0{p.answer}\0\0".encode())
        return h.hexdigest()


def gsm8k_problem(rec, where: str, problem_id: str) -> MathProblem:
    """One GSM8K record ``{question, answer}`` (the answer ends ``#### <number>``)."""
    if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) or not isinstance(rec.get("answer"), str):
        raise ValueError(f"{where}: expected {{'question': str, 'answer': str}} (GSM8K format).")
    if rec["answer"].count("####") != 1:
        raise ValueError(f"{where}: the answer must end with exactly one '#### <number>' line.")
    return MathProblem(id=problem_id, question=rec["question"], answer=rec["answer"])


def read_problems(path: Path) -> tuple[MathProblem, ...]:
    problems = []
    for n, where, rec in jsonl_records(path):
        problems.append(gsm8k_problem(rec, where, str(rec.get("id", n)) if isinstance(rec, dict) else str(n)))
    if not problems:
        raise ValueError(f"{path} holds no problems.")
    return tuple(problems)


def load_problems(data_dir: Path | None) -> ProblemSet:
    """GSM8K test problems from ``data_dir``, else the embedded ones."""
    if data_dir is None:
        return ProblemSet("embedded-arithmetic", read_problems(EMBEDDED_PROBLEMS), str(EMBEDDED_PROBLEMS))
    path = Path(data_dir) / GSM8K_FILE
    if not path.is_file():
        raise DataMissing(f"{path} is missing: --data-dir must hold gsm8k/test.jsonl (GSM8K test split, JSON Lines).")
    return ProblemSet("gsm8k", read_problems(path), str(path))


def digit_sums(n: int, seed: int = 0, terms: int = 6) -> list[tuple[str, str]]:
    """(prompt, answer) pairs: the paper's sum first, then ``n - 1`` seeded six-digit sums."""
    rng = random.Random(seed)
    sums = [PAPER_SUM]
    while len(sums) < n:
        digits = [rng.randint(1, 9) for _ in range(terms)]
        sums.append((" + ".join(map(str, digits)) + " = ", str(sum(digits))))
    return sums[:n]
