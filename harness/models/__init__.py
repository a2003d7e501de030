"""Named models, loading, and one adapter per architecture family."""

from harness.models.adapters import ADAPTERS, ArchitectureAdapter, UnsupportedArchitecture, adapter_for
from harness.models.loading import LoadedModel, ModelFileMissing, RemoteOnly, load_model, load_remote_model, model_from_config
from harness.models.registry import DEFAULT_MODEL, REGISTRY, ModelSpec, UnknownModel, resolve

__all__ = [
    "ADAPTERS",
    "ArchitectureAdapter",
    "DEFAULT_MODEL",
    "LoadedModel",
    "ModelFileMissing",
    "ModelSpec",
    "REGISTRY",
    "RemoteOnly",
    "UnknownModel",
    "UnsupportedArchitecture",
    "adapter_for",
    "load_model",
    "load_remote_model",
    "model_from_config",
    "resolve",
]
