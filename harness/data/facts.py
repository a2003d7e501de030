"""Factual cloze prompts for the claim "the first token of a multi-token fact needs the most depth".

Two record formats, one typed record (:class:`Fact`):

- plain JSON Lines, one ``{"prompt": str, "answer": str}`` object a line, ``id`` and
  ``relation`` optional (the embedded ``fixtures/facts/facts.jsonl`` has both). The answer
  follows the prompt after one space: the text is ``prompt + " " + answer``;
- MQuAKE (Zhong et al. 2023, princeton-nlp/MQuAKE; ``MQuAKE-CF-3k.json``): a JSON list of
  cases, each with ``requested_rewrite`` (the counterfactual edits: ``prompt`` with ``{}``,
  ``subject``, ``target_true``/``target_new``), ``single_hops`` (``question``, ``cloze``,
  ``answer``, ``answer_alias``) and ``orig.triples`` (one Wikidata triple per single hop).
  As in the paper's loader (how-do-llms-use-their-depth, ``dsets/mquake.py``, type
  ``"cloze"``), a fact is one **single hop**: prompt = its ``cloze``, answer = its
  ``answer`` (the true, unedited object). ``answer_alias`` is not used (only one gold
  sequence can be teacher-forced), nor are the edits in ``requested_rewrite`` (they are
  counterfactual) or ``new_single_hops``. The relation is the hop's Wikidata property
  from ``orig.triples`` when the two lists are equally long, else empty. The format was
  checked against the MQuAKE README's example record; only ``single_hops[*].cloze`` and
  ``single_hops[*].answer`` are required.

Normalisation (both formats): the prompt loses trailing whitespace and the answer its
surrounding whitespace (the separating space is added when the text is built); empty
strings are errors. MQuAKE chains share single hops, so the same ``(prompt, answer)``
pair occurs in many cases: repeated pairs are dropped (the first is kept) and counted in
``FactSet.n_duplicates``, so that the bootstrap over facts does not count one fact
several times. The plain format does the same; a repeated ``id`` there is an error.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from harness.data.jsonl import jsonl_records
from harness.data.prose import DataMissing
from harness.paths import FIXTURES_DIR

EMBEDDED_FACTS = FIXTURES_DIR / "facts" / "facts.jsonl"
FACTS_FILE = Path("facts") / "facts.jsonl"  # under --data-dir
MQUAKE_FILES: tuple[Path, ...] = (Path("MQuAKE-CF-3k.json"), Path("MQuAKE-CF-3k-v2.json"))  # under --data-dir


@dataclass(frozen=True)
class Fact:
    """A ``(prompt, answer)`` pair; the text is ``prompt + " " + answer``."""

    id: str
    relation: str
    prompt: str
    answer: str


@dataclass(frozen=True)
class FactSet:
    """A named list of facts; ``content_hash`` covers every field of every fact."""

    name: str
    facts: tuple[Fact, ...]
    source: str
    n_duplicates: int = 0  # repeated (prompt, answer) pairs that were dropped

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for f in self.facts:
            h.update("\0".join((f.id, f.relation, f.prompt, f.answer)).encode() + b"\0\0")
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.facts)


def _text(value, field: str, where: str, strip: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: {field!r} must be a string, got {type(value).__name__}.")
    text = value.rstrip() if strip == "right" else value.strip()
    if not text:
        raise ValueError(f"{where}: {field!r} is empty.")
    return text


def _dedupe(facts: list[Fact]) -> tuple[tuple[Fact, ...], int]:
    seen, out = set(), []
    for f in facts:
        if (f.prompt, f.answer) not in seen:
            seen.add((f.prompt, f.answer))
            out.append(f)
    return tuple(out), len(facts) - len(out)


def read_facts_jsonl(path: Path, name: str | None = None) -> FactSet:
    """Plain ``{prompt, answer[, id, relation]}`` JSON Lines. A missing ``id`` becomes
    ``<file stem>-<line>``; errors name the file and line."""
    path = Path(path)
    facts, ids = [], {}
    for line_no, where, rec in jsonl_records(path):
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected a JSON object with 'prompt' and 'answer'.")
        missing = [k for k in ("prompt", "answer") if k not in rec]
        if missing:
            raise ValueError(f"{where}: expected a JSON object with 'prompt' and 'answer'; missing {missing}.")
        fact_id = str(rec.get("id", f"{path.stem}-{line_no}"))
        if fact_id in ids:
            raise ValueError(f"{where}: id {fact_id!r} repeats line {ids[fact_id]}.")
        ids[fact_id] = line_no
        relation = rec.get("relation", "")
        facts.append(
            Fact(
                id=fact_id,
                relation="" if relation is None else str(relation),
                prompt=_text(rec["prompt"], "prompt", where, "right"),
                answer=_text(rec["answer"], "answer", where, "both"),
            )
        )
    if not facts:
        raise ValueError(f"{path}: no facts.")
    unique, n_dup = _dedupe(facts)
    return FactSet(name=name or f"facts-{path.stem}", facts=unique, source=str(path), n_duplicates=n_dup)


def read_mquake(path: Path, name: str | None = None) -> FactSet:
    """MQuAKE cases -> one fact per single hop (``cloze`` -> ``answer``); ids are
    ``<case_id>-hop<j>``. Errors name the file and the record index."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}).") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of MQuAKE cases, got {type(records).__name__}.")
    return mquake_facts(records, str(path), name or "mquake-" + path.stem.lower())


