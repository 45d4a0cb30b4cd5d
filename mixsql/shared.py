"""Decoded row groups shared by the DataLoader workers of one process, in shared memory.

Worker w of n yields rank batches w, w+n, ... (``world``), and every batch spans the rank's
partitions, so without sharing every worker decodes every row group the rank reads: n decodes of
each. Here the first worker to need a row group claims it (a one-byte range lock of a lock file,
released by the kernel if the worker dies), decodes it and writes it as an Arrow IPC file under a
temporary name, renamed into place; the others wait on the lock, then map the file (no copy: a
mapping stays valid after the file is deleted). A row group is thus decoded about once per rank
for any number of workers, and the batches are the same as without sharing. A worker keeps such a
block only while its announced reads need it (``Reader._release``): read again later, it is mapped
back from here, so the workers' memory of blocks read before is this directory, not a copy each.

The directory (``/dev/shm/mixsql-blocks-<pid>-<token>``) belongs to the process that made the
dataset: it removes the directory at exit, and removes those of owners that no longer run. What
is written is bounded (``limit``): the least recently written entries go first. A mapped entry
that is removed stays readable; one that is missing is decoded again. Entries are keyed by file,
version, row group and columns, so a changed file is never served from here.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import secrets
import shutil
import threading
import typing as t
from pathlib import Path

import pyarrow as pa

from mixsql.locks import FillLocks

SHM = Path("/dev/shm")
DEFAULT_LIMIT = 512 << 20  # the row groups a few reads of every worker span, with room
_OWNED = re.compile(r"^mixsql-blocks-(\d+)-[0-9a-f]{16}$")
_ENTRY = re.compile(r"^[0-9a-f]{64}\.arrow$")


_mine: tuple[int, str] | None = None  # (pid, directory) of this process's datasets


def new_directory() -> str | None:
    """The directory where the DataLoader workers of datasets made in this process share decoded
    row groups (one per process: entries are keyed by file, version, row group and columns; created
    when first written, removed at this process's exit), or None where there is no shared memory or
    sharing is turned off (``MIXSQL_SHARED_BLOCKS=0``)."""
    global _mine
    if os.environ.get("MIXSQL_SHARED_BLOCKS", "1") == "0" or not SHM.is_dir() or not os.access(SHM, os.W_OK):
        return None
    if _mine is None or _mine[0] != os.getpid() or not _mine[1].startswith(str(SHM)):
        _sweep()
        path = SHM / f"mixsql-blocks-{os.getpid()}-{secrets.token_hex(8)}"
        atexit.register(shutil.rmtree, path, True)
        _mine = (os.getpid(), str(path))
    return _mine[1]


def _sweep() -> None:
    """Remove the directories of owners that no longer run (killed before their exit handlers)."""
    try:
        names = os.listdir(SHM)
    except OSError:
        return
    for name in names:
        match = _OWNED.match(name)
        if match is None:
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(SHM / name, ignore_errors=True)
        except (PermissionError, OverflowError):
            continue


class SharedBlocks:
    """The shared decoded row groups of one directory, as one process sees them."""

    def __init__(self, root: str, limit: int = DEFAULT_LIMIT) -> None:
        self.root = Path(root)
        self.limit = limit
        self._locks = FillLocks(self.root)
        self._threads = threading.Lock()  # range locks belong to the process: its threads take turns here
        self._written = 0
        self.decoded = 0  # row groups this process decoded and shared
        self.mapped = 0  # row groups it took from another's decoding

    @staticmethod
    def key(url: str, version: str, group: int, columns: t.Sequence[str]) -> str:
        return hashlib.sha256("\0".join([url, version, str(group), *columns]).encode()).hexdigest()

    def get(self, key: str) -> pa.Table | None:
        """The entry, mapped; None if it is not there (or unreadable, then removed)."""
        path = self.root / f"{key}.arrow"
        try:
            with pa.memory_map(str(path)) as source:
                return pa.ipc.open_file(source).read_all()
        except FileNotFoundError:
            return None
        except (pa.ArrowInvalid, OSError):
            _unlink(path)
            return None

    def fill(self, keys: t.Sequence[str], decode: t.Callable[[list[int]], list[pa.Table]]) -> list[pa.Table]:
        """The tables of ``keys``: mapped where present; the missing ones that no other process is
        decoding are decoded here (``decode`` gets their positions in ``keys``) and shared; those
        another process is decoding are waited for (and decoded here if it gave up)."""
        out: list[pa.Table | None] = [self.get(k) for k in keys]
        missing = [i for i, table in enumerate(out) if table is None]
        if not missing:
            self.mapped += len(keys)
            return t.cast(list[pa.Table], out)
        with self._threads:
            mine, theirs = [], []
            for i in missing:
                (mine if self._locks.try_lock(keys[i]) else theirs).append(i)
            try:
                todo = []
                for i in mine:
                    found = self.get(keys[i])  # written between the first look and the lock
                    if found is None:
                        todo.append(i)
                    else:
                        out[i] = found
                if todo:
                    for i, table in zip(todo, decode(todo)):
                        out[i] = table
                        self._put(keys[i], table)
                    self.decoded += len(todo)
            finally:
                for i in mine:
                    self._locks.unlock(keys[i])
            for i in theirs:  # another process decodes it: wait for its lock, then map what it wrote
                self._locks.wait(keys[i])
                out[i] = self.get(keys[i])
            late = [i for i in theirs if out[i] is None]
            if late:  # it gave up (or its entry is already gone): decoded here
                for i, table in zip(late, decode(late)):
                    out[i] = table
        self.mapped += len(keys) - len(todo) - len(late)
        return t.cast(list[pa.Table], out)

    def _put(self, key: str, table: pa.Table) -> None:
        path = self.root / f"{key}.arrow"
        partial = path.with_name(f"{path.name}.{os.getpid()}.part")
        try:
            with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            os.replace(partial, path)
        except OSError:  # full, or removed under us: only slower
            _unlink(partial)
            return
        self._written += table.nbytes
        if self._written > self.limit // 8:
            self._written = 0
            self.evict()

    def evict(self) -> None:
        """Remove the oldest entries until what remains is at most ``limit`` (only entry names)."""
        try:
            entries = [(e.stat().st_mtime, e.stat().st_size, e.path) for e in os.scandir(self.root)
                       if _ENTRY.match(e.name)]
        except OSError:
            return
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.limit:
                break
            _unlink(Path(path))
            total -= size


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
