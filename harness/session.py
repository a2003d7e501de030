"""One model's run: the loaded model, its engine and cache, and the traces claims share.

Claims ask a ModelSession for traces; the session builds each (model, lens, dataset)
trace once per process, and the on-disk cache makes a second run free.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, TypeVar

import pandas as pd
import torch

import harness
from harness.backends import make_backend
from harness.cache import TraceCache
from harness.data.choices import load_choice_tasks
from harness.data.facts import FactSet, load_facts
from harness.data.math import ProblemSet, load_problems
from harness.data.prose import Corpus, DataMissing, load_prose
from harness.data.sources import DataChoice, prose_stream, resolve_data
from harness.frequency import DEFAULT_FREQUENCY_TOKENS, FrequencyTable, token_frequencies
from harness.interventions.measurements import DepthMeasurements
from harness.lens_training import (
    MAX_PASSES,
    WEIGHTINGS,
    ClosedForm,
    RowFit,
    TunedLensMissing,
    curve_fractions,
    fit_packed,
    is_held_out,
    kl_table,
    lens_folder,
    obtain_lens,
    pack_corpus,
    resolve_recipe,
)
from harness.fidelity import LensFidelity, lens_fidelity
from harness.lenses import LENS_NAMES, Lens, LogitLens, make_lens
from harness.models import load_model, load_remote_model, resolve
from harness.report.outputs import ReportWriter
from harness.shared_pass import PROSE_REQUESTS, capture_shared
from harness.trace import ENGINE_VERSION, CapturedRows, LayerTrace, ReductionSpec, TraceEngine, TraceRequest
from harness.tuned_lens import LensMismatch, TunedLens, load_published

T = TypeVar("T")
log = logging.getLogger(__name__)

PAPER_ALIGNED = "-paper-aligned"  # suffix of a tuned lens's label under the paper's alignment


@dataclass(frozen=True)
class RunConfig:
    """The options of one run (from pytest's command line or the CLI)."""

    models: tuple[str, ...]
    revision: str | None = None  # --revision: of the hub models in models (NAME@REV in a name does the same)
    lenses: tuple[str, ...] = ("logit",)
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    max_examples: int | None = None
    data_dir: Path | None = None
    data: tuple[str, ...] = ()  # --data: named sources (harness/data/sources.py); kinds not named use data_dir or the fixtures
    data_files: tuple[tuple[str, Path], ...] = ()  # (kind, file): --prose/--facts/--choices/--problems
    frequency_tokens: int | None = None  # tokens the frequency ranks count (None: the corpus, or DEFAULT_FREQUENCY_TOKENS of a hub source)
    trace_cache: Path | None = None  # None: no cache
    report_dir: Path = Path("reports")
    backend: str = "transformers"
    remote: bool = False
    tuned_lens: str | None = None  # a published lens (folder or hub resource id)
    allow_lens_mismatch: bool = False  # accept a --tuned-lens made for another model (recorded in results)
    train_lens: bool = False  # train a missing tuned lens instead of skipping its claims
    lens_recipe: str = "auto"
    lens_alignment: str = "correct"
    control: str | None = None  # "untrained": claims also run on each model's untrained control


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5, check=False
        ).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class ModelSession:
    def __init__(self, config: RunConfig, model_name: str):
        self.config = config
        started = time.perf_counter()
        spec = resolve(model_name, config.revision)
        if config.remote:  # NDIF holds the weights: config and tokenizer only, the model on the meta device
            self.loaded = load_remote_model(spec, dtype=config.dtype)
        else:
            self.loaded = load_model(spec, device=config.device, dtype=config.dtype)
        self.load_seconds = time.perf_counter() - started
        self.cache = TraceCache(config.trace_cache) if config.trace_cache is not None else None
        self.backend = make_backend(config.backend, self.loaded, remote=config.remote)
        self.engine = TraceEngine(self.loaded, cache=self.cache, backend=self.backend, batch_size=config.batch_size)
        self.depth = DepthMeasurements(self)
        self.writer = ReportWriter(Path(config.report_dir) / self.loaded.spec.slug)
        self._lenses: dict[str, Lens] = {}
        self._traces: dict[tuple, LayerTrace] = {}
        self._prose_rows: dict[str, CapturedRows] | None = None
        self._closed_forms: dict[str, ClosedForm] = {}
        self._captured: dict[str, CapturedRows] = {}
        self._memo: dict[str, object] = {}

    @property
    def name(self) -> str:
        return self.loaded.spec.name

    @cached_property
    def data_choice(self) -> DataChoice:
        return DataChoice(dict(self.config.data_files), resolve_data(self.config.data))

    @property
    def _prose_source(self):
        """The hub source of the prose, when --data names one and no --prose file overrides it."""
        choice = self.data_choice
        return None if "prose" in choice.files else (choice.sources.get("prose") or (None,))[0]

    @cached_property
    def data_sources(self) -> dict[str, str]:
        """Per kind, the file or the hub source (id, config, split, full revision) this run
        reads instead of --data-dir or the fixtures; recorded in every result's provenance."""
        choice = self.data_choice
        named = {kind: " + ".join(src.provenance for src in srcs) for kind, srcs in choice.sources.items()}
        return {**named, **{kind: str(path) for kind, path in choice.files.items()}}

    @property
    def _prose_options(self) -> tuple[str, ...]:
        """The options that choose this run's prose, for the train-lens command it prints."""
        choice = self.data_choice
        if "prose" in choice.files:
            return (f"--prose {choice.files['prose']}",)
        return tuple(f"--data {src.name}" for src in choice.sources.get("prose", ()))

    @cached_property
    def corpus(self) -> Corpus:
        """--prose FILE, else the --data prose source, else --data-dir's Wikipedia, else the embedded prose."""
        return self.data_choice.load("prose") or load_prose(self.config.data_dir)

    @cached_property
    def frequency(self) -> FrequencyTable:
        """Frequency ranks over the prose: a hub source is streamed past the claims' paragraphs
        up to --frequency-tokens (default DEFAULT_FREQUENCY_TOKENS); a file or the fixtures are
        counted whole (or up to --frequency-tokens)."""
        src, budget = self._prose_source, self.config.frequency_tokens
        if src is None:
            return token_frequencies(self.loaded.tokenizer, self.corpus, self.loaded.vocab_size, max_tokens=budget)
        return token_frequencies(
            self.loaded.tokenizer, self.corpus, self.loaded.vocab_size, max_tokens=budget or DEFAULT_FREQUENCY_TOKENS,
            stream=lambda: prose_stream(src),
        )

    @cached_property
    def lens_corpus(self) -> Corpus:
        """The text a self-trained lens is fitted on: the claims' corpus, extended from a
        streamed prose source with as many paragraphs as the recipe's SGD steps need to read
        it at most MAX_PASSES times (``check_passes`` refuses a corpus that is too small)."""
        src, recipe = self._prose_source, self.lens_recipe
        wanted_words = recipe.steps * recipe.tokens_per_step / MAX_PASSES / 0.85  # >= 1 token a word, 10% held out
        if src is None or self.corpus.n_words >= wanted_words:
            return self.corpus
        paragraphs, words = [], 0
        for para in prose_stream(src):
            paragraphs.append(para)
            words += len(para.text.split())
            if words >= wanted_words:
                break
        return Corpus(f"{self.corpus.name}-{len(paragraphs)}p", tuple(paragraphs), self.corpus.source)

    def lens(self, name: str) -> Lens:
        """A ``--lens`` by name. ``tuned``: the lens ``--tuned-lens`` names, else the model's
        published lens (registry), else the lens this suite trained (``trained_lens``);
        raises ``TunedLensMissing`` (with the command that trains it) when there is none."""
        if name not in self._lenses:
            self._lenses[name] = self._tuned_lens() if name == "tuned" else make_lens(name, self.loaded)
        return self._lenses[name]

    def lens_label(self, name: str) -> str:
        """The lens's name in results and file names: the alignment is part of it when it
        is the paper's off-by-one one, so both can be compared side by side."""
        return f"{name}{PAPER_ALIGNED}" if name == "tuned" and self.config.lens_alignment == "paper" else name

    @cached_property
    def lens_recipe(self):
        return resolve_recipe(self.config.lens_recipe, self.loaded.device)

    def trained_lens(self, weighting: str = "standard") -> TunedLens:
        """The tuned lens this suite trains for this model on the run's corpus (cached; with
        --train-lens trained when missing)."""
        key = f"trained:{weighting}"
        if key not in self._lenses:
            self._lenses[key] = obtain_lens(
                self.loaded, self.backend, self.lens_corpus, self.lens_recipe, weighting, self.frequency,
                train=self.config.train_lens, alignment=self.config.lens_alignment, data_dir=self.config.data_dir,
                closed_form=lambda: self._closed_form(weighting), data_options=self._prose_options,
            )
        return self._lenses[key]

    def _missing_lens_fits(self) -> list[str]:
        """The weightings whose self-trained lens this run will fit in closed form (with
        --train-lens): those not in the lens cache yet."""
        recipe = self.lens_recipe
        if not self.config.train_lens or recipe.start != "closed-form":
            return []
        return [w for w in WEIGHTINGS if not (lens_folder(self.loaded, self._lens_data, recipe, w) / "config.json").is_file()]

    @cached_property
    def _lens_data(self):
        return pack_corpus(self.lens_corpus, self.loaded.tokenizer, self.lens_recipe.seq_len)

    def _closed_form(self, weighting: str) -> ClosedForm:
        """The closed-form fit of ``weighting``; one forward pass fits every lens this run
        misses: over the packed training split, or, for a ``prose-pass`` recipe, the shared
        prose pass (which runs again only when this run's first pass did not fit it)."""
        if weighting not in self._closed_forms:
            fits = sorted({weighting, *self._missing_lens_fits()})
            if self.lens_recipe.fit_source == "prose-pass":
                self._prose_pass(fits)
            else:
                started = time.perf_counter()
                data = self._lens_data
                row_fits = self._row_fits(fits, data.train.numel())
                fit_packed(self.loaded, self.backend, data, self.lens_recipe, row_fits)
                results = {w: row_fit.result() for w, row_fit in row_fits.items()}
                seconds = time.perf_counter() - started  # the whole pass: forward, every fit's sums and solves
                self._closed_forms.update({w: replace(r, seconds=seconds, fitted_with=tuple(fits)) for w, r in results.items()})
        return self._closed_forms.pop(weighting)

    def _row_fits(self, weightings: list[str], total_tokens: int) -> dict[str, RowFit]:
        # The convergence curve (three more lenses to measure on held-out text) for the standard lens only.
        return {
            w: RowFit(self.loaded, self.lens_recipe, w, self.frequency, total_tokens, curve_fractions(self.lens_recipe) if w == "standard" else ())
            for w in weightings
        }

    def _tuned_lens(self) -> TunedLens:
        # --tuned-lens belongs to the trained weights: the untrained control fits its own lens
        asked = self.config.tuned_lens if self.loaded.spec.control is None else None
        published = asked or self.loaded.spec.tuned_lens
        if published:
            try:
                return load_published(
                    published, self.loaded, self.config.lens_alignment, allow_mismatch=bool(asked) and self.config.allow_lens_mismatch
                )
            except LensMismatch:
                raise
            except Exception as err:  # no network, no such resource: fall back unless it was asked for
                if asked:
                    raise RuntimeError(f"Could not load the tuned lens --tuned-lens {published}: {err}") from err
                log.warning("The published tuned lens %s could not be loaded (%s); using a lens this suite trains.", published, err)
        return self.trained_lens("standard")

    def lens_quality(self, lens: TunedLens) -> pd.DataFrame:
        """Held-out KL(final || lens) per layer for the logit lens and ``lens``: from the
        training record of a lens trained here, else measured now on held-out paragraphs."""
        record = lens.training_record
        if record is not None and "kl_table" in record:
            return pd.DataFrame(record["kl_table"])
        data = pack_corpus(self.corpus, self.loaded.tokenizer, self.lens_recipe.seq_len)
        ids = data.held_out[: self.lens_recipe.eval_sequences]
        return kl_table({"logit": LogitLens(self.loaded), "tuned": lens}, self.backend, ids)

    @cached_property
    def held_out_kl(self) -> pd.DataFrame:
        """Held-out KL(final || lens) per layer of the logit lens and, when there is one,
        the tuned lens: from the tuned lens's quality table, else the logit lens alone
        measured on the recipe's held-out sequences (cached like a trace)."""
        try:
            tuned = self.lens("tuned")
        except TunedLensMissing:
            tuned = None
        if isinstance(tuned, TunedLens):
            return self.lens_quality(tuned)
        data = pack_corpus(self.corpus, self.loaded.tokenizer, self.lens_recipe.seq_len)
        ids = data.held_out[: self.lens_recipe.eval_sequences]
        compute = lambda: {k: v.to_numpy() for k, v in kl_table({"logit": LogitLens(self.loaded)}, self.backend, ids).items()}  # noqa: E731
        if self.cache is None:
            return pd.DataFrame(compute())
        key = {"held_out_kl": 1, **self.loaded.identity, "data": [data.name, data.content_hash], "ids": ids.shape[0] * ids.shape[1]}
        return pd.DataFrame(self.cache.fetch(key, compute)[0])

    def lens_fidelity(self, result, trace: LayerTrace | None, name: str | None) -> LensFidelity | None:
        """The fidelity of lens ``name`` (the ``--lens`` a result was read through) at the
        layers ``result``'s statistic reads (``harness/fidelity.py``); None for a result
        read through no lens (``name`` None)."""
        if name not in LENS_NAMES:
            return None
        table = self.held_out_kl
        n_layers = self.loaded.n_layers
        layers = result.robustness.layers if result.robustness is not None else range(n_layers)
        column = f"{name}_kl"
        if column not in table:
            return None  # e.g. a tuned-lens result when only the logit lens could be measured
        reference = table["tuned_kl"].to_numpy() if name != "tuned" and "tuned_kl" in table else None
        record = getattr(self.lens(name), "training_record", None) or {}
        return lens_fidelity(
            self.lens_label(name), layers, table[column].to_numpy(), int(table["tokens"].iloc[0]), reference,
            None if trace is None else self.frequency.bucket_of_id[trace.top1],
            record.get("tokens") if name == "tuned" else None,
            record.get("convergence", {}).get("points") if name == "tuned" else None,
        )

    def memo(self, key: str, make: Callable[[], T]) -> T:
        """A value the claims of this session share (a request and its examples, tags), made
        by ``make()`` on first use and kept for the run."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def trace(self, request: TraceRequest, lens: Lens, reductions: ReductionSpec, prose: bool = False) -> LayerTrace:
        """The engine trace of ``request`` through ``lens`` (cached on disk; kept for the run).
        On a cache miss its rows come from the shared prose pass when ``prose`` (the request
        is one of :data:`harness.shared_pass.PROSE_REQUESTS`), else from one capture of the
        request that every further lens reads (no second forward pass)."""
        key = (request.name, json.dumps(lens.identity, sort_keys=True), repr(reductions))
        if key not in self._traces:
            rows = (lambda: self.prose_rows()[request.name]) if prose else self._rows_of(request)  # only on a miss
            self._traces[key] = self.engine.trace(request, lens, reductions, rows=rows)
        return self._traces[key]

    @cached_property
    def prose_carriers(self) -> list[list[int]]:
        """Each paragraph's tokens (up to the lens recipe's ``fit_max_tokens``), tokenised as
        the prose requests' prompts are (those prompts are token prefixes of these, which
        ``shared_pass`` checks prompt by prompt; a carrier runs only as far as it is read,
        or in full when a lens is fitted on it)."""
        tok = self.loaded.tokenizer
        limit = self.lens_recipe.fit_max_tokens
        return [list(tok(p.text, truncation=True, max_length=limit)["input_ids"]) for p in self.corpus.paragraphs]

    def prose_rows(self) -> dict[str, CapturedRows]:
        """The rows of every registered prose request (``PROSE_REQUESTS``) from one forward
        pass per paragraph; every lens is applied to them (no further forward pass). With --train-lens,
        the same pass fits the missing self-trained lenses (``_closed_form``)."""
        if self._prose_rows is None:
            self._prose_pass(self._missing_lens_fits() if self.lens_recipe.fit_source == "prose-pass" else [])
        return self._prose_rows

    def _prose_pass(self, fits: list[str]) -> None:
        """One forward pass over the prose paragraphs: the rows of every registered prose
        request (the claim modules register theirs), and the
        closed-form fits of the weightings ``fits`` on every token of the training paragraphs
        (the held-out ones are never fitted)."""
        requests = [build(self) for build in PROSE_REQUESTS.values()]
        carriers = self.prose_carriers
        fit_carriers = [bool(fits) and not is_held_out(i) for i in range(len(carriers))]
        row_fits = self._row_fits(fits, sum(len(c) for c, f in zip(carriers, fit_carriers) if f))

        def on_fit_rows(rows: CapturedRows) -> None:
            for row_fit in row_fits.values():
                row_fit.add(rows)

        started = time.perf_counter()
        self._prose_rows = capture_shared(self.engine, requests, carriers, fit_carriers, on_fit_rows if fits else None)
        self._closed_forms.update({w: replace(row_fit.result(), fitted_with=tuple(fits)) for w, row_fit in row_fits.items()})
        log.info("shared prose pass (lens fits: %s): %.1f s", ", ".join(fits) or "none", time.perf_counter() - started)

    def _rows_of(self, request: TraceRequest):
        """The captured rows of ``request``, computed on the first trace that misses the cache
        and kept for the run, so that every further lens reads them without a forward pass."""

        def rows() -> CapturedRows:
            if request.name not in self._captured:
                self._captured[request.name] = self.engine.capture(request)
            return self._captured[request.name]

        return rows

    @cached_property
    def facts(self) -> FactSet:
        """--facts FILE, else the --data facts source, else facts from --data-dir when it has
        some (MQuAKE or facts/facts.jsonl), else the embedded ones: ../shared/data has none,
        and the result names the data it used."""
        chosen = self.data_choice.load("facts")
        if chosen is not None:
            return chosen
        try:
            return load_facts(self.config.data_dir)
        except DataMissing as err:
            if self.config.data_dir is None:
                raise
            log.warning("%s Using the embedded facts.", err)
            return load_facts(None)

    @cached_property
    def choice_tasks(self) -> tuple[list, str]:
        """The multiple-choice tasks and their name: --choices FILE, else the --data source,
        else --data-dir's, else the embedded ones."""
        chosen = self.data_choice.load("choices")
        if chosen is not None:
            return chosen, self.data_choice.name("choices")
        return load_choice_tasks(self.config.data_dir)

    @cached_property
    def problems(self) -> ProblemSet:
        """The word problems (GSM8K format): --problems FILE, else the --data source (gsm8k), else
        --data-dir's gsm8k/test.jsonl, else the embedded ones."""
        return self.data_choice.load("problems") or load_problems(self.config.data_dir)

    def provenance(
        self, lens_name: str | None, trace: LayerTrace | None = None, data: dict | None = None, lenses: list[Lens] | None = None
    ) -> dict:
        """Where a result came from. ``trace``: the engine trace it read; ``data``: for
        intervention results, the dataset and hash of the prompts they ran on; ``lenses``:
        the lenses a comparison read (recorded instead of ``lens_name``'s)."""
        import transformers

        if trace is not None:
            key = trace.meta["key"]
            data = {"data_hash": key["data"][:16], "trace_key": {k: key[k] for k in ("dataset", "positions")}}
        read = lenses or ([self.lens(lens_name)] if lens_name and lens_name != "none" else [])
        mismatches = [lens.mismatch for lens in read if lens.mismatch is not None]
        return {
            "git_commit": git_commit(),
            "depth_claims": harness.__version__,
            "engine_version": ENGINE_VERSION,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "model": self.name,
            "model_source": self.loaded.spec.repo_id or self.loaded.spec.package or self.loaded.spec.path,
            "revision": self.loaded.revision,
            "dtype": self.loaded.dtype_name,
            "device": str(self.loaded.device),
            **self.backend.identity,
            "lens": (
                {"compared": [lens.identity for lens in lenses]} if lenses
                else self.lens(lens_name).identity if lens_name and lens_name != "none" else None
            ),
            **({"lens_mismatch": mismatches[0]} if mismatches else {}),
            **({"data_sources": self.data_sources} if self.data_sources else {}),
            **(data or {}),
        }
