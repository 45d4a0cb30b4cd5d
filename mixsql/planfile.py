"""The compiled plan on disk, as a run reads it: the interface between compile time and run time.

A plan is a directory that every rank and DataLoader worker memory-maps (``manifest`` writes it):
``plan.json`` (parameters, files, components), one ``.npy`` per sample column (``component``,
``file``, ``row``, and ``offset``/``length`` for JSONL byte ranges) over its **stored rows**,
``chunks.npy`` (cumulative counts per chunk), ``windows.npy`` (where each shuffle window of the
stored rows starts) and ``window_blocks.npy`` (the blocks each window reads).

**Plan rows and stored rows.** A plan row is a position in one pool's sequence: component c's
sequence in partition q occupies plan rows ``pool_start[c, q] + [0, pool_used[c, q])``, its epochs
one after another, each ``epoch_lengths[c, q]`` long. The chunk arithmetic works in plan rows. The
stored rows hold each component's first epoch in visiting order (only what the stream takes of it,
or all of it when the component repeats); a later epoch is derived on demand from the component's
canonical order (``canon.npy``: the stored row of each canonical position; ``run_starts.npy``,
``run_keys.npy``: its block runs) by ``epochs.visiting_order``, and ``physical`` maps plan rows to
stored rows. So a plan grows with the samples it selects, not with its budget, and a chunk far into
the stream costs one epoch's order of one pool (cached), never the epochs before it. Everything a
reader gets (``chunk_rows``, ``partition_rows``, ``positions_rows``, ``pool_rows``) is stored rows.

A stream planned from token counts (``tokenplan``) has no chunk table: each partition's chunk is the
next C documents of its components sorted by their tags (``fairmerge``, the rule in ``plan.json``'s
``merge``), from each component's count at the chunk's start, found by a search over the tags (a
seek) or carried from the chunk before.

When the datasets have token counts (or the plan mixes BY TOKENS), there is also a ``tokens``
column, ``row_tokens.npy`` (cumulative over stored rows) and ``tokenizer.json``. A plan whose
stored rows are its whole stream (no epoch derived, not merged, not adaptive) also has the
packing layout ``stream_tokens.npy`` and ``row_index.npy`` (``packing``, ``manifest._stream_tokens``);
the others compute it from the chunk table or the merge, and a merged stream whose epochs are
derived has ``epoch_tokens.npy`` (each pool's tokens before each epoch). Any chunk is found in
O(chunk size): a lookup in the chunk table or a search over tags; nothing earlier is computed.
This module imports no compile-time stage (sqlglot, DuckDB, parse, bind, plan, catalog).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import os
import typing as t
from pathlib import Path

import numpy as np
import pyarrow as pa

from mixsql import epochs as _epochs
from mixsql.fairmerge import Merge, Tags
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

PLAN_FORMAT = 14  # part of every plan key: bump it whenever the stream a statement defines, or the layout, changes
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
        self._merged_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.adapt: dict[str, t.Any] | None = self.meta.get("adapt")
        if self.adapt is not None:  # ADAPT: the table follows the weight log (``adaptive``), the prior until then
            from mixsql.adaptive import AdaptiveTable

            self.table = AdaptiveTable(self.meta["chunk_size"], self.adapt["capacity"], self.adapt["prior"])
        # a stream planned from token counts: its counts at every C-th position of every partition (``fairmerge``)
        self.merge: dict[str, t.Any] | None = self.meta.get("merge")
        if self.merge is not None:
            self._tags = Tags(self.merge["tags"])
            self._merges: dict[int, Merge] = {}
            self._merge_next: dict[int, tuple[int, np.ndarray]] = {}  # partition: (chunk, its first counts)
            self._chunk_starts: dict[tuple[int, int], np.ndarray] = {}  # (partition, chunk): its first counts
            self._prefix_cache: dict[tuple[int, int], np.ndarray] = {}
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
        # plan rows are the positions of every pool's sequence, pool after pool; the stored rows hold a
        # component's first epoch (whole, when it repeats) and its later epochs are derived (``physical``)
        self.physical_start = np.asarray(self.meta["physical_starts"], dtype=np.int64)
        self.pool_used = np.asarray(self.meta["pool_used"], dtype=np.int64)
        self.derived: dict[int, dict[str, t.Any]] = {int(d["component"]): d for d in self.meta["derived"]}
        self.epoch_lengths = np.asarray(self.meta["epoch_lengths"], dtype=np.int64)  # [component, partition]
        if self.derived:
            self._canon = _mapped(self.directory / "canon.npy")
            self._run_starts = _mapped(self.directory / "run_starts.npy")
            self._run_keys = _mapped(self.directory / "run_keys.npy")
            self._epochs: collections.OrderedDict[tuple[int, int, int], np.ndarray] = collections.OrderedDict()
            self._laid: dict[tuple[int, int], t.Any] = {}
            self._epoch_token_sums: collections.OrderedDict[tuple[int, int, int], np.ndarray] = \
                collections.OrderedDict()
            self._epoch_token_starts: dict[int, np.ndarray] = {}
            self._flat_starts = self.pool_start.reshape(-1)
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

    # -- plan rows and the stored rows -------------------------------------------------------------

    def physical(self, rows: np.ndarray) -> np.ndarray:
        """The stored rows of plan rows: the same rows, except in a later epoch of a component that
        repeats, whose visiting order is derived (``epochs.visiting_order``) and mapped through the
        component's first epoch, stored once."""
        if not self.derived or not len(rows):
            return rows
        P = self.partitions
        flat = np.searchsorted(self._flat_starts, rows, side="right") - 1
        i = rows - self._flat_starts[flat]
        c, q = flat // P, flat % P
        size = self.epoch_lengths.reshape(-1)[flat]
        later = i >= np.maximum(size, 1)
        out = self.physical_start.reshape(-1)[flat] + i
        if later.any():
            where = np.flatnonzero(later)
            e = i[where] // size[where]
            j = i[where] - e * size[where]
            key = flat[where] * (int(e.max()) + 1) + e
            for k in np.unique(key).tolist():
                mine = np.flatnonzero(key == k)
                w = where[mine[0]]
                out[where[mine]] = self._epoch_rows(int(c[w]), int(q[w]), int(e[mine[0]]))[j[mine]]
        return out

    def _epoch_rows(self, c: int, q: int, e: int) -> np.ndarray:
        """Stored rows of epoch e of component c's sequence in partition q (e >= 1), in visiting order."""
        found = self._epochs.get((c, q, e))
        if found is not None:
            self._epochs.move_to_end((c, q, e))
            return found
        d = self.derived[c]
        starts, keys = self._runs(c)
        buckets = int(self.meta["components"][c]["buckets"])
        laid = self._laid.get((c, e))
        if laid is None:  # shared by the partitions of this rank that reach epoch e
            laid = self._laid[(c, e)] = _epochs.laid_buckets(starts, keys, d["samples"], buckets,
                                                             _epochs.epoch_salt(self.meta["seed"], d["dataset"], e))
            while len(self._laid) > 2 * len(self.derived) + 2:
                self._laid.pop(next(iter(self._laid)))
        order = _epochs.visiting_order(starts, keys, d["samples"], buckets, self.partitions, self.meta["seed"],
                                       self.meta["window"], d["dataset"], c, q, e, laid)
        rows = np.asarray(self._canon[d["canon"] + order], dtype=np.int64)
        rows.flags.writeable = False
        self._epochs[(c, q, e)] = rows
        while len(self._epochs) > 2 * len(self.derived) * self.partitions + 4:
            self._epochs.popitem(last=False)
        return rows

    def _runs(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Component c's block runs (their first canonical positions and the end; their block keys)."""
        d = self.derived[c]
        lo, n = d["runs"], d["n_runs"]
        return np.append(self._run_starts[lo: lo + n], d["samples"]), self._run_keys[lo: lo + n]

    def pool_rows(self, c: int, q: int, k: np.ndarray) -> np.ndarray:
        """Stored rows of documents ``k`` of component c's sequence in partition q."""
        return self.physical(int(self.pool_start[c, q]) + np.asarray(k, dtype=np.int64))

    def pool_tokens(self, c: int, q: int, k: np.ndarray) -> np.ndarray:
        """Tokens of the first ``k`` documents of component c's sequence in partition q."""
        k = np.asarray(k, dtype=np.int64)
        rt = self.row_tokens
        p0 = int(self.physical_start[c, q])
        if c not in self.derived:
            return np.asarray(rt[p0 + k], dtype=np.int64) - int(rt[p0])
        size = max(int(self.epoch_lengths[c, q]), 1)
        e, j = k // size, k % size
        out = np.asarray(self._epoch_tokens(c)[q][e], dtype=np.int64)
        first = e == 0
        out[first] += np.asarray(rt[p0 + j[first]], dtype=np.int64) - int(rt[p0])
        for ee in np.unique(e[~first]).tolist():
            mine = np.flatnonzero(e == ee)
            out[mine] += self._epoch_cumulative_tokens(c, q, ee)[j[mine]]
        return out

    def _epoch_cumulative_tokens(self, c: int, q: int, e: int) -> np.ndarray:
        """Cumulative tokens along epoch e of component c's sequence in partition q (from 0), cached
        as its rows are: a packed stream's binary searches ask for the same epoch many times."""
        cache = self._epoch_token_sums
        found = cache.get((c, q, e))
        if found is None:
            found = np.concatenate(([0], np.cumsum(self.tokens[self._epoch_rows(c, q, e)].astype(np.int64))))
            cache[(c, q, e)] = found
            while len(cache) > 2 * len(self.derived) * self.partitions + 4:
                cache.popitem(last=False)
        else:
            cache.move_to_end((c, q, e))
        return found

    def _epoch_tokens(self, c: int) -> np.ndarray:
        """[partition, epoch]: tokens of component c's sequence in partition q before each of its epochs."""
        found = self._epoch_token_starts.get(c)
        if found is not None:
            return found
        stored = self.directory / "epoch_tokens.npy"  # written when compiled
        if stored.exists():
            found = self._epoch_token_starts[c] = _mapped(stored)[c]
            return found
        d, P = self.derived[c], self.partitions
        n, buckets = d["samples"], int(self.meta["components"][c]["buckets"])
        epochs = int(max(-(-int(u) // max(int(s), 1)) for u, s in zip(self.pool_used[c], self.epoch_lengths[c]))) + 1
        starts, keys = self._runs(c)
        canonical = np.concatenate(([0], np.cumsum(self.tokens[self._canon[d["canon"]: d["canon"] + n]]
                                                   .astype(np.int64))))
        totals = np.stack([_epochs.pool_totals(_epochs.laid_buckets(starts, keys, n, buckets, _epochs.epoch_salt(
            self.meta["seed"], d["dataset"], e)), n, P, canonical) for e in range(epochs)], axis=1)
        found = self._epoch_token_starts[c] = np.concatenate((np.zeros((P, 1), dtype=np.int64),
                                                              np.cumsum(totals, axis=1)), axis=1)
        return found

    def stream_counts(self, q: int, m: np.ndarray) -> np.ndarray:
        """[len(m), component]: each component's documents among the first m of partition q's stream
        (the chunk table and the chunk's order; m within the table's rows)."""
        C = self.chunk_size
        m = np.asarray(m, dtype=np.int64).reshape(-1)
        k, r = m // C, m % C
        out = np.zeros((len(m), len(self.names)), dtype=np.int64)
        rot = rotation(q, self.partitions, C)
        for kk in np.unique(k).tolist():
            sel = np.flatnonzero(k == kk)
            if self.merge is not None:
                before = self._chunk_counts(q, kk)
                out[sel] = before[None, :]
                if (r[sel] > 0).any():
                    out[sel] += self._merged_prefix(q, kk)[r[sel]]
                continue
            before = np.asarray(self.table[kk], dtype=np.int64)
            out[sel] = before[None, :]
            if (r[sel] > 0).any():
                out[sel] += prefix_counts(tuple((np.asarray(self.table[kk + 1]) - before).tolist()), rot)[r[sel]]
        return out

    def stream_index(self, c: int, q: int, k: np.ndarray) -> np.ndarray:
        """Where document(s) k of component c's sequence in partition q are in the partition's stream."""
        k = np.asarray(k, dtype=np.int64).reshape(-1)
        if self.merge is not None:  # the documents before its key
            return self._merge(q).position(c, k)
        if not (self.directory / "row_index.npy").exists():  # derived from the (static) chunk table
            C = self.chunk_size
            column = np.asarray(self.table[:, c], dtype=np.int64)
            kk = np.searchsorted(column, k, side="right") - 1
            out = np.empty(len(k), dtype=np.int64)
            rot = rotation(q, self.partitions, C)
            for x in np.unique(kk).tolist():
                mine = np.flatnonzero(kk == x)
                order = chunk_order(tuple((np.asarray(self.table[x + 1]) - np.asarray(self.table[x])).tolist()), rot)
                places = np.flatnonzero(order == c)
                out[mine] = x * C + places[k[mine] - column[x]]
            return out
        return np.asarray(self.row_index[int(self.pool_start[c, q]) + k], dtype=np.int64)

    # -- a stream planned from token counts (``fairmerge``) ------------------------------------------

    def _merge(self, q: int) -> Merge:
        found = self._merges.get(q)
        if found is None:
            found = self._merges[q] = Merge(self._tags, _PlanCosts(self), q, len(self.names))
        return found

    def _chunk_counts(self, q: int, k: int) -> np.ndarray:
        """Each component's documents before chunk k of partition q: carried from chunk k - 1 when
        that was the last read, else a search over the tags (a seek)."""
        carried = self._merge_next.get(q)
        if carried is not None and carried[0] == k:
            return carried[1]
        found = self._chunk_starts.get((q, k))
        if found is None:  # a search, kept: a binary search over positions asks for the same chunks again
            found = self._merge(q).counts_at(min(k * self.chunk_size, self.partition_length(q)))
            found.flags.writeable = False
            if len(self._chunk_starts) >= 1 << 14:
                self._chunk_starts.pop(next(iter(self._chunk_starts)))
            self._chunk_starts[(q, k)] = found
        return found

    def _merged_prefix(self, q: int, k: int) -> np.ndarray:
        """[position + 1, component]: each component's documents among chunk k's first positions."""
        found = self._prefix_cache.get((q, k))
        if found is None:
            order = self._merged_chunk(q, k)[0]
            found = np.zeros((len(order) + 1, len(self.names)), dtype=np.int64)
            found[np.arange(1, len(order) + 1), order] = 1
            found = np.cumsum(found, axis=0)
            found.flags.writeable = False
            if len(self._prefix_cache) >= 4 * self.partitions + 4:
                self._prefix_cache.pop(next(iter(self._prefix_cache)))
            self._prefix_cache[(q, k)] = found
        return found

    def _merged_chunk(self, q: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(component, index in its sequence) of chunk k of partition q of a merged stream, in stream
        order: the next documents of each component, sorted by their tags."""
        found = self._merged_cache.get((q, k))
        if found is not None:
            return found
        C = self.chunk_size
        before = self._chunk_counts(q, k)
        comp, i = self._merge(q).following(before, max(0, min(C, self.partition_length(q) - k * C)))
        self._merge_next[q] = (k + 1, before + np.bincount(comp, minlength=len(self.names)))
        for array in (comp, i):
            array.flags.writeable = False
        if len(self._merged_cache) >= 4 * self.partitions + 4:
            self._merged_cache.pop(next(iter(self._merged_cache)))
        self._merged_cache[(q, k)] = (comp, i)
        return comp, i

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

    @property
    def pool_lengths(self) -> np.ndarray:
        """[component, partition]: documents of each pool in the stream (plan rows from ``pool_start``)."""
        return self.pool_used

    def partition_length(self, q: int) -> int:
        """Samples partition q contributes to the stream."""
        return partition_length(self.samples, self.partitions, q)

    def chunk_rows(self, q: int, k: int) -> np.ndarray:
        """Plan rows of chunk k of partition q, in stream order: O(chunk size), a lookup in the chunk table."""
        if self.merge is not None:
            comp, i = self._merged_chunk(q, k)
            return self.physical(self.pool_start[comp, q] + i)
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
        rows = self.physical(base[order] + occurrence)
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


class _PlanCosts:
    """``fairmerge.Costs`` of a compiled plan: a component's sequence in partition q as far as the
    stream takes it (its first epoch stored, later ones derived), costed by tokens or one each."""

    def __init__(self, plan: CompiledPlan) -> None:
        self.plan = plan
        self.by_tokens = plan.merge is not None and plan.merge["unit"] == "TOKENS"

    def size(self, c: int, q: int) -> int:
        return int(self.plan.epoch_lengths[c, q])

    def known(self, c: int, q: int) -> int | None:
        return int(self.plan.pool_used[c, q])

    def starts(self, c: int, q: int, epochs: int, what: str = "cost") -> np.ndarray:
        if what == "cost" and not self.by_tokens:
            return np.arange(epochs, dtype=np.int64) * self.size(c, q)
        if c in self.plan.derived:
            return np.asarray(self.plan._epoch_tokens(c)[q][:epochs], dtype=np.int64)
        return np.zeros(min(epochs, 1), dtype=np.int64)  # one epoch, stored

    def epoch(self, c: int, q: int, e: int, what: str = "cost") -> np.ndarray:
        size, known = self.size(c, q), self.known(c, q) or 0
        if what == "cost" and not self.by_tokens:
            return np.arange(min(size, max(known - e * size, 0)) + 1, dtype=np.int64)
        if e == 0:
            rt = self.plan.row_tokens
            p0 = int(self.plan.physical_start[c, q])
            stored = size if c in self.plan.derived else min(size, known)
            return np.asarray(rt[p0: p0 + stored + 1], dtype=np.int64) - int(rt[p0])
        return self.plan._epoch_cumulative_tokens(c, q, e)


@functools.lru_cache(maxsize=4096)
def prefix_counts(counts: tuple[int, ...], rot: int) -> np.ndarray:
    """[position + 1, component]: each component's samples among a chunk's first positions."""
    order = chunk_order(counts, rot)
    out = np.zeros((len(order) + 1, len(counts)), dtype=np.int64)
    out[np.arange(1, len(order) + 1), order] = 1
    out = np.cumsum(out, axis=0)
    out.flags.writeable = False
    return out


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
