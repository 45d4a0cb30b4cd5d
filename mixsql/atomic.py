"""Atomic files and the one lock: what readers see is the old file or the whole new one, never part.

``replacing(path)`` gives a temporary name beside ``path`` and renames it over ``path`` once the
block succeeds (removing it otherwise); ``write_text`` is that for a string, flushed to disk.
``locked(path)`` holds an exclusive ``flock`` on ``path``, polling until ``timeout`` (``remove_lock``
unlinks one no process holds, which a process that had opened it notices). Readers never
take a lock (the catalog's design): only writers among themselves. ``writing(directory, what)``
turns a full, read-only or forbidden filesystem met while writing into an error that says so.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
import typing as t
import uuid
from pathlib import Path


_CANNOT_WRITE = {errno.ENOSPC: "the filesystem is full", errno.EDQUOT: "the disk quota is used up",
                 errno.EROFS: "the filesystem is read-only", errno.EACCES: "permission denied",
                 errno.EPERM: "permission denied"}


@contextlib.contextmanager
def writing(directory: str | os.PathLike[str], what: str) -> t.Iterator[None]:
    """Writing ``what`` into ``directory``: a full, read-only or forbidden filesystem is a
    ``MixSQLError`` naming both (the writer removes what it had begun, as on any error)."""
    from mixsql.errors import MixSQLError

    try:
        yield
    except OSError as e:
        why = _CANNOT_WRITE.get(e.errno or 0)
        named = e.filename is not None and not os.path.abspath(os.fspath(e.filename)).startswith(
            os.path.abspath(os.fspath(directory)))
        if why is None or named:  # not a write, or of another file (a source that cannot be read)
            raise
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        raise MixSQLError(f"cannot write {what} in {directory}: {why} ({e.strerror or e})",
                          hint="free space there (`mixsql gc` removes unused plans, caches and superseded versions)"
                               if full else "make it writable, or use a directory that is") from None


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> t.Iterator[Path]:
    """A temporary path beside ``path``, renamed over it when the block succeeds."""
    final = Path(path)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: str | os.PathLike[str], text: str, *, sync: bool = False) -> None:
    """Replace ``path`` with ``text`` atomically (``sync``: on disk before the rename)."""
    with replacing(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], *, timeout: float, busy: t.Callable[[], Exception],
           ready: t.Callable[[], bool] = lambda: False) -> t.Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if missing). Yields True when held; False, without
    the lock, as soon as ``ready()`` says another holder already did the work. ``busy()`` is the
    error raised once ``timeout`` seconds have passed. A lock file that ``remove_lock`` unlinked
    between opening and locking it is not the lock any more: the file at ``path`` is tried again."""
    deadline = time.monotonic() + timeout
    while True:
        with open(path, "a+") as fh:
            while True:
                if ready():
                    yield False
                    return
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                        raise busy() from None
                    time.sleep(0.05)
            try:
                current = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                current = False
            if not current:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                continue
            try:
                yield True
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return


def remove_lock(path: str | os.PathLike[str]) -> bool:
    """Unlink the lock file ``path`` if no process holds it (holding it meanwhile, so whoever opened
    it before sees it is gone and takes the new one, ``locked``); False if held or missing."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        try:
            if os.stat(path).st_ino != os.fstat(fh.fileno()).st_ino:
                return False
            os.unlink(path)
            return True
        except FileNotFoundError:
            return False
