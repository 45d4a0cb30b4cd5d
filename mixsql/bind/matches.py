"""Each sample's component, first match wins, from one evaluation of a dataset's predicates: they
come back as bit masks (a bit per component, 64 to a column), the component is each mask's lowest
set bit, and everything binding counts follows in NumPy (byte and token sums from a second pass
over ``_bytes`` and ``n_tokens``, which evaluates nothing). Compiling needs the same array, so binding keeps it
for the compile that follows (``Engine.matches``) instead of DuckDB evaluating the predicates twice.

The catalog stores a dataset's rows file after file in row order (``catalog.store``), so a
sample's position in the scan is its place in the layout, and a block is a run of positions.
"""

from __future__ import annotations

import dataclasses
import typing as t

import numpy as np

BATCH_ROWS = 1 << 22  # rows per batch of the pass over _bytes (32 MiB of them)
_LOWEST = np.full(1 << 16, -1, dtype=np.int8)  # the lowest set bit of every 16-bit value, -1 for 0
for _b in range(15, -1, -1):
    _LOWEST[(np.arange(1 << 16) >> _b) & 1 == 1] = _b
_LOWEST[0] = -1


@dataclasses.dataclass
class Matches:
    """A dataset's samples by component. ``component``: each sample's global component index in
    catalog order (-1: none), int8 when every index fits, else int16. Per member (in ``members``
    order): ``samples``, ``bytes``, ``tokens`` (sums over its samples), ``blocks`` (distinct
    blocks holding one), ``overlaps[k][a]`` (samples member a took that member k's own predicate
    also matches, for a < k)."""

    component: np.ndarray
    samples: list[int]
    bytes: list[int]
    tokens: list[int]
    blocks: list[int]
    overlaps: list[list[int]]


def _paren(sql: str) -> str:
    return f"({sql})"


def first_match(members: t.Sequence[tuple[int, str | None]]) -> str:
    """The rule that gives each sample one component: ``CASE WHEN p0 THEN id0 WHEN p1 THEN id1 ... END``
    over (id, predicate) in statement order, a missing predicate matching every sample; NULL when
    none matches. Binding counts with it and compiling selects with it."""
    return "CASE " + " ".join(f"WHEN {_paren(p) if p else 'TRUE'} THEN {i}" for i, p in members) + " END"


def _masks(predicates: t.Sequence[str | None]) -> list[str]:
    """SQL for the bit-mask columns: bit k of column k // 64 is set when predicate k holds (NULL does
    not); a missing predicate holds for every sample."""
    columns = []
    for start in range(0, len(predicates), 64):
        part = predicates[start: start + 64]
        kind = next(k for bits, k in ((8, "UTINYINT"), (16, "USMALLINT"), (32, "UINTEGER"), (64, "UBIGINT"))
                    if len(part) <= bits)
        terms = [f"(coalesce({_paren(p)}, FALSE)::{kind} << {b})" if p else f"({1 << b}::{kind})"
                 for b, p in enumerate(part)]
        columns.append(f"({' | '.join(terms)})::{kind}")
    return columns


