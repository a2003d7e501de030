"""Fitting tuned lenses in the harness, and measuring them.

Two ways to obtain the translators, combined by a :class:`Recipe`:

1. **Closed form** (``start="closed-form"``, :class:`LensFit`): per layer ``l < L``, ridge
   least squares of a target built from ``h_L`` on ``[h_l, 1]`` over the training tokens,
   ``target ~ A_l h_l + b_l``; the translator is ``A_l - I`` and ``b_l``, so the lens keeps
   the package's ``h + W h + b`` form. Sums are streamed batch by batch into float64
   accumulators (no residuals are kept). The ridge is ``ridge_scale`` times the mean of the
   diagonal of the *centred* (weighted) Gram matrix of ``h_l``; the bias is not penalised.
   Targets (:data:`TARGETS`): ``residual`` (``h_L``) or ``normalised`` (``h_L / rms(h_L)``:
   the final norm's input direction; every final norm here is scale-invariant, so that is
   all the head sees of ``h_L``).
2. **KL/SGD** (``steps > 0``): the loop of the tuned-lens package's ``train_loop.py`` (whose
   own command does not run with current torchdata and transformers 5), from the closed
   form or from zero translators (``start="zero"``, the package's start: the logit lens):

   - loss: KL(final distribution || lens distribution) at every position and every layer
     ``0 .. L-1`` (its default ``--loss kl`` with token shift 0);
   - SGD with Nesterov momentum 0.9, learning rate ``lr_scale * (1 - momentum)``, weight
     decay 1e-3, linear decay to zero without warm-up, gradient norm clipped to 1;
   - bf16 autocast on a GPU (``autocast="auto"``); on CPU float32, since bf16 matmuls are
     slower than float32 on CPUs without bf16 units (this machine's EPYC: 5.8x slower).

Data: the run's prose corpus (embedded paragraphs, or Wikipedia through ``--data-dir``).
Every tenth paragraph is held out and never trained on: the KL table that shows a lens is
better than the logit lens is measured there (packed into ``seq_len``-token sequences), and
so is the convergence curve of a closed-form fit (KL after 1/8, 1/4, 1/2 and all of the
training tokens, recorded in ``training.json``). Closed forms read the training paragraphs
packed into ``seq_len``-token sequences (``ModelSession`` fits every missing weighting on
one pass: :func:`fit_packed`, :class:`RowFit`), or, with ``fit_source="prose-pass"``, every
token of the training paragraphs from the forward pass the prose claims share.

The frequency-down-weighted lens (the second tuned lens of a comparison of lenses) uses the
same recipe with ``weighting="downweight-frequent"``: each position is weighted by the
frequency bucket of its *target*, the model's final prediction there
(:data:`DOWNWEIGHT_FREQUENT`): weighted least squares in the closed form, a weighted KL
(normalised by the sum of the weights) in the SGD loop.

Lenses are cached per (model, data, recipe, weighting) under ``$DEPTH_CLAIMS_HOME/lenses``;
SGD training writes a checkpoint every few steps and resumes from it after an interruption.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from harness.data.prose import Corpus
from harness.files import atomic_path, file_lock
from harness.frequency import BUCKETS, FrequencyTable
from harness.lenses import LogitLens
from harness.models.loading import LoadedModel
from harness.paths import depth_claims_home
from harness.tuned_lens import TunedLens, read_lens, zero_translators

log = logging.getLogger(__name__)

# Bump when the fit, the loop, the data split or the packing changes: part of every lens's key.
TRAINING_VERSION = 3
HELD_OUT_EVERY = 10  # paragraph i is held out when i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
STARTS = ("zero", "closed-form")
# Where a closed-form fit reads its training tokens: "packed": its own forward passes over
# the packed training sequences (fit_closed_form); "prose-pass": every token of every
# training paragraph, from the forward pass the prose claims share (harness/shared_pass.py,
# ModelSession: no forward pass of its own).
FIT_SOURCES = ("packed", "prose-pass")
TARGETS = ("residual", "relative", "normalised", "scale-free")
CURVE_FRACTIONS = (0.125, 0.25, 0.5, 1.0)  # of the training tokens: the closed form's convergence curve


@dataclass(frozen=True)
class Recipe:
    """How a lens is made: a closed-form start (or zero translators), then ``steps`` SGD
    steps on the KL of ``tokens_per_step`` tokens each (0: the closed form as it is)."""

    name: str
    steps: int
    seq_len: int
    sequences_per_step: int
    micro_batch_sequences: int = 1  # sequences per forward pass; gradients accumulate over a step
    lr_scale: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-3
    clip: float = 1.0
    autocast: str = "auto"  # "auto": bf16 on CUDA, none on CPU; or "bf16" / "none"
    eval_sequences: int = 16
    checkpoint_every: int = 10
    seed: int = 0
    start: str = "zero"  # "zero": the logit lens (the package's start); "closed-form": LensFit
    target: str = "residual"  # closed form: what is regressed on h_l (TARGETS)
    ridge_scale: float = 1e-3  # closed form: ridge = ridge_scale * mean diagonal of the centred Gram
    fit_sequences: int | None = None  # closed form: training sequences it reads (None: all of them)
    fit_batch_sequences: int = 8  # closed form: sequences per forward pass
    curve: bool = True  # closed form: record held-out KL at CURVE_FRACTIONS of its tokens
    fit_source: str = "packed"  # closed form: FIT_SOURCES
    fit_max_tokens: int = 1024  # closed form, prose-pass: each paragraph's first tokens it reads

    def __post_init__(self):
        if self.start not in STARTS or self.target not in TARGETS or self.fit_source not in FIT_SOURCES:
            raise ValueError(
                f"Recipe {self.name}: start must be one of {STARTS}, target one of {TARGETS}, fit_source one of {FIT_SOURCES}."
            )

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.sequences_per_step

    @property
    def lr(self) -> float:
        return self.lr_scale * (1 - self.momentum)

    def key(self) -> dict:
        return {**asdict(self), "training_version": TRAINING_VERSION}


RECIPES: dict[str, Recipe] = {
    # The default on CPU (README, benchmarks/lens_recipes.py: measured): the closed form with
    # the h_L target on the whole packed training split, both lenses (standard, down-weighted) from
    # one forward pass (ModelSession), no SGD; measured on 2 held-out sequences (256 tokens:
    # the lens's KL is 2.5-20x below the logit lens's there, far beyond its standard error).
    # Of the targets it alone beats least squares on cpu-small's 12k tokens at every layer
    # before L; a fit on the shared prose pass (fit_source="prose-pass": paragraphs, no
    # separators or cross-paragraph context) is worse on the packed held-out text at 19 layers.
    "closed-form": Recipe(
        name="closed-form", steps=0, seq_len=128, sequences_per_step=2, micro_batch_sequences=2, eval_sequences=2,
        start="closed-form", target="residual",
    ),
    # The published recipe (tuned-lens train_loop defaults: 250 steps of 2^18 tokens), started
    # from the closed form fitted on the whole training split instead of from zero.
    "paper": Recipe(
        name="paper", steps=250, seq_len=2048, sequences_per_step=128, micro_batch_sequences=1,
        start="closed-form", target="residual", fit_batch_sequences=1,
    ),
    # The package's loop from zero translators, small enough for the default model on a
    # 2-core CPU (22.5 min measured): kept for comparison.
    "cpu-small": Recipe(
        name="cpu-small", steps=48, seq_len=128, sequences_per_step=2, micro_batch_sequences=2, eval_sequences=8,
        checkpoint_every=8,
    ),
}

# The down-weighted lens: weight of a position's loss by the frequency bucket of its target token.
DOWNWEIGHT_FREQUENT: dict[str, float] = {"Top-10": 0.1, "Top-100": 0.5, "Top-1000": 1.0, "Rest": 1.0}
WEIGHTINGS: dict[str, dict[str, float] | None] = {"standard": None, "downweight-frequent": DOWNWEIGHT_FREQUENT}


MAX_PASSES = 4  # an SGD recipe may read its training tokens at most this many times


class CorpusTooSmall(ValueError):
    """An SGD recipe would cycle the training text more than MAX_PASSES times."""


def check_passes(data: "LensData", recipe: Recipe) -> None:
    """Refuse a recipe whose SGD steps would read the packed training split more than
    MAX_PASSES times (the ``paper`` recipe reads 65.5M tokens; the embedded prose has ~32k)."""
    wanted = recipe.steps * recipe.tokens_per_step
    have = int(data.train.numel())
    if wanted > MAX_PASSES * have:
        raise CorpusTooSmall(
            f"The {recipe.name!r} lens recipe reads {wanted:,} training tokens, {wanted / max(have, 1):,.0f} passes over the "
            f"{have:,} training tokens of {data.name} (at most {MAX_PASSES}). Train it on a large prose source: add "
            "`--data wikipedia` (streams English Wikipedia from the hub; the lens reads as many paragraphs as it needs), "
            "or use `--lens-recipe closed-form`."
        )


def resolve_recipe(name: str, device: torch.device) -> Recipe:
    """``auto``: the paper's recipe on a GPU, ``closed-form`` on CPU."""
    if name == "auto":
        name = "paper" if device.type == "cuda" else "closed-form"
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"Unknown lens recipe {name!r}; available: auto, {', '.join(RECIPES)}.") from None


