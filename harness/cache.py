"""Content-addressed on-disk cache of LayerTraces and of intervention results.

The key is a digest of everything a trace depends on (engine version, model id,
revision and dtype, lens and its hash, dataset name and content hash, positions,
reduction spec). Entries are written to a temporary file and renamed into place, so a
reader never sees half an entry; each entry carries a digest of its own arrays, so a
truncated or corrupted file is detected, removed and recomputed. A per-key lock file
makes a second process wait for the first instead of computing the same trace again.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from harness.trace import LayerTrace

log = logging.getLogger(__name__)

_META = "__meta__"
_DIGEST = "__digest__"


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _arrays_digest(meta_json: str, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class TraceCache:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, key: dict) -> Path:
        digest = key_digest(key)
        return self.root / digest[:2] / f"{digest}.npz"

    def get(self, key: dict) -> LayerTrace | None:
        entry = self.get_arrays(key)
        return None if entry is None else LayerTrace(meta=entry[0], **entry[1])

    def put(self, key: dict, trace: LayerTrace) -> Path:
        return self.put_arrays(key, trace.arrays(), trace.meta)

    def get_arrays(self, key: dict) -> tuple[dict, dict[str, np.ndarray]] | None:
        """(meta, arrays) of an intact entry, else None (a corrupt entry is removed)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            meta_json = str(arrays.pop(_META))
            stored = str(arrays.pop(_DIGEST))
            if stored != _arrays_digest(meta_json, arrays):
                raise ValueError("digest mismatch")
            meta = json.loads(meta_json)
            if meta.get("key") != json.loads(json.dumps(key)):
                raise ValueError("entry holds a different key")
            return meta, arrays
        except Exception as err:  # a corrupt entry is recomputed, never trusted
            log.warning("Trace cache entry %s is unreadable (%s); recomputing it.", path, err)
            path.unlink(missing_ok=True)
            return None

    def put_arrays(self, key: dict, arrays: dict[str, np.ndarray], meta: dict | None = None) -> Path:
        """Store arrays atomically; ``meta`` must hold the key (it is checked on read)."""
        meta = {"key": key} if meta is None else meta
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta_json = json.dumps(meta, sort_keys=True)
        buf = io.BytesIO()
        np.savez(buf, **arrays, **{_META: np.array(meta_json), _DIGEST: np.array(_arrays_digest(meta_json, arrays))})
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def fetch(self, key: dict, compute) -> tuple[dict[str, np.ndarray], bool]:
        """Arrays for ``key``: from the cache, else ``compute()`` once across processes and
        stored. Returns (arrays, whether it was a cache hit)."""
        hit = self.get_arrays(key)
        if hit is not None:
            return hit[1], True
        with self.lock(key):
            hit = self.get_arrays(key)
            if hit is not None:
                return hit[1], True
            arrays = compute()
            self.put_arrays(key, arrays)
        return arrays, False

    @contextmanager
    def lock(self, key: dict) -> Iterator[None]:
        """Exclusive per-key lock across processes (advisory, via flock)."""
        path = self.path(key).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
