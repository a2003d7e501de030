"""Moved: backends live in :mod:`harness.backends` (``base``: Backend, ForwardRecord and
edits; ``hooks``: HookBackend; ``nnsight_backend``: NNsightBackend; ``make_backend``).
This module re-exports them for existing importers; new code imports from there."""

from harness.backends import BACKENDS, make_backend
from harness.backends.base import (
    Backend,
    Edit,
    ForwardRecord,
    _first_input,
    _replace_output,
    _with_first_input,
    block_output,
)
from harness.backends.hooks import HookBackend

__all__ = [
    "BACKENDS",
    "Backend",
    "Edit",
    "ForwardRecord",
    "HookBackend",
    "_first_input",
    "_replace_output",
    "_with_first_input",
    "block_output",
    "make_backend",
]
