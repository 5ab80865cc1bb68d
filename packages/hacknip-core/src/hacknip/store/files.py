"""The files of the feature store: where it lives, atomic writes that follow the umask, and advisory locks."""

from __future__ import annotations

import errno
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: no locks; concurrent processes may repeat work (never wrongly)
    fcntl = None

HOME_ENV = "HACKNIP_HOME"
DAMAGED_FOLDER = "damaged"
GEOMETRIES_FOLDER = "geometries"
"""Relaxed molecules (hacknip.data.molecules) beside the backbone folders of a local store: not a backbone's."""


class DamagedShardWarning(UserWarning):
    """A feature-store file could not be read; it was moved aside and its structures will be computed again."""


def hacknip_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "hacknip")


def file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` under a temporary name in its folder and rename it: readers see the whole file or none."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        put_in_place(Path(temporary), path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def put_in_place(temporary: Path, path: Path) -> None:
    """Make a finished temporary file ``path``: flushed to disk, with the umask's permissions (temporary files are
    owner-only; a store may be shared by a group), renamed over it in one step."""
    handle = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
    os.chmod(temporary, file_mode())
    os.replace(temporary, path)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:48].strip("_") or "backbone"


@contextmanager
def exclusive(path: Path, wait: bool = False) -> Iterator[bool]:
    """Try to hold an exclusive lock on ``path`` (created if absent), waiting for it only with ``wait``: yields whether
    it is held. Where
    the file system has no locks (Windows, some network file systems) it yields True: the work done under it (indexing,
    compaction) only repeats or wastes space when two processes do it at once, never loses or mixes records."""
    if fcntl is None:
        yield True
        return
    handle = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except OSError as error:
            held = error.errno not in (errno.EACCES, errno.EAGAIN)  # ENOLCK, EOPNOTSUPP: no locks here
        yield held
    finally:
        os.close(handle)  # drops the lock


_seek_lock = threading.Lock()


def preadv(handle: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` at ``offset`` without moving the file position (where the system has no ``preadv``,
    Windows, a seek and a read under a lock)."""
    if hasattr(os, "preadv"):
        return os.preadv(handle, [view], offset)
    with _seek_lock:
        os.lseek(handle, offset, os.SEEK_SET)
        data = os.read(handle, len(view))
    view[:len(data)] = data
    return len(data)
