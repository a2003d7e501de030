"""The tuned lens (Belrose et al. 2023): one affine translator per layer, then the model's head.

Translator ``l`` maps ``h_l`` to ``h_l + W_l h_l + b_l`` (the tuned-lens package's residual
parametrisation), and the model's own final norm and unembedding turn that into logits.
Translators start at zero, so an untrained tuned lens *is* the logit lens. There is no
translator at ``l = L``: there every lens is the model's head and gives back its logits.

**Alignment** (claims.md, "Traps"): translator ``l`` is trained on ``h_l`` (translator 0 on
the embeddings), so ``alignment="correct"`` reads ``h_l`` with translator ``l``. The GTR
paper's code applied translator ``l`` to the output of block ``l``, i.e. to ``h_{l+1}``;
``alignment="paper"`` reproduces that: ``h_m`` is read with translator ``m - 1``, ``h_0``
with no translator (nothing is trained for a point before the embeddings) and ``h_L`` with
the model's head. The alignment is part of the lens's identity, hence of every cache key
and result.

**Format**: the tuned-lens package's, so published lenses load and ours load in the
package: a folder with ``config.json`` (its ``TunedLensConfig`` fields) and ``params.pt``
(the state dict of the ``ModuleList`` of ``nn.Linear`` translators: ``0.weight``,
``0.bias``, ...). ``config.json``'s ``unembed_hash`` identifies the model's unembedding,
computed as the package does; a lens whose hash differs is refused, and so is a lens
without a hash whose recorded base model is not this model.

**Lens-model mismatch** (``allow_mismatch``; ``--allow-lens-mismatch``): the GTR paper read
Pythia-6.9B through the tuned lens trained for Pythia-6.9B-*deduped*. To reproduce that,
a lens made for another model of the same shape is accepted when asked for, and the
mismatch is part of the lens's identity (``lens_source.model_mismatch``), of every
result's provenance (``lens_mismatch``) and of the report's model page.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.files import atomic_dir
from harness.lenses import Lens
from harness.models.loading import LoadedModel

log = logging.getLogger(__name__)

ALIGNMENTS = ("correct", "paper")
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.pt"
TRAINING_FILE = "training.json"  # ours: recipe, data, time and held-out KL of a lens trained here
# The tuned-lens project's hub space, where its published lenses live (its package's default).
PUBLISHED_REPO = "AlignmentResearch/tuned-lens"


class LensMismatch(ValueError):
    """A lens was made for another model (its unembedding hash or shape differs)."""


@dataclass(frozen=True)
class LensConfig:
    """The tuned-lens package's ``TunedLensConfig``, field for field (``config.json``)."""

    base_model_name_or_path: str
    d_model: int
    num_hidden_layers: int
    bias: bool = True
    base_model_revision: str | None = None
    unembed_hash: str | None = None
    lens_type: str = "linear_tuned_lens"

    @classmethod
    def from_dict(cls, data: dict) -> LensConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def unembed_hash(loaded: LoadedModel) -> str:
    """The tuned-lens package's hash of the unembedding matrix (``tuned_lens.utils.tensor_hash``:
    sha256 of numpy's summarised print at one decimal), so published lenses can be checked."""
    weight = loaded.adapter.unembed_of(loaded.model).weight.detach().cpu().float().numpy()
    return hashlib.sha256(str.encode(np.array_str(weight, precision=1))).hexdigest()


def zero_translators(d_model: int, n_layers: int) -> nn.ModuleList:
    """``n_layers`` float32 ``Linear(d, d)`` translators at zero: the identity map."""
    translators = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n_layers))
    with torch.no_grad():
        for t in translators:
            t.weight.zero_()
            t.bias.zero_()
    return translators


