"""Bytes of remote files (object stores through fsspec): storage options, ranged reads retried with
backoff, a disk cache of blocks shared by every process on a node, and counters of what was fetched.

Settings are per process (``configure``); a torch dataset carries them to its DataLoader workers in
memory. Storage options hold credentials, so nothing here writes them anywhere: not in a repr, a
log line, an error message or a cache entry.

The cache keys an entry by (URL, the file's registered version, byte range), so a changed source
never serves old bytes; an entry is written to a temporary name and renamed into place, and carries
a digest of its bytes, so a process killed mid-write leaves no entry, and a damaged one is found,
deleted and fetched again. Eviction (least recently used, under ``cache_bytes``) only ever deletes
files whose names the cache itself gives its entries, inside its own directory.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import os
import random
import re
import threading
import time
import typing as t
from pathlib import Path

from mixsql.errors import DataError, MixSQLError
from mixsql.locks import FillLocks

DEFAULT_CACHE_BYTES = 16 << 30
DEFAULT_RETRIES = 5
DEFAULT_READ_AHEAD = 8  # concurrent background fetches of the next blocks of a remote stream
DEFAULT_DEPTH = 2  # how many reads ahead of the current one a remote stream fetches (memory: depth x a read)
BACKOFF_SECONDS = 0.1  # first wait; doubles per attempt, with jitter, capped at BACKOFF_CAP
BACKOFF_CAP = 4.0
FILL_WAIT_SECONDS = 60.0  # waiting for another process's fetch of the same block, at most
_ENTRY = re.compile(r"^[0-9a-f]{64}\.blk$")
_PARTIAL = re.compile(r"^[0-9a-f]{64}\.blk\.[0-9]+\.[0-9a-f]{8}\.part$")
_MAGIC = b"MIXSQLB1"
_DIGEST = 16


@dataclasses.dataclass(frozen=True)
class Settings:
    """How this process reaches remote files."""

    storage_options: t.Mapping[str, t.Any] = dataclasses.field(default_factory=dict, repr=False)
    cache_dir: str | None = None  # None: no disk cache
    cache_bytes: int = DEFAULT_CACHE_BYTES
    retries: int = DEFAULT_RETRIES
    read_ahead: int = DEFAULT_READ_AHEAD  # blocks fetched at once, in background threads
    depth: int = DEFAULT_DEPTH  # reads (of READ_SAMPLES samples) fetched ahead of the one being used

    def __repr__(self) -> str:  # storage options may hold secrets: only their keys are shown
        keys = ", ".join(sorted(self.storage_options))
        return (f"Settings(storage_options=<{keys or 'none'}>, cache_dir={self.cache_dir!r}, "
                f"cache_bytes={self.cache_bytes}, retries={self.retries}, read_ahead={self.read_ahead}, "
                f"depth={self.depth})")


def _default_cache_dir() -> str | None:
    configured = os.environ.get("MIXSQL_CACHE_DIR")
    if configured is not None:
        return configured or None  # MIXSQL_CACHE_DIR= (empty) turns the cache off
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mixsql", "blocks")


def _from_environment() -> Settings:
    size = os.environ.get("MIXSQL_CACHE_BYTES")
    return Settings(cache_dir=_default_cache_dir(), cache_bytes=int(size) if size else DEFAULT_CACHE_BYTES)


_lock = threading.Lock()
_fd_lock = threading.Lock()  # a cache's lock-file descriptor, shared by a process's threads
_settings: Settings | None = None


def _after_fork() -> None:  # a lock held by another thread at the fork would stay held in the child
    global _lock, _fd_lock
    _lock, _fd_lock = threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
_cache: "BlockCache | None" = None


def settings() -> Settings:
    """This process's settings (from the environment until ``configure`` is called)."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = _from_environment()
        return _settings


