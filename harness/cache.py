"""Content-addressed on-disk cache of named arrays with their metadata: traces
(``harness.trace`` turns a ``LayerTrace`` into arrays and back) and intervention results.

The key is a digest of everything an entry depends on (for a trace: engine version,
model id, revision and dtype, lens and its hash, dataset name and content hash,
positions, reduction spec). Entries are written atomically (:func:`harness.files.atomic_path`),
so a reader never sees half an entry; each entry carries a digest of its own arrays, so a
truncated or corrupted file is detected, removed and recomputed. A per-key lock
(:func:`harness.files.file_lock`) makes a second process wait for the first instead of
computing the same entry again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np

from harness.files import file_lock, write_bytes

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

    def get(self, key: dict) -> tuple[dict, dict[str, np.ndarray]] | None:
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

    def put(self, key: dict, arrays: dict[str, np.ndarray], meta: dict | None = None) -> Path:
        """Store arrays atomically; ``meta`` must hold the key (it is checked on read)."""
        meta = {"key": key} if meta is None else meta
        meta_json = json.dumps(meta, sort_keys=True)
        buf = io.BytesIO()
        np.savez(buf, **arrays, **{_META: np.array(meta_json), _DIGEST: np.array(_arrays_digest(meta_json, arrays))})
        return write_bytes(self.path(key), buf.getvalue())

    def fetch(self, key: dict, compute) -> tuple[dict[str, np.ndarray], bool]:
        """Arrays for ``key``: from the cache, else ``compute()`` once across processes and
        stored. Returns (arrays, whether it was a cache hit)."""
        hit = self.get(key)
        if hit is not None:
            return hit[1], True
        with self.lock(key):
            hit = self.get(key)
            if hit is not None:
                return hit[1], True
            arrays = compute()
            self.put(key, arrays)
        return arrays, False

    def lock(self, key: dict):
        """Exclusive per-key lock across processes (a ``with`` block)."""
        return file_lock(self.path(key))
