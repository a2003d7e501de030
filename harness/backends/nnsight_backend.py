"""The nnsight backend: :class:`HookBackend`'s reads and edits written as an nnsight trace.

Same semantics as ``HookBackend`` (see ``harness/backends/base.py``): ``h_l`` is block
``l``'s input, ``h_L`` the final norm's input, an edit at ``r = 0`` replaces block 0's input and one
at ``r >= 1`` replaces block ``r - 1``'s output (a bare tensor in transformers >= 5, the
first entry of a tuple before), and ``mid`` / ``attn_out`` come from the adapter's
``mlp_residual`` input / attention output. Everything is reached through the adapter's
dotted paths, so every family the adapters cover works.

How it maps onto nnsight 0.8 (``nnsight.modeling.transformers.TransformersModel``
wrapping the already loaded module; ``LanguageModel`` is a deprecated alias):

- One ``model.trace(...)`` per call, whose body asks for locations in the order the
  model reaches them: block ``l``'s input, then the sublayer read inside it, then its
  output (only when it is edited), then block ``l + 1``; the final norm's input last.
  nnsight raises ``OutOfOrderError`` for anything else.
- Inputs go in as keywords with one tensor-valued argument that nnsight does not know
  as a per-row text field (``logits_to_keep``). That makes nnsight hand the encoding to
  the model untouched, exactly as ``HookBackend`` calls it -- no re-collation, no
  all-ones mask for ``mask=None`` and no mask-derived ``position_ids`` (which nnsight
  adds to batches it thinks are left-padded).
- Values leave the trace only through ``nnsight.save``d names bound in the body, never
  by mutating an outer list, so the same body runs on NDIF (``remote=True``), where
  the body is shipped and only saved values come back, and in nnsight's local
  simulation of that path (``remote="local"``).
- Without local weights (``--remote``, :func:`harness.models.loading.load_remote_model`):
  the wrapped module is the model built from its config on the meta device. nnsight
  addresses modules by path, so the trace body it ships names NDIF's real modules; no
  local forward runs, and a module called here raises ``RemoteOnly``.
- Gradients: a local trace runs the model and the trace body on one thread (greenlets,
  not OS threads), so grad mode is the caller's and ``record.resid`` keeps its
  autograd graph -- integrated gradients work. A remote run returns plain tensors
  with no graph, so an edit that carries a tensor requiring grad is refused there
  (``NotImplementedError``), and so is it under ``remote="local"``, whose point is to
  fail wherever NDIF would.
- Remote edits: the edit functions are shipped with the request. Functions of an
  installed package (``harness`` is installed editable, so nnsight does not treat it as
  local) would be pickled by reference and fail to import on the server, so the top
  package of every edit function (and ``harness``) is registered for by-value pickling
  with ``nnsight.register`` -- a process-wide cloudpickle setting.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any

import torch

try:
    import nnsight
    from nnsight.modeling.transformers import TransformersModel
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(f"--backend nnsight needs the nnsight package ({error}): pip install nnsight") from error

from harness.backends.base import Backend, ForwardRecord
from harness.models.loading import LoadedModel

API_KEY_VARS = ("NDIF_API_KEY", "NDIF_API")
API_KEY_URL = "https://login.ndif.us"

# Module roots an NDIF server has installed: functions from these pickle by reference.
_SERVER_ROOTS = {"torch", "numpy", "transformers", "accelerate", "nnsight", "einops", "peft", "builtins"}


@contextmanager
def _sys_path_kept():
    """nnsight's local simulation (``remote="local"``) hides local import paths and puts
    them back at the *end* of ``sys.path``, which changes what later imports (and
    spawned processes) find; keep the order as it was."""
    saved = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = saved


class NDIFKeyMissing(ValueError):
    """``remote=True`` without an NDIF API key in the environment."""


class _IdsOnlyTokenizer:
    """Stand-in tokenizer for a LoadedModel whose tokenizer is not a transformers one
    (tests build models from configs). The backend only ever passes token ids, so the
    pipeline nnsight builds needs nothing more than these attributes."""

    def __init__(self, pad_token_id: int | None):
        self.pad_token_id = pad_token_id
        self.pad_token = "<pad>"
        self.eos_token = "<eos>"
        self.padding_side = "right"


def wrap_model(loaded: LoadedModel):
    """``TransformersModel`` around the already loaded module (nothing is loaded again).

    nnsight's wrapper sets its tokenizer's ``padding_side`` to ``"left"`` (and a missing
    pad token to EOS); the harness's own tokenizer is put back as it was, so wrapping
    changes nothing outside this backend."""
    tokenizer = loaded.tokenizer
    try:
        from transformers import PreTrainedTokenizerBase

        real = isinstance(tokenizer, PreTrainedTokenizerBase)
    except ImportError:  # pragma: no cover
        real = False
    # A weightless model stays on the meta device (the pipeline nnsight builds would move it).
    where = {"device": "meta"} if loaded.weightless else {}
    if not real:
        tokenizer = _IdsOnlyTokenizer(getattr(tokenizer, "pad_token_id", None))
        return TransformersModel(loaded.model, tokenizer=tokenizer, task="text-generation", **where)
    padding_side, pad_token = tokenizer.padding_side, tokenizer.pad_token
    try:
        return TransformersModel(loaded.model, tokenizer=tokenizer, task="text-generation", **where)
    finally:
        tokenizer.padding_side = padding_side
        if pad_token is None:
            tokenizer.pad_token = None


def ndif_api_key() -> str:
    """The NDIF API key from the environment, or a clear error."""
    for var in API_KEY_VARS:
        key = os.environ.get(var, "").strip()
        if key:
            return key
    raise NDIFKeyMissing(
        "remote=True (--remote) runs the model on NDIF and needs an NDIF API key: set the "
        f"environment variable {API_KEY_VARS[0]} (or {API_KEY_VARS[1]}) to your key. Get a key at "
        f"{API_KEY_URL}. To check the remote code path without a key, use remote='local'."
    )


# ----------------------------------------------------------------- trace body helpers
# Called from inside the trace body; on a remote run they travel by value with it.


def _first_input(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def _with_first_input(args, kwargs, new):
    if args:
        return (new, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": new}


def _block_output(value):
    return value[0] if isinstance(value, tuple) else value


def _replace_output(value, new):
    return (new, *value[1:]) if isinstance(value, tuple) else new


def _carries_grad(obj: Any, depth: int = 0) -> bool:
    """Whether ``obj`` is, or directly holds, a tensor that requires grad."""
    if isinstance(obj, torch.Tensor):
        return obj.requires_grad
    if depth > 2:
        return False
    if isinstance(obj, (list, tuple, set)):
        return any(_carries_grad(o, depth + 1) for o in obj)
    if isinstance(obj, dict):
        return any(_carries_grad(o, depth + 1) for o in obj.values())
    return False


def _edit_carries_grad(fn) -> bool:
    """An edit that closes over (or defaults to) a tensor requiring grad: integrated
    gradients' ``lambda _h, _inp, path=path: path``."""
    seen = list(getattr(fn, "__defaults__", None) or ()) + list((getattr(fn, "__kwdefaults__", None) or {}).values())
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            seen.append(cell.cell_contents)
        except ValueError:  # empty cell
            pass
    return any(_carries_grad(v) for v in seen)


