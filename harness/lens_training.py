"""Training tuned lenses in the harness, following the published recipe, and measuring them.

The tuned-lens package's own trainer does not run with current torchdata and transformers
5, so this is the loop of its ``train_loop.py``, written for the harness's backend:

- loss: KL(final distribution || lens distribution) at every position and every layer
  ``0 .. L-1`` (its default ``--loss kl`` with token shift 0);
- translators start at zero (the identity: an untrained lens is the logit lens);
- SGD with Nesterov momentum 0.9, learning rate ``lr_scale * (1 - momentum)``, weight decay
  1e-3, linear decay to zero without warm-up, gradient norm clipped to 1;
- bf16 autocast on a GPU (``autocast="auto"``); on CPU float32, since bf16 matmuls are
  slower than float32 on CPUs without bf16 units (this machine's EPYC: 5.8x slower).

Data: the run's prose corpus (embedded paragraphs, or Wikipedia through ``--data-dir``),
tokenised and packed into ``seq_len``-token sequences. Every tenth paragraph is held out
and never trained on: the KL table that shows a lens is better than the logit lens is
measured there.

GTR-7's second lens uses the same recipe with ``weighting="downweight-frequent"``: each
position's KL is weighted by the frequency bucket of its *target*, the model's final
prediction there (:data:`DOWNWEIGHT_FREQUENT`), normalised by the sum of the weights.

Lenses are cached per (model, data, recipe, weighting) under ``$DEPTH_CLAIMS_HOME/lenses``;
training writes a checkpoint every few steps and resumes from it after an interruption.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from harness.data.prose import Corpus
from harness.frequency import BUCKETS, FrequencyTable
from harness.lenses import LogitLens
from harness.models.loading import LoadedModel
from harness.paths import depth_claims_home
from harness.tuned_lens import TunedLens, read_lens

log = logging.getLogger(__name__)

# Bump when the loop, the data split or the packing changes: part of every lens's key.
TRAINING_VERSION = 1
HELD_OUT_EVERY = 10  # paragraph i is held out when i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1


@dataclass(frozen=True)
class Recipe:
    """How a lens is trained. ``steps * tokens_per_step`` tokens are seen in all."""

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

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.sequences_per_step

    @property
    def lr(self) -> float:
        return self.lr_scale * (1 - self.momentum)

    def key(self) -> dict:
        return {**asdict(self), "training_version": TRAINING_VERSION}


RECIPES: dict[str, Recipe] = {
    # The published recipe (tuned-lens train_loop defaults): 250 steps of 2^18 tokens.
    "paper": Recipe(name="paper", steps=250, seq_len=2048, sequences_per_step=128, micro_batch_sequences=1),
    # For the default model on a 2-core CPU in well under 30 minutes (README: measured).
    "cpu-small": Recipe(
        name="cpu-small", steps=48, seq_len=128, sequences_per_step=2, micro_batch_sequences=2, eval_sequences=8,
        checkpoint_every=8,
    ),
}

# GTR-7: weight of a position's loss by the frequency bucket of its target token.
DOWNWEIGHT_FREQUENT: dict[str, float] = {"Top-10": 0.1, "Top-100": 0.5, "Top-1000": 1.0, "Rest": 1.0}
WEIGHTINGS: dict[str, dict[str, float] | None] = {"standard": None, "downweight-frequent": DOWNWEIGHT_FREQUENT}


def resolve_recipe(name: str, device: torch.device) -> Recipe:
    """``auto``: the paper's recipe on a GPU, ``cpu-small`` on CPU."""
    if name == "auto":
        name = "paper" if device.type == "cuda" else "cpu-small"
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


def pack_corpus(corpus: Corpus, tokenizer, seq_len: int) -> LensData:
    """Tokenise paragraphs (no special tokens), join them with the tokenizer's EOS (or a
    newline) and cut into ``seq_len``-token sequences; every tenth paragraph goes to the
    held-out stream."""
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else tokenizer("\n", add_special_tokens=False)["input_ids"]
    streams: dict[bool, list[int]] = {False: [], True: []}
    for i, para in enumerate(corpus.paragraphs):
        ids = tokenizer(para.text, add_special_tokens=False)["input_ids"]
        streams[i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1].extend(ids + sep)

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


