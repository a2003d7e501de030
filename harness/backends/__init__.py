"""How a forward pass is run and read: backends (see :mod:`harness.backends.base`).

:func:`make_backend` builds one by name; the nnsight backend (and nnsight itself) is
imported only when it is asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.backends.base import Backend
    from harness.models.loading import LoadedModel

BACKENDS = ("transformers", "nnsight")


def make_backend(name: str, loaded: "LoadedModel", remote: bool = False) -> "Backend":
    if loaded.weightless and not (name == "nnsight" and remote is True):
        raise ValueError(
            f"{loaded.spec.name} was built without weights for NDIF (load_remote_model): it runs only through "
            "--backend nnsight --remote. Load it with load_model to run it here."
        )
    if name == "transformers":
        if remote:
            raise ValueError("--remote runs through nnsight on NDIF: add --backend nnsight.")
        from harness.backends.hooks import HookBackend

        return HookBackend(loaded)
    if name == "nnsight":
        from harness.backends.nnsight_backend import NNsightBackend

        return NNsightBackend(loaded, remote=remote)
    raise ValueError(f"Unknown backend {name!r}; available: {', '.join(BACKENDS)}.")