class NNsightBackend(Backend):
    """nnsight traces on the loaded model, locally, on NDIF (``remote=True``) or through
    nnsight's local simulation of the remote path (``remote="local"``)."""

    name = "nnsight"

    def __init__(self, loaded: LoadedModel, remote: bool | str = False):
        super().__init__(loaded)
        if remote not in (False, True, "local", None):
            raise ValueError(f"remote must be False, True or 'local', not {remote!r}.")
        self.remote: bool | str = remote or False
        if self.remote is True:
            key = ndif_api_key()
            if loaded.spec.source != "hub" or not loaded.spec.repo_id:
                raise ValueError(
                    f"remote=True runs a model NDIF hosts, named by its hub id; {loaded.spec.name!r} is a "
                    f"{loaded.spec.source} model. Use a hub model (e.g. llama-3.1-70b) or run locally."
                )
            if loaded.spec.control is not None:
                raise ValueError(
                    f"{loaded.spec.name!r} is an untrained control: NDIF hosts only the trained weights of "
                    f"{loaded.spec.repo_id}. Run the control locally, or pass --no-control."
                )
            from nnsight.schema.config import CONFIG

            CONFIG.API.APIKEY = key  # what nnsight's RemoteBackend sends
        if loaded.weightless and self.remote is not True:
            raise ValueError(
                f"{loaded.spec.name} was built without weights for NDIF: only remote=True can run it "
                f"(remote={self.remote!r} would run it here, where it has no weights)."
            )
        # The loaded module itself, so nnsight never loads anything: with --remote it is the
        # meta-device tree of load_remote_model, by which nnsight addresses NDIF's copy.
        self.nn_model = wrap_model(loaded)
        if self.remote is True:
            # The remote model key: the hub id (and pinned revision) NDIF knows it by.
            self.nn_model.repo_id = loaded.spec.repo_id
            self.nn_model.revision = loaded.spec.revision
        if self.remote:
            nnsight.register(__name__.split(".")[0])  # this package: the trace body's helpers
        adapter = loaded.adapter
        self._blocks = list(self.nn_model.get(adapter.blocks))
        self._final_norm = self.nn_model.get(adapter.final_norm)
        if self.parallel:
            self._sublayer = [b.get(adapter.attention) for b in self._blocks]
        else:
            self._sublayer = [b.get(adapter.mlp_residual) for b in self._blocks]

    @property
    def identity(self) -> dict:
        return {"backend": "nnsight-remote" if self.remote is True else "nnsight"}

    # ------------------------------------------------------------------ helpers

    def _trace_kwargs(self) -> dict:
        return {"remote": self.remote} if self.remote else {}

    def _prepare_edits(self, edits) -> dict:
        edits = self._check_edits(edits)
        if self.remote:
            if torch.is_grad_enabled() and any(_edit_carries_grad(fn) for fn in edits.values()):
                where = "NDIF" if self.remote is True else "NDIF (simulated by remote='local')"
                raise NotImplementedError(
                    f"Gradients do not cross the network: on {where} the edits run on the server and "
                    "the residuals come back as plain tensors with no autograd graph, so "
                    "torch.autograd.grad through record.resid cannot work (integrated gradients need a "
                    "local backend: --backend nnsight without --remote, or --backend transformers)."
                )
            for fn in edits.values():
                root = (getattr(fn, "__module__", None) or "").split(".")[0]
                if root and root != "__main__" and root not in _SERVER_ROOTS and root not in sys.stdlib_module_names:
                    nnsight.register(root)
        return edits

    def _model_inputs(self, ids: torch.Tensor, mask: torch.Tensor | None, logits_to_keep: torch.Tensor) -> dict:
        device = self.loaded.device
        inputs = {"input_ids": ids.to(device), "logits_to_keep": logits_to_keep.to(device), "use_cache": False}
        if mask is not None:
            inputs["attention_mask"] = mask.to(device)
        return inputs

    # ------------------------------------------------------------------ forward

    def forward(self, ids, mask=None, edits=None, sublayers=False) -> ForwardRecord:
        edits = self._prepare_edits(edits)
        blocks, final_norm, parallel = self._blocks, self._final_norm, self.parallel
        sub = self._sublayer if sublayers else None
        n = len(blocks)
        # The head on the last position only (what HookBackend's logits_to_keep=1 keeps);
        # a tensor, so that nnsight passes the inputs through untouched (module docstring).
        inputs = self._model_inputs(ids, mask, torch.tensor([ids.shape[1] - 1]))
        resid = mids = None
        with _sys_path_kept(), self.nn_model.trace(**inputs, **self._trace_kwargs()):
            resid = nnsight.save([])
            mids = nnsight.save([])
            for l in range(n):
                args, kwargs = blocks[l].inputs
                h = _first_input(args, kwargs)
                if l == 0 and 0 in edits:
                    h = edits[0](h, None)
                    blocks[0].inputs = _with_first_input(args, kwargs, h)
                resid.append(h)
                if sub is not None and parallel:
                    mids.append(_block_output(sub[l].output))
                elif sub is not None:
                    sub_args, sub_kwargs = sub[l].inputs
                    mids.append(_first_input(sub_args, sub_kwargs))
                if l + 1 in edits:
                    out = blocks[l].output
                    blocks[l].output = _replace_output(out, edits[l + 1](_block_output(out), h))
            norm_args, norm_kwargs = final_norm.inputs
            resid.append(_first_input(norm_args, norm_kwargs))
        return ForwardRecord(
            resid=list(resid),
            parallel=self.parallel,
            mid=list(mids) if sublayers and not self.parallel else None,
            attn_out=list(mids) if sublayers and self.parallel else None,
        )

    # ------------------------------------------------------------------ read_rows

    def read_rows(self, ids, mask, batch_idx, pos_idx):
        blocks, final_norm = self._blocks, self._final_norm
        n = len(blocks)
        # As HookBackend: the head runs on the read rows only (a boolean logits_to_keep
        # returns them flattened in row-major order).
        keep = torch.zeros(ids.shape, dtype=torch.bool)
        keep[batch_idx, pos_idx] = True
        kept_flat = keep.flatten().nonzero().squeeze(1)
        row = torch.searchsorted(kept_flat, batch_idx * ids.shape[1] + pos_idx)
        inputs = self._model_inputs(ids, mask, keep)
        device = self.loaded.device
        b_idx, p_idx = batch_idx.to(device), pos_idx.to(device)
        captured = logits = None
        with _sys_path_kept(), self.nn_model.trace(**inputs, **self._trace_kwargs()) as tracer:
            captured = nnsight.save([])
            for l in range(n):
                h = _first_input(*blocks[l].inputs)
                captured.append(h[b_idx.to(h.device), p_idx.to(h.device)])
            h = _first_input(*final_norm.inputs)
            captured.append(h[b_idx.to(h.device), p_idx.to(h.device)])
            full = tracer.result.logits
            logits = nnsight.save(full[row.to(full.device)])
        return list(captured), logits

