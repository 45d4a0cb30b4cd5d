"""Stage ``read``: fetch the records a compiled plan points at, through fsspec and Arrow.

The unit of reading is a shuffle *window* of the plan (a contiguous range of one component's
visiting order touching at most ``window`` blocks, see ``manifest``): the first time any sample of
a window is asked for, its blocks are fetched, so each Parquet row group or JSONL block is decoded
once, and only the records the plan takes from it are kept until they have been handed out.

- Parquet: only the row groups and columns a window needs (``read_row_group(columns=...)``).
- Plain JSONL: the byte ranges of the needed records (``cat_ranges``), parsed by ``pyarrow.json``
  with the dataset's registered schema, which also restricts parsing to the requested fields.
- Compressed JSONL: one sequential decompression per window, stopping after the last record needed.

Files are checked against their registered size, modification time and (on object stores) entity
tag before first use; a local file also after every block read from it (a file edited while a run
streams is caught at its next block), a remote one again whenever a block of it fails to decode (a
request per block would cost more than the block). A changed or missing file, or a record that does
not parse, is a ``DataError`` naming file and row. Records become Python objects only when
``Reader.read`` is asked for them.

Remote files (``fs.is_remote``) are read in byte ranges through ``fs.read_ranges`` (retries, the
shared disk cache); their next row groups are fetched by ``remote.settings().read_ahead`` threads
while the current ones are used, so a request's latency is hidden behind the stream's own work.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import dataclasses
import functools
import io
import os
import threading
import time
import typing as t

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from mixsql import forksafe
from mixsql import fs as mfs
from mixsql import remote
from mixsql.fs import NPY_FIELD, npy_header
from mixsql.compact import Compact, CompactFile
from mixsql.errors import DataError, MixSQLError
from mixsql.planfile import CompiledPlan, PlanFile
from mixsql.shared import SharedBlocks

DEFAULT_CACHE_BYTES = 1 << 30
READ_SAMPLES = 4096  # samples read per call: amortises the per-call work, bounds what is held at once
READ_AHEAD_THREADS = 1  # threads per reader that start decodes (each decode itself runs on every core)
BATCH_GROUPS = 16  # local row groups decoded by one call (``_decode_many``)
MAX_AHEAD = 256  # blocks held read ahead at most (decoded row groups, fetched ranges)
OBJECT_BYTES = 64 << 20  # decoded bytes of the sources held as Python objects at most (``Reader._objects_of``)
LOCAL_DEPTH = 2  # reads of local files decoded ahead of the one in use (remote: ``remote.settings().depth``)
RANGE_CHUNK = 8 << 20  # bytes read at a time from a decompressed stream (``record_ranges``)
DENSE_SPAN = 4  # read a JSONL span in one piece when it is at most this many times the bytes needed


@dataclasses.dataclass
class ReadStats:
    """What reading cost: decoded units and bytes, for benchmarks and tests."""

    windows: int = 0
    row_groups: int = 0
    row_group_rows: int = 0
    jsonl_ranges: int = 0
    decompressed_files: int = 0
    bytes_decoded: int = 0
    samples: int = 0
    decode_seconds: float = 0.0  # inside the Parquet decoder: what is left is the engine's own cost


def _in_table_order(table: pa.Table, at: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """The rows ``at`` of ``table`` in the table's order, and the order that sorts ``at`` so: a
    slice (no copy) when they are a run of the table, as a whole block taken is, else one ``take``
    (a row taken twice, as a short pool repeating within one read is, comes twice)."""
    order = np.argsort(at, kind="stable")
    ordered = at[order]
    if len(ordered) and bool((np.diff(ordered) == 1).all()):
        return table.slice(int(ordered[0]), len(ordered)), order
    return table.take(pa.array(ordered)), order


def _is_id_list(kind: pa.DataType) -> bool:
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_integer(kind.value_type)


def _id_views(column: t.Any, rows: np.ndarray) -> list[np.ndarray | None]:
    """Rows ``rows`` of a list<integer> column as NumPy views of its values (None for a null row);
    a chunked column is read chunk by chunk (``combine_chunks`` would copy every value)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    if len(chunks) != 1:
        ends = np.cumsum([len(c) for c in chunks])
        which = np.searchsorted(ends, rows, side="right")
        out: list[np.ndarray | None] = [None] * len(rows)
        for c in np.unique(which).tolist():
            mine = np.flatnonzero(which == c)
            local = rows[mine] - (int(ends[c - 1]) if c else 0)
            for slot, view in zip(mine.tolist(), _id_views(chunks[c], local)):
                out[slot] = view
        return out
    array = chunks[0]
    offsets, values = np.asarray(array.offsets), np.asarray(array.values)
    out = [values[a:b] for a, b in zip(offsets[rows].tolist(), offsets[rows + 1].tolist())]
    if array.null_count:
        valid = np.asarray(array.is_valid())[rows].tolist()
        out = [v if ok else None for v, ok in zip(out, valid)]
    return out


