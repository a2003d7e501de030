"""One way to write a file: atomically, and, where processes share it, under a lock.

- :func:`atomic_path`: write to a unique temporary name in the target's folder, flush it
  to disk and rename it into place; a block that raises leaves nothing at all (neither a
  half-written target nor the temporary file). Readers see the old file or the new one.
- :func:`write_text`, :func:`write_bytes`: the common cases on top of it.
- :func:`atomic_dir`: a folder built under a temporary name and renamed into place
  (a tuned lens, a converted model).
- :func:`file_lock`: a lock across processes (and threads) on a sidecar file
  ``.<name>.lock`` next to ``path``, for read-modify-write updates (claims.json,
  snapshot_checks.json) and for work two processes must not both do (a trace cache
  entry, a tuned lens).

Temporary names start with ``.<name>.``, so they sort next to their target and are
hidden from ``ls``.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp and mkdtemp create files and folders for their owner only; what is written here
# gets the mode a plain open() or mkdir() would have given it.
_UMASK = _umask()
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable, where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and platforms) cannot fsync a folder
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path`` (same suffix, so writers that go by
    it, such as ``np.savez`` or ``savefig``, keep working); when the block succeeds the
    file is synced to disk and renamed to ``path``, else it is removed and the error
    raised. Nothing half-written is ever left at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, _FILE_MODE)
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_text(path: Path | str, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return path


def write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _fsync_tree(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            _fsync_file(Path(root) / name)
        _fsync_dir(Path(root))


@contextmanager
def atomic_dir(path: Path | str, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``path``; fill it in the block. When the
    block succeeds the folder is synced and renamed to ``path``; when it raises, it is
    removed. ``path`` appears complete or not at all.

    If ``path`` already exists (another process built it meanwhile: these folders are
    named by what they hold, so theirs is identical), ours is discarded. With
    ``replace=True`` an existing ``path`` is moved aside and deleted instead, so that
    ours takes its place (the old folder is whole until the moment it is replaced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        os.chmod(tmp, _DIR_MODE)
        yield tmp
        _fsync_tree(tmp)
        old = None
        if replace and path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(path, old)
        try:
            os.rename(tmp, path)
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not path.is_dir():
                raise
            # another process put it there first: keep theirs
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def lock_path(path: Path | str) -> Path:
    """The sidecar lock file of ``path``: ``.<name>.lock`` in its folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def file_lock(path: Path | str) -> FileLock:
    """An exclusive lock on ``path`` across processes and threads, held in a ``with``
    block (on the sidecar :func:`lock_path`; ``path`` itself need not exist). Re-entrant
    within a thread: one lock object per lock file in a process."""
    lock = lock_path(path).absolute()
    lock.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock), is_singleton=True)
