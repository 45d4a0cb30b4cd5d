"""File access through fsspec: expanding user paths, fingerprints, and (decompressed) byte streams.

Every byte mixsql reads from a data file goes through here, so local paths, ``file://`` URLs and
object stores share one code path. Compressed JSONL is decompressed with Arrow's native codecs.
"""

from __future__ import annotations

import dataclasses
import os
import typing as t

import fsspec
import numpy as np
import fsspec.implementations.local
import pyarrow as pa

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
    raise CatalogError(
        f"cannot tell the format of {url!r}",
        hint="mixsql reads Parquet (.parquet), JSON lines (.jsonl, .ndjson, .json, optionally .gz or .zst) and "
             "flat token arrays (.npy)",
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


def describe(url: str) -> SourceFile:
    """Fingerprint one file (size and modification time) as it is now."""
    fs, path = fsspec.core.url_to_fs(url)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise DataError(f"data file {url} is missing", file=url,
                        hint="restore it, or register the dataset again with --replace") from None
    fmt, compression = file_format(url)
    return SourceFile(url=url, format=fmt, compression=compression, size=int(info["size"]), mtime=_mtime(info))


def fingerprint(url: str) -> tuple[int, float | None]:
    """(size, modification time) of a file now, as ``describe`` gives them; a plain ``stat`` for a
    local file, since readers ask after every block."""
    if url.startswith("file://"):
        try:
            st = os.stat(url[len("file://"):])
        except FileNotFoundError:
            raise DataError(f"data file {url} is missing", file=url,
                            hint="restore it, or register the dataset again with --replace") from None
        return st.st_size, st.st_mtime
    now = describe(url)
    return now.size, now.mtime


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
        fs, path = fsspec.core.url_to_fs(raw)
        if any(ch in path for ch in "*?["):
            found = [p for p in fs.glob(path) if fs.isfile(p)]
        elif fs.isdir(path):
            found = [p for p in fs.find(path) if _is_data_file(p)]
        elif fs.exists(path):
            found = [path]
        else:
            raise CatalogError(f"no such file or directory: {raw}", hint="check the path; globs must be quoted in a shell")
        if not found:
            raise CatalogError(f"{raw!r} matches no data file",
                               hint="mixsql reads *.parquet and *.jsonl[.gz|.zst] files")
        for p in sorted(found):
            url = fs.unstrip_protocol(p)
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
    fs, path = fsspec.core.url_to_fs(url)
    return bool(fs.isfile(path))


def open_binary(url: str) -> t.Any:
    """Open a file for reading (no decompression). fsspec resolves every URL; a local file is then
    opened with Arrow's native reader, which Parquet decodes from without Python calls per read."""
    fs, path = fsspec.core.url_to_fs(url)
    try:
        if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
            return pa.OSFile(path, "rb")
        return fs.open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"data file {url} is missing", file=url) from None


def open_stream(url: str, compression: str | None) -> pa.NativeFile:
    """A sequential stream of the file's (decompressed) bytes."""
    raw = open_binary(url)
    if not isinstance(raw, pa.NativeFile):
        raw = pa.PythonFile(raw, mode="r")
    if compression is None:
        return raw
    return pa.CompressedInputStream(raw, compression)


def read_range(url: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of a file."""
    fs, path = fsspec.core.url_to_fs(url)
    try:
        with fs.open(path, "rb") as fh:
            fh.seek(start)
            return fh.read(end - start)
    except FileNotFoundError:
        raise DataError(f"data file {url} is missing", file=url) from None


def read_ranges(url: str, starts: t.Sequence[int], ends: t.Sequence[int]) -> list[bytes]:
    """Bytes [starts[i], ends[i]) of a file, fetched together (concurrently on object stores)."""
    fs, path = fsspec.core.url_to_fs(url)
    try:
        return fs.cat_ranges([path] * len(starts), list(starts), list(ends))
    except FileNotFoundError:
        raise DataError(f"data file {url} is missing", file=url) from None


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
