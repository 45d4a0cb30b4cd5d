"""Stage ``manifest``: compiling the plan — where every sample of the stream lives, without its content.

Compiling a bound mixture gives, for each component, its samples in visiting order:

1. **Blocks.** A sample's block (the catalog's ``_block``) is its Parquet row group, its 1 MiB
   byte range of a plain JSONL file, or the whole file for compressed JSONL (which can only be
   read from the start).
2. **Buckets.** A component ordered by a curriculum key is sorted by it (NULLs last, ties by file
   and row) and cut into quantile buckets, visited in order; any other component is one bucket.
3. **Block-then-sample shuffle.** In every epoch, the blocks of each dataset are put in one seeded
   random order, shared by all components of that dataset (new each epoch), and each bucket's
   samples are laid out block by block in that order (a permutation built from the block runs, no
   sort of the samples). Each bucket is cut into the P partition pools (``plan.pool_bounds``).
   Even-numbered pools are visited backwards, so two neighbouring partitions reach the block they
   share at the same moment (both first, or both last) and one decode serves both.
   A partition's sequence is its pools, epoch after epoch; it takes exactly the samples it will
   consume (known in advance from the chunk table, see ``plan``): whole epochs, then the start of
   the last epoch's visiting order (block then sample: a partial epoch touches only the blocks it
   reaches, and a longer stream only appends). The plan stores only the first epoch of each pool
   (whole, for a component that repeats) and the component's canonical order; later epochs follow
   from the same definition on demand (``epochs``, ``planfile.CompiledPlan.physical``), so a plan's
   size and compile time follow the samples selected, not the budget. So every component moves through the *same* blocks
   at the same pace, and a block holding samples of several components is decoded once for all of them.
   Within a pool, consecutive blocks form windows of ``window`` blocks, and the samples of each
   window are shuffled: a window is a contiguous range of the sequence touching at most
   ``window`` blocks, so reading stays mostly sequential while no two neighbours in the stream are
   neighbours in a file.
4. **Randomness** comes from NumPy's PCG64 bit generator seeded with (seed, purpose, indices),
   of which only the raw 64-bit output is used, and from splitmix64 hashes of block keys: plain
   integer arithmetic, stable across NumPy versions and platforms. Every sort is stable and starts
   from a canonical (file, row) order, so the plan is a pure function of (catalog version,
   statement, parameters, seed, chunk size, partitions), whatever order DuckDB returned rows in.

The plan directory it writes is described in ``planfile`` (which reads it); ``export`` copies it
and adds its Parquet manifest and lineage.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import tempfile
import typing as t
import uuid
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from mixsql import atomic
from mixsql import epochs as _epochs
from mixsql import plan as _plan
from mixsql.bind import BoundMix, first_match, matches
from mixsql.catalog import Catalog
from mixsql.catalog.engine import Engine
from mixsql.errors import PlanError
from mixsql.parse import to_sql
from mixsql.planfile import PLAN_FORMAT, SAMPLE_COLUMNS, CompiledPlan

SIZE_FILE = "size.txt"  # a compiled plan's size in bytes, its last file
SAME_STREAM_FORMATS = (11, 12, 13)  # earlier plan formats whose streams this one reproduces (only the layout changed)


def plan_key(spec: _plan.PlanSpec, plan_format: int = PLAN_FORMAT) -> str:
    """Identity of a stream: dataset versions, the canonical statement and every plan parameter."""
    ident = {
        "format": plan_format,
        "datasets": list(spec.bound.dataset_versions),
        "statement": to_sql(spec.bound.tree, pretty=False),
        "seed": spec.seed, "chunk_size": spec.chunk_size, "partitions": spec.partitions, "window": spec.window,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def _np(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name)
    return column.chunk(0).to_numpy() if column.num_chunks == 1 else column.to_numpy()


# -- compiling ----------------------------------------------------------------------------------------


ONE_SCAN_LIMIT = 20_000_000  # up to this many matched samples, one scan serves all components of a dataset


def _selections(engine: Engine, bound: BoundMix, dataset: str, files: list[dict[str, t.Any]],
                byte_ranges: bool, with_tokens: bool = False, lazy: bool = False
                ) -> t.Iterator[tuple[int, t.Any]]:
    """(component, its samples) for the dataset's components; a sample goes to the first it matches.

    Small selections come from one scan, split by a radix sort on the component id; larger ones
    from one scan per component, so memory follows the largest component. An ordered component
    (ORDER BY CURRICULUM ... BY key) also gets ``_rank``, each sample's place in key order (NULLs
    last, ties by file and row). All give the same arrays up to order, which compiling makes canonical.
    ``lazy``: a component of Parquet files comes as an ``_IndexSelection`` (its catalog positions only).
    """
    members = [m for m in bound.components if m.dataset == dataset]
    cases = first_match([(m.index, m.predicate) for m in members])
    ranges = ", coalesce(_offset, -1) AS _offset, coalesce(_length, -1)::INTEGER AS _length" if byte_ranges else ""
    if with_tokens:
        ranges += ", coalesce(n_tokens, 0)::INTEGER AS _tokens"
    con = engine.con
    plain = [m for m in members if m.ordering is None]
    if plain and not byte_ranges and all(f["format"] == "parquet" for f in files):
        tokens = _np(con.sql(f'SELECT coalesce(n_tokens, 0)::INTEGER AS _t FROM "{dataset}"').to_arrow_table(),
                     "_t") if with_tokens else None
        yield from _parquet_selections(_components(engine, dataset, members, files), plain, files, tokens, lazy)
        plain = []
    if sum(m.samples for m in plain) <= ONE_SCAN_LIMIT and plain:
        sql = (f'SELECT * FROM (SELECT ({cases})::SMALLINT AS _c, _file_id, _row::INTEGER AS _row, _block'
               f'{ranges} FROM "{dataset}") WHERE _c IN ({", ".join(str(m.index) for m in plain)})')
        arrays = _arrays(con.sql(sql).to_arrow_table())
        component = arrays.pop("_c")
        order = np.argsort(component, kind="stable")  # 16-bit keys: a radix sort
        edges = np.searchsorted(component[order], [m.index for m in plain] + [plain[-1].index + 1])
        for k, m in enumerate(plain):
            mine = order[edges[k]: edges[k + 1]]
            yield m.index, {name: values[mine] for name, values in arrays.items()}
        plain = []
    for m in members:  # nothing of a component outlives its turn in this frame
        if m.ordering is None and m not in plain:
            continue
        rank = ""
        if m.ordering is not None:
            direction = "DESC" if m.ordering.descending else "ASC"
            rank = f", (row_number() OVER (ORDER BY ({m.ordering.key}) {direction} NULLS LAST, _file_id, _row) - 1)" \
                   f"::BIGINT AS _rank"
        yield m.index, _arrays(con.sql(f'SELECT _file_id, _row::INTEGER AS _row, _block{ranges}{rank} FROM "{dataset}" '
                                       f'WHERE ({cases}) = {m.index}').to_arrow_table())


def _components(engine: Engine, dataset: str, members: list[t.Any], files: list[dict[str, t.Any]]) -> np.ndarray:
    """Each sample's component (-1: none) in catalog order: the array binding scanned, when this
    engine bound these members just before (it is taken, not kept), else one scan of the predicates."""
    key = tuple((m.index, m.predicate) for m in members)
    kept = engine.matches.pop(dataset, None)
    if kept is not None and kept[0] == key:
        return kept[1]
    return matches.scan(engine.con, dataset, [m.index for m in members], [m.predicate for m in members],
                        [None] * len(members), [f["rows"] for f in files], count=False, tokens=False).component


def _parquet_selections(component: np.ndarray, members: list[t.Any], files: list[dict[str, t.Any]],
                        n_tokens: np.ndarray | None, lazy: bool = False) -> t.Iterator[tuple[int, t.Any]]:
    """The Parquet fast path: from each sample's component (one byte per sample), file, row and row
    group follow from the catalog's layout, which stores every row of every file, file after file,
    in row order (``catalog.store``)."""
    layout = matches.row_group_layout(files)
    assert layout is not None
    file_starts, group_starts, group_local = layout
    if int(file_starts[-1]) != len(component):  # pragma: no cover - a catalog not laid out as documented
        raise PlanError(f"the catalog has {len(component)} samples but its files list {int(file_starts[-1])}",
                        hint="register the dataset again with --replace")
    file_ids = np.asarray([f["file_id"] for f in files], dtype=np.int32)
    index_kind = np.int32 if len(component) < 1 << 31 else np.int64
    for m in members:
        index = _positions(component, m.index, index_kind)
        if lazy:
            yield m.index, _IndexSelection(index, layout, file_ids, files, n_tokens)
            del index
            continue
        # index is ascending: per-file and per-group counts, then repeats, instead of a search per sample
        per_file = np.diff(np.searchsorted(index, file_starts.astype(index_kind)))  # same dtypes: no copy of index
        file = np.repeat(np.arange(len(files), dtype=np.int32), per_file)
        row = index - np.repeat(file_starts[:-1].astype(index_kind), per_file)
        per_group = np.diff(np.append(np.searchsorted(index, group_starts.astype(index_kind)), len(index)))
        selection = {"_file_id": file_ids[file], "_row": row.astype(np.int32, copy=False),
                     "_block": np.repeat(group_local, per_group)}
        if n_tokens is not None:
            selection["_tokens"] = n_tokens[index]
        del index, file, row
        yield m.index, selection
        del selection


def _positions(component: np.ndarray, value: int, kind: t.Any, step: int = 1 << 23) -> np.ndarray:
    """Where ``component`` equals ``value``, ascending, as ``kind``: found a slice at a time on every
    core (NumPy's comparisons and searches release the GIL), each written into its place, so no
    int64 array of the whole selection is made and cast."""
    slices = [(a, component[a: a + step]) for a in range(0, len(component), step)]
    with concurrent.futures.ThreadPoolExecutor(max(1, min(_epochs.cores(), len(slices))),
                                               thread_name_prefix="mixsql-select") as pool:
        counts = list(pool.map(lambda piece: int(np.count_nonzero(piece[1] == value)), slices))
        out = np.empty(sum(counts), dtype=kind)
        starts = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))

        def fill(k: int) -> None:
            if counts[k]:
                found = np.flatnonzero(slices[k][1] == value)
                found += slices[k][0]
                out[starts[k]: starts[k + 1]] = found

        list(pool.map(fill, range(len(slices))))
    return out


class _ArraySelection:
    """A component's samples as arrays in canonical order (``component_runs``)."""

    def __init__(self, sel: dict[str, np.ndarray], keys: np.ndarray) -> None:
        self.starts = _epochs.run_starts(sel.pop("_run"))
        self.keys = keys
        self.sel = sel
        self.samples = len(sel["_row"])

    def columns(self, positions: np.ndarray, run: np.ndarray) -> dict[str, np.ndarray]:
        return {name: values[positions] for name, values in self.sel.items()}


class _IndexSelection:
    """A component of Parquet files as its samples' catalog positions, ascending (so canonical):
    file, row and block runs follow from the catalog's layout, one pool at a time (``_parquet_selections``)."""

    def __init__(self, index: np.ndarray, layout: tuple[np.ndarray, np.ndarray, np.ndarray], file_ids: np.ndarray,
                 files: list[dict[str, t.Any]], n_tokens: np.ndarray | None) -> None:
        file_starts, group_starts, group_local = layout
        self.index, self.n_tokens = index, n_tokens
        self.samples = len(index)
        per_group = np.diff(np.append(np.searchsorted(index, group_starts.astype(index.dtype)), len(index)))
        group_file = np.repeat(np.arange(len(files), dtype=np.int64),
                               [len(f["row_groups"] or [f["rows"]]) for f in files])
        present = np.flatnonzero(per_group)
        run_file = group_file[present]  # each run is (part of) one row group, of one file
        self.run_file_id = file_ids[run_file]
        self.run_file_start = file_starts[run_file].astype(index.dtype)
        self.starts = np.concatenate(([0], np.cumsum(per_group[present]))).astype(np.int64)
        self.keys = (file_ids[group_file[present]].astype(np.int64) << 32) | group_local[present]

    def based(self, base: int) -> "_IndexSelection":
        """The run keys with the plan's file base added to the file (as ``component_runs`` keys them)."""
        self.keys = self.keys + (np.int64(base) << np.int64(32))
        return self

    def columns(self, positions: np.ndarray, run: np.ndarray) -> dict[str, np.ndarray]:
        at = self.index[positions]
        row = at - self.run_file_start[run]
        out = {"_file_id": self.run_file_id[run], "_row": row.astype(np.int32, copy=False)}
        if self.n_tokens is not None:
            out["_tokens"] = self.n_tokens[at]
        return out


def _arrays(table: pa.Table) -> dict[str, np.ndarray]:
    table = table.combine_chunks()
    return {name: _np(table, name) for name in table.column_names}


WRITE_AHEAD = 1 << 28  # bytes of a pool's columns that may still be written while the next is computed


class _Out:
    """The plan's sample columns, appended to .npy files whose headers already give the final length:
    nothing is concatenated or held in memory. A write goes on while the next pool is computed (on
    one thread, at most one pending: memory holds one more pool's columns); its error is raised by
    the next ``write`` or by ``close``."""

    def __init__(self, directory: Path, names: list[str], total: int, dtype: t.Any = None) -> None:
        self.files = {}
        self.dtypes = {name: np.dtype(dtype or SAMPLE_COLUMNS[name]) for name in names}
        for name in names:
            fh = open(directory / f"{name}.npy", "wb")
            np.lib.format.write_array_header_1_0(fh, {"descr": self.dtypes[name].str,
                                                      "fortran_order": False, "shape": (total,)})
            self.files[name] = fh
        self.total = total
        self.at = 0
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mixsql-plan-write")
        self._pending: concurrent.futures.Future[None] | None = None

    def write(self, **columns: np.ndarray) -> None:
        n = len(next(iter(columns.values())))
        self._wait()
        self._pending = self._writer.submit(self._write, columns)
        if sum(self.dtypes[name].itemsize for name in columns if name in self.files) * n > WRITE_AHEAD:
            self._wait()  # a large pool is not held twice
        self.at += n

    def _write(self, columns: dict[str, np.ndarray]) -> None:
        for name, values in columns.items():
            if name in self.files:
                np.ascontiguousarray(values, dtype=self.dtypes[name]).tofile(self.files[name])

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._writer.shutdown()
            for fh in self.files.values():
                fh.close()
        if self.at != self.total:  # pragma: no cover - the chunk table and the layout disagree
            raise PlanError(f"internal: wrote {self.at} samples of {self.total}")


POOLS_AHEAD = 1 << 24  # samples of the pools computed at once while compiling (beyond the first)


def _in_order(items: list[int], work: t.Callable[[int], t.Any], sizes: list[int], budget: int) -> t.Iterator[t.Any]:
    """``work(item)`` of each item, in order, computed on the machine's cores a few at a time: a
    next one starts while those in flight and it hold at most ``budget`` in ``sizes`` (always one)."""
    workers = max(1, _epochs.cores())
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="mixsql-pools") as pool:
        pending: list[tuple[concurrent.futures.Future[t.Any], int]] = []
        for item, size in zip(items, sizes):
            while pending and (len(pending) >= workers or sum(w for _, w in pending) + size > budget):
                yield pending.pop(0)[0].result()
            pending.append((pool.submit(work, item), size))
        while pending:
            yield pending.pop(0)[0].result()