class TunedLensMissing(LookupError):
    """A claim needs a tuned lens that is not in the cache (and training was not asked for)."""


@dataclass(frozen=True)
class LensData:
    """Packed token sequences for training and for the held-out KL table."""

    name: str
    content_hash: str
    train: torch.Tensor  # [n, seq_len] token ids
    held_out: torch.Tensor


def is_held_out(paragraph_index: int) -> bool:
    """Whether a corpus paragraph is held out of every lens fit (every tenth one)."""
    return paragraph_index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1


def pack_corpus(corpus: Corpus, tokenizer, seq_len: int) -> LensData:
    """Tokenise paragraphs (no special tokens), join them with the tokenizer's EOS (or a
    newline) and cut into ``seq_len``-token sequences; every tenth paragraph goes to the
    held-out stream."""
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else tokenizer("\n", add_special_tokens=False)["input_ids"]
    streams: dict[bool, list[int]] = {False: [], True: []}
    for i, para in enumerate(corpus.paragraphs):
        ids = tokenizer(para.text, add_special_tokens=False)["input_ids"]
        streams[is_held_out(i)].extend(ids + sep)

    def cut(stream: list[int]) -> torch.Tensor:
        n = len(stream) // seq_len
        return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)

    train, held_out = cut(streams[False]), cut(streams[True])
    if len(train) == 0 or len(held_out) == 0:
        raise ValueError(f"The corpus {corpus.name} is too small to train a tuned lens with {seq_len}-token sequences.")
    return LensData(corpus.name, corpus.content_hash, train, held_out)