def _task(work: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
    """A read-ahead job, run as work a fork waits for (``forksafe``)."""
    with forksafe.task():
        return work(*args)


Decoded = tuple[pa.Table, int, int]  # a row group as held (cut down to the plan's rows, or whole), rows and bytes decoded


def _cut(table: pa.Table, keep: np.ndarray | None) -> Decoded:
    """A decoded row group cut down to rows ``keep`` (None: kept whole), with what was decoded."""
    if keep is not None:  # a table of no columns (a file with none of those asked) keeps its row count
        table, decoded = (table.take(pa.array(keep)) if table.num_columns else table.slice(0, len(keep))), table
        return table, decoded.num_rows, decoded.nbytes
    return table, table.num_rows, table.nbytes


class _Part:
    """One row group of a batched decode: its table once the batch is decoded."""

    def __init__(self, batch: concurrent.futures.Future[list[Decoded]], at: int) -> None:
        self.batch, self.at = batch, at

    def result(self) -> Decoded:
        return self.batch.result()[self.at]

    def cancel(self) -> bool:
        return False  # the batch decodes for its other row groups too

    def cancelled(self) -> bool:
        return self.batch.cancelled()


def _by_value(values: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(value, its positions) for each distinct value; one pass when all are equal, the usual case
    for a window (one block)."""
    if len(values) and not (values != values[0]).any():
        return [(int(values[0]), np.arange(len(values)))]
    return [(int(v), np.flatnonzero(values == v)) for v in np.unique(values)]


def collate(samples: t.Sequence[dict[str, t.Any]]) -> dict[str, list[t.Any]]:
    """A batch as a dict of lists (list-valued properties stay lists of lists)."""
    if not samples:
        return {}
    return {key: [s[key] for s in samples] for key in samples[0]}


class Reader:
    """Reads plan rows of one compiled plan; each process (rank, DataLoader worker) has its own.

    Reading a window resolves each of its rows to a *source*: the rows the plan takes from one
    Parquet row group (decoded once, then cut down to those rows), or the parsed records of one
    JSONL file within the window. A source stays while resolved windows still need rows of it (a
    ``partial`` reader's: while the reads announced with ``expect`` do), then
    on probation (other components and partitions reach the same block later: a component that
    takes little of its pool moves through the blocks more slowly than one that takes much), oldest
    out first once the sources on probation hold a quarter of ``cache_bytes`` (at least 64 MiB, or
    all of it if smaller); ``cache_bytes`` caps the total, least recently used first out. A request
    takes its rows from each source it touches once, and records become Python objects once.
    """

    def __init__(self, plan: CompiledPlan, columns: t.Sequence[str] | None = None, *,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, images: str = "bytes", compact: Compact | None = None) -> None:
        from mixsql.images import check_decoding

        check_decoding(images)
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 1:
            raise MixSQLError(f"memory_bytes must be a positive integer (bytes of decoded blocks held in memory), "
                              f"not {cache_bytes!r}")
        self.images = images  # encoded image fields as bytes, or decoded ("pil", "tensor")
        self._image_fields = {d: set(i.get("images", ())) for d, i in plan.dataset_info.items()}
        self.plan = plan
        self.schemas = {d: pa.ipc.read_schema(pa.py_buffer(base64.b64decode(i["record_schema"])))
                        for d, i in plan.dataset_info.items()}
        if compact is not None and columns is None:
            columns = compact.columns
        self.columns = self._columns(columns)
        self.compact = compact  # the compacted cache read instead of the sources' row groups, if any
        if compact is not None:
            compact.check(self.columns)
        self.cache_bytes = cache_bytes
        self.stats = ReadStats()
        self._resolved: collections.OrderedDict[int, tuple[int, np.ndarray, np.ndarray]] = collections.OrderedDict()
        self._sources: collections.OrderedDict[tuple, pa.Table] = collections.OrderedDict()
        self._index: dict[tuple, np.ndarray] = {}  # a source kept whole: the table row of each member
        self._source_bytes = 0
        self._parquet: collections.OrderedDict[int, pq.ParquetFile] = collections.OrderedDict()
        self._available: dict[int, list[str]] = {}
        self._projections: dict[int, tuple[tuple[str, ...], pa.Schema]] = {}
        self._npy_headers: dict[int, tuple[int, np.dtype]] = {}
        self._inflated: collections.OrderedDict[int, tuple[np.ndarray, list[bytes], int]] = collections.OrderedDict()
        self._checked: set[int] = set()
        self._keys: list[tuple] = []
        self._key_ids: dict[tuple, int] = {}
        self._pending: dict[int, int] = collections.defaultdict(int)  # rows of resolved windows not yet handed out
        self._probation: collections.OrderedDict[int, int] = collections.OrderedDict()  # source id -> bytes
        self._probation_bytes = 0
        self._probation_limit = max(cache_bytes // 4, min(cache_bytes, 64 << 20))
        self._members: dict[tuple[int, int], np.ndarray] = {}
        self._selected: dict[tuple, tuple[np.ndarray, bool]] = {}  # a read-ahead row group's ``_selection``
        # a source that later reads take more rows of: its columns as Python objects, made once (``batches``)
        # (with the decoded bytes each stands for, which ``OBJECT_BYTES`` bounds)
        self._objects: collections.OrderedDict[int, tuple[dict[str, list[t.Any]], int]] = collections.OrderedDict()
        self._objects_held = 0
        # off in a DataLoader worker among several: each takes every other batch, so about half of a
        # block's rows, and its objects would cost a worker memory for a conversion it barely shares
        self.objects = True
        # may read only some rows of the windows it resolves (a DataLoader worker among several, a rank whose
        # partitions other ranks read too, a resumed stream): its sources are then held for the reads
        # announced with ``expect``, since whole windows' rows would never all be handed out and let go
        self.partial = False
        self._ahead: dict[tuple, concurrent.futures.Future[pa.Table]] = {}  # row groups decoding meanwhile
        self._ahead_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.ahead_dropped = 0  # read-ahead blocks dropped by the bound so far: their reads may ask again
        self._shard_files: collections.OrderedDict[int, t.Any] = collections.OrderedDict()  # open cache shards
        self._ahead_files = threading.local()  # each read-ahead thread opens its own files
        self._remote = [mfs.is_remote(info.url) for info in plan.files]
        self._shards: list[tuple[PlanFile, CompactFile] | None] = [None] * len(plan.files)
        if compact is not None:
            for info in plan.files:
                held = compact.file(info.url, info.version) if info.format in ("parquet", "jsonl") else None
                if held is not None:  # its shard, read as a file of its own index, after the plan's files
                    shard = PlanFile(index=len(plan.files) + info.index, dataset=info.dataset, file_id=info.file_id,
                                     url=str(held.path), format="arrow", compression=None, size=held.size,
                                     mtime=held.mtime, row_groups=tuple(held.cache_rows))
                    self._shards[info.index] = (shard, held)
            self._remote += [False] * len(plan.files)
        self._shards_checked: set[int] = set()
        self._mapped = compact is not None and compact.meta.get("compression") is None  # shards read in place
        self.remote = any(self._remote)  # some file is in an object store: reads ahead go deeper
        self._checks: dict[int, concurrent.futures.Future[None]] = {}  # remote fingerprints being asked
        self.shared: SharedBlocks | None = None  # decoded row groups shared with the other DataLoader workers
        self._fragments = Fragments()  # local Parquet files for batched decodes, footers read once

    def _columns(self, columns: t.Sequence[str] | None) -> list[str]:
        names: list[str] = []
        for schema in self.schemas.values():
            names += [n for n in schema.names if n not in names]
        if columns is None:
            return names
        if isinstance(columns, (str, bytes)) or not all(isinstance(c, str) for c in columns):
            raise MixSQLError(f"columns must be a list of field names, not {columns!r}",
                              hint=f"e.g. columns=['{names[0] if names else 'text'}']")
        unknown = [c for c in columns if c not in names and c != "component"]
        if unknown:
            raise MixSQLError(f"unknown column {unknown[0]!r}", hint=f"the records have: {', '.join(names)}")
        return [c for c in columns if c != "component"]

    # -- public ----------------------------------------------------------------------------------

    def read(self, rows: np.ndarray) -> pa.Table:
        """The records of plan ``rows`` in that order, with the requested columns and ``component_id``."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return self._empty()
        if not self.columns:
            return pa.table({"component_id": pa.array(self.plan.component[rows].astype(np.int16))})
        pieces, order = self._gather(rows)
        table = pa.concat_tables(pieces, promote_options="permissive") if len(pieces) > 1 else pieces[0]
        back = np.empty(len(order), dtype=np.int64)
        back[order] = np.arange(len(order))
        out = table.take(pa.array(back))
        return out.append_column("component_id", pa.array(self.plan.component[rows].astype(np.int16)))

    def samples(self, rows: np.ndarray, component: str = "name") -> list[dict[str, t.Any]]:
        """Python dicts for plan ``rows``: the record's fields plus ``component`` (name or id)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return []
        if not self.columns:  # only the component: the plan alone says it, no file is read
            return [{"component": label} for label in self._labels(rows, component)]
        return self._records(rows, self._groups(rows), component)

    def batches(self, rows: np.ndarray, size: int, component: str = "name") -> list[dict[str, list[t.Any]]]:
        """Plan ``rows`` in batches of ``size``, each a dict of lists: what ``collate`` makes of
        each batch of ``samples(rows, component)``. Made from one Arrow table in row order, each
        column turned into Python objects at once, with no dict per sample; where the sources'
        fields differ, or a field holds token ids or images to decode, from ``samples``' records."""
        rows = np.asarray(rows, dtype=np.int64)
        cuts = range(0, len(rows), size)
        if len(rows) == 0:
            return []
        if not self.columns:
            labels = self._labels(rows, component)
            return [{"component": labels[k: k + size]} for k in cuts]
        groups = list(self._groups(rows))
        names = groups[0][1].schema.names
        if (self.images != "bytes" and any(self._image_fields.values())) or any(
                table.schema.names != names or any(_is_id_list(f.type) for f in table.schema) for _, table, _, _ in groups):
            records = self._records(rows, groups, component)
            return [collate(records[k: k + size]) for k in cuts]
        flat: dict[str, list[t.Any]] = {name: [] for name in names}  # by block, then put in row order
        placed = []
        for key_id, table, group, at in groups:
            objects = self._objects_of(key_id, table, names, len(at))
            if objects is not None:  # rows picked from the block's objects, in the order of ``group``
                picked = at.tolist()
                for name in names:
                    values = objects[name]
                    flat[name].extend([values[i] for i in picked])
                placed.append(group)
            else:
                piece, order = _in_table_order(table, at)
                for name in names:
                    flat[name].extend(piece.column(name).to_pylist())
                placed.append(group[order])
            self._release(key_id, len(group))
        self.stats.samples += len(rows)
        back = np.empty(len(rows), dtype=np.int64)
        back[np.concatenate(placed)] = np.arange(len(rows))
        where = back.tolist()
        columns = {name: [values[j] for j in where] for name, values in flat.items()}
        columns["component"] = self._labels(rows, component)
        return [{name: values[k: k + size] for name, values in columns.items()} for k in cuts]

    def _objects_of(self, key_id: int, table: pa.Table, names: list[str], taking: int) -> dict[str, list[t.Any]] | None:
        """Source ``key_id``'s columns as Python objects, when later reads will take more of its rows
        and the rows held for them are at least half the table: each row is then made an object once,
        for all the reads that take it, instead of copied by a ``take`` per read and then made one.
        None where this read takes the last of them, or the held rows are a small part of the table."""
        found = self._objects.get(key_id)
        if found is not None:
            return found[0]
        held = self._pending[key_id]
        if not self.objects or held <= taking or 2 * held < table.num_rows:
            return None
        objects = {name: table.column(name).to_pylist() for name in names}
        self._objects[key_id] = (objects, table.nbytes)
        self._objects_held += table.nbytes
        while len(self._objects) > 1 and self._objects_held > OBJECT_BYTES:
            self._drop_objects(next(iter(self._objects)))
        return objects

    def _drop_objects(self, key_id: int) -> None:
        dropped = self._objects.pop(key_id, None)
        if dropped is not None:
            self._objects_held -= dropped[1]

    def _labels(self, rows: np.ndarray, component: str) -> list[t.Any]:
        names = self.plan.names if component == "name" else range(len(self.plan.names))
        return [names[cid] for cid in self.plan.component[rows].tolist()]

    def _groups(self, rows: np.ndarray) -> t.Iterator[tuple[int, pa.Table, np.ndarray, np.ndarray]]:
        """Plan ``rows`` by source block, each decoded as it comes: (its id, its table, the rows'
        places in ``rows``, their rows in the table)."""
        source, local, order, bounds = self._locate(rows)
        for group in np.split(order, bounds):
            key_id = int(source[group[0]])
            yield key_id, self._source(key_id), group, self._rows_in(key_id, local[group])

    def _records(self, rows: np.ndarray, groups: t.Iterable[tuple[int, pa.Table, np.ndarray, np.ndarray]],
                 component: str) -> list[dict[str, t.Any]]:
        out: list[dict[str, t.Any]] = [None] * len(rows)  # type: ignore[list-item]
        for key_id, table, group, at in groups:  # records become Python objects here, once, each in its place
            ids = [n for n, f in zip(table.column_names, table.schema) if _is_id_list(f.type)]
            rest = table.drop_columns(ids) if ids else table
            piece, order = _in_table_order(rest, at)
            records = piece.to_pylist() if rest.num_columns else [{} for _ in range(len(at))]
            for name in ids:  # token ids: NumPy views of the decoded column, not a Python int per token
                views = _id_views(table.column(name), at[order])
                for record, value in zip(records, views):
                    record[name] = value
            for record, slot in zip(records, group[order].tolist()):
                out[slot] = record
            self._release(key_id, len(group))
        self.stats.samples += len(rows)
        if self.images != "bytes":
            self._decode_images(out, rows)
        for record, label in zip(out, self._labels(rows, component)):
            record["component"] = label
        return out

    def _decode_images(self, records: list[dict[str, t.Any]], rows: np.ndarray) -> None:
        from mixsql.images import decode

        for record, f, row in zip(records, self.plan.file[rows].tolist(), self.plan.row[rows].tolist()):
            info = self.plan.files[f]
            for name in self._image_fields.get(info.dataset, ()):
                if name in record:
                    record[name] = decode(record[name], self.images, info.url, int(row), name)

    def id_views(self, rows: np.ndarray, field: str) -> list[np.ndarray]:
        """The token ids of a ``list<integer>`` column for plan ``rows``, in that order: NumPy views of
        the decoded sources (no copy, no Python int per id; an empty array for a null)."""
        rows = np.asarray(rows, dtype=np.int64)
        out: list[np.ndarray] = [None] * len(rows)  # type: ignore[list-item]
        if not len(rows):
            return out
        source, local, order, bounds = self._locate(rows)
        for group in np.split(order, bounds):
            key_id = int(source[group[0]])
            views = _id_views(self._source(key_id).column(field), self._rows_in(key_id, local[group]))
            for slot, value in zip(group.tolist(), views):
                out[slot] = value if value is not None else np.zeros(0, dtype=np.int64)
            self._release(key_id, len(group))
        self.stats.samples += len(rows)
        return out

    def prefetch(self, rows: np.ndarray) -> None:
        """Start decoding, in background threads, the Parquet row groups that plan ``rows`` will
        need and that are not held: the next read's decoding (which releases the GIL) overlaps
        this one's work, and a read's own row groups decode side by side. For remote files also
        their fingerprint check and the byte ranges of JSONL records and shard samples. Nothing
        else changes; a read that needs a block waits for it (and an error meets the sample that
        needs the block, not the thread)."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows) or not self.columns:
            return
        local: dict[tuple[tuple[str, ...], pa.Schema], list[tuple[PlanFile, int]]] = {}  # by columns read
        for f, mine in _by_value(self.plan.file[rows]):
            info = self.plan.files[f]
            if self._remote[f] and f not in self._checked and f not in self._checks:
                self._checks[f] = self._pool().submit(_task, check_file, info)  # its fingerprint, meanwhile too
            if info.format != "parquet" and self._shards[f] is None:
                if self._remote[f] and info.format in ("jsonl", "tar") and info.compression is None:
                    self._prefetch_ranges(info, rows[mine])  # a remote file's records: their bytes, meanwhile
                continue
            for g in np.unique(self._blocks(info, rows[mine])).tolist():
                key = ("rg", f, g)
                if key in self._sources or key in self._ahead:
                    continue
                if self._remote[f] and self._shards[f] is None:  # one request each, side by side; the footer
                    self._ahead[key] = self._pool().submit(_task, self._read_ahead, info, g, None)  # in the thread
                elif self._shards[f] is not None:
                    continue  # a compacted cache's record batch: read when needed, for less than a thread's hand-off
                else:
                    try:
                        read, rg = self._target(info, g)
                        projection = self._projection(read)
                        wanted, cut = self._selected[key] = self._selection(info, g)
                    except DataError:
                        break  # the file cannot be opened: said when a sample needs it, not ahead of time
                    local.setdefault(projection, []).append((read, rg, wanted if cut else None, key))
        for (columns, schema), groups in local.items():
            for at in range(0, len(groups), BATCH_GROUPS):
                batch = groups[at: at + BATCH_GROUPS]
                job = self._pool().submit(_task, self._decode_batch, [(i, g) for i, g, _, _ in batch],
                                          list(columns), schema, [k for _, _, k, _ in batch])
                for i, (_, _, _, key) in enumerate(batch):
                    self._ahead[key] = _Part(job, i)
        while len(self._ahead) > MAX_AHEAD:  # bounded: the oldest read-ahead is dropped (read again if needed)
            dropped = next(iter(self._ahead))
            self._ahead.pop(dropped).cancel()
            self._selected.pop(dropped, None)
            self.ahead_dropped += 1

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._ahead_pool is None:
            threads = remote.settings().read_ahead if self.remote else READ_AHEAD_THREADS
            self._ahead_pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="mixsql-read")
        return self._ahead_pool

    def _prefetch_ranges(self, info: PlanFile, rows: np.ndarray) -> None:
        """Start fetching the byte ranges that resolving the windows of ``rows`` will read from a
        remote JSONL file or shard (the same ranges ``_resolve`` asks ``_plain_ranges`` for)."""
        for w in np.unique(self.plan.window_of(rows)).tolist():
            if w in self._resolved:
                continue
            start, stop = self.plan.window_range(w)
            window = np.arange(start, stop, dtype=np.int64)
            window = window[self.plan.file[window] == info.index]
            offsets = np.sort(self.plan.byte_offset[window].astype(np.int64))
            lengths = self.plan.byte_length[window][np.argsort(self.plan.byte_offset[window], kind="stable")]
            starts, ends = offsets, offsets + lengths.astype(np.int64)
            key = ("bytes", info.index, int(starts[0]), int(ends[-1]), len(starts))
            if key not in self._ahead:
                self._ahead[key] = self._pool().submit(_task, self._fetch_plain, info, starts, ends)

    def _decode_batch(self, groups: list[tuple[PlanFile, int]], columns: list[str], schema: pa.Schema,
                      keep: list[np.ndarray | None]) -> list[Decoded]:
        """``_decode_many``, each row group cut down to its rows ``keep`` here, in the read-ahead thread;
        through the workers' shared blocks (cut, so only what the plan takes is written) when there are some."""
        if self.shared is None:
            return [_cut(table, k) for table, k in zip(_decode_many(groups, columns, schema, self._fragments), keep)]
        shared = self.shared
        decoded: dict[int, Decoded] = {}

        def decode(todo: list[int]) -> list[pa.Table]:
            for i, table in zip(todo, _decode_many([groups[i] for i in todo], columns, schema, self._fragments)):
                decoded[i] = _cut(table, keep[i])
            return [decoded[i][0] for i in todo]

        tables = shared.fill([self._shared_key(info, g, columns, k) for (info, g), k in zip(groups, keep)], decode)
        return [decoded.get(i) or (table, table.num_rows, table.nbytes) for i, table in enumerate(tables)]

    def _shard_batch(self, info: PlanFile, g: int) -> pa.Table:
        """Record batch g of a compacted cache shard, with the requested columns: read in place from
        the mapped file (a compressed shard's decompressed), here where a row of it is first needed.
        A read-ahead thread would cost more than it saves: each of its steps waits for the GIL, which
        this thread holds for up to a switch interval each time."""
        return pa.Table.from_batches([self._shard(info).get_batch(g)]).select(self._group_columns(info))

    def _shard(self, info: PlanFile) -> t.Any:
        """A compacted cache shard, opened once (the most recently used 64 kept)."""
        shard = self._shard_files.get(info.index)
        if shard is None:
            shard = self._shard_files[info.index] = _shard_file(info.url)
            if len(self._shard_files) > 64:
                self._shard_files.popitem(last=False)
        else:
            self._shard_files.move_to_end(info.index)
        return shard

    def _shared_key(self, info: PlanFile, g: int, columns: list[str], keep: np.ndarray | None) -> str:
        """A row group's entry among the shared blocks: a cut one is this plan's rows of it."""
        assert self.shared is not None
        return self.shared.key(info.url, info.version, g, [*columns, *(() if keep is None else
                                                                        ("\0cut", str(self.plan.directory)))])

    def _read_ahead(self, info: PlanFile, g: int, columns: list[str] | None) -> pa.Table:
        """Runs in a read-ahead thread, on that thread's own open files."""
        if self._remote[info.index]:
            columns = self._group_columns(info) if columns is None else columns  # the footer, in this thread
            return self._remote_file(info).read_row_group(g, columns=columns, use_threads=False)
        files = getattr(self._ahead_files, "files", None)
        if files is None:
            files = self._ahead_files.files = collections.OrderedDict()
        pf = files.get(info.index)
        if pf is None:
            pf = files[info.index] = pq.ParquetFile(mfs.open_binary(info.url))
            if len(files) > 16:
                files.popitem(last=False)[1].close()
        return pf.read_row_group(g, columns=columns, use_threads=False)

    def _locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(source id, row within the source) of each of ``rows``, and the rows grouped by source
        (an order and where each group starts)."""
        source, local = self._placed(rows)
        order = np.argsort(source, kind="stable")
        return source, local, order, np.flatnonzero(np.diff(source[order])) + 1

    def _placed(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source id, row within the source) of each of ``rows``, resolving their windows."""
        windows = self.plan.window_of(rows)
        source = np.empty(len(rows), dtype=np.int64)
        local = np.empty(len(rows), dtype=np.int64)
        for w in np.unique(windows).tolist():
            start, ids, locs = self._resolve(w)
            mine = np.flatnonzero(windows == w)
            source[mine] = ids[rows[mine] - start]
            local[mine] = locs[rows[mine] - start]
        return source, local

    def _gather(self, rows: np.ndarray) -> tuple[list[pa.Table], np.ndarray]:
        """One ``take`` per source: the pieces, and for their concatenation the position of each row."""
        source, local, order, bounds = self._locate(rows)
        pieces = []
        for group in np.split(order, bounds):
            key_id = int(source[group[0]])
            table = self._source(key_id)
            pieces.append(table.take(pa.array(self._rows_in(key_id, local[group]))))
            self._release(key_id, len(group))
        self.stats.samples += len(rows)
        return pieces, order

    def _release(self, key_id: int, n: int) -> None:
        """Rows handed out; a source no resolved window still needs goes on probation, for the other
        components and partitions that reach the same block later, then out. One that the workers'
        shared blocks hold goes out at once: a later read maps it back from there, without a decode
        and without a copy per worker."""
        left = max(self._pending[key_id] - n, 0)  # a read not announced to a partial reader counts none
        self._pending[key_id] = left
        if left > 0:
            return
        self._drop_objects(key_id)
        key = self._keys[key_id]
        self._probation_bytes -= self._probation.pop(key_id, 0)
        if self.shared is not None and self._through_shared(key):
            self._evict(key)
            return
        table = self._sources.get(key)
        size = 0 if table is None else table.nbytes
        self._probation[key_id] = size
        self._probation_bytes += size
        while self._probation_bytes > self._probation_limit and len(self._probation) > 1:
            old, held = self._probation.popitem(last=False)
            self._probation_bytes -= held
            self._evict(self._keys[old])

    def _through_shared(self, key: tuple) -> bool:
        """Whether source ``key`` is read through the workers' shared blocks, when there are some: a
        row group of a local Parquet file, not of a compacted cache."""
        if key[0] != "rg":
            return False
        f = key[1]
        return self.plan.files[f].format == "parquet" and self._shards[f] is None and not self._remote[f]

    # -- windows and sources ---------------------------------------------------------------------

    def _empty(self) -> pa.Table:
        schema = pa.schema([self._field(c) for c in self.columns] + [("component_id", pa.int16())])
        return schema.empty_table()

    def _field(self, name: str) -> pa.Field:
        for schema in self.schemas.values():
            if name in schema.names:
                return schema.field(name)
        raise KeyError(name)  # pragma: no cover

    def _key_id(self, key: tuple) -> int:
        found = self._key_ids.get(key)
        if found is None:
            found = self._key_ids[key] = len(self._keys)
            self._keys.append(key)
        return found

    def _resolve(self, w: int) -> tuple[int, np.ndarray, np.ndarray]:
        """Map the rows of window w to (source id, row within the source), fetching what is missing."""
        entry = self._resolved.get(w)
        if entry is not None:
            self._resolved.move_to_end(w)
            return entry
        start, stop = self.plan.window_range(w)
        rows = np.arange(start, stop, dtype=np.int64)
        ids = np.empty(len(rows), dtype=np.int64)
        locs = np.empty(len(rows), dtype=np.int64)
        for f, mine in _by_value(self.plan.file[rows]):
            info = self.plan.files[f]
            self._check(info)
            if info.format == "parquet" or self._shards[f] is not None:  # by blocks (a cached JSONL file too)
                for g, at in _by_value(self._blocks(info, rows[mine])):
                    sel = mine[at]
                    members = self._group_members(f, g)
                    ids[sel] = self._key_id(("rg", f, g))
                    locs[sel] = np.searchsorted(members, rows[sel])
            else:  # a JSONL (or token array) source is this window's records of the file, read together
                key = (info.format, f, w)
                ids[mine] = self._key_id(key)
                locs[mine] = np.arange(len(mine))
                read = {"npy": self._npy_rows, "tar": self._tar_rows}.get(info.format, self._jsonl_rows)
                self._store(key, read(info, self.plan.row[rows[mine]], self.plan.byte_offset[rows[mine]],
                                      self.plan.byte_length[rows[mine]]))
        if not self.partial:
            self._hold(ids)
        self.stats.windows += 1
        entry = (start, ids, locs)
        self._resolved[w] = entry
        if len(self._resolved) > 4096:
            self._resolved.popitem(last=False)
        return entry

    def _hold(self, ids: np.ndarray) -> None:
        """Rows of sources (their ids) still to be handed out: each source is held until they are."""
        for key_id, at in _by_value(ids):
            self._pending[key_id] += len(at)
            self._probation_bytes -= self._probation.pop(key_id, 0)

    def expect(self, rows: np.ndarray) -> None:
        """Announce a read of plan ``rows`` to come (each read once, before it is read). A ``partial``
        reader holds a source for the announced reads that need it, then puts it on probation; any
        other counts whole windows, and this does nothing."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.partial and len(rows) and self.columns:
            self._hold(self._placed(rows)[0])

    def _source(self, key_id: int) -> pa.Table:
        key = self._keys[key_id]
        table = self._sources.get(key)
        if table is not None:
            self._sources.move_to_end(key)
            return table
        if key[0] == "rg":
            info = self.plan.files[key[1]]
            found = self._selected.pop(key, None)
            wanted, cut = self._selection(info, key[2]) if found is None else found
            table = self._decode_row_group(info, key[2], wanted if cut else None)
            if not cut:
                self._index[key] = wanted
        else:  # a JSONL source that was evicted: resolve its window again
            self._resolved.pop(key[2], None)
            self._resolve(key[2])
            table = self._sources[key]
        self._store(key, table)
        return table

    def _rows_in(self, key_id: int, local: np.ndarray) -> np.ndarray:
        """Rows of a source's table holding its members ``local`` (the same unless it is kept whole)."""
        index = self._index.get(self._keys[key_id])
        return local if index is None else index[local]

    def _store(self, key: tuple, table: pa.Table) -> None:
        if key in self._sources:
            return
        self._sources[key] = table
        self._source_bytes += table.nbytes
        while self._source_bytes > self.cache_bytes and len(self._sources) > 1:
            victim = next(iter(self._probation), None)
            if victim is not None:
                self._probation_bytes -= self._probation.pop(victim)
                self._evict(self._keys[victim])
            else:
                self._evict(next(iter(self._sources)))

    def _evict(self, key: tuple) -> None:
        found = self._key_ids.get(key)
        if found is not None:
            self._drop_objects(found)
        table = self._sources.pop(key, None)
        self._index.pop(key, None)
        if table is not None:
            self._source_bytes -= table.nbytes

    def _check(self, info: PlanFile, *, again: bool = False, failed: bool = False) -> None:
        """The file is as registered (size, modification time, entity tag): before its first use,
        and ``again`` after every block read from it (a local file; a remote one only when a block
        ``failed``), so a file edited while a run streams is an error, never samples of other data
        under the registered labels."""
        if info.index in self._checked and not (again and (failed or not self._remote[info.index])):
            return
        if self._remote[info.index] and not failed:
            pending = self._checks.pop(info.index, None)
            if pending is not None:  # asked by a read-ahead thread: its answer (or its error, here)
                pending.result()
                self._checked.add(info.index)
                return
        check_file(info)
        self._checked.add(info.index)

    def _conform(self, table: pa.Table, dataset: str) -> pa.Table:
        """The requested columns, with the dataset's registered types (NULL where a dataset lacks one)."""
        cols = []
        for name in self.columns:
            field = self._field(name)
            if name in table.column_names:
                col = table.column(name)
                if pa.types.is_struct(col.type) and pa.types.is_binary(field.type):  # an image as {bytes, path}
                    col = pa.compute.struct_field(col, "bytes")
                cols.append(col if col.type == field.type else col.cast(field.type))
            else:
                cols.append(pa.nulls(table.num_rows, field.type))
        return pa.Table.from_arrays(cols, names=self.columns)

    # -- Parquet -----------------------------------------------------------------------------------

    def _remote_file(self, info: PlanFile) -> mfs.RemoteParquet:
        """A remote Parquet file, its footer read once per process (threads share it)."""
        return mfs.RemoteParquet.open(info.url, info.size, info.version)

    def _parquet_file(self, info: PlanFile) -> t.Any:
        if self._remote[info.index]:
            return self._remote_file(info)
        pf = self._parquet.get(info.index)
        if pf is None:
            try:
                pf = pq.ParquetFile(mfs.open_binary(info.url))
            except (pa.ArrowInvalid, OSError) as e:
                self._check(info, again=True, failed=True)  # a file that changed says so
                raise DataError(f"cannot read {info.url}: {e}", file=info.url) from None
            self._parquet[info.index] = pf
            if len(self._parquet) > 64:
                _, old = self._parquet.popitem(last=False)
                old.close()
        else:
            self._parquet.move_to_end(info.index)
        return pf

    def _group_members(self, f: int, g: int) -> np.ndarray:
        """Plan rows in row group g of file f, ascending: a decoded group keeps just these rows."""
        members = self._members.get((f, g))
        if members is None:
            members = self._members[(f, g)] = self.plan.block_rows(f, g)
            if len(self._members) > 4096:
                self._members.pop(next(iter(self._members)))
        return members

    def _projection(self, info: PlanFile) -> tuple[tuple[str, ...], pa.Schema]:
        """The requested columns a local Parquet file has, and their types in it."""
        found = self._projections.get(info.index)
        if found is None:
            columns = self._group_columns(info)
            schema = self._schema(info)
            found = self._projections[info.index] = (tuple(columns), pa.schema([schema.field(c) for c in columns]))
        return found

    def _schema(self, info: PlanFile) -> pa.Schema:
        """A Parquet file's Arrow schema (a local file's from the footer its batched decodes read too),
        or a compacted cache shard's."""
        if self._remote[info.index]:
            return self._parquet_file(info).schema_arrow
        try:
            if info.format == "arrow":
                return self._shard(info).schema
            return self._fragments.base(info).physical_schema
        except (pa.ArrowInvalid, OSError) as e:
            self._check(info, again=True, failed=True)  # a file that changed says so
            raise DataError(f"cannot read {info.url}: {e}", file=info.url) from None

    def _group_columns(self, info: PlanFile) -> list[str]:
        """The requested columns that file ``info`` has."""
        columns = self._available.get(info.index)
        if columns is None:
            available = set(self._schema(info).names)
            columns = self._available[info.index] = [c for c in self.columns if c in available]
        return columns

    def _target(self, info: PlanFile, g: int) -> tuple[PlanFile, int]:
        """Where row group g of plan file ``info`` is read: the compacted cache's row group of it, or itself."""
        shard = self._shards[info.index]
        if shard is None:
            return info, g
        if info.index not in self._shards_checked:
            assert self.compact is not None
            self.compact.check_shard(shard[1])  # once, before its first row group is read
            self._shards_checked.add(info.index)
        return shard[0], int(shard[1].cache_group[g])

    def _decode_row_group(self, info: PlanFile, g: int, keep: np.ndarray | None) -> pa.Table:
        """Row group g of ``info`` (or its compacted cache's), cut down to its rows ``keep`` (``_selection``)."""
        ahead = self._ahead.pop(("rg", info.index, g), None)
        began = time.perf_counter()
        read, rg = self._target(info, g)
        decoded: Decoded | None = None
        try:
            if isinstance(ahead, _Part):
                try:
                    decoded = ahead.result()
                except (pa.ArrowException, OSError, DataError, concurrent.futures.CancelledError):
                    pass  # the batch failed: this row group alone says whether it is the one
            elif ahead is not None and not ahead.cancelled():
                decoded = _cut(ahead.result(), keep)
            if decoded is None:
                columns = self._group_columns(read)
                if read.format == "arrow":
                    decoded = _cut(self._shard_batch(read, rg), keep)
                elif self.shared is not None and self._through_shared(("rg", info.index, g)):
                    decoded = self._decode_batch([(read, rg)], columns, self._projection(read)[1], [keep])[0]
                else:
                    decoded = _cut(self._parquet_file(read).read_row_group(rg, columns=columns, use_threads=False),
                                   keep)
        except (pa.ArrowInvalid, OSError, IndexError) as e:
            self._check(info, again=True, failed=True)  # a file that changed says so, rather than "cannot decode"
            where = info.url if read is info else f"{read.url} (the compacted cache of {info.url})"
            raise DataError(f"cannot decode row group {rg} of {where}: {e}", file=read.url,
                            row=int(info.row_group_starts[g]) if info.format == "parquet" else  # a JSONL file's
                            int(self.plan.row[self._group_members(info.index, g)[0]])) from None  # cache: its first
        self.stats.decode_seconds += time.perf_counter() - began
        self._check(info, again=True)
        table, rows, nbytes = decoded
        self.stats.row_groups += 1
        self.stats.row_group_rows += rows
        self.stats.bytes_decoded += nbytes
        return self._conform(table, info.dataset)

    def _blocks(self, info: PlanFile, rows: np.ndarray) -> np.ndarray:
        """The block (row group; for a cached JSONL file its byte range) of each of plan ``rows`` of ``info``."""
        return info.block_of(self.plan.row[rows], None if self.plan.byte_offset is None else
                             self.plan.byte_offset[rows])

    def _selection(self, info: PlanFile, g: int) -> tuple[np.ndarray, bool]:
        """Rows of decoded row group g of ``info`` (the source's, or its compacted cache's) that hold
        the plan's members of it, ascending; and whether the group is cut down to them at decode (in
        the read-ahead thread), which it is where the plan takes under half of it; else it is kept
        whole, without a copy, and its members found through these rows."""
        members = self.plan.row[self._group_members(info.index, g)].astype(np.int64)
        shard = self._shards[info.index]
        if shard is None:
            wanted, size = members - info.row_group_starts[g], info.row_groups[g]  # type: ignore[index]
        else:  # the cache's row group holds the selected rows of the source's only
            wanted, size = shard[1].positions(g, members), shard[1].cache_rows[int(shard[1].cache_group[g])]
            if self._mapped:
                return wanted, False  # read in place: a cut would only copy what is there without one
        return wanted, 2 * len(wanted) < size

    # -- flat token arrays ---------------------------------------------------------------------------

    def _npy_rows(self, info: PlanFile, rows: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> pa.Table:
        """Documents of a token array by token range: one read of the bytes they span (or one per
        range when sparse), as a list column without a Python object per token."""
        header = self._npy_headers.get(info.index)
        if header is None:
            if self._remote[info.index]:
                fh = io.BytesIO(mfs.read_range(info.url, 0, min(info.size, 4096), info.version))
                header = self._npy_headers[info.index] = npy_header(fh, info.url)[:2]
            else:
                with mfs.open_binary(info.url) as fh:
                    header = self._npy_headers[info.index] = npy_header(fh, info.url)[:2]
        base, dtype = header
        size = dtype.itemsize
        order = np.argsort(offsets, kind="stable")
        starts = base + offsets[order].astype(np.int64) * size
        ends = starts + lengths[order].astype(np.int64) * size
        chunks = self._plain_ranges(info, starts, ends)
        values = np.frombuffer(b"".join(chunks), dtype=dtype)
        if len(values) * size != int((ends - starts).sum()):
            self._check(info, again=True, failed=True)
            raise DataError(f"{info.url} is shorter than when it was registered", file=info.url)
        back = np.empty(len(order), dtype=np.int64)
        back[order] = np.arange(len(order))
        sizes = lengths[order].astype(np.int64)[back]
        # documents back in the requested order: gather their ranges of the read values
        first = np.concatenate(([0], np.cumsum(lengths[order].astype(np.int64))))[:-1][back]
        index = np.repeat(first - np.concatenate(([0], np.cumsum(sizes)[:-1])), sizes) + np.arange(int(sizes.sum()))
        column = pa.ListArray.from_arrays(pa.array(np.concatenate(([0], np.cumsum(sizes))).astype(np.int32)),
                                          pa.array(values[index]))
        return self._conform(pa.table({NPY_FIELD: column}), info.dataset)

    # -- WebDataset shards ---------------------------------------------------------------------------

    def _tar_rows(self, info: PlanFile, rows: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> pa.Table:
        """Samples of a shard: each one's byte range (read together, as JSONL records are), its
        members parsed from it."""
        from mixsql import images

        order = np.argsort(offsets, kind="stable")
        blobs = self._plain_ranges(info, offsets[order], offsets[order] + lengths[order])
        schema = self.schemas[info.dataset]
        wanted = pa.schema([schema.field(c) for c in self.columns if c in schema.names])
        records = []
        for blob, row in zip(blobs, rows[order].tolist()):
            key, members = images.sample_members(blob, info.url, row)
            records.append(images.sample_record(key, members, info.url, row))
        try:
            table = pa.Table.from_pylist(records, schema=wanted)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            self._check(info, again=True, failed=True)
            raise DataError(f"{info.url}: a sample's fields do not have their registered types ({e})",
                            file=info.url, hint=f"register dataset {info.dataset!r} again with --replace") from None
        back = np.empty(len(order), dtype=np.int64)
        back[order] = np.arange(len(order))
        return self._conform(table.take(pa.array(back)), info.dataset)

    # -- JSONL -------------------------------------------------------------------------------------

    def _jsonl_rows(self, info: PlanFile, rows: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> pa.Table:
        order = np.argsort(offsets, kind="stable")
        starts, ends = offsets[order], offsets[order] + lengths[order]
        if info.compression is None:
            records = self._plain_ranges(info, starts, ends)
        else:
            records = self._inflated_records(info, starts)
        table = self._parse(info, records, rows[order])
        back = np.empty(len(order), dtype=np.int64)
        back[order] = np.arange(len(order))
        return self._conform(table.take(pa.array(back)), info.dataset)

    def _plain_ranges(self, info: PlanFile, starts: np.ndarray, ends: np.ndarray) -> list[bytes]:
        """Records [starts[i], ends[i]) of an uncompressed file (``starts`` ascending): fetched by a
        read-ahead thread meanwhile, or now."""
        ahead = self._ahead.pop(("bytes", info.index, int(starts[0]), int(ends[-1]), len(starts)), None)
        if ahead is not None and not ahead.cancelled():
            records, ranges, fetched = ahead.result()
        else:
            records, ranges, fetched = self._fetch_plain(info, starts, ends)
        self.stats.jsonl_ranges += ranges
        self.stats.bytes_decoded += fetched
        self._check(info, again=True)
        return records

    @staticmethod
    def _fetch_plain(info: PlanFile, starts: np.ndarray, ends: np.ndarray) -> tuple[list[bytes], int, int]:
        """(records, requests, bytes): the whole span in one read when it is dense, else each range."""
        needed = int((ends - starts).sum())
        span = int(ends[-1] - starts[0])
        if span <= DENSE_SPAN * needed:  # one read of the whole span beats many small ones
            base = int(starts[0])
            blob = mfs.read_range(info.url, base, base + span, info.version)
            return [blob[s - base: e - base] for s, e in zip(starts.tolist(), ends.tolist())], 1, span
        return mfs.read_ranges(info.url, starts.tolist(), ends.tolist(), info.version), len(starts), needed

    def _inflated_records(self, info: PlanFile, starts: np.ndarray) -> list[bytes]:
        """Records of a compressed file by decompressed offset. A compressed stream can only be read
        from its start, so the first need decompresses the file once and keeps every record the plan
        takes from it (a sequential pass, stopping after the last one)."""
        entry = self._inflated.get(info.index)
        if entry is None:
            mine = np.flatnonzero(self.plan.file == info.index)
            offsets = np.unique(self.plan.byte_offset[mine])
            lengths = np.zeros(len(offsets), dtype=np.int64)
            lengths[np.searchsorted(offsets, self.plan.byte_offset[mine])] = self.plan.byte_length[mine]
            records = self._decompressed_ranges(info, offsets, offsets + lengths)
            entry = (offsets, records, sum(len(r) for r in records))
            self._inflated[info.index] = entry
            while sum(e[2] for e in self._inflated.values()) > self.cache_bytes // 2 and len(self._inflated) > 1:
                self._inflated.popitem(last=False)
        else:
            self._inflated.move_to_end(info.index)
        offsets, records, _ = entry
        return [records[i] for i in np.searchsorted(offsets, starts).tolist()]

    def _decompressed_ranges(self, info: PlanFile, starts: np.ndarray, ends: np.ndarray) -> list[bytes]:
        def counted(n: int) -> None:
            self.stats.bytes_decoded += n

        records = list(record_ranges(info, starts, ends, counted))
        self._check(info, again=True)
        self.stats.decompressed_files += 1
        return records

    def _parse(self, info: PlanFile, records: list[bytes], rows: np.ndarray) -> pa.Table:
        schema = self.schemas[info.dataset]
        try:
            return parse_records(info, records, rows, pa.schema([schema.field(c) for c in self.columns
                                                                 if c in schema.names]))
        except DataError:
            self._check(info, again=True, failed=True)  # a file that changed says so, rather than "cannot parse"
            raise


def record_ranges(info: PlanFile, starts: np.ndarray, ends: np.ndarray,
                  read: t.Callable[[int], None] = lambda n: None) -> t.Iterator[bytes]:
    """The byte ranges [starts, ends) (ascending) of a file's decompressed stream, in one sequential
    pass that stops after the last (``read`` is told the size of each chunk read). What is held is
    cut down only when more must be read, so each byte is copied a bounded number of times."""
    position = 0  # decompressed offset of buffer[0]
    buffer = b""
    with mfs.open_stream(info.url, info.compression, info.size, info.version) as stream:
        for s, e in zip(starts.tolist(), ends.tolist()):
            held = position + len(buffer)
            if e > held:
                parts, position = ([], held) if s >= held else ([buffer[s - position:]], s)
                while held < e:
                    chunk = stream.read(RANGE_CHUNK)
                    if not chunk:
                        raise DataError(f"{info.url} ends before byte {e} of its decompressed stream", file=info.url)
                    read(len(chunk))
                    held += len(chunk)
                    if parts or held > s:
                        parts.append(chunk)
                    else:  # wholly before the record: not kept
                        position = held
                buffer = b"".join(parts)
            yield buffer[s - position: e - position]


def parse_records(info: PlanFile, records: list[bytes], rows: np.ndarray, schema: pa.Schema) -> pa.Table:
    """JSONL ``records`` (source ``rows`` of file ``info``) as a table of ``schema``'s fields; a record
    that does not parse is an error naming file and row."""
    data = b"\n".join(records) + b"\n"
    try:
        table = pajson.read_json(io.BytesIO(data), read_options=pajson.ReadOptions(use_threads=False,
                                 block_size=max(1 << 20, len(data) + 1)),
                                 parse_options=pajson.ParseOptions(explicit_schema=schema,
                                                                   unexpected_field_behavior="ignore"))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise _bad_record(info, records, rows, str(e)) from None
    if table.num_rows != len(records):
        raise _bad_record(info, records, rows, f"{table.num_rows} records parsed from {len(records)} lines")
    return table


def _bad_record(info: PlanFile, records: list[bytes], rows: np.ndarray, reason: str) -> DataError:
    import json

    for record, row in zip(records, rows.tolist()):
        try:
            value = json.loads(record)
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            return DataError(f"{info.url}, record {row}: cannot parse ({e}); the file changed since it was "
                             "registered or is corrupt", file=info.url, row=int(row),
                             hint=f"register dataset {info.dataset!r} again with --replace")
    return DataError(f"{info.url}: cannot parse records: {reason}", file=info.url)


@functools.lru_cache(maxsize=1)
def _decode_pool() -> pa.MemoryPool:
    """Where decoded row groups live: jemalloc where Arrow has it. Arrow's default (mimalloc) gives
    freed pages back at once, and a stream that decodes and drops blocks of megabytes all the time
    then spends its time in the kernel zeroing fresh pages (measured: 45 % of a 2-worker run)."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return pa.default_memory_pool()  # the user chose
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.default_memory_pool()


def _shard_file(path: str) -> t.Any:
    """A compacted cache shard (an Arrow IPC file), memory-mapped: its footer is read; a record batch
    asked for is read in place (a compressed one decompressed into the decode pool)."""
    return pa.ipc.open_file(pa.memory_map(path), memory_pool=_decode_pool())


def _decode_many(groups: list[tuple[PlanFile, int]], columns: list[str], schema: pa.Schema,
                 fragments: Fragments) -> list[pa.Table]:
    """Row groups of local Parquet files (of one schema), decoded by one call on every core: a
    decode per call would wait for the GIL at its start and end, which a thread busy in Python
    holds for up to a switch interval each time (measured: 8 x slower). Each file is one fragment
    of its row groups, cut from a fragment whose footer was read once (a fragment made anew per
    row group would parse the footer each time: 60 x slower for a wide file). A failure fails the
    batch; each of its row groups is then decoded alone as it is needed, so the error meets its sample."""
    by_file: dict[int, list[int]] = {}
    for info, g in groups:
        by_file.setdefault(info.index, []).append(g)
    infos = {info.index: info for info, _ in groups}
    order = [(f, sorted(set(gs))) for f, gs in by_file.items()]  # a fragment reads its row groups ascending
    parts = [fragments.base(infos[f]).subset(row_group_ids=gs) for f, gs in order]
    table = pads.FileSystemDataset(parts, schema, fragments.format, fragments.local).to_table(
        columns=columns, use_threads=True, memory_pool=_decode_pool())
    sizes = [infos[f].row_groups[g] for f, gs in order for g in gs]  # type: ignore[index]
    if table.num_rows != sum(sizes):
        raise DataError(f"{table.num_rows} rows decoded from row groups of {sum(sizes)}")
    # a dataset built from a list of fragments is read in their order
    starts = np.concatenate(([0], np.cumsum(sizes))).tolist()
    decoded = {(f, g): table.slice(starts[i], sizes[i])
               for i, (f, g) in enumerate((f, g) for f, gs in order for g in gs)}
    return [decoded[(info.index, g)] for info, g in groups]


class Fragments:
    """Arrow dataset fragments of local Parquet files, each file's footer read once (the most
    recently used 64 kept), for the read-ahead thread's batched decodes."""

    def __init__(self) -> None:
        self.format = pads.ParquetFileFormat()
        self.local = pafs.LocalFileSystem()
        self._bases: collections.OrderedDict[int, t.Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    def base(self, info: PlanFile) -> t.Any:
        with self._lock:
            found = self._bases.get(info.index)
            if found is not None:
                self._bases.move_to_end(info.index)
                return found
        found = self.format.make_fragment(mfs.local_path(info.url), self.local)
        found.ensure_complete_metadata()
        with self._lock:
            self._bases[info.index] = found
            while len(self._bases) > 64:
                self._bases.popitem(last=False)
        return found


def verify_files(plan: CompiledPlan) -> None:
    """Every file of the plan as registered, now: once per compile in the process that compiles (one
    listing per directory of an object store); readers then check each file as they first open it
    (a remote one in a read-ahead thread, beside the other fetches)."""
    urls = [info.url for info in plan.files]
    try:
        now = mfs.describe_many(urls)
    except DataError:
        now = {}
    for info in plan.files:
        check_file(info, now.get(info.url))


def check_file(info: PlanFile, now: mfs.SourceFile | None = None) -> None:
    """A DataError unless the file is now as it was registered (size, modification time, entity tag)."""
    try:
        if now is None and mfs.is_remote(info.url):
            now = mfs.describe(info.url)
        size, mtime, etag = (now.size, now.mtime, now.etag) if now is not None else mfs.fingerprint(info.url)
    except DataError as e:
        raise DataError(f"{e.message}; it was registered as part of dataset {info.dataset!r}", file=info.url,
                        hint=f"restore it, or register dataset {info.dataset!r} again with --replace") from None
    changed_tag = info.etag is not None and etag is not None and etag != info.etag
    if size != info.size or changed_tag or (info.mtime is not None and mtime is not None and mtime != info.mtime):
        what = f"entity tag {info.etag} -> {etag}" if changed_tag else f"modified {info.mtime} -> {mtime}"
        raise DataError(
            f"data file {info.url} changed since it was registered (size {info.size} -> {size}, {what})",
            file=info.url, hint=f"register dataset {info.dataset!r} again with --replace, then plan again")