def mquake_facts(records, source: str, name: str) -> FactSet:
    """MQuAKE cases (dicts, from a file or a hub data set) -> one fact per single hop."""
    facts = []
    for i, case in enumerate(records):
        where = f"{source}[{i}]"
        if not isinstance(case, dict) or not isinstance(case.get("single_hops"), list):
            raise ValueError(f"{where}: expected an MQuAKE case (an object with a 'single_hops' list).")
        case_id = case.get("case_id", i)
        triples = (case.get("orig") or {}).get("triples") if isinstance(case.get("orig"), dict) else None
        hops = case["single_hops"]
        relations = (
            [str(t[1]) if isinstance(t, (list, tuple)) and len(t) == 3 else "" for t in triples]
            if isinstance(triples, list) and len(triples) == len(hops)
            else [""] * len(hops)
        )
        for j, hop in enumerate(hops):
            hw = f"{where}.single_hops[{j}]"
            if not isinstance(hop, dict) or "cloze" not in hop or "answer" not in hop:
                raise ValueError(f"{hw}: expected an object with 'cloze' and 'answer'.")
            facts.append(
                Fact(
                    id=f"{case_id}-hop{j}",
                    relation=relations[j],
                    prompt=_text(hop["cloze"], "cloze", hw, "right"),
                    answer=_text(hop["answer"], "answer", hw, "both"),
                )
            )
    if not facts:
        raise ValueError(f"{source}: no single-hop facts.")
    unique, n_dup = _dedupe(facts)
    return FactSet(name=name, facts=unique, source=source, n_duplicates=n_dup)


def cloze_facts(records, source: str, name: str) -> FactSet:
    """Facts from ``(id, relation, prompt, answer)`` tuples of a hub data set (errors name the record)."""
    facts = [
        Fact(id=str(i), relation=str(rel or ""), prompt=_text(prompt, "prompt", f"{source}[{i}]", "right"),
             answer=_text(answer, "answer", f"{source}[{i}]", "both"))
        for i, rel, prompt, answer in records
    ]
    if not facts:
        raise ValueError(f"{source}: no facts.")
    unique, n_dup = _dedupe(facts)
    return FactSet(name=name, facts=unique, source=source, n_duplicates=n_dup)


def load_facts(data_dir: Path | None = None) -> FactSet:
    """Facts from ``data_dir`` when given (MQuAKE, the paper's data, first; else
    ``facts/facts.jsonl``), else the embedded ``fixtures/facts/facts.jsonl``."""
    if data_dir is None:
        if not EMBEDDED_FACTS.is_file():
            raise DataMissing(f"The embedded facts are missing ({EMBEDDED_FACTS}); the checkout is incomplete.")
        return read_facts_jsonl(EMBEDDED_FACTS, name="facts-embedded")
    data_dir = Path(data_dir)
    for rel in MQUAKE_FILES:
        if (data_dir / rel).is_file():
            return read_mquake(data_dir / rel, name="mquake-" + rel.stem.lower())
    if (data_dir / FACTS_FILE).is_file():
        return read_facts_jsonl(data_dir / FACTS_FILE, name="facts-data-dir")
    wanted = " or ".join(str(data_dir / p) for p in (*MQUAKE_FILES, FACTS_FILE))
    raise DataMissing(
        f"--data-dir {data_dir} has no facts for the multi-token-fact claim: expected {wanted} "
        "(MQuAKE cases, or JSON Lines of {prompt, answer}); leave --data-dir out to use the embedded facts."
    )
