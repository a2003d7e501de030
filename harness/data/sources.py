"""Named public data sources (``--data NAME``) and per-kind files (``--prose FILE`` ...).

Each :class:`Source` is one declarative entry: the hub data set, its config and split, the
pinned revision, the fields it reads, how records become the suite's typed records, and
the licence. ``datasets.load_dataset`` loads and caches it (streamed where the data set
is large); the formatter turns its rows into the same records as the embedded fixtures:

- ``prose``    -> :class:`~harness.data.prose.Corpus` (prose prefixes, POS examples, token
  frequencies, lens training)
- ``choices``  -> a list of :class:`~harness.data.choices.ChoiceTask` (multiple choice), few-shot
  prompts formatted exactly like the Guess-then-Refine paper's prompt files
- ``facts``    -> :class:`~harness.data.facts.FactSet` (multi-token facts)
- ``problems`` -> :class:`~harness.data.math.ProblemSet` (the depth-efficiency claims)

A record's name is ``<entry>-<revision[:7]>`` and its ``source`` names the hub id,
config, split and full revision, so every result says which data and which version it
read. ``local=`` loads a file in the data set's own schema (parquet, JSON or JSON Lines)
through ``datasets`` instead of the hub: the tests run every formatter that way, offline.

Per-kind files (``--prose``, ``--facts``, ``--choices``, ``--problems``) are JSON Lines:

- prose:    ``{"id": str|int, "text": str}``, one paragraph a line;
- facts:    ``{"prompt": str, "answer": str[, "id", "relation"]}`` (or an MQuAKE ``.json``);
- choices:  ``{"prompt": str, "options": [str, ...], "answer": str[, "task": str]}``;
- problems: ``{"question": str, "answer": str[, "id"]}``, the answer ending ``#### <number>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from harness.data.choices import ChoiceItem, ChoiceTask, _check, read_choices_file
from harness.data.facts import FactSet, cloze_facts, mquake_facts, read_facts_jsonl, read_mquake
from harness.data.math import MathProblem, ProblemSet, gsm8k_problem, read_problems
from harness.data.prose import Corpus, Paragraph, _read_jsonl

KINDS: tuple[str, ...] = ("prose", "choices", "facts", "problems")
EMBEDDED = "embedded"
PROSE_MIN_WORDS = 40  # a prose paragraph (a line of the article) has at least this many words
INSTALL_HINT = "pip install 'depth-claims[hub]' (or pip install datasets)"


class DataSourceError(ValueError):
    """An unknown ``--data`` name, two sources for one kind, or a source that cannot load."""


@dataclass(frozen=True)
class Source:
    """One named public data set and how its rows become the suite's records."""

    name: str  # the --data name
    kind: str  # one of KINDS
    dataset: str  # hub id, or "json" for a file at a pinned URL (data_files)
    config: str | None
    split: str
    revision: str  # pinned commit of the hub repository (or of the URL's repository)
    fields: tuple[str, ...]  # the row fields the formatter reads
    licence: str
    format: str  # key of FORMATS
    streaming: bool = False  # large data sets are streamed, never downloaded whole
    limit: int | None = None  # records kept for the claims (prose: paragraphs; None: all)
    data_files: str | None = None  # for dataset == "json": the pinned file URL
    task: str = ""  # choices: the task name in results (MMLU, SST, ...)
    options: tuple[str, ...] = ()  # choices: the answer options, in label order
    shots: tuple[dict, ...] = ()  # choices: the few-shot examples, rows in the data set's schema
    description: str = ""

    @property
    def record_name(self) -> str:
        return f"{self.name}-{self.revision[:7]}"

    @property
    def provenance(self) -> str:
        where = self.data_files or "/".join(x for x in (self.dataset, self.config or "") if x)
        return f"hf:{where}:{self.split}@{self.revision}"


# ----------------------------------------------------------------------------- formatting


def _prose(rows: Iterable[dict], src: Source) -> Iterator[Paragraph]:
    """Paragraphs: the lines of each row's ``text`` with at least PROSE_MIN_WORDS words
    (headings, lists and wikitext's `` = Title = `` lines are shorter or skipped)."""
    for i, row in enumerate(rows):
        row_id = row.get("id", i)
        for j, line in enumerate(str(row["text"]).split("\n")):
            text = line.strip()
            if text.startswith("=") or len(text.split()) < PROSE_MIN_WORDS:
                continue
            yield Paragraph(id=f"{row_id}-{j}", text=text)