def _write_samples(spec: _plan.PlanSpec, catalog: Catalog, directory: Path,
                   progress: t.Callable[[int, int, str], None] | None = None) -> dict[str, t.Any]:
    """Write the stream's samples into ``directory`` by (component, partition, visiting order), with
    the window starts and the blocks of every window (sorted by block key); return the layout.

    For each component and epoch: its samples in canonical (file, row) order, cut into buckets of
    the curriculum key (one bucket when unordered); in each bucket the blocks go in the dataset's
    seeded order for that epoch (shared by all its components, so they move through the same
    blocks in lockstep), and each bucket is cut into P pools. Partition q's sequence is its pools
    epoch after epoch, each window of blocks shuffled over the whole epoch; it takes what the chunk
    table says it consumes from the start of that sequence, so a stream that goes on longer (a
    larger budget, a later STAGE) only appends: every sample before is unchanged. Only epoch 0 is
    written; a component that repeats writes it whole, with its canonical order (``canon.npy``) and
    block runs, from which a run derives the later epochs.
    """
    bound = spec.bound
    engine = catalog.engine()
    if engine.version != bound.catalog_version:
        raise PlanError("the catalog changed since the statement was bound", hint="load the statement again")
    P, C = spec.partitions, spec.chunk_size
    datasets = list(dict.fromkeys(c.dataset for c in bound.components))
    used = np.zeros((len(bound.components), P), dtype=np.int64)  # samples partition q takes from component c
    for q in range(P):
        if spec.layout is not None:  # planned from token counts: what the merge took
            used[:, q] = spec.layout.used[:, q]
            continue
        length = spec.shape.partition_length(q)
        used[:, q] = _plan.consumed(spec.table, C, length, _plan.rotation(q, P, C)) if spec.capacity is None \
            else [per[q] for per in spec.capacity]  # ADAPT: whatever the weights will ask
    files, base, registered = plan_files(engine, datasets)
    byte_ranges = any(f["format"] in ("jsonl", "npy", "tar") for f in files)
    token_info, tokens_missing = token_source(engine, datasets)
    costs = spec.layout is not None and spec.layout.unit == "TOKENS"  # a run sorts a chunk by its tokens
    names = [n for n in SAMPLE_COLUMNS if (byte_ranges or n not in ("offset", "length"))
             and (token_info is not None or costs or n != "tokens")]
    sizes = np.asarray([_epochs.pool_sizes(c.samples, spec.buckets[c.index], P) for c in bound.components],
                       dtype=np.int64).reshape(len(bound.components), P)
    # a component some partition takes more than one epoch of stores its first epoch whole, once, and
    # what derives the others (``epochs``): the plan grows with the samples selected, not the budget
    derived = [bool((used[c.index] > sizes[c.index]).any()) for c in bound.components]
    stored = np.where(np.asarray(derived)[:, None], sizes, np.minimum(used, sizes))
    out = _Out(directory, names, int(stored.sum()))
    canon = _Out(directory, ["canon"], sum(c.samples for c in bound.components if derived[c.index]),
                 dtype=np.int32 if int(stored.sum()) < 1 << 31 else np.int64) if any(derived) else None
    runs: list[dict[str, t.Any]] = []
    run_arrays: list[tuple[np.ndarray, np.ndarray]] = []
    physical_starts = np.zeros((len(bound.components), P), dtype=np.int64)
    window_starts: list[np.ndarray] = []
    window_blocks: list[np.ndarray] = []  # (window, block key) for every block of every window
    window_keys: list[np.ndarray] = []
    windows_so_far = 0
    for c, sel in component_selections(engine, bound, registered, byte_ranges, "tokens" in names, progress,
                                       lazy=True):
        buckets = spec.buckets[c.index]
        source = sel.based(base[c.dataset]) if isinstance(sel, _IndexSelection) \
            else _ArraySelection(*component_runs(sel, buckets, base[c.dataset]))
        del sel
        n = source.samples
        positions = np.empty(n, dtype=np.int64) if derived[c.index] else None
        laid = _epochs.laid_buckets(source.starts, source.keys, n, buckets,
                                    _epochs.epoch_salt(spec.seed, datasets.index(c.dataset), 0))

        def ordered(q: int) -> tuple[t.Any, ...]:
            """Pool q as the plan stores it: its first ``want`` samples in visiting order and their
            columns, with its windows (their starts, each block's window and key)."""
            want = int(stored[c.index, q])
            # the epoch's order as far as its first ``want`` need: a longer stream only appends (prefix stable)
            pool, run, starts, block_window, block_key = _epochs.ordered_pool(
                laid, source.starts, source.keys, n, P, spec.seed, spec.window, c.index, q, 0, upto=want)
            chosen, run = pool[:want], run[:want]
            del pool
            starts = starts[starts < want]
            keep = block_window < len(starts)
            return want, chosen, starts, block_window[keep], block_key[keep], source.columns(chosen, run)

        # pools are computed a few at a time on every core (memory: POOLS_AHEAD samples at most, or
        # one pool), and written in order
        wanted = [q for q in range(P) if stored[c.index, q] > 0]
        results = _in_order(wanted, ordered, [int(stored[c.index, q]) for q in wanted], POOLS_AHEAD)
        for q in range(P):
            physical_starts[c.index, q] = out.at
            if stored[c.index, q] <= 0:
                continue
            want, chosen, starts, block_window, block_key, columns = next(results)
            window_blocks.append(block_window + windows_so_far)
            window_keys.append(block_key)
            windows_so_far += len(starts)
            window_starts.append(starts + out.at)
            if positions is not None:
                positions[chosen] = out.at + np.arange(want, dtype=np.int64)
            out.write(component=np.full(len(chosen), c.index, dtype=np.int16),
                      file=(columns["_file_id"] + base[c.dataset]).astype(np.int32), row=columns["_row"],
                      **({"offset": columns["_offset"], "length": columns["_length"]} if byte_ranges else {}),
                      **({"tokens": columns["_tokens"]} if "tokens" in names else {}))
            del chosen, columns
        if positions is not None and canon is not None:
            runs.append({"component": c.index, "dataset": datasets.index(c.dataset), "samples": n,
                         "canon": canon.at, "runs": sum(len(k) for _, k in run_arrays), "n_runs": len(source.keys)})
            run_arrays.append((source.starts[:-1], source.keys))
            canon.write(canon=positions)
        del source, positions
    out.close()
    if canon is not None:
        canon.close()
        np.save(directory / "run_starts.npy", np.concatenate([s for s, _ in run_arrays]).astype(np.int64))
        np.save(directory / "run_keys.npy", np.concatenate([k for _, k in run_arrays]).astype(np.int64))
    if progress is not None:
        progress(len(bound.components), len(bound.components), "")
    pool_starts = np.concatenate(([0], np.cumsum(used.reshape(-1))[:-1])).reshape(used.shape)  # plan rows
    save_windows(directory, spec, window_starts, window_keys, window_blocks)
    return {"files": files, "pool_starts": pool_starts.tolist(), "physical_starts": physical_starts.tolist(),
            "pool_used": used.tolist(), "epoch_lengths": sizes.tolist(), "derived": runs, "columns": names,
            "tokens": token_info, "tokens_missing": tokens_missing, "dataset_info": dataset_info(engine, datasets)}