def params_hash(translators: nn.ModuleList) -> str:
    """sha256 over every translator parameter, in order: the lens's identity in cache keys."""
    h = hashlib.sha256()
    for name, value in translators.state_dict().items():
        h.update(name.encode() + b"\0" + value.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


class TunedLens(Lens):
    """A tuned lens for one loaded model. ``source`` says where it came from (a published
    resource id, or the recipe and data it was trained with); it is recorded in results."""

    name = "tuned"

    def __init__(
        self,
        loaded: LoadedModel,
        translators: nn.ModuleList | None = None,
        alignment: str = "correct",
        source: dict | None = None,
    ):
        super().__init__(loaded)
        if alignment not in ALIGNMENTS:
            raise ValueError(f"Unknown tuned-lens alignment {alignment!r}; use one of {', '.join(ALIGNMENTS)}.")
        d_model = loaded.adapter.unembed_of(loaded.model).weight.shape[1]
        if translators is None:
            translators = zero_translators(d_model, loaded.n_layers)
        if len(translators) != loaded.n_layers:
            raise LensMismatch(f"The lens has {len(translators)} translators; {loaded.spec.name} has {loaded.n_layers} layers.")
        device = loaded.adapter.unembed_of(loaded.model).weight.device
        self.translators = translators.to(device=device, dtype=torch.float32)
        self.alignment = alignment
        self.source = source or {"kind": "untrained"}
        self.training_record: dict | None = None  # training.json of a lens trained here
        self._hash = params_hash(self.translators)

    def translator_for(self, layer: int) -> nn.Linear | None:
        """The translator that reads residual point ``h_layer`` under this lens's alignment."""
        index = layer if self.alignment == "correct" else layer - 1
        if layer >= self.loaded.n_layers or index < 0:
            return None
        return self.translators[index]

    def translate(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """``h_l + W h_l + b`` in float32, returned in ``h``'s dtype (``h`` itself at ``l = L``)."""
        translator = self.translator_for(layer)
        if translator is None:
            return h
        x = h.to(device=translator.weight.device, dtype=torch.float32)
        return (x + translator(x)).to(h.dtype)

    def logits(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        with torch.no_grad():
            return self.head(self.translate(h, layer))

    @property
    def identity(self) -> dict:
        return {"lens": self.name, "lens_hash": self._hash[:16], "alignment": self.alignment, "lens_source": self.source}

    @property
    def mismatch(self) -> dict | None:
        """``{"lens_model", "model", "reason"}`` when this lens was made for another model
        and accepted with ``allow_mismatch``; else None."""
        return self.source.get("model_mismatch")

    def config(self) -> LensConfig:
        spec = self.loaded.spec
        return LensConfig(
            base_model_name_or_path=spec.repo_id or spec.name,
            d_model=self.translators[0].in_features,
            num_hidden_layers=len(self.translators),
            base_model_revision=self.loaded.revision,
            unembed_hash=unembed_hash(self.loaded),
        )

    def save(self, folder: Path, extra: dict | None = None) -> Path:
        """Write ``config.json`` + ``params.pt`` (+ ``training.json`` from ``extra``)
        atomically: the folder appears complete or not at all."""
        folder = Path(folder)
        with atomic_dir(folder, replace=True) as tmp:
            torch.save({k: v.cpu() for k, v in self.translators.state_dict().items()}, tmp / PARAMS_FILE)
            (tmp / CONFIG_FILE).write_text(json.dumps(asdict(self.config()), indent=2) + "\n")
            if extra is not None:
                (tmp / TRAINING_FILE).write_text(json.dumps(extra, indent=2, default=float) + "\n")
        return folder


def model_names(loaded: LoadedModel) -> set[str]:
    """The names a lens's ``base_model_name_or_path`` may give ``loaded`` by: its hub id and
    depth-claims name, each also without the owner, lower-case (a lens without an unembedding
    hash is matched by name, with or without the owner)."""
    spec = loaded.spec
    names = {n.lower().rstrip("/") for n in (spec.repo_id, spec.name) if n}
    return names | {n.rsplit("/", 1)[-1] for n in names}


def model_mismatch(config: LensConfig, loaded: LoadedModel) -> dict | None:
    """How a lens's recorded model differs from ``loaded``: None when it was made for it
    (the same unembedding hash, or, for a lens without one, the same model name); else
    ``{"lens_model", "model", "reason"}``."""
    if config.unembed_hash:
        model_hash = unembed_hash(loaded)
        if config.unembed_hash == model_hash:
            return None
        reason = f"unembedding hash {config.unembed_hash[:12]}... vs {model_hash[:12]}..."
    elif {lens_model := config.base_model_name_or_path.lower().rstrip("/"), lens_model.rsplit("/", 1)[-1]} & model_names(loaded):
        return None
    else:
        reason = "the lens records no unembedding hash, and its model name differs"
    return {"lens_model": config.base_model_name_or_path, "model": loaded.spec.name, "reason": reason}


def read_lens(
    folder: Path, loaded: LoadedModel, alignment: str = "correct", source: dict | None = None, allow_mismatch: bool = False
) -> TunedLens:
    """Load a lens folder in the package's layout for ``loaded``, refusing a lens made for
    another model unless ``allow_mismatch`` (then recorded in its source); a lens of
    another shape is refused always."""
    folder = Path(folder)
    missing = [name for name in (CONFIG_FILE, PARAMS_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a tuned-lens folder: it lacks {', '.join(missing)}.")
    config = LensConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
    mismatch = model_mismatch(config, loaded)
    if mismatch is not None and not allow_mismatch:
        raise LensMismatch(
            f"The tuned lens in {folder} was trained for {config.base_model_name_or_path}, not for "
            f"{loaded.spec.name} ({mismatch['reason']}). Use a lens made for this model, or train one: "
            f"depth-claims train-lens --model {loaded.spec.name}. To read this model through it anyway (as the "
            "GTR paper read pythia-6.9b through the lens of pythia-6.9b-deduped), add --allow-lens-mismatch: "
            "the results then record the mismatch."
        )
    d_model = loaded.adapter.unembed_of(loaded.model).weight.shape[1]
    if (config.d_model, config.num_hidden_layers) != (d_model, loaded.n_layers):
        raise LensMismatch(
            f"The tuned lens in {folder} is for d_model={config.d_model}, {config.num_hidden_layers} layers; "
            f"{loaded.spec.name} has d_model={d_model}, {loaded.n_layers} layers."
        )
    translators = zero_translators(config.d_model, config.num_hidden_layers)
    if not config.bias:
        for t in translators:
            t.bias = None
    state = torch.load(folder / PARAMS_FILE, map_location="cpu", weights_only=True)
    translators.load_state_dict(state)
    source = source or {"kind": "folder", "path": str(folder)}
    if mismatch is not None:
        source = {**source, "model_mismatch": mismatch}
    lens = TunedLens(loaded, translators, alignment, source)
    if (folder / TRAINING_FILE).is_file():
        lens.training_record = json.loads((folder / TRAINING_FILE).read_text())
    return lens


def load_published(resource_id: str, loaded: LoadedModel, alignment: str = "correct", allow_mismatch: bool = False) -> TunedLens:
    """A published lens: a local folder, or a resource id of the tuned-lens hub space
    (downloaded with the package's own loader, which caches it). ``allow_mismatch``: accept
    a lens made for another model (``read_lens``)."""
    if Path(resource_id).is_dir():
        source = {"kind": "folder", "path": str(Path(resource_id).resolve())}
        return read_lens(Path(resource_id), loaded, alignment, source, allow_mismatch)
    from tuned_lens.load_artifacts import load_lens_artifacts

    config_path, _ = load_lens_artifacts(resource_id)
    source = {"kind": "published", "repo": PUBLISHED_REPO, "id": resource_id}
    return read_lens(config_path.parent, loaded, alignment, source, allow_mismatch)
