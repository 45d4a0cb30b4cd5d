"""The compacted cache: the samples a mixture's components select, their chosen columns only, copied
once to local shards that a run then reads instead of the sources.

One shard per source file (``shard-<file>.arrow``: an Arrow IPC file), one record batch (a "cache
row group") per source block that holds a selected sample (a Parquet row group; a JSONL file's 1 MiB
byte range, or the whole of a compressed one, its records parsed once here), the selected rows in
their source order. By default the shards are not compressed: a run maps them into memory and reads
a block in place, with nothing to decode, touching only the pages of the rows it takes, and its
DataLoader workers share those pages (the page cache). ``compression="lz4"`` (or ``"zstd"``) makes
them about 2.3 x smaller (text), and each block read a decompression (measured: 0.5 ms per MB on the
benchmark machine). A shard is never changed in place (a cache is built in a temporary directory
and renamed; a damaged one is set aside, then removed), so a mapped shard cannot change under a run
that reads it. ``<shard>.rows.npy`` lists the source rows a shard holds. So a source block maps
to one cache row group and a source row to a row of it, and the plan does not change: it still
names source files and rows, lineage still says where a sample came from, and the stream is the
same with or without the cache. The cache is keyed by the dataset versions, the components'
predicates (their union is what it holds), the columns and the compression: any weights, schedule,
seed, limit or adaptive change over the same components reads it. A source file that changed
since registration is an error before a cached block of it is served (``read.check_file``), as
when reading the source; a shard that does not match ``cache.json`` (or is lost) is one too, and
the next ``build`` of the same cache replaces it: a damaged cache is never served. ``Compact``
(the reading side) imports no compile stage; ``build`` does.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import shutil
import time
import typing as t
import uuid
from pathlib import Path

import numpy as np

from mixsql import atomic, locks
from mixsql.errors import DataError, MixSQLError

FORMAT = 2  # 1: Parquet shards; 2: Arrow IPC shards
MAP_ROWS_BYTES = 4 << 20  # a shard's rows file larger than this is memory-mapped, not read
COMPRESSIONS = (None, "lz4", "zstd")  # of a shard's buffers; None: read in place, memory-mapped (the default)
SHARD_SUFFIX = ".arrow"


class CompactFile:
    """What the cache holds of one source file."""

    def __init__(self, directory: Path, entry: dict[str, t.Any]) -> None:
        self.url: str = entry["url"]
        self.source_version: str = entry["version"]
        self.path = directory / entry["shard"]
        self.size: int = entry["size"]
        self.mtime: float = entry["mtime"]
        self.group_offsets = np.asarray(entry["group_offsets"], dtype=np.int64)  # source group -> its first row
        self.cache_group = np.asarray(entry["cache_group"], dtype=np.int64)  # source group -> cache group, -1
        self.cache_rows: list[int] = entry["cache_rows"]  # rows of each cache group
        self._rows: np.ndarray | None = None

    @property
    def rows(self) -> np.ndarray:
        """The source rows the shard holds, ascending (a large file memory-mapped)."""
        if self._rows is None:
            path = self.path.with_suffix(".rows.npy")
            try:  # a small one read whole: mapping costs more than reading below a few MB
                self._rows = np.asarray(np.load(path, mmap_mode="r" if path.stat().st_size > MAP_ROWS_BYTES else None))
            except (OSError, ValueError) as e:
                raise DataError(f"the compacted cache lost {path.name}: {e}",
                                file=str(self.path), hint="build the cache again") from None
        return self._rows

    def positions(self, g: int, rows: np.ndarray) -> np.ndarray:
        """The rows of cache group ``cache_group[g]`` holding source ``rows`` of source group g."""
        lo, hi = (int(self.group_offsets[g]), int(self.group_offsets[g + 1])) if g + 1 < len(self.group_offsets) \
            else (0, 0)  # a block past the last the cache holds a row of
        held = self.rows[lo:hi]
        at = np.searchsorted(held, rows)
        if len(rows) and (int(at.max()) >= len(held) or not np.array_equal(held[at], rows)):
            missing = int(rows[np.flatnonzero((at >= len(held)) | (held[np.minimum(at, len(held) - 1)] != rows))[0]])
            raise DataError(f"the compacted cache {self.path.parent} does not hold row {missing} of {self.url}",
                            file=self.url, row=missing,
                            hint="the plan selects samples the cache was not built for: build it for this statement")
        return at


class Compact:
    """A compacted cache opened from its directory (``mixsql cache``): the reading side."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:  # held while this object lives: ``mixsql gc`` does not remove a cache in use
            self._in_use = locks.hold(self.directory / "cache.json")
            self.meta = json.loads(self._in_use.read().decode("utf-8")) if self._in_use is not None else None
        except (OSError, ValueError):
            self.meta = None
        if self.meta is None:
            raise MixSQLError(f"no compacted cache in {self.directory}",
                              hint="build one with `mixsql cache FILE` (API: mix.cache())")
        with contextlib.suppress(OSError):  # when it was last used, for a size-bounded cache (``gc``)
            os.utime(self.directory)
        if self.meta.get("format") != FORMAT:
            raise MixSQLError(f"{self.directory} holds a cache of format {self.meta.get('format')}; this mixsql "
                              f"reads {FORMAT}", hint="build it again")
        self.columns: list[str] = self.meta["columns"]
        self.files = {(f["url"], f["version"]): CompactFile(self.directory, f) for f in self.meta["files"]}

    def __reduce__(self) -> tuple[t.Any, tuple[str]]:  # DataLoader workers open it again
        return Compact, (str(self.directory),)

    def file(self, url: str, version: str) -> CompactFile | None:
        return self.files.get((url, version))

    def check(self, columns: t.Sequence[str]) -> None:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise MixSQLError(f"the compacted cache holds columns {', '.join(self.columns)}, not {missing[0]!r}",
                              hint=f"build it with the columns you read: mixsql cache FILE --columns "
                                   f"{','.join(dict.fromkeys([*self.columns, *missing]))}")

    def check_shard(self, entry: CompactFile) -> None:
        """The shard is the one ``cache.json`` describes (a torn or replaced copy is an error)."""
        try:
            st = entry.path.stat()
        except OSError as e:
            raise DataError(f"the compacted cache lost {entry.path.name}: {e}", file=str(entry.path),
                            hint="build the cache again") from None
        if st.st_size != entry.size or abs(st.st_mtime - entry.mtime) > 1e-6:
            raise DataError(f"{entry.path} changed since the cache was built", file=str(entry.path),
                            hint="build the cache again")

    def damage(self) -> str | None:
        """What is wrong with the shards, if anything (one lost, or changed since the cache was built):
        a damaged cache is built again, never served."""
        for entry in self.files.values():
            try:
                self.check_shard(entry)
                entry.path.with_suffix(".rows.npy").stat()
            except (DataError, OSError) as e:
                return str(e)
        return None

    def close(self) -> None:
        """Stop saying this cache is in use (``mixsql gc`` may then remove it)."""
        if self._in_use is not None:
            self._in_use.close()
            self._in_use = None

    @property
    def bytes(self) -> int:
        return sum(f.size + f.path.with_suffix(".rows.npy").stat().st_size for f in self.files.values())