def save_windows(directory: Path, spec: _plan.PlanSpec, window_starts: list[np.ndarray], window_keys: list[np.ndarray],
                 window_blocks: list[np.ndarray]) -> None:
    """``windows.npy`` (each window's first plan row), ``window_blocks.npy`` (every window's blocks,
    sorted by block key) and ``chunks.npy`` (the chunk table)."""
    starts = np.concatenate(window_starts).astype(np.int64) if window_starts else np.zeros(0, dtype=np.int64)
    keys = np.concatenate(window_keys) if window_keys else np.zeros(0, dtype=np.int64)
    owners = np.concatenate(window_blocks) if window_blocks else np.zeros(0, dtype=np.int64)
    by_key = np.argsort(keys, kind="stable")
    blocks = np.stack([keys[by_key], owners[by_key]]) if len(keys) else np.zeros((2, 0), dtype=np.int64)
    np.save(directory / "windows.npy", starts)
    np.save(directory / "window_blocks.npy", blocks)
    np.save(directory / "chunks.npy", spec.table)


def dataset_info(engine: Engine, datasets: t.Sequence[str]) -> dict[str, dict[str, t.Any]]:
    """What a run needs of each dataset: its content fields, record schema and token field (and
    whether it holds text to tokenize or token ids)."""
    out = {}
    for d in datasets:
        info = engine.dataset(d)
        tok = info.tokenizer or {}
        out[d] = {"content": list(info.content), "record_schema": info.record_schema_b64,
                  "token_field": tok.get("field"), "token_kind": tok.get("kind", "text") if tok else None,
                  "images": list(info.images)}
    return out


