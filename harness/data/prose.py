"""Natural prose: the embedded encyclopedic corpus, or Wikipedia paragraphs via --data-dir.

Both are JSON Lines with one paragraph per line, ``{"id": ..., "text": str}`` (the
embedded files add a ``title``). They feed the prose prefixes, POS examples and the
token-frequency counts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from harness.data.jsonl import jsonl_records
from harness.paths import FIXTURES_DIR

EMBEDDED_PROSE = FIXTURES_DIR / "prose"
WIKIPEDIA_FILE = Path("wikipedia") / "squad_v2_dev_contexts.jsonl"


class DataMissing(FileNotFoundError):
    """A data file that a loader needs is not there."""


@dataclass(frozen=True)
class Paragraph:
    id: str
    text: str


@dataclass(frozen=True)
class Corpus:
    """A named list of paragraphs; ``content_hash`` covers every character of it."""

    name: str
    paragraphs: tuple[Paragraph, ...]
    source: str

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for p in self.paragraphs:
            h.update(p.id.encode() + b"\0" + p.text.encode() + b"\0")
        return h.hexdigest()

    @property
    def n_words(self) -> int:
        return sum(len(p.text.split()) for p in self.paragraphs)


def _read_jsonl(path: Path) -> list[Paragraph]:
    out = []
    for _, where, rec in jsonl_records(path):
        try:
            out.append(Paragraph(id=str(rec["id"]), text=str(rec["text"])))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{where}: expected a JSON object with 'id' and 'text' ({err}).") from None
    return out


def load_prose(data_dir: Path | None = None) -> Corpus:
    """Wikipedia paragraphs from ``data_dir`` when given, else the embedded corpus."""
    if data_dir is None:
        files = sorted(EMBEDDED_PROSE.glob("*.jsonl"))
        if not files:
            raise DataMissing(f"The embedded prose corpus is missing from {EMBEDDED_PROSE}; the checkout is incomplete.")
        paragraphs = [p for f in files for p in _read_jsonl(f)]
        return Corpus(name="prose-embedded", paragraphs=tuple(paragraphs), source=str(EMBEDDED_PROSE))
    path = Path(data_dir) / WIKIPEDIA_FILE
    if not path.is_file():
        raise DataMissing(
            f"--data-dir {data_dir} has no {WIKIPEDIA_FILE}: point --data-dir at a folder laid out "
            "like ../shared/data (see its README), or leave it out to use the embedded corpus."
        )
    return Corpus(name="wikipedia-squad2-dev", paragraphs=tuple(_read_jsonl(path)), source=str(path))
