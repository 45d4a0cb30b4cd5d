"""Atomic files and the one lock: what readers see is the old file or the whole new one, never part.

``replacing(path)`` gives a temporary name beside ``path`` and renames it over ``path`` once the
block succeeds (removing it otherwise); ``write_text`` is that for a string, flushed to disk.
``locked(path)`` holds an exclusive ``flock`` on ``path``, polling until ``timeout``. Readers never
take a lock (the catalog's design): only writers among themselves.
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
    error raised once ``timeout`` seconds have passed."""
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout
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
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