def component_selections(engine: Engine, bound: BoundMix, registered: dict[str, list[dict[str, t.Any]]],
                         byte_ranges: bool, with_tokens: bool,
                         progress: t.Callable[[int, int, str], None] | None = None, lazy: bool = False
                         ) -> t.Iterator[tuple[t.Any, t.Any]]:
    """(component, its selected samples) in statement order, each checked against the count binding
    made; a dataset's components come from its scans (``_selections``) as they are needed."""
    datasets = list(dict.fromkeys(c.dataset for c in bound.components))
    pending: dict[int, dict[str, np.ndarray]] = {}
    sources = {d: _selections(engine, bound, d, registered[d], byte_ranges, with_tokens, lazy) for d in datasets}
    for c in bound.components:
        if progress is not None:
            progress(c.index, len(bound.components), c.name)
        while c.index not in pending:
            try:
                index, arrays = next(sources[c.dataset])
            except duckdb.IOException as e:  # a dataset replaced and removed meanwhile
                raise PlanError(f"cannot read the catalog's table of dataset {c.dataset!r}: {e}",
                                hint="the catalog changed while compiling; load the statement again") from None
            pending[index] = arrays
        sel = pending.pop(c.index)
        found = sel.samples if isinstance(sel, _IndexSelection) else len(sel["_row"])
        if found != c.samples:
            raise PlanError(f"component {c.name!r} selected {found} samples, not the {c.samples} counted "
                            "when binding; the catalog changed", hint="load the statement again")
        yield c, sel