def _mmlu_block(row: dict) -> str:
    letters = "ABCD"
    options = "".join(f"({letters[k]}) {c}\n" for k, c in enumerate(row["choices"]))
    return f"Question: {row['question']}\n{options}Answer:"


def _sst_shot(row: dict, src: Source) -> str:
    return f"Review : {row['sentence']}\nSentiment : {src.options[row['label']]}\n"


def _sst_query(row: dict) -> str:  # the paper's files lack the space after "Review :" here
    return f"Review :{row['sentence']}\nSentiment :"


def _pair_block(question: str) -> Callable[[dict], str]:
    return lambda row: f"{question}\nSentence 1: {row['sentence1']}\nSentence 2: {row['sentence2']}\nAnswer:"


# Per choice format: (query text of a row, shot text of a row, the row's answer index).
_MRPC_BLOCK = _pair_block("Are the sentences paraphrases of each other.")
_NLI_BLOCK = _pair_block("Does the first sentence imply the second.")
CHOICE_FORMATS: dict[str, tuple[Callable[[dict], str], Callable[[dict, Source], str]]] = {
    "mmlu": (_mmlu_block, lambda row, src: f"{_mmlu_block(row)} {src.options[row['answer']]}\n"),
    "sst": (_sst_query, _sst_shot),
    "mrpc": (_MRPC_BLOCK, lambda row, src: f"{_MRPC_BLOCK(row)} {src.options[row['label']]}\n"),
    "nli": (_NLI_BLOCK, lambda row, src: f"{_NLI_BLOCK(row)} {src.options[row['label']]}\n"),
}


def _choices(rows: Iterable[dict], src: Source) -> list[ChoiceTask]:
    query, shot = CHOICE_FORMATS[src.format]
    label = "answer" if src.format == "mmlu" else "label"
    head = "".join(shot(row, src) for row in src.shots)
    shot_queries = {query(row) for row in src.shots}
    items = []
    for i, row in enumerate(rows):
        if not 0 <= int(row[label]) < len(src.options):  # e.g. GLUE's unlabelled test rows (-1)
            continue
        text = query(row)
        if text in shot_queries:  # a shot is never its own query
            continue
        items.append(_check(ChoiceItem(src.task, head + text, src.options, src.options[int(row[label])]), f"{src.name}[{i}]"))
    return [ChoiceTask(src.task, tuple(items), src.provenance)]


def _facts(rows: Iterable[dict], src: Source) -> FactSet:
    if src.format == "mquake":
        return mquake_facts(list(rows), src.provenance, src.record_name)
    # counterfact-tracing: prompt ends before the answer; target_true starts with its space
    return cloze_facts(
        ((row.get("case_id", i), row["relation_id"], row["prompt"], row["target_true"]) for i, row in enumerate(rows)),
        src.provenance, src.record_name,
    )


def _problems(rows: Iterable[dict], src: Source) -> ProblemSet:
    problems = tuple(gsm8k_problem(row, f"{src.name}[{i}]", str(i)) for i, row in enumerate(rows))
    if not problems:
        raise DataSourceError(f"{src.name}: no problems.")
    return ProblemSet(src.record_name, problems, src.provenance)


# ----------------------------------------------------------------------------- the entries

_WIKI_LICENCE = "CC BY-SA 3.0 and GFDL"
_PAPER_SHOTS = "the four shots of the Guess-then-Refine paper's prompt file (akshat57/how-do-llms-use-their-depth)"

