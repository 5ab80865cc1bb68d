"""Claims: which process is computing which structure, so that featurisers sharing a store share the work."""

from __future__ import annotations

import errno
import hashlib
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hacknip.store.files import fcntl, file_mode

CLAIMS_FOLDER = "claims"
CLAIMS_FILE = "claims.lock"


@dataclass
class Claims:
    """Exclusive, advisory locks on structure keys: one byte of ``claims/claims.lock`` each (a POSIX byte-range lock at
    an offset drawn from the key), so that claiming creates no file. The operating system drops a process's locks when
    it dies, so a killed featuriser never blocks the others. Two keys sharing an offset (odds 2^-60) only make one wait
    for the other. The locks belong to the process: two featurisations in threads of one process do not exclude each
    other (at worst they compute a structure twice, never wrongly). Holding a claim does not mean the structure is
    still missing: check the store after claiming (another process may have just finished it)."""

    folder: Path | None
    """None where claims are not supported (a store on object storage)."""
    held: set[str] = field(default_factory=set)
    supported: bool = fcntl is not None
    """False where the file system refuses locks (some network file systems): then every key is taken."""
    _handle: int | None = None

    def take(self, keys: Iterable[str]) -> list[str]:
        """Claim what no other process holds; returns the keys now held by this one."""
        keys = list(keys)
        if not self.supported:
            return keys
        taken = []
        for key in keys:
            if key not in self.held:
                try:
                    fcntl.lockf(self._lock_file(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _lock_offset(key))
                except OSError as error:
                    if error.errno in (errno.EACCES, errno.EAGAIN):  # another process holds it
                        continue
                    self.supported = False  # ENOLCK, EOPNOTSUPP: no locks on this file system
                    warnings.warn(f"{self.folder}: the file system refuses locks ({error}); processes featurising into "
                                  f"this store at once may compute a structure twice", stacklevel=2)
                    return keys
                self.held.add(key)
            taken.append(key)
        return taken

    def release(self, keys: Iterable[str]) -> None:
        for key in keys:
            if key in self.held:
                self.held.discard(key)
                fcntl.lockf(self._handle, fcntl.LOCK_UN, 1, _lock_offset(key))
        if not self.held and self._handle is not None:
            os.close(self._handle)  # closing drops every lock of this process on the file: only when none is held
            self._handle = None

    def _lock_file(self) -> int:
        if self._handle is None:
            self.folder.mkdir(exist_ok=True)
            self._handle = os.open(self.folder / CLAIMS_FILE, os.O_RDWR | os.O_CREAT, file_mode())
        return self._handle


def _lock_offset(key: str) -> int:
    """60 bits drawn from the key: a byte offset well within a 64-bit file offset."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 4
