"""File access through fsspec: expanding user paths, fingerprints, and (decompressed) byte streams.

Every byte mixsql reads from a data file goes through here, so local paths, ``file://`` URLs,
object stores and fsspec chained URLs (``simplecache::s3://...``) share one code path. Storage
options (credentials, endpoints) come from ``remote.settings()`` and are applied to the URL's
target filesystem; they are never part of a URL mixsql stores. Remote byte ranges go through
``remote`` (retries, the disk cache, counters); a remote Parquet file's footer is read once per
process, then only the column chunks a row group read needs. Compressed JSONL is decompressed with
Arrow's native codecs.
"""

from __future__ import annotations

import bisect
import collections
import concurrent.futures
import dataclasses
import io
import os
import re
import threading
import typing as t

import fsspec
import numpy as np
import fsspec.implementations.local
import pyarrow as pa
import pyarrow.parquet as pq

from mixsql import remote
from mixsql.errors import CatalogError, DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
COMPRESSION_SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One data file as registered: canonical URL, format and the fingerprint used to detect change."""

    url: str
    format: str  # "parquet" | "jsonl" | "npy"
    compression: str | None  # None | "gzip" | "zstd"
    size: int
    mtime: float | None
    etag: str | None = None  # an object store's entity tag: changes with the content

    @property
    def version(self) -> str:
        """What identifies this content of the file: its entity tag, else size and modification time."""
        return version_of(self.size, self.mtime, self.etag)


_INHERITED: list[t.Any] = []


def _stash_filesystems() -> None:
    """Before a fork: the filesystems fsspec caches, referenced, so that when the child (a DataLoader
    worker) drops them from its cache (fsspec does, after a fork) they are not garbage-collected
    there, which would close the parent's connections on an event loop the child does not have."""
    _INHERITED[:] = [inst for cls in list(_fsspec_classes()) for inst in list(cls._cache.values())]


def _fsspec_classes() -> t.Iterator[t.Any]:
    import fsspec.spec

    yield from getattr(fsspec.spec, "_registered_classes", ())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_stash_filesystems, after_in_parent=_INHERITED.clear)


def version_of(size: int, mtime: float | None, etag: str | None) -> str:
    return etag if etag else f"{size}:{mtime}"


_CREDENTIALS = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@]*:[^/@]*@", re.IGNORECASE)


def filesystem(url: str) -> tuple[t.Any, str]:
    """(fsspec filesystem, path) for a URL, with this process's storage options given to the
    filesystem the URL targets (the last link of a chained URL)."""
    options = dict(remote.settings().storage_options)
    try:
        if "::" in url:
            target = url.rsplit("::", 1)[-1]
            protocol = fsspec.core.split_protocol(target)[0] or "file"
            return fsspec.core.url_to_fs(url, **({protocol: options} if options else {}))
        if options and fsspec.core.split_protocol(url)[0] not in (None, "file", "local"):
            return fsspec.core.url_to_fs(url, **options)
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        protocol = fsspec.core.split_protocol(url.rsplit("::", 1)[-1])[0]
        extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
                 "adl": "azure"}.get(protocol or "")
        raise CatalogError(f"{url}: reading {protocol}:// needs a package that is not installed ({e})",
                           hint=f"pip install 'mixsql[{extra}]'" if extra else "install the fsspec implementation "
                                                                                "it names") from None
    except ValueError as e:
        raise CatalogError(f"{url}: {e}", hint="check the URL's protocol (fsspec names: s3://, gs://, az://, "
                                               "https://, file://, chained as simplecache::s3://...)") from None


def is_remote(url: str) -> bool:
    """Whether a URL names something other than a local file (an object store, HTTP, a chain)."""
    protocol = fsspec.core.split_protocol(url)[0]
    return "::" in url or protocol not in (None, "file", "local")


