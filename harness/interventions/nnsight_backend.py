"""Moved: the nnsight backend lives in :mod:`harness.backends.nnsight_backend`. This module
re-exports it for existing importers; new code imports from there (or builds a backend
with :func:`harness.backends.make_backend`)."""

from harness.backends.nnsight_backend import (
    API_KEY_URL,
    API_KEY_VARS,
    NDIFKeyMissing,
    NNsightBackend,
    _block_output,
    _replace_output,
    ndif_api_key,
    wrap_model,
)

__all__ = [
    "API_KEY_URL",
    "API_KEY_VARS",
    "NDIFKeyMissing",
    "NNsightBackend",
    "_block_output",
    "_replace_output",
    "ndif_api_key",
    "wrap_model",
]