def configure(value: Settings | None = None, **changes: t.Any) -> Settings:
    """Set this process's settings: a whole ``Settings``, or fields of the current one changed."""
    global _settings, _cache
    current = value if value is not None else dataclasses.replace(settings(), **changes)
    if isinstance(current.storage_options, t.Mapping):
        current = dataclasses.replace(current, storage_options=dict(current.storage_options))
    else:
        raise DataError(f"storage options must be a mapping of option to value, not {type(current.storage_options).__name__}")
    for name in ("cache_bytes", "retries", "read_ahead", "depth"):
        value_ = getattr(current, name)
        least = 1 if name in ("read_ahead", "depth") else 0
        if not isinstance(value_, int) or isinstance(value_, bool) or value_ < least or value_ > (1 << 50):
            raise DataError(f"{name} must be an integer of at least {least}, not {value_!r}")
    with _lock:
        _settings = current
        if _cache is not None and (_cache.root != _root(current.cache_dir) or _cache.limit != current.cache_bytes):
            _cache = None
    return current


def _root(cache_dir: str | None) -> Path | None:
    return None if cache_dir is None else Path(cache_dir).expanduser().absolute()


def cache() -> "BlockCache | None":
    """The disk cache of this process's settings, or None when it is off."""
    global _cache
    current = settings()
    with _lock:
        if _cache is None and current.cache_dir is not None:
            _cache = BlockCache(current.cache_dir, current.cache_bytes)
        return _cache


# -- counters ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Counters:
    """What this process fetched from remote files: requests and bytes over the network, retries,
    and what the disk cache served instead."""

    requests: int = 0
    bytes_fetched: int = 0
    retries: int = 0
    cache_hits: int = 0
    cache_bytes: int = 0
    metadata_requests: int = 0  # info/HEAD calls: fingerprints of files

    def snapshot(self) -> dict[str, int]:
        return dataclasses.asdict(self)


counters = Counters()
_count_lock = threading.Lock()


def _count(**amounts: int) -> None:
    with _count_lock:
        for name, amount in amounts.items():
            setattr(counters, name, getattr(counters, name) + amount)


def reset_counters() -> None:
    """Zero this process's counters (benchmarks and tests)."""
    with _count_lock:
        for field in dataclasses.fields(Counters):
            setattr(counters, field.name, 0)


# -- retries -------------------------------------------------------------------------------------

_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError,
              TypeError, KeyError, MixSQLError)


def transient(error: BaseException) -> bool:
    """Whether retrying can help: server errors, timeouts and broken connections, not a missing
    object, a refused permission or a programming error."""
    if isinstance(error, _PERMANENT):
        return False
    if isinstance(error, OSError) and error.errno in (errno.ENOENT, errno.EACCES, errno.EPERM):
        return False
    status = getattr(error, "status", None) or getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
        return False
    return isinstance(error, Exception)