def _canonical(raw: str, fs: t.Any, path: str) -> str:
    """The URL of ``path`` found through ``raw``: a chained URL keeps its chain."""
    if "::" in raw:
        head = raw.rsplit("::", 1)[0]
        inner = getattr(fs, "fs", fs)
        return f"{head}::{inner.unstrip_protocol(path)}"
    return fs.unstrip_protocol(path)


def check_url(raw: str) -> None:
    """Refuse what cannot be a data file's URL: credentials inside it, or a path into an archive."""
    if _CREDENTIALS.match(raw):
        raise CatalogError(f"{raw.split('@', 1)[-1]!r}: the URL carries credentials, which mixsql would store in "
                           "the catalog and plans", hint="give them as storage options (--storage-option KEY=VALUE, "
                                                         "API storage_options=) or in the environment")
    if raw.startswith(("tar://", "zip://")) or "::tar://" in raw or "::zip://" in raw:
        kind = raw.split("://", 1)[0].rsplit("::", 1)[-1]
        raise CatalogError(f"{raw!r}: files inside a {kind} archive are not registered one by one",
                           hint="register WebDataset .tar shards themselves (one sample per key); unpack other "
                                "archives first")


def file_format(url: str) -> tuple[str, str | None]:
    """(format, compression) from a file name, or raise naming the file and the accepted suffixes."""
    name = url.rsplit("/", 1)[-1].lower()
    compression = None
    for suffix, codec in COMPRESSION_SUFFIXES.items():
        if name.endswith(suffix):
            compression, name = codec, name[: -len(suffix)]
            break
    if name.endswith(PARQUET_SUFFIXES) and compression is None:
        return "parquet", None
    if name.endswith(".npy") and compression is None:
        return "npy", None
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl", compression
    if name.endswith(".tar") and compression is None:
        return "tar", None
    raise CatalogError(
        f"cannot tell the format of {url!r}",
        hint="mixsql reads Parquet (.parquet), JSON lines (.jsonl, .ndjson, .json, optionally .gz or .zst), "
             "flat token arrays (.npy) and WebDataset image-text shards (.tar)",
    )


def _mtime(info: dict[str, t.Any]) -> float | None:
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None


def _etag(info: dict[str, t.Any]) -> str | None:
    for key in ("ETag", "etag", "md5Hash", "content_md5"):
        value = info.get(key)
        if value:
            return str(value).strip('"')
    return None


def _info(url: str) -> dict[str, t.Any]:
    fs, path = filesystem(url)
    missing = DataError(f"data file {url} is missing", file=url,
                        hint="restore it, or register the dataset again with --replace")
    if not is_remote(url):
        try:
            return fs.info(path)
        except FileNotFoundError:
            raise missing from None
    remote._count(metadata_requests=1)
    try:
        return remote.retried("look up", url, lambda: fs.info(path))
    except FileNotFoundError:
        raise missing from None
    except PermissionError as e:
        raise DataError(f"access to {url} was refused: {e}", file=url,
                        hint="check the credentials (storage options or the environment)") from None


def describe(url: str) -> SourceFile:
    """Fingerprint one file (size, modification time, entity tag) as it is now."""
    info = _info(url)
    if info.get("type") == "directory":
        raise DataError(f"{url} is a directory, not a data file", file=url)
    fmt, compression = file_format(url)
    return SourceFile(url=url, format=fmt, compression=compression, size=int(info["size"]), mtime=_mtime(info),
                      etag=_etag(info) if is_remote(url) else None)


def fingerprint(url: str) -> tuple[int, float | None, str | None]:
    """(size, modification time, entity tag) of a file now, as ``describe`` gives them; a plain
    ``stat`` for a local file, since readers ask after every block."""
    if url.startswith("file://"):
        try:
            st = os.stat(url[len("file://"):])
        except FileNotFoundError:
            raise DataError(f"data file {url} is missing", file=url,
                            hint="restore it, or register the dataset again with --replace") from None
        return st.st_size, st.st_mtime, None
    now = describe(url)
    return now.size, now.mtime, now.etag