def plan_files(engine: Engine, datasets: t.Sequence[str]) -> tuple[list[dict[str, t.Any]], dict[str, int],
                                                                   dict[str, list[dict[str, t.Any]]]]:
    """The plan's file list (every file of its datasets, dataset after dataset), where each dataset's
    files start in it, and the catalog's file rows per dataset."""
    files: list[dict[str, t.Any]] = []
    base: dict[str, int] = {}
    registered = {d: engine.file_rows(d) for d in datasets}
    for dataset in datasets:
        base[dataset] = len(files)
        for r in registered[dataset]:
            files.append({"index": len(files), "dataset": dataset, "file_id": r["file_id"], "url": r["url"],
                          "format": r["format"], "compression": r["compression"], "size": r["size"],
                          "mtime": r["mtime"], "row_groups": r["row_groups"], "etag": r.get("etag")})
    return files, base, registered


def component_runs(sel: dict[str, np.ndarray], buckets: int, base: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A component's samples in canonical (bucket, file, row) order, with ``_run`` (its block run, a
    4-byte id per sample) in place of ``_block``, and each run's block key (plan file << 32 | block)."""
    canonical = _canonical_order(sel["_file_id"], sel["_row"], sel.get("_rank"), buckets)
    if canonical is not None:
        sel = {name: values[canonical] for name, values in sel.items()}
        del canonical
    n = len(sel["_row"])
    changes = np.ones(n, dtype=bool)
    changes[1:] = (sel["_file_id"][1:] != sel["_file_id"][:-1]) | (sel["_block"][1:] != sel["_block"][:-1])
    firsts = np.flatnonzero(changes)
    run_key = ((sel["_file_id"][firsts].astype(np.int64) + base) << 32) | sel["_block"][firsts]
    sel["_run"] = (np.cumsum(changes, dtype=np.int32) - 1)
    del sel["_block"]
    return sel, run_key