def layer_kl(lens_logits: torch.Tensor, target_logp: torch.Tensor, target_entropy: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row for q = softmax(lens_logits), written as
    ``-H(p) - <p, logits> + logsumexp(logits)`` (two [N, V] temporaries, not four)."""
    logits = lens_logits.float()
    return -target_entropy - (target_logp.exp() * logits).sum(-1) + torch.logsumexp(logits, -1)


def _targets(lens: TunedLens, backend, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residuals h_0..h_L [N, D] for a batch, the final log-probs, their entropy and logits."""
    with torch.no_grad():
        record = backend.forward(ids)
        resid = [h.reshape(-1, h.shape[-1]) for h in record.resid]
        final_logits = lens.head(resid[-1]).float()
        logp = torch.log_softmax(final_logits, -1)
        entropy = -(logp.exp() * logp).sum(-1)
    return resid, logp, entropy, final_logits


def _autocast(recipe: Recipe, device: torch.device):
    use = recipe.autocast == "bf16" or (recipe.autocast == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use)


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_lens(
    loaded: LoadedModel,
    backend,
    data: LensData,
    recipe: Recipe,
    weighting: str = "standard",
    freq: FrequencyTable | None = None,
    checkpoint: Path | None = None,
    alignment: str = "correct",
) -> tuple[TunedLens, dict]:
    """Train a tuned lens; returns it and a record of the run (steps, tokens, seconds, losses).
    With ``checkpoint``, state is saved there every ``recipe.checkpoint_every`` steps and a
    run with the same arguments resumes from it."""
    weights = WEIGHTINGS[weighting]
    lens = TunedLens(loaded, alignment="correct")
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
                resid, logp, entropy, final_logits = _targets(lens, backend, data.train[chunk])
                w = position_weights(final_logits, freq, weights)
                for layer in range(n_layers):
                    with _autocast(recipe, loaded.device):
                        logits = lens.head(lens.translate(resid[layer].float(), layer))
                    kl = layer_kl(logits, logp, entropy)
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
        "mean_kl_per_step": [round(x, 5) for x in losses], "data": {"name": data.name, "hash": data.content_hash[:16],
        "train_sequences": len(data.train), "held_out_sequences": len(data.held_out)},
    }
    return trained, record


def kl_table(lenses: dict[str, object], backend, ids: torch.Tensor, batch: int = 4) -> pd.DataFrame:
    """Mean KL(final || lens) per residual point on ``ids`` for each named lens: one row per
    layer 0..L (0 at L by construction), with a bootstrap-free standard error over tokens."""
    sums: dict[str, np.ndarray] = {}
    sq: dict[str, np.ndarray] = {}
    count = 0
    first = next(iter(lenses.values()))
    n_layers = first.loaded.n_layers
    for start in tqdm(range(0, len(ids), batch), desc="held-out KL per layer"):
        resid, logp, entropy, _ = _targets(first, backend, ids[start:start + batch])
        count += logp.shape[0]
        for name, lens in lenses.items():
            s, q = sums.setdefault(name, np.zeros(n_layers + 1)), sq.setdefault(name, np.zeros(n_layers + 1))
            for layer in range(n_layers + 1):
                kl = layer_kl(lens.logits(resid[layer], layer), logp, entropy).clamp_min(0).double().cpu().numpy()
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


def train_command(model: str, data_dir: Path | None, recipe: Recipe, weighting: str) -> str:
    parts = ["depth-claims train-lens", f"--model {model}", f"--recipe {recipe.name}"]
    if data_dir is not None:
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
) -> TunedLens:
    """The self-trained lens for (model, corpus, recipe, weighting): from the cache, else
    trained now when ``train``, else :class:`TunedLensMissing` naming the command."""
    data = pack_corpus(corpus, loaded.tokenizer, recipe.seq_len)
    folder = lens_folder(loaded, data, recipe, weighting, root)
    source = {"kind": "trained", "recipe": recipe.name, "weighting": weighting, "data": data.name, "key": folder.name}
    if (folder / "config.json").is_file():
        return read_lens(folder, loaded, alignment, source)
    if not train:
        raise TunedLensMissing(
            f"No {weighting} tuned lens for {loaded.spec.name} (recipe {recipe.name}, data {data.name}) in "
            f"{folder.parent}. Train it with `{train_command(loaded.spec.name, data_dir, recipe, weighting)}` "
            "or rerun pytest with --train-lens."
        )
    lens, record = train_lens(loaded, backend, data, recipe, weighting, freq, folder.with_name(f".{folder.name}.checkpoint.pt"), alignment)
    record["kl_table"] = kl_table(
        {"logit": LogitLens(loaded), "tuned": lens}, backend, data.held_out[: recipe.eval_sequences]
    ).to_dict(orient="list")
    lens.save(folder, record)
    folder.with_name(f".{folder.name}.checkpoint.pt").unlink(missing_ok=True)
    return read_lens(folder, loaded, alignment, source)