def row_group_layout(files: t.Sequence[t.Mapping[str, t.Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """For a dataset whose files are all Parquet: where each file starts in catalog order (files +
    1 values), where each row group starts, and each row group's index in its file; None otherwise
    (a JSONL block is a byte range only the catalog's ``_block`` knows)."""
    if any(f["format"] != "parquet" for f in files):
        return None
    file_starts = np.concatenate(([0], np.cumsum([f["rows"] for f in files], dtype=np.int64)))
    groups = [np.asarray(f["row_groups"] or [f["rows"]], dtype=np.int64) for f in files]
    if not files:
        return file_starts, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
    group_starts = np.concatenate([file_starts[i] + np.concatenate(([0], np.cumsum(g)[:-1])) for i, g in enumerate(groups)])
    group_local = np.concatenate([np.arange(len(g), dtype=np.int32) for g in groups])
    return file_starts, group_starts, group_local


def _lowest_bit(mask: np.ndarray) -> np.ndarray:
    """The index of each value's lowest set bit (int16), -1 where none is set."""
    if mask.dtype.itemsize <= 2:
        return _LOWEST[mask].astype(np.int16)
    out = np.full(len(mask), -1, dtype=np.int16)
    kind = mask.dtype.type
    for shift in range(0, mask.dtype.itemsize * 8, 16):
        bit = _LOWEST[(mask >> kind(shift)) & kind(0xFFFF)]
        free = (out < 0) & (bit >= 0)
        out[free] = bit[free].astype(np.int16) + shift
    return out


def scan(con: t.Any, dataset: str, indices: t.Sequence[int], predicates: t.Sequence[str | None],
         own: t.Sequence[str | None], file_rows: t.Sequence[int], *, count: bool, tokens: bool,
         block_starts: np.ndarray | None = None, batch_rows: int = BATCH_ROWS) -> Matches:
    """Scan ``dataset`` once: its members' global ``indices`` and full ``predicates`` (statement
    order, the statement's WHERE included), their ``own`` predicates (for overlaps), and its files'
    row counts in catalog order. With ``count`` also the per-member sums, blocks and overlaps (from
    ``_bytes`` read in the same pass; ``block_starts``, the positions where blocks start when the
    layout gives them, spares reading ``_block``); ``tokens`` sums
    ``n_tokens``. Raises duckdb.Error when a predicate fails on the data."""
    members = len(indices)
    total = int(sum(file_rows))
    kind = np.int8 if max(indices, default=0) < 127 else np.int16
    component = np.empty(total, dtype=kind)  # filled batch by batch: the query's result is never held whole
    if not count:  # the component alone: CASE stops at the first match, where masks evaluate every predicate
        cases = first_match(list(zip(indices, predicates)))
        at = 0
        for batch in con.sql(f'SELECT coalesce({cases}, -1)::{"TINYINT" if kind is np.int8 else "SMALLINT"} AS _c '
                             f'FROM "{dataset}"').to_arrow_reader(batch_rows):
            n = batch.num_rows
            _check_rows(dataset, at + n, total, partial=True)
            component[at: at + n] = batch.column(0).to_numpy(zero_copy_only=False)
            at += n
        _check_rows(dataset, at, total)
        return Matches(component, [], [], [], [], [])
    masks = _masks(predicates)
    to_global = np.append(np.asarray(indices, dtype=kind), kind(-1))  # member -1 (none) takes the last entry
    slots = np.asarray(indices, dtype=np.intp) + 1  # a member's bin in counts over ``_bins(component)``
    overlaps = [[0] * k for k in range(members)]
    wanted = [k for k in range(1, members) if own[k] is not None]
    at = 0
    single = len(masks) == 1 and members <= 16  # one mask column of at most 16 bits: sums by mask value
    sums = _Sums(slots, file_rows, block_starts, mask_bits=(8 if members <= 8 else 16) if single else None)
    # a batch's masks (or bins) widened once into this reused buffer: what bincount and take widen them
    # to, which they would otherwise allocate (and this VM fault in) for every call
    index = np.empty(0, dtype=np.intp)
    # summed in the same pass, as the float64 weights bincount takes (made on DuckDB's threads)
    extra = ["coalesce(_bytes, 0)::DOUBLE AS _b"] + (["coalesce(n_tokens, 0)::DOUBLE AS _t"] if tokens else []) \
        + (["_block::INTEGER AS _k"] if block_starts is None else [])
    for batch in con.sql("SELECT " + ", ".join([f"{m} AS _m{j}" for j, m in enumerate(masks)] + extra)
                         + f' FROM "{dataset}"').to_arrow_reader(batch_rows):
        n = batch.num_rows
        _check_rows(dataset, at + n, total, partial=True)
        cols = [batch.column(j).to_numpy(zero_copy_only=False) for j in range(len(masks))]
        if len(index) < n:
            index = np.empty(n, dtype=np.intp)
        if single:  # the usual case: one table lookup, and the sums are histograms of the masks
            lowest = _LOWEST[: 1 << (8 * cols[0].dtype.itemsize)]
            wide = index[:n]
            np.copyto(wide, cols[0], casting="unsafe")  # unsigned masks: every value indexes ``lowest``
            np.take(to_global[np.where(lowest < members, lowest, -1)], wide, out=component[at: at + n], mode="clip")
            sums.add_masks(cols[0], wide, batch, at)
        else:
            first = _lowest_bit(cols[0])  # the member each sample goes to, -1: none
            for j, mask in enumerate(cols[1:], 1):
                low = _lowest_bit(mask)
                free = (first < 0) & (low >= 0)
                first[free] = low[free] + 64 * j
            mine = to_global[first]
            del first
            for k in wanted:
                hit = ((cols[k // 64] >> cols[k // 64].dtype.type(k % 64)) & 1).astype(bool)
                counted = np.bincount(_bins(mine[hit]), minlength=int(slots.max()) + 1)[slots[:k]]
                overlaps[k] = [x + int(y) for x, y in zip(overlaps[k], counted.tolist())]
            component[at: at + n] = mine
            wide = index[:n]
            np.copyto(wide, _bins(mine), casting="unsafe")
            sums.add(wide, batch, at)
            del mine
        at += n
        del cols
    _check_rows(dataset, at, total)
    if single:  # overlaps from the histogram of the masks
        values = np.flatnonzero(sums.samples)
        for k in wanted:
            for v in values[(values >> k) & 1 == 1].tolist():
                a = int(_LOWEST[v])
                if a < k:
                    overlaps[k][a] += int(sums.samples[v])
    return Matches(component, *sums.result(), overlaps)


def _check_rows(dataset: str, rows: int, listed: int, partial: bool = False) -> None:
    if rows > listed if partial else rows != listed:  # pragma: no cover - a catalog not laid out as documented
        raise ValueError(f"dataset {dataset!r} has {rows} samples but its files list {listed}")


def _bins(component: np.ndarray) -> np.ndarray:
    """Component index + 1 as an unsigned array: bincount's bins, 0 for no component."""
    return (component + component.dtype.type(1)).view(np.uint8 if component.dtype.itemsize == 1 else np.uint16)


class _Sums:
    """Per member (its bin in ``slots``): samples, ``_bytes`` and ``n_tokens`` sums, and distinct
    blocks, accumulated batch by batch from the scan that finds each sample's component. With
    ``mask_bits`` (members that fit one mask of that many bits) the sums are kept per mask value
    instead (``add_masks``; ``samples`` is then the masks' histogram), and each member's are those
    of the masks whose lowest bit is its own."""

    def __init__(self, slots: np.ndarray, file_rows: t.Sequence[int], block_starts: np.ndarray | None,
                 mask_bits: int | None = None) -> None:
        members = len(slots)
        self.slots, self.width = slots, int(slots.max()) + 1
        words = -(-members // 64)
        word = next(k for b, k in ((8, np.uint8), (16, np.uint16), (32, np.uint32), (64, np.uint64)) if members <= b) \
            if members <= 64 else np.uint64
        self.bits = np.zeros((self.width, words), dtype=word)  # a bin's bit in the block rows
        for k, slot in enumerate(slots):
            self.bits[slot, k // 64] = 1 << (k % 64)
        self.words = words
        self.by_mask = mask_bits is not None
        bins = 1 << mask_bits if mask_bits is not None else self.width  # by mask value, or by slot
        self.samples = np.zeros(bins, dtype=np.int64)
        self.nbytes = np.zeros(bins, dtype=np.int64)
        self.ntokens = np.zeros(bins, dtype=np.int64)
        self.file_starts = np.cumsum(np.concatenate(([0], np.asarray(file_rows, dtype=np.int64))))[:-1]
        self.block_starts = None if block_starts is None else np.unique(block_starts)
        self.present: list[np.ndarray] = []  # per block: which members it holds, a bit each (words of 64)
        self.previous_block = -1

    def add(self, mine: np.ndarray, batch: t.Any, at: int) -> None:
        """One batch: ``mine``, its samples' bins (``_bins``, widened to intp); ``batch``, its ``_b``
        (and ``_t``, ``_k``) columns."""
        width = self.width
        self.samples += np.bincount(mine, minlength=width)  # by batch: bincount widens its input to 8 bytes a value
        self.nbytes += _weighted(mine, batch.column("_b"), width)
        if "_t" in batch.schema.names:
            self.ntokens += _weighted(mine, batch.column("_t"), width)
        self.present = _blocks(self.present, self._starts(batch, at, len(mine)),
                               [self.bits[:, j][mine] for j in range(self.words)])

    def add_masks(self, mask: np.ndarray, wide: np.ndarray, batch: t.Any, at: int) -> None:
        """One batch of one mask column (``wide``: the same widened to intp): histograms of the mask
        values, and as each sample's block bit the lowest set bit of its mask (member k's bit is 1 << k)."""
        bins = len(self.samples)
        self.samples += np.bincount(wide, minlength=bins)
        self.nbytes += _weighted(wide, batch.column("_b"), bins)
        if "_t" in batch.schema.names:
            self.ntokens += _weighted(wide, batch.column("_t"), bins)
        lowest = mask & (~mask + mask.dtype.type(1))
        self.present = _blocks(self.present, self._starts(batch, at, len(mask)), [lowest.astype(self.bits.dtype)])

    def _starts(self, batch: t.Any, at: int, n: int) -> np.ndarray:
        starts = np.zeros(n, dtype=bool)
        if self.block_starts is None:
            block = batch.column("_k").to_numpy()
            starts[0] = block[0] != self.previous_block
            starts[1:] = block[1:] != block[:-1]
            self.previous_block = int(block[-1])
            starts[self.file_starts[(self.file_starts >= at) & (self.file_starts < at + n)] - at] = True
        else:  # the layout gives the blocks
            lo, hi = np.searchsorted(self.block_starts, [at, at + n])
            starts[self.block_starts[lo:hi] - at] = True
        return starts

    def result(self) -> tuple[list[int], list[int], list[int], list[int]]:
        table = np.concatenate(self.present).astype(np.uint64) if self.present \
            else np.zeros((0, self.words), dtype=np.uint64)
        blocks = [int(np.count_nonzero((table[:, k // 64] >> np.uint64(k % 64)) & np.uint64(1)))
                  for k in range(len(self.slots))]
        if self.by_mask:  # a member's sums are those of the masks it is the lowest bit of
            lowest = _LOWEST[: len(self.samples)]
            samples, nbytes, ntokens = ([int(v[lowest == k].sum()) for k in range(len(self.slots))]
                                        for v in (self.samples, self.nbytes, self.ntokens))
            return samples, nbytes, ntokens, blocks
        s = self.slots
        return self.samples[s].tolist(), self.nbytes[s].tolist(), self.ntokens[s].tolist(), blocks


def _weighted(bins: np.ndarray, values: t.Any, width: int) -> np.ndarray:
    """Per bin, the sum of an integer column over a batch (float64 sums are exact below 2**53 per batch)."""
    return np.rint(np.bincount(bins, weights=values.to_numpy(), minlength=width)[:width]).astype(np.int64)


def _blocks(present: list[np.ndarray], starts: np.ndarray, bits: list[np.ndarray]) -> list[np.ndarray]:
    """``present`` extended by one batch: ``starts`` marks where blocks start in it, ``bits`` holds
    each sample's member bit (a word array per 64 members); each block's row holds a bit per member
    with a sample in it. A block that began in an earlier batch is merged into that batch's last row."""
    continues = not starts[0] and bool(present)
    starts[0] = True
    cuts = np.flatnonzero(starts)
    rows = np.stack([np.bitwise_or.reduceat(word, cuts) for word in bits], axis=1)
    if continues:
        present[-1][-1] |= rows[0]
        rows = rows[1:]
    if len(rows):
        present.append(rows)
    return present