def epoch_pools(sel: dict[str, np.ndarray], run_key: np.ndarray, buckets: int, partitions: int, seed: int,
                dataset: int, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each partition's pool of one epoch (indices into ``sel``, in visiting order before the window
    shuffle) and where in it each curriculum bucket after the first starts (a window never spans two):
    ``epochs.pool_of`` over the epoch's runs, laid out once."""
    n = len(sel["_row"])
    laid = _epochs.laid_buckets(_epochs.run_starts(sel["_run"]), run_key, n, buckets,
                                _epochs.epoch_salt(seed, dataset, epoch))
    return [_epochs.pool_of(laid, n, partitions, q) for q in range(partitions)]


def token_source(engine: Engine, datasets: t.Sequence[str]) -> tuple[dict[str, t.Any] | None, str | None]:
    """(the tokenizer every dataset was counted with, None) or (None, why there is none)."""
    infos = [engine.dataset(d) for d in datasets]
    missing = [i.name for i in infos if not i.tokenizer]
    if missing:
        return None, (f"dataset {missing[0]!r} has no token counts; register it with --tokenizer "
                      f"(API: tokenizer=...)")
    prints = {i.tokenizer["fingerprint"]: i.name for i in infos}  # type: ignore[index]
    if len(prints) > 1:
        (a, x), (b, y) = list(prints.items())[:2]
        return None, (f"datasets {x!r} and {y!r} were counted with different tokenizers ({a} and {b}); "
                      "a packed stream needs one: register them with the same --tokenizer")
    first = infos[0].tokenizer
    assert first is not None
    return {k: first[k] for k in ("fingerprint", "field", "source", "vocab_size")} | {"path": first["path"]}, None