SOURCES: dict[str, Source] = {s.name: s for s in (
    Source(
        "wikipedia", "prose", "wikimedia/wikipedia", "20231101.en", "train", "b4c48878f631fc348dd47a4d89c3d1e4b928a0de",
        ("id", "text"), _WIKI_LICENCE, "prose", streaming=True, limit=1000,
        description="English Wikipedia (the papers' choice), streamed; paragraphs of 40+ words in article order",
    ),
    Source(
        "wikitext103", "prose", "Salesforce/wikitext", "wikitext-103-raw-v1", "train", "8aaa8b27d493dba10b8553290236799e6dc57829",
        ("text",), _WIKI_LICENCE, "prose", streaming=True, limit=1000,
        description="wikitext-103 (raw), streamed; lines of 40+ words, headings skipped",
    ),
    Source(
        "mmlu", "choices", "cais/mmlu", "all", "validation", "c30699e8356da336a370243923dbaf21066bb9fe",
        ("question", "choices", "answer"), "MIT", "mmlu", task="MMLU", options=("A", "B", "C", "D"),
        shots=(
            {"question": "Which expression is equivalent to 4 x 9?", "choices": ["(4x 4) + (4x5)", "(4+4) x (4+5)", "(4+4)+(4+5)", "(4x 4) x (4x5)"], "answer": 0},
            {"question": "A marketing researcher is conducting a survey in a large selling area by contacting a small group of people that is representative of all people in that area. The small, representative group is known as the", "choices": ["population", "sample", "stratification", "universe"], "answer": 1},
            {"question": "A research participant eats half a bowl of M&M candies, and then stops eating. How would a motivation researcher using drive reduction theory explain this participant's behavior?", "choices": ["Humans are instinctively driven to eat sugar and fat when presented to them.", "The Yerkes-Dodson law explains that people will eat food when presented to them, but usually in moderate amounts in order to avoid being perceived as selfish.", "The primary drive of hunger motivated the person to eat, and then stop when she/he regained homeostasis.", "The research participant was satisfying the second step on the hierarchy of needs: Food needs."], "answer": 2},
            {"question": "In a deductively valid argument", "choices": ["If all the premises are true, the conclusion must be true", "The conclusion has already been stated in its premises", "If all the premises are true, the conclusion may still be false", "Both A and B"], "answer": 3},
        ),
        description=f"MMLU validation questions, 4-shot ({_PAPER_SHOTS})",
    ),
    Source(
        "sst2", "choices", "nyu-mll/glue", "sst2", "validation", "0de23925db68e9cf6287d3776a0f67f5267a42eb",
        ("sentence", "label"), "GLUE terms (SST: see its source)", "sst", task="SST", options=("negative", "positive"),
        shots=(
            {"sentence": "an exhilarating futuristic thriller-noir , minority report twists the best of technology around a gripping story , delivering a riveting , pulse intensifying escapist adventure of the first order ", "label": 1},
            {"sentence": "try as i may , i ca n't think of a single good reason to see this movie , even though everyone in my group extemporaneously shouted , ` thank you ! ' ", "label": 0},
            {"sentence": "the film 's performances are thrilling . ", "label": 1},
            {"sentence": "vera 's technical prowess ends up selling his film short ; he smoothes over hard truths even as he uncovers them . ", "label": 0},
        ),
        description=f"SST-2 validation sentences (GLUE), 4-shot ({_PAPER_SHOTS})",
    ),
    Source(
        "mrpc", "choices", "nyu-mll/glue", "mrpc", "validation", "0de23925db68e9cf6287d3776a0f67f5267a42eb",
        ("sentence1", "sentence2", "label"), "GLUE terms (MRPC: Microsoft Research licence)", "mrpc", task="MRPC", options=("No", "Yes"),
        shots=(
            {"sentence1": "Federal regulators have turned from sour to sweet on a proposed $ 2.8 billion merger of ice cream giants Nestle Holdings Inc. and Dreyer 's Grand Ice Cream Inc .", "sentence2": "Federal regulators have changed their minds on a proposed $ 2.8 billion merger of ice cream giants Nestle Holdings and Dreyer 's Grand Ice Cream .", "label": 1},
            {"sentence1": "In the year-ago quarter , the steelmaker recorded a profit of $ 16.2 million , or 15 cents per share , on sales of $ 1.14 billion .", "sentence2": "In the second quarter last year , AK Steel reported a profit of $ 16.2 million , or 15 cents a share .", "label": 0},
            {"sentence1": "He added : ``I 've never heard of more reprehensiblebehaviour by a doctor .", "sentence2": "The Harrisons \u2019 lawyer Paul LiCalsi said : \u201c I \u2019 ve never heard of more reprehensible behaviour by a doctor .", "label": 1},
            {"sentence1": "While dioxin levels in the environment were up last year , they have dropped by 75 percent since the 1970s , said Caswell .", "sentence2": "The Institute said dioxin levels in the environment have fallen by as much as 76 percent since the 1970s .", "label": 0},
        ),
        description=f"MRPC validation pairs (GLUE), 4-shot ({_PAPER_SHOTS})",
    ),
    Source(
        "rte", "choices", "nyu-mll/glue", "rte", "validation", "0de23925db68e9cf6287d3776a0f67f5267a42eb",
        ("sentence1", "sentence2", "label"), "GLUE terms (RTE: see its source)", "nli", task="NLI", options=("Yes", "No"),
        shots=(
            {"sentence1": "The cat sat on the mat in the kitchen .", "sentence2": "A cat was on a mat .", "label": 0},
            {"sentence1": "The museum opened in 1901 and closed in 1950 .", "sentence2": "The museum is still open today .", "label": 1},
            {"sentence1": "Maria bought three apples and two pears at the market .", "sentence2": "Maria bought fruit .", "label": 0},
            {"sentence1": "The bridge was built of wood .", "sentence2": "The bridge was built of steel .", "label": 1},
        ),
        description="RTE validation pairs (GLUE; label 0 = entailment -> Yes), 4-shot with this suite's own shots, "
                    "in the MRPC prompt layout (the paper's NLI prompt file is not public in full)",
    ),
    Source(
        "mquake", "facts", "json", None, "train", "fb43dadc2d8cd19d08ce81c63d957b59deb3f3cd",
        ("case_id", "single_hops", "orig"), "MIT", "mquake",
        data_files="https://raw.githubusercontent.com/princeton-nlp/MQuAKE/fb43dadc2d8cd19d08ce81c63d957b59deb3f3cd/datasets/MQuAKE-CF-3k.json",
        description="MQuAKE-CF-3k single-hop cloze prompts (the paper's facts), true answers",
    ),
    Source(
        "counterfact", "facts", "NeelNanda/counterfact-tracing", None, "train", "d1b4383226db31ecd72a60371c98efae86990fca",
        ("prompt", "target_true", "relation_id"), "MIT (ROME's CounterFact)", "counterfact",
        description="CounterFact (ROME) cloze prompts with their true targets: single- and multi-token answers",
    ),
    Source(
        "gsm8k", "problems", "openai/gsm8k", "main", "test", "e53f048856ff4f594e959d75785d2c2d37b678ee",
        ("question", "answer"), "MIT", "gsm8k", description="GSM8K test problems",
    ),
)}