def position_weights(final_logits: torch.Tensor, freq: FrequencyTable | None, weights: dict[str, float] | None) -> torch.Tensor | None:
    """Per-position loss weights from the frequency bucket of the final prediction."""
    if weights is None:
        return None
    if freq is None:
        raise ValueError("A frequency weighting needs the token-frequency table.")
    per_bucket = torch.tensor([weights[b] for b in BUCKETS], dtype=torch.float32)
    buckets = torch.as_tensor(freq.bucket_of_id.astype(np.int64))
    return per_bucket[buckets[final_logits.argmax(-1).cpu()]]


def layer_kl(lens_logits: torch.Tensor, target_p: torch.Tensor, target_entropy: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row for q = softmax(lens_logits) and the target probabilities ``p``
    (computed once for all layers), written as ``-H(p) - <p, logits> + logsumexp(logits)``."""
    logits = lens_logits.float()
    return -target_entropy - (target_p * logits).sum(-1) + torch.logsumexp(logits, -1)


def _rms(y: torch.Tensor) -> torch.Tensor:
    return y.pow(2).mean(-1).sqrt().clamp_min(1e-12)


def lens_target(h_layer: torch.Tensor, h_last: torch.Tensor, target: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the closed form regresses on ``x = h_l`` (float64 rows), and a per-row weight
    factor (``None``: 1):

    - ``residual``: ``h_L``;
    - ``relative``: ``h_L``, weighted by ``1 / rms(h_L)^2``: the error of each row relative to its
      length, ``|h_L - A x - b|^2 / rms(h_L)^2``. The final norm divides by ``rms(h_L)``, so this
      is the error the head sees; rows with a huge ``h_L`` (the first position's attention
      sink, several times the usual norm) no longer dominate the fit;
    - ``normalised``: ``h_L / rms(h_L)``, the final norm's input direction (:class:`LensFit`
      scales it back by the mean ``rms(h_L)`` of its rows, so the ridge's identity prior fits);
    - ``scale-free``: that direction at the scale of the input, ``rms(x) h_L / rms(h_L)``,
      weighted by ``1 / rms(x)^2``: the error of each row is ``|h_L / rms(h_L) - (A x + b) / rms(x)|^2``,
      measured in the final norm's input direction with the lens's output at its input's
      scale. Every final norm here is scale-invariant, so the scale of a row's output is
      free: this fits directions, not lengths, and no row dominates by its norm.
    """
    y = h_last.double()
    if target == "residual":
        return y, None
    if target == "relative":
        return y, _rms(y).pow(-2)
    direction = y / _rms(y)[:, None]
    if target == "normalised":
        return direction, None
    if target == "scale-free":
        scale = _rms(h_layer.double())
        return direction * scale[:, None], scale.pow(-2)
    raise ValueError(f"Unknown closed-form target {target!r}; use one of {', '.join(TARGETS)}.")


class LensFit:
    """Streaming weighted ridge least squares of every tuned-lens translator.

    Feed it rows of residuals with :meth:`add` (from any forward pass), then :meth:`solve`
    (as often as wanted: it does not consume the sums). For each layer ``l < L`` and
    ``x = h_l``, ``(y, v) = lens_target(h_l, h_L)``, row weight ``w v``, it keeps around a
    shift ``c`` (the first batch's weighted mean, so that large constant components do not
    cancel catastrophically) the weighted sums ``S_w``, ``S_x = sum w v (x - c)``, ``S_y``,
    ``S_xx = sum w v (x - c)(x - c)^T`` and ``S_xy``, in float64 on the device of the first
    batch. Each batch's products are taken in ``product_dtype`` (float32 by default: about
    half the time of float64; the shifted values keep them exact to float32 rounding per
    batch) and added in float64.

    :meth:`solve` minimises ``sum w v |y - A x - b|^2 + lambda |A - I|^2``: the ridge shrinks
    each translator ``A - I`` towards zero, i.e. the lens towards the logit lens (as the
    SGD loop's weight decay does), and leaves the bias free. With the centred Gram matrices
    ``C_xx = S_xx - S_x S_x^T / S_w`` and ``C_xy``, ``lambda = ridge_scale * mean(diag(C_xx))``
    and ``A^T = (C_xx + lambda I)^-1 (C_xy + lambda I)``, ``b = mean(y) - A mean(x)``.
    """

    def __init__(
        self, n_layers: int, d_model: int, ridge_scale: float = 1e-3, target: str = "residual",
        product_dtype: torch.dtype = torch.float32,
    ):
        if target not in TARGETS:
            raise ValueError(f"Unknown closed-form target {target!r}; use one of {', '.join(TARGETS)}.")
        self.n_layers, self.d_model = n_layers, d_model
        self.ridge_scale, self.target, self.product_dtype = ridge_scale, target, product_dtype
        self.tokens = 0  # rows added
        self.weight = 0.0  # their summed weight w (= tokens when unweighted)
        self._shift_x = self._shift_y = None  # [L, D] each
        self._sw = self._sx = self._sy = self._sxx = self._sxy = None
        self._rms = 0.0  # sum w rms(h_L): the normalised target's scale

    def add(self, resid: Sequence[torch.Tensor], weights: torch.Tensor | None = None) -> None:
        """Add rows: ``resid`` is ``[h_0, ..., h_L]``, each ``[N, D]`` for the same ``N`` tokens;
        ``weights``: non-negative, ``[N]`` (every layer) or ``[L, N]`` (one row per layer
        ``0 .. L-1``), or ``None`` for weight 1 each."""
        if len(resid) != self.n_layers + 1:
            raise ValueError(f"LensFit.add needs h_0..h_L ({self.n_layers + 1} tensors), got {len(resid)}.")
        d, L = self.d_model, self.n_layers
        device = resid[-1].device if self._sxx is None else self._sxx.device
        rows = lambda h: h.reshape(-1, d).to(device, torch.float64)  # noqa: E731
        last = rows(resid[-1])
        n = last.shape[0]
        w = torch.ones(n, dtype=torch.float64, device=device) if weights is None else weights.to(device, torch.float64)
        if w.shape not in ((n,), (L, n)):
            raise ValueError(f"LensFit.add: weights of shape {tuple(w.shape)}; expected ({n},) or ({L}, {n}).")
        w = w.expand(L, n)
        if self._sxx is None:
            zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
            self._shift_x, self._shift_y = zeros(L, d), zeros(L, d)
            self._sw, self._sx, self._sy, self._sxx, self._sxy = zeros(L), zeros(L, d), zeros(L, d), zeros(L, d, d), zeros(L, d, d)
            first = True
        else:
            first = False
        self._rms += float(w[-1] @ _rms(last))
        xy = torch.empty(n, 2 * d, dtype=self.product_dtype, device=device)  # [x - c_x, y - c_y]
        for layer in range(L):
            x = rows(resid[layer])
            y, factor = lens_target(x, last, self.target)
            wl = w[layer] if factor is None else w[layer] * factor
            if first:
                total = wl.sum().clamp_min(1e-300)
                self._shift_x[layer], self._shift_y[layer] = (wl @ x) / total, (wl @ y) / total
            xc, yc = x - self._shift_x[layer], y - self._shift_y[layer]
            self._sw[layer] += wl.sum()
            self._sx[layer] += wl @ xc
            self._sy[layer] += wl @ yc
            xy[:, :d], xy[:, d:] = xc, yc
            products = (xc * wl[:, None]).to(self.product_dtype).T @ xy  # one matmul: [S_xx, S_xy]
            self._sxx[layer] += products[:, :d]
            self._sxy[layer] += products[:, d:]
        self.tokens += n
        self.weight += float(w[-1].sum())

    def solve(self) -> nn.ModuleList:
        """The translators for the rows added so far: float32 ``Linear(D, D)`` modules with
        ``weight = A - I`` and ``bias = b`` (on the CPU)."""
        if self._sxx is None or self.weight <= 0:
            raise ValueError("LensFit.solve needs rows with positive weight: call add() first.")
        d = self.d_model
        translators = zero_translators(d, self.n_layers)
        scale = self._rms / self.weight if self.target == "normalised" else 1.0
        eye = torch.eye(d, dtype=torch.float64, device=self._sxx.device)
        for layer in range(self.n_layers):
            sw = self._sw[layer]
            if sw <= 0:
                raise ValueError(f"LensFit.solve: layer {layer} has no rows with positive weight.")
            mean_x, mean_y = self._sx[layer] / sw, scale * self._sy[layer] / sw
            cxx = self._sxx[layer] - sw * torch.outer(mean_x, mean_x)
            cxy = scale * self._sxy[layer] - sw * torch.outer(mean_x, mean_y)
            ridge = self.ridge_scale * cxx.diagonal().mean().clamp_min(1e-300)
            a = torch.linalg.solve(cxx + ridge * eye, cxy + ridge * eye).T  # y ~ A x + b
            bias = (scale * self._shift_y[layer] + mean_y) - a @ (self._shift_x[layer] + mean_x)
            with torch.no_grad():
                translators[layer].weight.copy_((a - eye).float().cpu())
                translators[layer].bias.copy_(bias.float().cpu())
        return translators


def fit_weights(weights: torch.Tensor | None, n_layers: int, sequences: int, seq_len: int) -> torch.Tensor:
    """:class:`LensFit` weights ``[L, N]`` for a batch of ``sequences`` x ``seq_len`` tokens:
    ``weights`` ``[N]`` (or 1) at every layer, except 0 at each sequence's first position at
    layer 0 (see :func:`fit_closed_form`)."""
    w = torch.ones(sequences * seq_len) if weights is None else weights.float().cpu()
    w = w.expand(n_layers, -1).clone()
    w[0, seq_len * torch.arange(sequences)] = 0
    return w


@dataclass(frozen=True)
class ClosedForm:
    """A closed-form fit: its translators, the tokens it read, its seconds, and the
    translators solved after fewer tokens (``curve``: (tokens, translators), last = all)."""

    translators: nn.ModuleList
    tokens: int
    seconds: float
    curve: list[tuple[int, nn.ModuleList]]
    fitted_with: tuple[str, ...] = ()  # the weightings fitted on the same forward pass (its seconds are theirs too)


def curve_fractions(recipe: Recipe) -> list[float]:
    """Where a closed-form fit is also solved for its convergence curve (fractions of its
    tokens): 1/8, 1/4, 1/2, and all of them when SGD follows (the closed form before SGD)."""
    return [f for f in CURVE_FRACTIONS if f < 1 or recipe.steps > 0] if recipe.curve else []


def fit_closed_form(
    loaded: LoadedModel,
    backend,
    data: LensData,
    recipe: Recipe,
    weighting: str = "standard",
    freq: FrequencyTable | None = None,
    fractions: Sequence[float] = (),
) -> ClosedForm:
    """One lens's closed form on the recipe's training sequences (all of ``data.train``
    unless ``recipe.fit_sequences``): :func:`fit_packed` with one :class:`RowFit`, also
    solved after each of ``fractions`` of the tokens (the convergence curve); its seconds
    include the forward passes.

    Translator 0 reads the token embedding, which carries no position, so the first position
    of each sequence is left out of its fit: there models park their attention sink, whose
    ``h_L`` (about 6x the usual norm on the default model) no embedding can predict and which
    would otherwise pull the fit of ordinary tokens (held-out KL at layer 0: 5.34 instead of
    5.42 nats on the default model; benchmarks/lens_recipes.py)."""
    ids = data.train if recipe.fit_sequences is None else data.train[: recipe.fit_sequences]
    started = time.perf_counter()
    row_fit = RowFit(loaded, recipe, weighting, freq, ids.numel(), fractions)
    fit_packed(loaded, backend, replace(data, train=ids), recipe, {weighting: row_fit})
    return replace(row_fit.result(), seconds=time.perf_counter() - started)


@dataclass(frozen=True)
class FitRows:
    """Rows for :meth:`RowFit.add`: ``h_0 .. h_L`` ([N, D] each), the model's logits there
    (only read by a weighted fit; may be None otherwise) and each row's position in its
    sequence. ``CapturedRows`` has the same fields."""

    resid: list[torch.Tensor]
    final_logits: torch.Tensor | None
    position: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.position)