def _stream_tokens(directory: Path) -> None:
    """The packing layout of a plan with token counts (``packing``), for each partition q:

    - ``stream_tokens.npy``: the cumulative token counts of its documents in stream order (len_q + 1
      values from 0), partitions one after another;
    - ``row_tokens.npy``: the cumulative token counts over plan rows (rows + 1 values from 0), so a
      component's documents in a partition, contiguous rows in visiting order, are a difference;
    - ``row_index.npy``: each plan row's index in its partition's stream (increasing along a pool);

    A plan that derives later epochs (``planfile.CompiledPlan.physical``) has only ``row_tokens.npy``,
    over its stored rows: the rest follows from the chunk table (``packing``).
    """
    plan = CompiledPlan(directory)
    rows_total = len(plan.component)
    out = np.lib.format.open_memmap(directory / "stream_tokens.npy", mode="w+", dtype=np.int64,
                                    shape=(plan.samples + plan.partitions,))
    index = np.lib.format.open_memmap(directory / "row_index.npy", mode="w+", shape=(rows_total,),
                                      dtype=np.int32 if max((plan.partition_length(q) for q in range(plan.partitions)),
                                                            default=0) < 1 << 31 else np.int64)
    at = 0
    step = max(plan.chunk_size, (1 << 20) // plan.chunk_size * plan.chunk_size)
    for q in range(plan.partitions):
        length = plan.partition_length(q)
        out[at] = total = 0
        for start in range(0, length, step):
            rows = plan.partition_rows(q, start, min(start + step, length))
            cum = np.cumsum(plan.tokens[rows].astype(np.int64)) + total
            out[at + 1 + start: at + 1 + start + len(cum)] = cum
            total = int(cum[-1]) if len(cum) else total
            index[rows] = np.arange(start, start + len(rows))
        at += length + 1
    _row_tokens(plan, directory)
    for array in (out, index):
        array.flush()
    del out, index


def _row_tokens(plan: CompiledPlan, directory: Path) -> None:
    """``row_tokens.npy``: cumulative token counts over the stored rows (rows + 1 values from 0)."""
    rows_total = len(plan.component)
    cumulative = np.lib.format.open_memmap(directory / "row_tokens.npy", mode="w+", dtype=np.int64,
                                           shape=(rows_total + 1,))
    cumulative[0] = total = 0
    for start in range(0, rows_total, 1 << 20):
        cum = np.cumsum(plan.tokens[start: start + (1 << 20)].astype(np.int64)) + total
        cumulative[start + 1: start + 1 + len(cum)] = cum
        total = int(cum[-1])
    cumulative.flush()
    del cumulative


def _canonical_order(file_id: np.ndarray, row: np.ndarray, rank: np.ndarray | None, buckets: int) -> np.ndarray | None:
    """Indices that sort samples by (bucket, file, row), or None if they already are."""
    if rank is not None and buckets > 1:
        bucket = _epochs.bucket_of(rank, len(rank), buckets).astype(np.uint64)
        return np.lexsort((row, file_id, bucket))
    later = (file_id[1:] > file_id[:-1]) | ((file_id[1:] == file_id[:-1]) & (row[1:] > row[:-1]))
    if len(row) < 2 or bool(np.all(later)):
        return None
    return np.argsort((file_id.astype(np.uint64) << np.uint64(32)) | row.astype(np.uint64), kind="stable")


# -- persisting and caching ---------------------------------------------------------------------------


def compile_plan(spec: _plan.PlanSpec, catalog: Catalog, directory: Path,
                 progress: t.Callable[[int, int, str], None] | None = None) -> None:
    """Compile and write the plan into ``directory`` (which must not exist)."""
    bound = spec.bound
    directory.mkdir(parents=True)
    layout = _write_samples(spec, catalog, directory, progress)
    if spec.layout is not None:  # planned from token counts: the tag rule a run sorts by (``fairmerge``)
        layout["merge"] = {"tags": spec.layout.rule, "unit": spec.layout.unit}
    shape = spec.shape
    meta = {
        "format": PLAN_FORMAT,
        "key": plan_key(spec),
        # a state saved on these resumes here
        "same_stream": [plan_key(spec, f) for f in SAME_STREAM_FORMATS]
        if spec.layout is None or spec.layout.same_stream else [],
        "statement": to_sql(bound.tree),
        "source": bound.path,
        "params": {k: v for k, v in bound.params},
        "template": hashlib.sha256(bound.template.encode()).hexdigest()[:16],
        "catalog_version": bound.catalog_version,
        "datasets": [list(d) for d in bound.dataset_versions],
        "seed": spec.seed, "chunk_size": spec.chunk_size, "partitions": spec.partitions, "window": spec.window,
        "stream_samples": shape.samples, "limiting": shape.limiting, "policy": bound.policy, "limit": bound.limit,
        "unit": bound.unit, "token_limit": bound.token_limit, "stream_content_tokens": shape.tokens,
        "steps_batch_size": bound.batch_size if bound.counts_steps else None,
        "components": [{"name": c.name, "dataset": c.dataset, "share": str(c.share), "weight": str(c.weight),
                        "samples": c.samples, "taken": shape.taken[c.index], "left_at": shape.left_at[c.index],
                        "tokens": c.tokens,
                        "tokens_taken": shape.tokens_taken[c.index] if shape.tokens_taken else None,
                        "max_epochs": c.max_epochs, "buckets": spec.buckets[c.index]}
                       for c in bound.components],
        **layout,
    }
    if spec.capacity is not None:
        from mixsql.adaptive import quantize

        meta["adapt"] = {**bound.adapt.to_dict(), "batch_size": bound.batch_size,
                         "capacity": [min(per) for per in spec.capacity],
                         "prior": list(quantize([float(c.share) for c in bound.components], spec.chunk_size))}
    tokenizer = meta["tokens"].pop("path") if meta["tokens"] else None
    (directory / "plan.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    if tokenizer is not None:
        shutil.copyfile(tokenizer, directory / "tokenizer.json")
    if tokenizer is not None and spec.capacity is None and not layout["derived"] and spec.layout is None:
        _stream_tokens(directory)
    elif "tokens" in layout["columns"]:  # the rest follows from the chunk table, the weight log or the merge
        _row_tokens(CompiledPlan(directory), directory)
        if layout["derived"] and spec.layout is not None and spec.layout.unit == "TOKENS":
            _epoch_tokens(CompiledPlan(directory), directory)  # every seek of a merged stream needs them
    # its size, for a size-bounded cache (``gc``), which would otherwise walk every plan on each compile
    (directory / SIZE_FILE).write_text(str(sum(f.stat().st_size for f in directory.iterdir())), encoding="utf-8")


def _epoch_tokens(plan: CompiledPlan, directory: Path) -> None:
    """``epoch_tokens.npy`` [component, partition, epoch]: the tokens of each derived component's
    sequence in partition q before each of its epochs (from the block runs, O(runs) per epoch), so
    that no rank computes them again to seek a stream merged BY TOKENS (whose number of epochs the
    merge bounded: they are what it searched); zeros for a component that does not repeat."""
    sums = {c: plan._epoch_tokens(c) for c in plan.derived}
    width = max(s.shape[1] for s in sums.values())
    out = np.zeros((len(plan.names), plan.partitions, width), dtype=np.int64)
    for c, s in sums.items():
        out[c, :, : s.shape[1]] = s
        out[c, :, s.shape[1]:] = s[:, -1:]
    np.save(directory / "epoch_tokens.npy", out)


def cached_plan(spec: _plan.PlanSpec, catalog: Catalog, *, wait: float = 600.0,
               progress: t.Callable[[int, int, str], None] | None = None) -> CompiledPlan:
    """The compiled plan from the catalog's cache, compiling it once if missing.

    Safe for many processes at once: one compiles (holding a lock file), the others wait for the
    finished directory, which appears atomically (rename). If the cache cannot be written (a
    read-only catalog), the plan is compiled into a private temporary directory instead.
    """
    key = plan_key(spec)
    root = catalog.path / "plans"
    final = root / key
    for _ in range(3):  # ``mixsql gc`` may remove an unused plan between finding and opening it
        try:
            return _compiled(spec, catalog, root, final, key, wait, progress)
        except PlanError:
            if (final / "plan.json").exists():
                raise
    return _compiled(spec, catalog, root, final, key, wait, progress)


def _compiled(spec: _plan.PlanSpec, catalog: Catalog, root: Path, final: Path, key: str, wait: float,
              progress: t.Callable[[int, int, str], None] | None) -> CompiledPlan:
    bound = spec.bound
    if (final / "plan.json").exists():
        return _cached(final, key, bound)
    lock = root / f".{key}.lock"
    try:
        root.mkdir(exist_ok=True)
        open(lock, "a+").close()
    except OSError:
        private = Path(tempfile.mkdtemp(prefix="mixsql-plan-")) / key
        compile_plan(spec, catalog, private, progress)
        return CompiledPlan(private)
    compiled = False
    with atomic.locked(lock, timeout=wait, ready=lambda: (final / "plan.json").exists(), busy=lambda: PlanError(
            f"timed out waiting for another process to compile plan {key}")) as held:
        if held and not (final / "plan.json").exists():
            tmp = root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            try:
                with atomic.writing(root, "a compiled plan"):
                    compile_plan(spec, catalog, tmp, progress)
                    os.rename(tmp, final)
                compiled = True
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    plan = _cached(final, key, bound)
    if compiled:  # held now (``locks.hold``), so never the one removed
        catalog.prune()
    return plan


def _cached(directory: Path, key: str, bound: BoundMix) -> CompiledPlan:
    """The cached plan in ``directory``, if it is the plan of ``key``: compiled from the same dataset
    versions and statement (else an error: the cache entry was altered)."""
    plan = CompiledPlan(directory)
    if plan.meta.get("key") != key or [tuple(d) for d in plan.meta.get("datasets", [])] != list(bound.dataset_versions):
        raise PlanError(f"the cached plan in {directory} is not the plan of this statement and data",
                        hint="remove that directory; it will be compiled again")
    return plan