# -- building (compile time) -------------------------------------------------------------------------


def cache_key(datasets: t.Sequence[tuple[str, str]], predicates: dict[str, list[str | None]],
              columns: t.Sequence[str], compression: str | None = None) -> str:
    """What a cache holds: the dataset versions, each dataset's component predicates (their union is
    selected; order and weights do not matter), the columns, and how its shards are compressed."""
    ident = {"format": FORMAT, "datasets": sorted(map(list, datasets)),
             "predicates": {d: sorted("" if p is None else p for p in ps) for d, ps in sorted(predicates.items())},
             "columns": sorted(columns), "compression": compression}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


BUILD_WAIT_SECONDS = 24 * 3600.0  # how long a process waits for another's build (a dead builder's lock goes)


def build(mix: t.Any, columns: t.Sequence[str] | None = None, directory: str | os.PathLike[str] | None = None,
          progress: t.Callable[[int, int, str], None] | None = None, find_only: bool = False,
          compression: str | None = None) -> Compact:
    """The compacted cache of ``mix``'s components (``columns``: default the datasets' content),
    built in one pass over the row groups holding a selected sample (every core), or found if
    built before. In the catalog's ``caches/`` unless ``directory`` is given. ``compression``
    (``"lz4"``, ``"zstd"``) makes the shards smaller, and each block read a decompression; without
    it (the default) a run reads them in place, memory-mapped, and its workers share the pages."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mixsql.bind import matches

    bound = mix.bound
    catalog = mix._connection.catalog
    engine = catalog.engine()
    if engine.version != bound.catalog_version:
        raise MixSQLError("the catalog changed since the statement was bound", hint="load the statement again")
    datasets = list(dict.fromkeys(c.dataset for c in bound.components))
    infos = {d: engine.dataset(d) for d in datasets}
    if columns is None:
        columns = list(dict.fromkeys(c for d in datasets for c in infos[d].content))
    elif isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise MixSQLError(f"columns must be a list of field names, not {columns!r}")
    columns = list(columns)
    for d in datasets:
        names = infos[d].record_schema.names
        unknown = [c for c in columns if c not in names]
        if unknown and len(datasets) == 1:
            raise MixSQLError(f"dataset {d!r} has no field {unknown[0]!r}", hint=f"its fields: {', '.join(names)}")
        files = engine.file_rows(d)
        other = next((f for f in files if f["format"] not in ("parquet", "jsonl")), None)
        if other is not None:
            raise MixSQLError(f"a compacted cache copies Parquet and JSONL files, and {other['url']} is "
                              f"{other['format']}", hint="read that dataset from its files")
    predicates = {d: [c.predicate for c in bound.components if c.dataset == d] for d in datasets}
    if compression not in COMPRESSIONS:
        raise MixSQLError(f"no compression {compression!r} for a compacted cache",
                          hint="lz4, zstd, or none (the default: read in place, fastest)")
    key = cache_key([(d, infos[d].version) for d in datasets], predicates, columns, compression)
    target = Path(directory) if directory is not None else catalog.path / "caches" / key
    found = _whole(target, key)
    if found is not None:
        return found
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = target.parent / f".{target.name}.lock"
        open(lock, "a+").close()
    except OSError as e:
        raise MixSQLError(f"cannot write a compacted cache in {target.parent}: {e.strerror or e}",
                          hint="give a writable directory (mixsql cache -o DIR, mix.cache(directory=...))") from None
    # of the processes asking at once (every rank of a run), one builds and the others wait for it
    with atomic.locked(lock, timeout=BUILD_WAIT_SECONDS, ready=lambda: _whole(target, key, keep=False) is not None,
                       busy=lambda: MixSQLError(f"timed out waiting for another process to build the cache in "
                                                f"{target}")) as held:
        if held and _whole(target, key, keep=False) is None:
            if find_only and (target / "cache.json").exists():
                raise MixSQLError(f"the compacted cache in {target} is damaged: {_damage(target, key)}",
                                  hint="build it again: mixsql cache FILE (API: mix.cache())")
            if find_only:
                raise MixSQLError(f"no compacted cache of these components and columns ({', '.join(columns)}) in "
                                  f"{target}, and none being built", hint="build it first: mixsql cache FILE "
                                                                          "--columns " + ",".join(columns))
            tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                with atomic.writing(target.parent, "a compacted cache"):
                    jobs: list[tuple[dict[str, t.Any], np.ndarray, dict[str, np.ndarray] | None]] = []
                    for d in datasets:
                        members = [c for c in bound.components if c.dataset == d]
                        files = engine.file_rows(d)
                        component = matches.scan(engine.con, d, [m.index for m in members], [m.predicate for m in members],
                                                 [None] * len(members), [f["rows"] for f in files], count=False,
                                                 tokens=False).component
                        selected = np.flatnonzero(component >= 0)
                        starts = np.concatenate(([0], np.cumsum([f["rows"] for f in files])))
                        ranges = None  # a JSONL record's byte range and block, in catalog order
                        if any(f["format"] == "jsonl" for f in files):
                            table = engine.con.sql(f'SELECT _offset, _length, _block FROM "{d}"').to_arrow_table()
                            ranges = {n: table.column(n).to_numpy(zero_copy_only=False) for n in table.column_names}
                        for i, f in enumerate(files):
                            lo, hi = np.searchsorted(selected, starts[i: i + 2])
                            mine = selected[lo:hi]
                            jobs.append(({**f, "dataset": d}, (mine - starts[i]).astype(np.int32),
                                         None if f["format"] != "jsonl" or ranges is None else
                                         {n: v[mine].astype(np.int64) for n, v in ranges.items()}))
                    from mixsql import fs as mfs
                    from mixsql.read import check_file
                    from mixsql.planfile import PlanFile

                    def copy(n: int, f: dict[str, t.Any], rows: np.ndarray, ranges: dict[str, np.ndarray] | None
                             ) -> dict[str, t.Any]:
                        info = PlanFile(index=n, dataset=f["dataset"], file_id=f["file_id"], url=f["url"],
                                        format=f["format"],
                                        compression=f["compression"], size=f["size"], mtime=f["mtime"],
                                        row_groups=tuple(f["row_groups"] or ()), etag=f.get("etag"))
                        check_file(info)  # the source is as registered
                        shard = tmp / f"shard-{n:06d}{SHARD_SUFFIX}"
                        if ranges is not None:
                            schema = infos[info.dataset].record_schema
                            entry = _copy_records(info, rows, ranges, shard,
                                                  pa.schema([schema.field(c) for c in columns if c in schema.names]),
                                                  compression)
                            check_file(info)  # and was all along
                            return entry
                        group_starts = info.row_group_starts
                        group_of = info.row_group_of(rows)
                        offsets = np.searchsorted(group_of, np.arange(len(group_starts) + 1)) if len(group_starts) else \
                            np.zeros(1, dtype=np.int64)
                        cache_group = np.full(len(group_starts), -1, dtype=np.int64)
                        cache_rows: list[int] = []
                        with mfs.open_binary(info.url, info.size) as fh:
                            source = pq.ParquetFile(fh)
                            available = set(source.schema_arrow.names)
                            wanted = [c for c in columns if c in available]
                            writer = None
                            try:
                                for g in range(len(group_starts)):
                                    lo, hi = int(offsets[g]), int(offsets[g + 1])
                                    if hi == lo:
                                        continue
                                    table = source.read_row_group(g, columns=wanted, use_threads=False)
                                    table = table.take(rows[lo:hi] - group_starts[g])
                                    if writer is None:
                                        writer = _shard_writer(shard, table.schema, compression)
                                    cache_group[g] = len(cache_rows)
                                    cache_rows.append(hi - lo)
                                    writer.write_batch(_one_batch(table))
                                if writer is None:  # nothing selected: an empty shard
                                    schema = source.schema_arrow
                                    writer = _shard_writer(shard, pa.schema([schema.field(c) for c in wanted]),
                                                           compression)
                            finally:
                                if writer is not None:
                                    writer.close()
                        check_file(info)  # and was all along
                        return _entry(info, shard, rows, offsets, cache_group, cache_rows)

                    began = time.perf_counter()
                    workers = max(1, min(len(jobs), os.cpu_count() or 1))
                    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="mixsql-cache") as pool:
                        futures = [pool.submit(copy, n, f, rows, ranges) for n, (f, rows, ranges) in enumerate(jobs)]
                        entries = []
                        for n, future in enumerate(futures):
                            entries.append(future.result())
                            if progress is not None:
                                progress(n + 1, len(futures), entries[-1]["url"])
                    meta = {"format": FORMAT, "key": key, "columns": columns, "compression": compression,
                            "datasets": {d: infos[d].version for d in datasets},
                            "predicates": predicates, "files": entries, "samples": sum(e["samples"] for e in entries),
                            "seconds": time.perf_counter() - began}
                    (tmp / "cache.json").write_text(json.dumps(meta), encoding="utf-8")
                    damaged = target.parent / f".damaged-{target.name}-{uuid.uuid4().hex[:8]}"
                    if (target / "cache.json").exists():  # a damaged cache (``_whole``): set aside, then removed
                        os.rename(target, damaged)
                    try:
                        os.rename(tmp, target)
                    except OSError:  # another process built it meanwhile
                        if not (target / "cache.json").exists():
                            raise
                        shutil.rmtree(tmp, ignore_errors=True)
                    shutil.rmtree(damaged, ignore_errors=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            found = _found(target, key)  # held now (``locks.hold``), so never the one removed
            if directory is None:
                catalog.prune()
            return found
    return _found(target, key)


PARSE_BYTES = 16 << 20  # records of consecutive blocks parsed by one call while building a JSONL file's shard


def _copy_records(info: t.Any, rows: np.ndarray, ranges: dict[str, np.ndarray], shard: Path,
                  schema: t.Any, compression: str | None = None) -> dict[str, t.Any]:
    """A JSONL file's selected records (source ``rows``, ascending, with their ``_offset``,
    ``_length`` and ``_block``) parsed once, in one sequential pass, into a shard of one record
    batch per block: a cache row group stands for a block as it does for a Parquet row group. Records of
    consecutive blocks are parsed together, up to ``PARSE_BYTES`` at a time."""
    from mixsql.read import parse_records, record_ranges

    blocks = ranges["_block"]
    offsets = np.searchsorted(blocks, np.arange(int(blocks[-1]) + 2 if len(blocks) else 1))  # block -> first row
    cache_group = np.full(len(offsets) - 1, -1, dtype=np.int64)
    cache_rows: list[int] = []
    held = [b for b in range(len(cache_group)) if offsets[b + 1] > offsets[b]]
    records = record_ranges(info, ranges["_offset"], ranges["_offset"] + ranges["_length"])
    with _shard_writer(shard, schema, compression) as writer:
        at = 0
        while at < len(held):
            group, size = [held[at]], int(ranges["_length"][offsets[held[at]]: offsets[held[at] + 1]].sum())
            while at + len(group) < len(held) and size < PARSE_BYTES:
                b = held[at + len(group)]
                group.append(b)
                size += int(ranges["_length"][offsets[b]: offsets[b + 1]].sum())
            lo, hi = int(offsets[group[0]]), int(offsets[group[-1] + 1])
            table = parse_records(info, [next(records) for _ in range(hi - lo)], rows[lo:hi], schema)
            for b in group:
                cache_group[b] = len(cache_rows)
                cache_rows.append(int(offsets[b + 1] - offsets[b]))
                writer.write_batch(_one_batch(table.slice(int(offsets[b]) - lo, cache_rows[-1])))
            at += len(group)
    return _entry(info, shard, rows, offsets, cache_group, cache_rows)


def _shard_writer(shard: Path, schema: t.Any, compression: str | None) -> t.Any:
    """An Arrow IPC file writer for a shard, its buffers compressed with ``compression`` (or not)."""
    import pyarrow as pa

    return pa.ipc.new_file(str(shard), schema, options=pa.ipc.IpcWriteOptions(compression=compression))


def _one_batch(table: t.Any) -> t.Any:
    """A table as one record batch: a cache row group is one batch of the shard."""
    import pyarrow as pa

    return pa.RecordBatch.from_arrays([column.combine_chunks() for column in table.columns], schema=table.schema)


def _entry(info: t.Any, shard: Path, rows: np.ndarray, offsets: np.ndarray, cache_group: np.ndarray,
           cache_rows: list[int]) -> dict[str, t.Any]:
    """A shard's entry in ``cache.json``, its rows saved beside it."""
    np.save(shard.with_suffix(".rows.npy"), rows)
    st = shard.stat()
    return {"url": info.url, "version": info.version, "dataset": info.dataset, "shard": shard.name,
            "size": st.st_size, "mtime": st.st_mtime, "group_offsets": offsets.tolist(),
            "cache_group": cache_group.tolist(), "cache_rows": cache_rows, "samples": int(len(rows))}


def _whole(target: Path, key: str, keep: bool = True) -> Compact | None:
    """The cache in ``target`` (``keep``: held open, else closed at once), or None when there is
    none or it is damaged (``Compact.damage``)."""
    if not (target / "cache.json").exists():
        return None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if json.loads((target / "cache.json").read_text(encoding="utf-8")).get("format") != FORMAT:
            return None  # of an earlier format, which this mixsql does not read: built again in its place
    found = _found(target, key)
    damaged = found.damage() is not None
    if damaged or not keep:
        found.close()
    return None if damaged else found


def _damage(target: Path, key: str) -> str | None:
    found = _found(target, key)
    try:
        return found.damage()
    finally:
        found.close()


def _found(target: Path, key: str) -> Compact:
    found = Compact(target)
    if found.meta.get("key") != key:
        raise MixSQLError(f"{target} holds another cache", hint="give another directory, or remove it")
    return found