def describe_many(urls: t.Sequence[str]) -> dict[str, SourceFile]:
    """Fingerprints of many files: one listing per directory of an object store, not one request
    per file (a file the listing lacks is looked up alone)."""
    out: dict[str, SourceFile] = {}
    by_dir: dict[str, list[str]] = {}
    for url in urls:
        if is_remote(url) and "::" not in url:
            by_dir.setdefault(url.rsplit("/", 1)[0], []).append(url)
        else:
            out[url] = describe(url)
    for directory, members in by_dir.items():
        listed: dict[str, dict[str, t.Any]] = {}
        if len(members) > 1:
            fs, path = filesystem(directory)
            remote._count(metadata_requests=1)
            try:
                for info in remote.retried("list", directory, lambda: fs.ls(path, detail=True, refresh=True)):
                    listed[fs.unstrip_protocol(info["name"])] = info
            except (FileNotFoundError, DataError):
                listed = {}
        for url in members:
            info = listed.get(url)
            if info is None or info.get("type", "file") != "file" or "size" not in info:
                out[url] = describe(url)
                continue
            fmt, compression = file_format(url)
            out[url] = SourceFile(url=url, format=fmt, compression=compression, size=int(info["size"]),
                                  mtime=_mtime(info), etag=_etag(info))
    return out


def expand(paths: t.Sequence[str]) -> list[str]:
    """Canonical URLs of the files that paths, globs, directories and fsspec URLs name, in order.

    Each argument must name at least one file; a directory stands for the data files under it.
    Duplicates are removed; the result is sorted within each argument for determinism.
    """
    if isinstance(paths, (str, bytes)):
        raise TypeError("paths must be a list of strings, not a single string")
    urls: list[str] = []
    seen: set[str] = set()
    for raw in paths:
        raw = str(raw)
        check_url(raw)
        fs, path = filesystem(raw)

        def lookup() -> list[str]:
            if any(ch in path for ch in "*?["):
                return [p for p in fs.glob(path) if fs.isfile(p)]
            if fs.isdir(path):
                return [p for p in fs.find(path) if _is_data_file(p)]
            if fs.exists(path):
                return [path]
            raise CatalogError(f"no such file or directory: {raw}",
                               hint="check the path (and for an object store the bucket and key); globs must be "
                                    "quoted in a shell")

        try:
            found = remote.retried("list", raw, lookup) if is_remote(raw) else lookup()
        except PermissionError as e:
            raise CatalogError(f"access to {raw} was refused: {e}",
                               hint="check the credentials (storage options or the environment)") from None
        except (OSError, ValueError) as e:
            raise CatalogError(f"cannot list {raw}: {type(e).__name__}: {e}",
                               hint="check the URL, the endpoint and the credentials") from None
        if not found:
            raise CatalogError(f"{raw!r} matches no data file",
                               hint="mixsql reads *.parquet and *.jsonl[.gz|.zst] files")
        for p in sorted(found):
            url = _canonical(raw, fs, p)
            if url not in seen:
                seen.add(url)
                urls.append(url)
    return urls


def _is_data_file(path: str) -> bool:
    try:
        file_format(path)
    except CatalogError:
        return False
    return True


def exists(url: str) -> bool:
    """Whether a file exists at ``url``."""
    fs, path = filesystem(url)
    try:
        return bool(fs.isfile(path))
    except (OSError, ValueError):
        return False


REMOTE_CHUNK = 8 << 20  # a remote file read from start to end is fetched in ranges of this size


