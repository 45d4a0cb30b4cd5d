"""The compiled plan on disk, as a run reads it: the interface between compile time and run time.

A plan is a directory that every rank and DataLoader worker memory-maps (``manifest`` writes it):
``plan.json`` (parameters, files, components), one ``.npy`` per sample column (``component``,
``file``, ``row``, and ``offset``/``length`` for JSONL byte ranges; one entry per sample of the
stream, by component, partition and visiting order), ``chunks.npy`` (cumulative counts per chunk),
``windows.npy`` (where each shuffle window starts) and ``window_blocks.npy`` (the blocks each window
reads); a stream planned from token counts also has ``stream_rows.npy`` (each partition's stream as
plan rows, partitions one after another: ``tokenplan``), which replaces the chunk arithmetic; when the datasets have token counts, also a ``tokens`` column, ``stream_tokens.npy``, ``row_tokens.npy``,
``row_index.npy`` and ``pool_lengths.npy`` (the packing layout, see ``packing`` and
``manifest._stream_tokens``) and ``tokenizer.json``. Any chunk is addressed by a lookup in the chunk table; nothing earlier is computed.
This module imports no compile-time stage (sqlglot, DuckDB, parse, bind, plan, catalog).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import typing as t
from pathlib import Path

import numpy as np
import pyarrow as pa

from mixsql import locks
from mixsql.chunks import chunk_order, partition_length, rotation
from mixsql.errors import PlanError
from mixsql.fs import version_of
from mixsql.world import partition_indices

# A sample's block (the catalog's ``_block``): its Parquet row group; else a range of its file, from
# its offset (the decompressed byte offset of a JSONL record or shard sample, the first token of a
# document in a token array), and the whole file for a compressed JSONL file.
JSONL_BLOCK_SHIFT = 20  # a plain JSONL file's (and a shard's) blocks are its 1 MiB byte ranges
NPY_BLOCK_SHIFT = 20  # a flat token array's blocks are its ranges of 2**20 tokens

PLAN_FORMAT = 11  # part of every plan key: bump it whenever the stream a statement defines, or the layout, changes
SAMPLE_COLUMNS = {"component": np.int16, "file": np.int32, "row": np.int32, "offset": np.int64, "length": np.int32,
                  "tokens": np.int32}
# offset and length (JSONL byte ranges) are left out of plans that read only Parquet; tokens (each
# sample's n_tokens) out of plans whose datasets have no token counts from one tokenizer.


def _mapped(path: Path) -> np.ndarray:
    """A plan array memory-mapped (shared by every process), as a plain ndarray view: slicing an
    ``np.memmap`` makes a memmap object each time, a cost per read that adds up."""
    return np.asarray(np.load(path, mmap_mode="r"))


@dataclasses.dataclass(frozen=True)
class PlanFile:
    """A source file as the plan sees it (``index`` is its position in the plan's file list)."""

    index: int
    dataset: str
    file_id: int
    url: str
    format: str
    compression: str | None
    size: int
    mtime: float | None
    row_groups: tuple[int, ...] | None
    etag: str | None = None

    @property
    def version(self) -> str:
        """The registered version of the file's content (keys cached blocks of it)."""
        return version_of(self.size, self.mtime, self.etag)

    @functools.cached_property
    def row_group_starts(self) -> np.ndarray:
        """First row of each Parquet row group."""
        return np.cumsum([0] + list(self.row_groups or []))[:-1]

    def row_group_of(self, rows: np.ndarray) -> np.ndarray:
        """The row group holding each of ``rows``."""
        return np.searchsorted(self.row_group_starts, rows, side="right") - 1

    def block_of(self, rows: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
        """The block of each of ``rows`` (``offsets``: theirs, for a file read by ranges)."""
        if self.format == "parquet":
            return self.row_group_of(rows)
        if self.compression is not None:
            return np.zeros(len(rows), dtype=np.int64)
        assert offsets is not None
        return np.asarray(offsets, dtype=np.int64) >> (NPY_BLOCK_SHIFT if self.format == "npy" else JSONL_BLOCK_SHIFT)


class CompiledPlan:
    """A compiled plan opened from its directory (arrays memory-mapped, shared between processes)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:  # held while this object lives: ``mixsql gc`` does not remove a plan in use
            self._in_use = locks.hold(self.directory / "plan.json")
        except FileNotFoundError:
            self._in_use = None
        if self._in_use is None:
            raise PlanError(f"no compiled plan in {self.directory}", hint="create one with `mixsql plan FILE -o DIR`")
        self.meta = json.loads(self._in_use.read().decode("utf-8"))
        with contextlib.suppress(OSError):  # when it was last used, for a size-bounded cache (``gc``)
            os.utime(self.directory)
        if self.meta.get("format") != PLAN_FORMAT:
            raise PlanError(f"{self.directory} holds a plan of format {self.meta.get('format')}; "
                            f"this mixsql reads {PLAN_FORMAT}", hint="compile it again")
        columns = {name: _mapped(self.directory / f"{name}.npy") for name in self.meta["columns"]}
        self.component = columns["component"]
        self.file = columns["file"]
        self.row = columns["row"]
        self.byte_offset = columns.get("offset")  # JSONL records: byte range in the decompressed file
        self.byte_length = columns.get("length")
        self.tokens = columns.get("tokens")  # n_tokens of each sample, when the datasets have them
        self.table: t.Any = _mapped(self.directory / "chunks.npy")  # cumulative counts per chunk
        self._chunk_cache: dict[tuple[int, int], np.ndarray] = {}  # the last chunks' rows (static tables)
        self._chunk_cache_of: t.Any = None
        self.adapt: dict[str, t.Any] | None = self.meta.get("adapt")
        if self.adapt is not None:  # ADAPT: the table follows the weight log (``adaptive``), the prior until then
            from mixsql.adaptive import AdaptiveTable

            self.table = AdaptiveTable(self.meta["chunk_size"], self.adapt["capacity"], self.adapt["prior"])
        # a stream planned from token counts stores each partition's order (``tokenplan``)
        self.stream_rows = _mapped(self.directory / "stream_rows.npy") \
            if self.meta.get("order") == "merged" else None
        self.window_starts = _mapped(self.directory / "windows.npy")
        blocks = _mapped(self.directory / "window_blocks.npy")
        self.block_keys, self.block_windows = blocks[0], blocks[1]  # sorted by key: which windows read a block
        self.names: list[str] = [c["name"] for c in self.meta["components"]]
        self.datasets: list[str] = [c["dataset"] for c in self.meta["components"]]
        self.counts = tuple(int(c["samples"]) for c in self.meta["components"])
        self.chunk_size: int = self.meta["chunk_size"]
        self.partitions: int = self.meta["partitions"]
        self.samples: int = self.meta["stream_samples"]
        self.pool_start = np.asarray(self.meta["pool_starts"], dtype=np.int64)  # [component, partition]
        self.dataset_info: dict[str, dict[str, t.Any]] = self.meta["dataset_info"]
        self.files = [PlanFile(**{**f, "row_groups": tuple(f["row_groups"]) if f["row_groups"] else None,
                                  "etag": f.get("etag")})
                      for f in self.meta["files"]]

    def follow(self, log: t.Sequence[tuple[int, t.Sequence[int]]]) -> None:
        """An adaptive plan's weight changes, (first chunk row, quotas) each, in order (``adaptive``)."""
        if self.adapt is None:
            raise PlanError("this plan does not adapt its weights (no ADAPT clause)")
        from mixsql.adaptive import AdaptiveTable

        table = AdaptiveTable(self.meta["chunk_size"], self.adapt["capacity"], self.adapt["prior"])
        for row, quotas in log:
            table.append(int(row), quotas)
        self.table = table

    @property
    def key(self) -> str:
        return self.meta["key"]

    def __len__(self) -> int:
        return self.samples

    @functools.cached_property
    def stream_tokens(self) -> np.ndarray:
        """Cumulative tokens of each partition's documents in stream order (``manifest._stream_tokens``)."""
        if self.tokens is None:
            raise PlanError(f"the plan has no token counts: {self.meta.get('tokens_missing') or 'its datasets have none'}",
                            hint="register the datasets with --tokenizer, then compile again")
        return _mapped(self.directory / "stream_tokens.npy")

    @functools.cached_property
    def row_tokens(self) -> np.ndarray:
        """Cumulative tokens over plan rows (rows + 1 values from 0): a pool's tokens are a difference."""
        if self.tokens is None:
            self.stream_tokens  # the error of a plan without token counts
        return _mapped(self.directory / "row_tokens.npy")

    @functools.cached_property
    def row_index(self) -> np.ndarray:
        """Each plan row's index in its partition's stream (increasing along a pool)."""
        self.stream_tokens
        return _mapped(self.directory / "row_index.npy")

    @functools.cached_property
    def pool_lengths(self) -> np.ndarray:
        """[component, partition]: documents of each pool in the stream (plan rows from ``pool_start``)."""
        self.stream_tokens
        return np.load(self.directory / "pool_lengths.npy")

    def partition_length(self, q: int) -> int:
        """Samples partition q contributes to the stream."""
        return partition_length(self.samples, self.partitions, q)

    @functools.cached_property
    def _partition_offsets(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum([self.partition_length(q) for q in range(self.partitions)])))

    def chunk_rows(self, q: int, k: int) -> np.ndarray:
        """Plan rows of chunk k of partition q, in stream order: O(chunk size), a lookup in the chunk table."""
        if self.stream_rows is not None:
            return self.partition_rows(q, k * self.chunk_size, (k + 1) * self.chunk_size)
        static = isinstance(self.table, np.ndarray)  # an adaptive table grows: its chunks are not kept
        if static:
            if self._chunk_cache_of is not self.table:
                self._chunk_cache, self._chunk_cache_of = {}, self.table
            found = self._chunk_cache.get((q, k))
            if found is not None:
                return found
        before = self.table[k]
        order, occurrence = _order_and_occurrence(tuple((self.table[k + 1] - before).tolist()),
                                                  rotation(q, self.partitions, self.chunk_size))
        base = self.pool_start[:, q] + before.astype(np.int64)
        rows = base[order] + occurrence
        if static:  # batches smaller than a chunk ask for the same chunk again and again
            rows.flags.writeable = False
            if len(self._chunk_cache) >= 4 * self.partitions + 4:
                self._chunk_cache.pop(next(iter(self._chunk_cache)))
            self._chunk_cache[(q, k)] = rows
        return rows

    def partition_rows(self, q: int, start: int, stop: int) -> np.ndarray:
        """Plan rows of samples [start, stop) of partition q's stream (clipped to the stream's end)."""
        stop = min(stop, self.partition_length(q))
        if stop <= start:
            return np.zeros(0, dtype=np.int64)
        if self.stream_rows is not None:
            at = int(self._partition_offsets[q])
            return np.asarray(self.stream_rows[at + start: at + stop], dtype=np.int64)
        size = self.chunk_size
        parts = []
        for k in range(start // size, (stop - 1) // size + 1):
            rows = self.chunk_rows(q, k)
            parts.append(rows[max(start - k * size, 0): min(stop - k * size, size)])
        return np.concatenate(parts)

    def positions_rows(self, start: int, stop: int) -> np.ndarray:
        """Plan rows of plan positions [start, stop): position p is sample p // P of partition p % P."""
        stop = min(stop, self.samples)
        if stop <= start:
            return np.zeros(0, dtype=np.int64)
        P = self.partitions
        out = np.empty(stop - start, dtype=np.int64)
        for q in range(P):
            m0, m1 = partition_indices(start, stop, q, P)
            if m1 > m0:
                out[m0 * P + q - start: (m1 - 1) * P + q - start + 1: P] = self.partition_rows(q, m0, m1)
        return out

    def window_of(self, rows: np.ndarray) -> np.ndarray:
        """The window (index into window_starts) of each plan row."""
        return np.searchsorted(self.window_starts, rows, side="right") - 1

    def block_rows(self, file: int, block: int) -> np.ndarray:
        """Plan rows (ascending) that read a block (for Parquet, a row group) of plan file ``file``."""
        key = (file << 32) | block
        lo, hi = np.searchsorted(self.block_keys, [key, key + 1])
        windows = np.sort(self.block_windows[lo:hi])
        rows = np.concatenate([np.arange(*self.window_range(int(w)), dtype=np.int64) for w in windows]) \
            if len(windows) else np.zeros(0, dtype=np.int64)
        if self.meta["window"] > 1:  # a window of several blocks: keep this block's rows
            rows = rows[self.file[rows] == file]
            offsets = None if self.byte_offset is None else self.byte_offset[rows]
            rows = rows[self.files[file].block_of(self.row[rows], offsets) == block]
        return rows

    def window_range(self, w: int) -> tuple[int, int]:
        end = int(self.window_starts[w + 1]) if w + 1 < len(self.window_starts) else len(self.component)
        return int(self.window_starts[w]), end


@functools.lru_cache(maxsize=4096)
def _order_and_occurrence(counts: tuple[int, ...], rotation: int) -> tuple[np.ndarray, np.ndarray]:
    order = chunk_order(counts, rotation)
    occurrence = np.empty(len(order), dtype=np.int64)
    for i in range(len(counts)):
        mine = order == i
        occurrence[mine] = np.arange(int(mine.sum()), dtype=np.int64)
    occurrence.flags.writeable = False
    return order, occurrence


LINEAGE_SCHEMA = pa.schema([("position", pa.int64()), ("partition", pa.int32()), ("index", pa.int64()),
                            ("chunk", pa.int64()), ("component", pa.dictionary(pa.int16(), pa.string())),
                            ("dataset", pa.dictionary(pa.int32(), pa.string())),
                            ("file", pa.dictionary(pa.int32(), pa.string())), ("row", pa.int64())])


def lineage(plan: CompiledPlan, start: int, stop: int) -> pa.Table:
    """Where plan positions [start, stop) come from, one row each (``LINEAGE_SCHEMA``): position,
    partition, its index in the partition's stream, chunk, component, dataset, file and row. Global
    batch N of global batch size G is ``position // G = N``. Nothing before ``start`` is computed."""
    stop = min(stop, len(plan))
    rows = plan.positions_rows(start, stop)
    position = np.arange(start, max(start, stop), dtype=np.int64)
    index = position // plan.partitions
    file = pa.array(plan.file[rows].astype(np.int32))
    names = pa.array(plan.names, pa.string())
    return pa.Table.from_arrays([
        pa.array(position), pa.array((position % plan.partitions).astype(np.int32)), pa.array(index),
        pa.array(index // plan.chunk_size), pa.DictionaryArray.from_arrays(pa.array(plan.component[rows]), names),
        pa.DictionaryArray.from_arrays(file, pa.array([f.dataset for f in plan.files], pa.string())),
        pa.DictionaryArray.from_arrays(file, pa.array([f.url for f in plan.files], pa.string())),
        pa.array(plan.row[rows].astype(np.int64))], schema=LINEAGE_SCHEMA)