# Bundles: one name for several entries.
BUNDLES: dict[str, tuple[str, ...]] = {
    "paper": ("wikipedia", "mmlu", "sst2", "mrpc", "mquake", "gsm8k"),  # the papers' data
    "glue": ("sst2", "mrpc", "rte"),
}

FORMATTERS: dict[str, Callable] = {"prose": _prose, "choices": _choices, "facts": _facts, "problems": _problems}


def resolve_data(names: Iterable[str]) -> dict[str, tuple[Source, ...]]:
    """``--data`` values (entry or bundle names, ``embedded``) -> the sources of each kind.
    A kind with no source uses ``--data-dir`` or the embedded fixtures. Several choice
    sources form one multiple-choice run (one task each); any other kind takes at most one."""
    chosen: list[Source] = []
    for name in names:
        if name == EMBEDDED:
            continue
        if name in BUNDLES:
            chosen.extend(SOURCES[n] for n in BUNDLES[name])
        elif name in SOURCES:
            chosen.append(SOURCES[name])
        else:
            known = ", ".join([EMBEDDED, *SOURCES, *BUNDLES])
            raise DataSourceError(f"Unknown --data {name!r}; available: {known}.")
    out: dict[str, tuple[Source, ...]] = {}
    for src in {s.name: s for s in chosen}.values():
        out[src.kind] = (*out.get(src.kind, ()), src)
    for kind, sources in out.items():
        if kind != "choices" and len(sources) > 1:
            raise DataSourceError(
                f"--data names {len(sources)} {kind} sources ({', '.join(s.name for s in sources)}): pick one."
            )
    return out