class _Seekable(io.RawIOBase):
    """A read-only file of known size whose subclasses say how bytes are got (``readinto``)."""

    def __init__(self, url: str, size: int) -> None:
        self.url, self._size, self._pos = url, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def size(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = offset if whence == 0 else self._pos + offset if whence == 1 else self._size + offset
        return self._pos


class RemoteFile(_Seekable):
    """A remote file read through ``read_range``: in ``REMOTE_CHUNK`` ranges, each retried on
    transient errors (and through the disk cache when ``version`` is given), so a long sequential
    read (registration, a compressed JSONL file) survives a dropped connection."""

    def __init__(self, url: str, size: int, version: str | None = None) -> None:
        super().__init__(url, size)
        self.version = version
        self._chunk_start, self._chunk = -1, b""

    def readinto(self, buffer: t.Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        start = self._pos - self._pos % REMOTE_CHUNK
        if start != self._chunk_start:
            self._chunk = read_range(self.url, start, min(self._size, start + REMOTE_CHUNK), self.version)
            self._chunk_start = start
        at = self._pos - start
        n = min(want, len(self._chunk) - at)
        buffer[:n] = self._chunk[at: at + n]
        self._pos += n
        return n


def local_path(url: str) -> str:
    """The path of a local file's URL (a plain path, or ``file://``), as Arrow's own filesystem opens it."""
    fs, path = filesystem(url)
    if not isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        raise ValueError(f"{url} is not a local file")  # callers pass local files only
    return path


def open_binary(url: str, size: int | None = None, version: str | None = None) -> t.Any:
    """Open a file for reading (no decompression). fsspec resolves every URL; a local file is then
    opened with Arrow's native reader, which Parquet decodes from without Python calls per read; a
    remote one of known ``size`` is read through ``RemoteFile`` (retried; cached by ``version``)."""
    fs, path = filesystem(url)
    try:
        if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
            return pa.OSFile(path, "rb")
        if is_remote(url):
            if size is not None:
                return io.BufferedReader(RemoteFile(url, size, version), buffer_size=1 << 20)
            return remote.retried("open", url, lambda: fs.open(path, "rb"))
        return fs.open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"data file {url} is missing", file=url) from None
    except IsADirectoryError:
        raise DataError(f"{url} is a directory, not a data file", file=url) from None


def open_stream(url: str, compression: str | None, size: int | None = None,
                version: str | None = None) -> pa.NativeFile:
    """A sequential stream of the file's (decompressed) bytes."""
    raw = open_binary(url, size, version)
    if not isinstance(raw, pa.NativeFile):
        raw = pa.PythonFile(raw, mode="r")
    if compression is None:
        return raw
    return pa.CompressedInputStream(raw, compression)


def read_range(url: str, start: int, end: int, version: str | None = None) -> bytes:
    """Bytes [start, end) of a file (``version``: its registered version, which keys the cache)."""
    return read_ranges(url, [start], [end], version)[0]


def read_ranges(url: str, starts: t.Sequence[int], ends: t.Sequence[int], version: str | None = None) -> list[bytes]:
    """Bytes [starts[i], ends[i]) of a file, fetched together: concurrently on object stores,
    through the disk cache when ``version`` is given, retried on transient errors."""
    starts, ends = [int(s) for s in starts], [int(e) for e in ends]
    if not is_remote(url):
        with open_binary(url) as fh:
            out = []
            for s, e in zip(starts, ends):
                fh.seek(s)
                out.append(fh.read(e - s))
            return out
    store = remote.cache() if version is not None else None
    if store is None:
        return _fetch(url, starts, ends)
    keys = [store.key(url, version, s, e) for s, e in zip(starts, ends)]  # type: ignore[arg-type]
    got: list[bytes | None] = [store.get(k, e - s) for k, s, e in zip(keys, starts, ends)]
    hits = [g for g in got if g is not None]
    if hits:
        remote._count(cache_hits=len(hits), cache_bytes=sum(len(g) for g in hits))
    missing = [i for i, g in enumerate(got) if g is None]
    if not missing:
        return got  # type: ignore[return-value]
    mine, theirs = store.claim([keys[i] for i in missing])
    claimed = set(mine)
    try:
        fetch = [i for i in missing if keys[i] in claimed]
        if fetch:
            for i, blob in zip(fetch, _fetch(url, [starts[i] for i in fetch], [ends[i] for i in fetch])):
                got[i] = blob
                store.put(keys[i], blob)
    finally:
        store.release(mine)
    for i in missing:
        if got[i] is None:  # another process was fetching it
            got[i] = store.wait(keys[i], ends[i] - starts[i])
            if got[i] is None:
                got[i] = _fetch(url, [starts[i]], [ends[i]])[0]
            else:
                remote._count(cache_hits=1, cache_bytes=len(got[i]))  # type: ignore[arg-type]
    return got  # type: ignore[return-value]


def _fetch(url: str, starts: list[int], ends: list[int]) -> list[bytes]:
    """Ranges of a remote file over the network, concurrently; the failed ones retried."""
    fs, path = filesystem(url)
    out: list[t.Any] = [None] * len(starts)
    todo = list(range(len(starts)))

    def attempt() -> None:
        nonlocal todo
        remote._count(requests=len(todo))
        try:
            got = fs.cat_ranges([path] * len(todo), [starts[i] for i in todo], [ends[i] for i in todo])
        except FileNotFoundError:
            raise DataError(f"data file {url} is missing", file=url,
                            hint="restore it, or register the dataset again with --replace") from None
        failed = []
        for i, blob in zip(todo, got):
            if isinstance(blob, BaseException):
                if isinstance(blob, FileNotFoundError):
                    raise DataError(f"data file {url} is missing", file=url,
                                    hint="restore it, or register the dataset again with --replace")
                if not remote.transient(blob):
                    raise blob
                failed.append((i, blob))
            else:
                out[i] = blob
                remote._count(bytes_fetched=len(blob))
        todo = [i for i, _ in failed]
        if failed:
            raise failed[0][1]

    try:
        remote.retried("read", url, attempt)
    except PermissionError as e:
        raise DataError(f"access to {url} was refused: {e}", file=url,
                        hint="check the credentials (storage options or the environment)") from None
    for i, blob in enumerate(out):
        if len(blob) != ends[i] - starts[i]:
            raise DataError(f"{url} is shorter than when it was registered (bytes {starts[i]}-{ends[i]})", file=url,
                            hint="register the dataset again with --replace")
    return out


class _Ranges(_Seekable):
    """A file of which only some byte ranges are known: what a Parquet read of known column chunks
    is given instead of a network file, so it issues no request of its own."""

    def __init__(self, url: str, size: int, parts: dict[int, bytes]) -> None:
        super().__init__(url, size)
        self._starts = sorted(parts)
        self._parts = parts

    def readinto(self, buffer: t.Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        i = bisect.bisect_right(self._starts, self._pos) - 1
        if i >= 0:
            start = self._starts[i]
            part = self._parts[start]
            if self._pos + want <= start + len(part):
                buffer[:want] = part[self._pos - start: self._pos - start + want]
                self._pos += want
                return want
        raise DataError(f"{self.url}: the Parquet reader asked for bytes {self._pos}-{self._pos + want}, outside the "
                        "column chunks its footer names; the file is corrupt or changed", file=self.url)


FOOTER_READ = 64 << 10  # the tail fetched first: the footer of most files in one request
MAX_GAP = 4096  # column chunks this close are fetched as one range


class RemoteParquet:
    """A remote Parquet file: its footer fetched once, then a row group's needed column chunks in
    one concurrent fetch (through the cache). Thread-safe; what ``pq.ParquetFile`` offers here."""

    def __init__(self, url: str, size: int, version: str) -> None:
        self.url, self.size, self.version = url, size, version
        tail = read_range(url, max(0, size - FOOTER_READ), size, version)
        if len(tail) < 8 or tail[-4:] != b"PAR1":
            raise DataError(f"{url} is not a Parquet file (no footer)", file=url)
        footer = int.from_bytes(tail[-8:-4], "little") + 8
        if footer > len(tail):  # a bigger footer: only the bytes still missing
            tail = read_range(url, max(0, size - footer), size - len(tail), version) + tail
        self._tail = {size - len(tail): tail}
        try:
            self.metadata = pq.read_metadata(_Ranges(url, size, self._tail))
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{url} is not a readable Parquet file: {e}", file=url) from None
        self.schema_arrow = self.metadata.schema.to_arrow_schema()
        self._leaves = [self.metadata.schema.column(i).path.split(".")[0] for i in range(self.metadata.num_columns)]

    def chunk_ranges(self, g: int, columns: t.Sequence[str]) -> list[tuple[int, int]]:
        """Byte ranges of row group g's chunks of ``columns``, adjacent ones merged."""
        rg = self.metadata.row_group(g)
        wanted = set(columns)
        spans = []
        for i, top in enumerate(self._leaves):
            if top not in wanted:
                continue
            col = rg.column(i)
            start = col.data_page_offset
            if col.has_dictionary_page and col.dictionary_page_offset is not None and 0 < col.dictionary_page_offset:
                start = min(start, col.dictionary_page_offset)
            spans.append((start, start + col.total_compressed_size))
        spans.sort()
        merged: list[list[int]] = []
        for s, e in spans:
            if merged and s - merged[-1][1] <= MAX_GAP:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        return [(s, e) for s, e in merged]

    def read_row_group(self, g: int, columns: t.Sequence[str], use_threads: bool = False) -> pa.Table:
        ranges = self.chunk_ranges(g, columns)
        blobs = read_ranges(self.url, [s for s, _ in ranges], [e for _, e in ranges], self.version)
        parts = dict(self._tail)
        parts.update({s: b for (s, _), b in zip(ranges, blobs)})
        pf = pq.ParquetFile(_Ranges(self.url, self.size, parts), metadata=self.metadata)
        return pf.read_row_group(g, columns=list(columns), use_threads=use_threads)

    @classmethod
    def open(cls, url: str, size: int, version: str) -> "RemoteParquet":
        """The file's footer, read once per process: every reader and thread of the process shares
        it, and threads opening the same file at once wait for one fetch (different files' footers
        are fetched side by side, outside the lock)."""
        key = (url, version)
        with _FOOTERS_LOCK:
            entry = _FOOTERS.get(key)
            mine = entry is None
            if mine:
                entry = _FOOTERS[key] = concurrent.futures.Future()
                while len(_FOOTERS) > FOOTERS_KEPT:
                    _FOOTERS.popitem(last=False)
            else:
                _FOOTERS.move_to_end(key)
        if mine:
            try:
                entry.set_result(cls(url, size, version))
            except BaseException as e:
                with _FOOTERS_LOCK:
                    if _FOOTERS.get(key) is entry:
                        del _FOOTERS[key]
                entry.set_exception(e)
                raise
        return entry.result()


FOOTERS_KEPT = 256  # remote Parquet footers a process keeps (each about its file's footer size)
_FOOTERS: "collections.OrderedDict[tuple[str, str], concurrent.futures.Future[RemoteParquet]]" = \
    collections.OrderedDict()
_FOOTERS_LOCK = threading.Lock()


NPY_FIELD = "token_ids"  # the content field of a flat token array's documents
NPY_DTYPES = (np.dtype(np.uint16), np.dtype(np.uint32))


def npy_header(fh: t.BinaryIO, url: str) -> tuple[int, np.dtype, int]:
    """(bytes before the data, dtype, length) of a ``.npy`` of token ids, or a DataError saying why not."""
    try:
        version = np.lib.format.read_magic(fh)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0)(fh)
    except (ValueError, OSError) as e:
        raise DataError(f"{url} is not a readable .npy file: {e}", file=url) from None
    if dtype.newbyteorder("=") not in NPY_DTYPES or len(shape) != 1 or not dtype.isnative:
        raise DataError(f"{url} holds {dtype} of shape {shape}, not a flat array of uint16 or uint32 token ids",
                        file=url, hint="flat token arrays (as OLMo/Dolma ship them) are 1-D uint16 or uint32")
    return fh.tell(), dtype, int(shape[0])
