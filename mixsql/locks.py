"""Fill locks: a one-byte range lock of one file per key, so that of the processes wanting the same
missing entry one makes it and the others wait. Range locks belong to a process (the kernel drops
them when it dies; a forked child holds none of its parent's), so each process opens the file
itself; callers serialise their own threads.

In-use holds: a shared ``flock`` on a directory's marker file (a plan's ``plan.json``, a cache's
``cache.json``, a dataset version's ``files.parquet``) while a process uses it; ``mixsql gc``
removes a directory only if it can take that lock exclusively, without waiting. Neither side ever
blocks the other."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import typing as t
from pathlib import Path


class FillLocks:
    """The range locks of ``directory/.fill.lock``; a key is a hex digest (its first 48 bits place it)."""

    def __init__(self, directory: Path, mode: int = 0o600) -> None:
        self.path = Path(directory) / ".fill.lock"
        self.mode = mode
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int | None:
        if self._fd is None or self._pid != os.getpid():
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None  # one inherited from the parent stays open: closing it would drop nothing here
            self._pid = os.getpid()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, self.mode)
            except OSError:
                return None
        return self._fd

    def reset(self) -> None:
        """The directory was removed: the file is opened again when next needed."""
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def try_lock(self, key: str) -> bool:
        """Take the key's lock without waiting: False only if another process holds it (a lock that
        cannot be had for another reason counts as taken: a cache is never a reason to fail)."""
        fd = self._file()
        if fd is None:
            return True
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(key[:12], 16))
            return True
        except OSError as e:
            return e.errno not in (errno.EACCES, errno.EAGAIN)

    def wait(self, key: str) -> None:
        """Wait until no other process holds the key's lock."""
        fd = self._file()
        if fd is None:
            return
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, int(key[:12], 16))
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, int(key[:12], 16))
        except OSError:
            pass

    def unlock(self, key: str) -> None:
        if self._fd is None or self._pid != os.getpid():
            return
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, int(key[:12], 16))
        except OSError:
            pass


def hold(path: str | os.PathLike[str]) -> t.BinaryIO | None:
    """``path`` opened with a shared lock, held while the returned file stays open (a forked child
    shares it): a process using the directory ``path`` belongs to says so, and ``remove_unused``
    leaves it alone. Never waits: None when that directory is being removed at this moment (it then
    no longer is where it was). FileNotFoundError when there is no such file. On a filesystem
    without flock the file comes back unlocked: gc cannot see the use there, but nothing fails."""
    fh = open(path, "rb")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            fh.close()
            return None
        return fh  # a filesystem without flock (ENOLCK, EOPNOTSUPP): used unprotected, never refused
    try:
        same = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino  # not renamed away before the lock
    except FileNotFoundError:
        same = False
    if not same:
        fh.close()
        return None
    return fh


def remove_unused(directory: Path, marker: str, trash: Path) -> bool:
    """Remove ``directory`` unless a process holds its file ``marker`` (``hold``): the exclusive lock
    is tried without waiting, the directory renamed to ``trash`` (on the same filesystem) under it,
    then deleted. False, with nothing changed, when it is in use; True when it is gone."""
    try:
        fh = open(directory / marker, "rb")
    except FileNotFoundError:
        fh = None  # a directory without its marker (torn): nothing can hold it
    try:
        if fh is not None and not _exclusive(fh):
            return False
        os.rename(directory, trash)
    finally:
        if fh is not None:
            fh.close()
    shutil.rmtree(trash, ignore_errors=True)
    return True


def unused(path: Path) -> bool:
    """No process holds ``path``'s flock (``hold``, or a writer's lock): checked without waiting."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return True
    with fh:
        return _exclusive(fh)  # closing the file drops the lock again


def _exclusive(fh: t.BinaryIO) -> bool:
    """Take ``fh``'s flock exclusively if no one holds it, without waiting."""
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