def fit_packed(loaded: LoadedModel, backend, data: LensData, recipe: Recipe, fits: dict[str, "RowFit"]) -> None:
    """Feed every training sequence of ``data`` to each :class:`RowFit` of ``fits`` (one
    forward pass per ``recipe.fit_batch_sequences`` sequences for all of them: the standard
    and the frequency-down-weighted lens are fitted on the same pass)."""
    head = LogitLens(loaded)
    weighted = any(f.weights is not None for f in fits.values())
    step = recipe.fit_batch_sequences
    for start in tqdm(range(0, len(data.train), step), desc=f"closed-form tuned lenses ({', '.join(fits)}) · {loaded.spec.name}"):
        with torch.no_grad():
            record = backend.forward(data.train[start:start + step])
            batch, seq_len = record.resid[0].shape[:2]
            resid = [h.reshape(-1, h.shape[-1]) for h in record.resid]
            rows = FitRows(resid, head.head(resid[-1]).float() if weighted else None, np.tile(np.arange(seq_len), batch))
        for fit in fits.values():
            fit.add(rows)


class RowFit:
    """A closed-form fit fed with rows of any forward pass: :meth:`add` takes a batch
    (``FitRows`` from :func:`fit_packed`, or the shared prose pass's ``CapturedRows``)
    holding *every* position of some training sequences, weights it as
    :func:`fit_closed_form` does (the down-weighted lens's buckets of the final prediction;
    weight 0 for translator 0 at each sequence's first position) and adds it to a
    :class:`LensFit`; the fit is also solved after each of ``fractions`` of ``total_tokens``
    (the convergence curve, :func:`curve_fractions`). :meth:`result` solves it."""

    def __init__(
        self, loaded: LoadedModel, recipe: Recipe, weighting: str, freq: FrequencyTable | None, total_tokens: int,
        fractions: Sequence[float] = (),
    ):
        d = loaded.adapter.unembed_of(loaded.model).weight.shape[1]
        self.n_layers, self.weights, self.freq = loaded.n_layers, WEIGHTINGS[weighting], freq
        self.fit = LensFit(loaded.n_layers, d, recipe.ridge_scale, recipe.target)
        self.marks = sorted({max(1, math.ceil(f * total_tokens)) for f in fractions})
        self.curve: list[tuple[int, nn.ModuleList]] = []
        self.seconds = 0.0

    def add(self, rows) -> None:
        started = time.perf_counter()
        with torch.no_grad():
            w = None if self.weights is None else position_weights(rows.final_logits.float(), self.freq, self.weights)
            per_layer = (torch.ones(rows.n_rows) if w is None else w).expand(self.n_layers, -1).clone()
            per_layer[0, torch.as_tensor(rows.position == 0)] = 0
            before = self.fit.tokens
            self.fit.add(rows.resid, per_layer)
            if any(before < mark <= self.fit.tokens for mark in self.marks):  # one point per batch
                self.curve.append((self.fit.tokens, self.fit.solve()))
        self.seconds += time.perf_counter() - started

    def result(self) -> ClosedForm:
        if self.fit.tokens == 0:
            raise ValueError("The closed-form fit read no rows: the shared pass had no training paragraph.")
        started = time.perf_counter()
        done = self.curve and self.curve[-1][0] == self.fit.tokens  # solved at all tokens already
        translators = self.curve[-1][1] if done else self.fit.solve()
        return ClosedForm(translators, self.fit.tokens, self.seconds + time.perf_counter() - started, self.curve)