def retried(what: str, url: str, call: t.Callable[[], t.Any], retries: int | None = None) -> t.Any:
    """``call()``, retried on transient errors with exponential backoff and jitter, at most
    ``retries`` times; then a DataError naming ``url`` and the last error."""
    attempts = (settings().retries if retries is None else retries) + 1
    for attempt in range(attempts):
        try:
            return call()
        except BaseException as e:  # noqa: BLE001 - sorted below
            if not isinstance(e, Exception) or not transient(e):
                raise
            if attempt + 1 == attempts:
                raise DataError(f"cannot {what} {url} after {attempts} attempt(s): {type(e).__name__}: {e}", file=url,
                                hint="check the endpoint, the network and the credentials (storage options or the "
                                     "environment)") from None
            _count(retries=1)
            time.sleep(min(BACKOFF_CAP, BACKOFF_SECONDS * (2 ** attempt)) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")  # pragma: no cover


# -- the disk cache ------------------------------------------------------------------------------


class BlockCache:
    """Byte ranges of remote files on local disk, shared by every process that names the same
    directory. Readers never wait on a lock; two processes wanting the same missing block take a
    range lock on one file so that one fetches while the other waits for its entry."""

    def __init__(self, root: str | os.PathLike[str], limit: int) -> None:
        self.root = Path(root).expanduser().absolute()
        self.limit = limit
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the block cache directory {self.root}: {e}",
                            hint="set MIXSQL_CACHE_DIR to a writable directory (empty: no cache)") from None
        self._written = 0  # bytes this process added since its last look at the directory's size
        self._size: int | None = None
        self._locks = FillLocks(self.root, 0o644)  # a one-byte range lock per entry

    @staticmethod
    def key(url: str, version: str, start: int, end: int) -> str:
        return hashlib.sha256(f"{url}\0{version}\0{start}\0{end}".encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.blk"

    def get(self, key: str, length: int) -> bytes | None:
        """The entry's bytes, or None if absent or damaged (a damaged entry is deleted)."""
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                blob = fh.read()
        except FileNotFoundError:
            return None
        head = len(_MAGIC) + _DIGEST
        payload = blob[head:]
        if (blob[:len(_MAGIC)] != _MAGIC or len(payload) != length
                or hashlib.blake2b(payload, digest_size=_DIGEST).digest() != blob[len(_MAGIC):head]):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            return None
        try:
            os.utime(path)  # recently used
        except FileNotFoundError:
            pass
        return payload

    def put(self, key: str, payload: bytes) -> None:
        """Store an entry: written under a temporary name, then renamed into place."""
        path = self._path(key)
        partial = path.with_name(f"{path.name}.{os.getpid()}.{random.getrandbits(32):08x}.part")
        for attempt in range(2):
            try:
                with open(partial, "wb") as fh:
                    fh.write(_MAGIC + hashlib.blake2b(payload, digest_size=_DIGEST).digest())
                    fh.write(payload)
                os.replace(partial, path)
                break
            except FileNotFoundError:
                if attempt == 0 and self._recreate():  # the directory was removed under us: made again
                    continue
                return
            except OSError:
                try:
                    partial.unlink()
                except OSError:
                    pass
                return  # a cache that cannot be written is only a slower read
        self._written += len(payload) + len(_MAGIC) + _DIGEST
        if self._size is None or self._size + self._written > self.limit:
            self.evict()

    def _recreate(self) -> bool:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        with _fd_lock:
            self._locks.reset()  # the lock file went with the directory
        return True

    def claim(self, keys: t.Sequence[str]) -> tuple[list[str], list[str]]:
        """Take the fill locks of missing entries without waiting: (claimed, held by another process).
        The claimer fetches and ``put``s, then ``release``s; the others ``wait`` for the entry. A
        lock that cannot be taken for a reason other than another holder counts as claimed: the
        cache is never a reason for a read to fail."""
        mine, theirs = [], []
        with _fd_lock:
            for key in keys:
                (mine if self._locks.try_lock(key) else theirs).append(key)
        return mine, theirs

    def release(self, keys: t.Sequence[str]) -> None:
        with _fd_lock:
            for key in keys:
                self._locks.unlock(key)

    def wait(self, key: str, length: int) -> bytes | None:
        """The entry another process is fetching, once it is there (None if that process gave up)."""
        deadline = time.monotonic() + FILL_WAIT_SECONDS
        while time.monotonic() < deadline:
            found = self.get(key, length)
            if found is not None:
                return found
            mine, _ = self.claim([key])
            if mine:  # the other process is done (or died): whatever it left is there now, or nothing
                self.release(mine)
                return self.get(key, length)
            time.sleep(0.002)
        return None

    def entries(self) -> list[tuple[Path, int, float]]:
        """(path, bytes, last use) of every entry, and of partial writes (left by killed processes)."""
        out = []
        try:
            listing = list(os.scandir(self.root))
        except FileNotFoundError:
            return out
        for entry in listing:
            if not (_ENTRY.match(entry.name) or _PARTIAL.match(entry.name)):
                continue  # not a name the cache gives: never touched
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            out.append((Path(entry.path), st.st_size, st.st_mtime))
        return out

    def evict(self) -> None:
        """Delete least recently used entries until the cache holds at most 90% of its limit; also
        partial writes older than a minute. One process at a time; the others skip it."""
        try:
            fd = os.open(self.root / ".evict.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return
            entries = self.entries()
            now = time.time()
            total = 0
            keep = []
            for path, size, used in entries:
                if path.name.endswith(".part"):
                    if now - used > 60:
                        _unlink(path)
                    continue
                total += size
                keep.append((used, size, path))
            if total > self.limit:
                keep.sort()
                for used, size, path in keep:
                    if total <= 0.9 * self.limit:
                        break
                    _unlink(path)
                    total -= size
            self._size, self._written = total, 0
        finally:
            os.close(fd)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