def rows_of(src: Source, local: Path | None = None):
    """The rows of ``src`` through ``datasets``: from the hub (pinned revision, cached,
    streamed when ``src.streaming``), or from ``local``, a file in the data set's schema."""
    try:
        import datasets
    except ImportError:
        raise DataSourceError(f"--data {src.name} loads the data set with the `datasets` package: {INSTALL_HINT}.") from None
    if local is not None:
        local = Path(local)
        builder = "parquet" if local.suffix == ".parquet" else "json"
        return datasets.load_dataset(builder, data_files=str(local), split="train")
    try:
        if src.data_files is not None:
            return datasets.load_dataset(src.dataset, data_files=src.data_files, split=src.split, streaming=src.streaming)
        return datasets.load_dataset(
            src.dataset, src.config, split=src.split, revision=src.revision, streaming=src.streaming
        )
    except Exception as err:  # no network, no such revision: say which source and what to do
        raise DataSourceError(
            f"Could not load --data {src.name} ({src.provenance}): {type(err).__name__}: {err}. It needs the hub "
            "(or the `datasets` cache from an earlier run); offline, pass the data as a file instead "
            f"(--{src.kind} FILE, see harness/data/sources.py)."
        ) from err


def load_source(src: Source, local: Path | None = None, limit: int | None = None):
    """The typed record(s) of ``src``: Corpus, list[ChoiceTask], FactSet or ProblemSet.
    ``limit``: paragraphs (prose) or rows (other kinds) kept; default ``src.limit``."""
    limit = src.limit if limit is None else limit
    rows = rows_of(src, local)
    if src.kind == "prose":
        paragraphs = tuple(islice(_prose(rows, src), limit))
        if not paragraphs:
            raise DataSourceError(f"{src.name}: no paragraphs of {PROSE_MIN_WORDS}+ words.")
        return Corpus(src.record_name, paragraphs, src.provenance)
    rows = islice(rows, limit) if limit is not None else rows
    return FORMATTERS[src.kind](rows, src)


def prose_stream(src: Source, local: Path | None = None) -> Iterator[Paragraph]:
    """Every paragraph of a prose source, in order (streamed): token frequencies and a
    lens's training text read past the claims' ``limit``."""
    return _prose(rows_of(src, local), src)


def read_kind_file(kind: str, path: Path):
    """A ``--prose/--facts/--choices/--problems`` file (formats in the module docstring)."""
    path = Path(path)
    if kind == "prose":
        paragraphs = tuple(_read_jsonl(path))
        if not paragraphs:
            raise ValueError(f"{path}: no paragraphs.")
        return Corpus(f"prose-{path.stem}", paragraphs, str(path))
    if kind == "facts":
        return read_mquake(path) if path.suffix == ".json" else read_facts_jsonl(path)
    if kind == "choices":
        return read_choices_file(path)
    if kind == "problems":
        return ProblemSet(f"problems-{path.stem}", read_problems(path), str(path))
    raise ValueError(f"Unknown data kind {kind!r}; one of {KINDS}.")


@dataclass(frozen=True)
class DataChoice:
    """Where each kind's data comes from in one run: a file, named sources, or neither
    (then ``--data-dir`` or the embedded fixtures)."""

    files: dict[str, Path] = field(default_factory=dict)
    sources: dict[str, tuple[Source, ...]] = field(default_factory=dict)

    def name(self, kind: str) -> str:
        """The data set's name in results: ``<kind>-<file stem>`` or the sources' record names."""
        if kind in self.files:
            return f"{kind}-{Path(self.files[kind]).stem}"
        return "+".join(src.record_name for src in self.sources.get(kind, ()))

    def load(self, kind: str):
        """The kind's record(s) from its file or sources; None when neither is given."""
        if kind in self.files:
            return read_kind_file(kind, self.files[kind])
        if kind in self.sources:
            loaded = [load_source(src) for src in self.sources[kind]]
            return [task for tasks in loaded for task in tasks] if kind == "choices" else loaded[0]
        return None


__all__ = ["BUNDLES", "DataChoice", "DataSourceError", "KINDS", "MathProblem", "SOURCES", "Source", "load_source", "resolve_data"]