def _targets(lens: TunedLens, backend, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residuals h_0..h_L [N, D] for a batch, the final probabilities, their entropy and logits."""
    with torch.no_grad():
        record = backend.forward(ids)
        resid = [h.reshape(-1, h.shape[-1]) for h in record.resid]
        final_logits = lens.head(resid[-1]).float()
        logp = torch.log_softmax(final_logits, -1)
        p = logp.exp()
        entropy = -(p * logp).sum(-1)
    return resid, p, entropy, final_logits


def _autocast(recipe: Recipe, device: torch.device):
    use = recipe.autocast == "bf16" or (recipe.autocast == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use)


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def train_lens(
    loaded: LoadedModel,
    backend,
    data: LensData,
    recipe: Recipe,
    weighting: str = "standard",
    freq: FrequencyTable | None = None,
    checkpoint: Path | None = None,
    alignment: str = "correct",
    init: nn.ModuleList | None = None,
) -> tuple[TunedLens, dict]:
    """Train a tuned lens with ``recipe.steps`` KL/SGD steps from ``init`` (a copy is
    trained; ``None``: zero translators, the logit lens); returns it and a record of the
    run (steps, tokens, seconds, losses). With ``checkpoint``, state is saved there every
    ``recipe.checkpoint_every`` steps and a run with the same arguments resumes from it."""
    check_passes(data, recipe)
    weights = WEIGHTINGS[weighting]
    lens = TunedLens(loaded, None if init is None else copy.deepcopy(init), alignment="correct")
    params = list(lens.translators.parameters())
    opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=True, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / recipe.steps))
    start, losses, seconds = 0, [], 0.0
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        lens.translators.load_state_dict(state["translators"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, losses, seconds = state["step"], state["losses"], state["seconds"]
        log.info("Resuming tuned-lens training from step %d (%s).", start, checkpoint)
    n_layers = loaded.n_layers
    rng = np.random.default_rng(recipe.seed)
    epochs = (recipe.steps * recipe.sequences_per_step) // len(data.train) + 1
    order = np.concatenate([rng.permutation(len(data.train)) for _ in range(epochs)])
    frozen = [p for p in loaded.model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    started = time.perf_counter()
    try:
        bar = tqdm(range(start, recipe.steps), initial=start, total=recipe.steps,
                   desc=f"train {weighting} tuned lens · {loaded.spec.name} · {recipe.name}")
        for step in bar:
            rows = order[step * recipe.sequences_per_step:(step + 1) * recipe.sequences_per_step]
            micro = [rows[i:i + recipe.micro_batch_sequences] for i in range(0, len(rows), recipe.micro_batch_sequences)]
            step_loss = 0.0
            for chunk in micro:  # the weighted loss is normalised per micro-batch
                resid, p, entropy, final_logits = _targets(lens, backend, data.train[chunk])
                w = position_weights(final_logits, freq, weights)
                for layer in range(n_layers):
                    with _autocast(recipe, loaded.device):
                        logits = lens.head(lens.translate(resid[layer].float(), layer))
                    kl = layer_kl(logits, p, entropy)
                    loss = kl.mean() if w is None else (kl * w.to(kl.device)).sum() / w.sum()
                    (loss / len(micro)).backward()
                    step_loss += loss.item() / (n_layers * len(micro))
            torch.nn.utils.clip_grad_norm_(params, recipe.clip)
            opt.step()
            opt.zero_grad(set_to_none=False)
            sched.step()
            losses.append(step_loss)
            bar.set_postfix(kl=f"{step_loss:.3f}")
            done = step + 1
            if checkpoint is not None and (done % recipe.checkpoint_every == 0 or done == recipe.steps):
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                _atomic_torch_save({
                    "translators": lens.translators.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "step": done, "losses": losses,
                    "seconds": seconds + time.perf_counter() - started,
                }, checkpoint)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    seconds += time.perf_counter() - started
    trained = TunedLens(loaded, lens.translators, alignment=alignment)
    record = {
        "recipe": recipe.key(), "weighting": weighting, "weights": weights, "steps": recipe.steps,
        "tokens": recipe.steps * recipe.tokens_per_step, "seconds": round(seconds, 1),
        "mean_kl_per_step": [round(x, 5) for x in losses], "data": _data_record(data),
    }
    return trained, record


def fit_lens(
    loaded: LoadedModel,
    backend,
    data: LensData,
    recipe: Recipe,
    weighting: str = "standard",
    freq: FrequencyTable | None = None,
    checkpoint: Path | None = None,
    alignment: str = "correct",
    eval_ids: torch.Tensor | None = None,
    closed_form: Callable[[], ClosedForm] | None = None,
) -> tuple[TunedLens, dict]:
    """A lens by ``recipe``: the closed form (``start="closed-form"``) or zero translators,
    then ``recipe.steps`` KL/SGD steps. With ``closed_form``, the closed form is
    ``closed_form()`` (fitted by the caller, e.g. ``ModelSession``: :class:`RowFit`; a
    ``prose-pass`` recipe needs it). With ``eval_ids`` (held-out sequences) and
    ``recipe.curve``, the closed form is also solved after 1/8, 1/4, 1/2 (and, when SGD
    follows, all) of its tokens and each is measured there: ``record["convergence"]["points"]``
    (:func:`obtain_lens` adds the final lens, the logit lens's mean and the token count). ``record["seconds"]`` counts fitting and
    training, not these measurements (``record["eval_seconds"]``)."""
    init, closed, convergence, eval_seconds = None, None, None, 0.0
    if recipe.start == "closed-form":
        saved = None if checkpoint is None else checkpoint.with_name(f"{checkpoint.name}.closed-form.pt")
        if saved is not None and saved.is_file():  # an interrupted SGD run: its start is kept
            state = torch.load(saved, map_location="cpu", weights_only=False)
            init = zero_translators(loaded.adapter.unembed_of(loaded.model).weight.shape[1], loaded.n_layers)
            init.load_state_dict(state["translators"])
            closed, convergence, eval_seconds = state["closed_form"], state["convergence"], state["eval_seconds"]
        else:
            fractions = curve_fractions(recipe) if eval_ids is not None else []
            if closed_form is not None:
                fit = closed_form()
            elif recipe.fit_source == "prose-pass":
                raise ValueError(
                    f"The lens recipe {recipe.name!r} fits on the prose claims' shared forward pass: obtain it through "
                    "ModelSession.trained_lens (or `depth-claims train-lens`), or use a 'packed' recipe."
                )
            else:
                fit = fit_closed_form(loaded, backend, data, recipe, weighting, freq, fractions)
            init = fit.translators
            closed = {"tokens": fit.tokens, "seconds": round(fit.seconds, 1), "target": recipe.target,
                      "ridge_scale": recipe.ridge_scale, "source": recipe.fit_source, "pass_shared_with": list(fit.fitted_with)}
            if fractions and fit.curve:
                started = time.perf_counter()
                convergence = convergence_points(loaded, backend, fit.curve, eval_ids)
                eval_seconds = time.perf_counter() - started
            if saved is not None and recipe.steps > 0:
                saved.parent.mkdir(parents=True, exist_ok=True)
                _atomic_torch_save({"translators": init.state_dict(), "closed_form": closed, "convergence": convergence,
                                    "eval_seconds": eval_seconds}, saved)
    if recipe.steps > 0:
        lens, record = train_lens(loaded, backend, data, recipe, weighting, freq, checkpoint, alignment, init)
        record["sgd"] = {"steps": recipe.steps, "tokens": record["tokens"], "seconds": record["seconds"]}
    else:
        lens = TunedLens(loaded, init, alignment=alignment)
        record = {"recipe": recipe.key(), "weighting": weighting, "weights": WEIGHTINGS[weighting], "steps": 0, "tokens": 0,
                  "seconds": 0.0, "mean_kl_per_step": [], "data": _data_record(data)}
    if closed is not None:
        record["closed_form"] = closed
        record["tokens"] += closed["tokens"]
        record["seconds"] = round(record["seconds"] + closed["seconds"], 1)
    if convergence is not None:
        record["convergence"] = {"points": convergence}
    record["eval_seconds"] = round(eval_seconds, 1)
    return lens, record


def convergence_points(loaded: LoadedModel, backend, curve: list[tuple[int, nn.ModuleList]], ids: torch.Tensor) -> list[dict]:
    """Held-out KL per layer of each closed-form solution in ``curve`` (one forward pass
    per batch of ``ids`` for all of them): ``[{"stage", "tokens", "kl", "mean_kl"}]``,
    ``mean_kl`` over layers ``0 .. L-1``."""
    lenses = {str(tokens): TunedLens(loaded, translators) for tokens, translators in curve}
    table = kl_table(lenses, backend, ids)
    return [_point("closed form", tokens, table[f"{tokens}_kl"]) for tokens, _ in curve]


def _point(stage: str, tokens: int, kl) -> dict:
    kl = [float(x) for x in kl]
    return {"stage": stage, "tokens": int(tokens), "kl": [round(x, 5) for x in kl], "mean_kl": round(float(np.mean(kl[:-1])), 5)}


def _data_record(data: LensData) -> dict:
    return {"name": data.name, "hash": data.content_hash[:16], "train_sequences": len(data.train), "held_out_sequences": len(data.held_out)}


def kl_table(lenses: dict[str, object], backend, ids: torch.Tensor, batch: int = 4) -> pd.DataFrame:
    """Mean KL(final || lens) per residual point on ``ids`` for each named lens: one row per
    layer 0..L (0 at L by construction), with a bootstrap-free standard error over tokens."""
    sums: dict[str, np.ndarray] = {}
    sq: dict[str, np.ndarray] = {}
    count = 0
    first = next(iter(lenses.values()))
    n_layers = first.loaded.n_layers
    for start in tqdm(range(0, len(ids), batch), desc="held-out KL per layer"):
        resid, p, entropy, _ = _targets(first, backend, ids[start:start + batch])
        count += p.shape[0]
        for name, lens in lenses.items():
            s, q = sums.setdefault(name, np.zeros(n_layers + 1)), sq.setdefault(name, np.zeros(n_layers + 1))
            for layer in range(n_layers + 1):
                kl = layer_kl(lens.logits(resid[layer], layer), p, entropy).clamp_min(0).double().cpu().numpy()
                s[layer] += kl.sum()
                q[layer] += (kl**2).sum()
    table = pd.DataFrame({"layer": np.arange(n_layers + 1)})
    for name in lenses:
        mean = sums[name] / count
        table[f"{name}_kl"] = mean
        table[f"{name}_kl_se"] = np.sqrt(np.maximum(sq[name] / count - mean**2, 0) / count)
    table["tokens"] = count
    return table


def lens_key(loaded: LoadedModel, data: LensData, recipe: Recipe, weighting: str) -> str:
    payload = {"model": loaded.identity, "data": [data.name, data.content_hash], "recipe": recipe.key(), "weighting": weighting}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def lens_folder(loaded: LoadedModel, data: LensData, recipe: Recipe, weighting: str, root: Path | None = None) -> Path:
    root = Path(root) if root is not None else depth_claims_home() / "lenses"
    return root / loaded.spec.slug / f"{recipe.name}-{weighting}-{lens_key(loaded, data, recipe, weighting)}"


def train_command(model: str, data_dir: Path | None, recipe: Recipe, weighting: str, data_options: tuple[str, ...] = ()) -> str:
    """``data_options``: the run's prose options (``--data wikipedia``, ``--prose FILE``)."""
    parts = ["depth-claims train-lens", f"--model {model}", f"--recipe {recipe.name}", *data_options]
    if data_dir is not None and not data_options:
        parts.append(f"--data-dir {data_dir}")
    if weighting != "standard":
        parts.append(f"--weighting {weighting}")
    return " ".join(parts)


def obtain_lens(
    loaded: LoadedModel,
    backend,
    corpus: Corpus,
    recipe: Recipe,
    weighting: str = "standard",
    freq: FrequencyTable | None = None,
    train: bool = False,
    alignment: str = "correct",
    data_dir: Path | None = None,
    root: Path | None = None,
    closed_form: Callable[[], ClosedForm] | None = None,
    data_options: tuple[str, ...] = (),
) -> TunedLens:
    """The self-trained lens for (model, corpus, recipe, weighting): from the cache, else
    fitted now when ``train`` (:func:`fit_lens`, then its held-out KL table and convergence
    curve go into ``training.json``), else :class:`TunedLensMissing` naming the command.
    ``closed_form``: the closed form fitted by the caller (see :func:`fit_lens`).

    Training holds :func:`harness.files.file_lock` on the lens folder: a second process
    asking for the same lens meanwhile waits, then reads the lens the first one saved."""
    data = pack_corpus(corpus, loaded.tokenizer, recipe.seq_len)
    folder = lens_folder(loaded, data, recipe, weighting, root)
    source = {"kind": "trained", "recipe": recipe.name, "weighting": weighting, "data": data.name, "key": folder.name}
    if (folder / "config.json").is_file():
        return read_lens(folder, loaded, alignment, source)
    if not train:
        raise TunedLensMissing(
            f"No {weighting} tuned lens for {loaded.spec.name} (recipe {recipe.name}, data {data.name}) in "
            f"{folder.parent}. Train it with `{train_command(loaded.spec.name, data_dir, recipe, weighting, data_options)}` "
            "or rerun pytest with --train-lens."
        )
    # One process trains a lens folder; one that waited here for it reads the lens it made.
    with file_lock(folder):
        if not (folder / "config.json").is_file():
            _train_into(folder, loaded, backend, data, recipe, weighting, freq, alignment, closed_form)
        else:
            log.info("The %s tuned lens %s was trained by another process meanwhile; reading it.", weighting, folder)
    return read_lens(folder, loaded, alignment, source)


def _train_into(folder: Path, loaded: LoadedModel, backend, data: LensData, recipe: Recipe, weighting: str,
                freq: FrequencyTable | None, alignment: str, closed_form: Callable[[], ClosedForm] | None) -> None:
    """Fit the lens (:func:`fit_lens`), measure it on held-out text and save it to ``folder``."""
    check_passes(data, recipe)  # before the closed form's forward pass
    checkpoint = folder.with_name(f".{folder.name}.checkpoint.pt")
    eval_ids = data.held_out[: recipe.eval_sequences]
    lens, record = fit_lens(loaded, backend, data, recipe, weighting, freq, checkpoint, alignment, eval_ids, closed_form)
    table = kl_table({"logit": LogitLens(loaded), "tuned": lens}, backend, eval_ids)
    record["kl_table"] = table.to_dict(orient="list")
    if "convergence" in record:
        record["convergence"]["points"].append(_point("final", record["tokens"], table["tuned_kl"]))
        record["convergence"]["logit_mean_kl"] = round(float(table["logit_kl"].iloc[:-1].mean()), 5)
        record["convergence"]["held_out_tokens"] = int(table["tokens"].iloc[0])
    lens.save(folder, record)
    checkpoint.unlink(missing_ok=True)
    checkpoint.with_name(f"{checkpoint.name}.closed-form.pt").unlink(missing_ok=True)
