"""The chunk table of an adaptive mixture: a pure function of the weight log, read in O(log) per row.

A static plan stores its chunk table (``plan``). An adaptive one (``ADAPT USING ...``) cannot: its
weights come from the run. Its table is defined by the **weight log**, an append-only list of
segments (first chunk row k_v, integer quotas q_v out of ``QUOTA``):

- rows k in [k_v, k_{v+1}) follow segment v: with D(k) the cumulative counts per component before
  row k (the same for every partition, as in a static plan),
  ``D(k) = D(k_v) + hamilton(q_v, (k - k_v) * C)``, the largest-remainder apportionment of the
  samples since the segment began. Every positive quota is at least QUOTA / C (one sample per chunk
  row), which makes it house-monotone: no row has a negative count, and each component stays within
  one sample (per partition) of its quota's share of the segment.
- **Prefix stability**: a segment appended at row k changes no row before k, and each component
  goes on from where its pool stood (D(k)), so nothing of an epoch repeats and nothing is skipped.
- **Supply**: component c can give ``capacity[c]`` samples per partition (its smallest pool). A
  segment that would take more stops giving it anything from the first row that would exceed, and
  the others share its quota in proportion (``ON EXHAUSTION REDISTRIBUTE``, decided from the log
  alone); when none is left there are no rows after that one, and asking for one is an error naming
  the row.

This module is runtime-only (no compile-time stage), like ``chunks``.
"""

from __future__ import annotations

import bisect
import typing as t

import numpy as np

from mixsql.chunks import apportion
from mixsql.errors import MixSQLError

QUOTA = 1 << 20  # weights as integer quotas out of QUOTA: exact arithmetic, the same on every machine


def quantize(weights: t.Sequence[float], chunk_size: int) -> tuple[int, ...]:
    """Weights (non-negative, any positive sum) as integer quotas summing to ``QUOTA``, each positive
    one at least ceil(QUOTA / chunk_size) (one sample per chunk row: see the module docstring)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not len(w) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise MixSQLError(f"weights must be non-negative numbers with a positive sum, not {list(weights)!r}")
    floor = -(-QUOTA // chunk_size)
    if floor * int((w > 0).sum()) > QUOTA:
        raise MixSQLError(f"{int((w > 0).sum())} components cannot each have a sample in every chunk row of "
                          f"{chunk_size}", hint="raise the CHUNK SIZE")
    owed = [int(round(x / w.sum() * (1 << 40))) for x in w.tolist()]
    quotas = apportion(QUOTA, owed, 1 << 40)
    low = [i for i, (q, x) in enumerate(zip(quotas, w.tolist())) if x > 0 and q < floor]
    for i in low:  # raised to the floor; taken from the largest, ties to the earlier component
        need = floor - quotas[i]
        quotas[i] = floor
        while need:
            j = max(range(len(quotas)), key=lambda k: (quotas[k] - (floor if w[k] > 0 else 0), -k))
            give = min(need, quotas[j] - floor)
            quotas[j] -= give
            need -= give
    assert sum(quotas) == QUOTA
    return tuple(quotas)


def _cumulative(quotas: t.Sequence[int], n: int) -> list[int]:
    """Largest-remainder apportionment of n samples by the quotas (summing to QUOTA)."""
    return apportion(n, [q * n for q in quotas], QUOTA)


class AdaptiveTable:
    """The chunk table of an adaptive mixture from its weight log (module docstring): ``table[k]`` is
    row k (cumulative counts before chunk row k), like a static plan's ``chunks.npy``."""

    def __init__(self, chunk_size: int, capacity: t.Sequence[int], quotas: t.Sequence[int]) -> None:
        self.chunk_size = int(chunk_size)
        self.capacity = [int(c) for c in capacity]
        self.rows: list[int] = []  # first row of each segment, increasing
        self.quotas: list[tuple[int, ...]] = []  # each segment's quotas (after redistribution)
        self.starts: list[list[int]] = []  # D at each segment's first row
        self.changed_at = 0  # the row of the last change the log made
        self._add(0, tuple(int(q) for q in quotas), [0] * len(self.capacity))

    @property
    def components(self) -> int:
        return len(self.capacity)

    def append(self, row: int, quotas: t.Sequence[int]) -> None:
        """New quotas from chunk row ``row`` on (not before the last change's row)."""
        quotas = tuple(int(q) for q in quotas)
        if len(quotas) != self.components or sum(quotas) != QUOTA or min(quotas) < 0:
            raise MixSQLError(f"quotas must be {self.components} non-negative integers summing to {QUOTA}, "
                              f"not {quotas}")
        if row < self.changed_at:
            raise MixSQLError(f"a weight change at chunk row {row} is before the last one, at row {self.changed_at}: "
                              "the log is append-only")
        while self.rows and self.rows[-1] >= row:  # what the last change (or a shortage after it) said from row on
            self.rows.pop(), self.quotas.pop(), self.starts.pop()
        self.changed_at = row
        if self.rows and not any(self.quotas[-1]) and row > self.rows[-1]:
            return  # after every component ran out: there are no rows to govern
        start = self.row(row) if self.rows else [0] * self.components
        self._add(row, quotas, start)

    def _add(self, row: int, quotas: tuple[int, ...], start: list[int]) -> None:
        """Add a segment, cut where a component runs out (its quota then goes to the others)."""
        while True:
            self.rows.append(row)
            self.quotas.append(quotas)
            self.starts.append(list(start))
            out = self._first_short(row, quotas, start) if any(quotas) else None
            if out is None:  # to the end, or (all quotas 0) nothing left: rows after this one do not exist
                return
            short_row, gone = out
            start = self.row(short_row)
            if short_row == row:  # runs out at once: the segment has no row of its own
                self.rows.pop(), self.quotas.pop(), self.starts.pop()
            owed = [0 if i in gone else q for i, q in enumerate(quotas)]
            quotas = tuple(apportion(QUOTA, owed, 1)) if any(owed) else tuple(owed)
            row = short_row

    def _first_short(self, row: int, quotas: tuple[int, ...], start: list[int]) -> tuple[int, set[int]] | None:
        """(the first row k >= row whose end some component's supply cannot cover, those components)."""
        C = self.chunk_size
        first: dict[int, int] = {}
        for i, q in enumerate(quotas):
            if q == 0:
                continue
            room = self.capacity[i] - start[i]
            # rows after which i has taken at most room: D_i(k+1) - D_i(row) <= room, monotone in k
            lo, hi = 0, (room + 1) * QUOTA // (q * C) + 2  # cum_i(n) >= floor(q n / QUOTA): hi rows exceed
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if _cumulative(quotas, mid * C)[i] <= room:
                    lo = mid
                else:
                    hi = mid - 1
            first[i] = row + lo  # row + lo is the first row that cannot be taken whole
        if not first:
            return None
        k = min(first.values())
        return k, {i for i, v in first.items() if v == k}

    @property
    def end_row(self) -> int | None:
        """The row after which no component has samples left (no chunk row k >= it exists), or None."""
        return None if any(self.quotas[-1]) else self.rows[-1]

    def segment_of(self, k: int) -> int:
        return bisect.bisect_right(self.rows, k) - 1

    def row(self, k: int) -> list[int]:
        """D(k): each component's samples (per partition) in chunk rows 0..k-1."""
        v = self.segment_of(k)
        if k > self.rows[v] and not any(self.quotas[v]):
            raise MixSQLError(f"every component has run out of samples by chunk row {self.rows[v]} under the "
                              f"adapted weights, and row {k} is needed",
                              hint="raise MAX EPOCHS, use ON EXHAUSTION REPEAT, or lower the LIMIT")
        add = _cumulative(self.quotas[v], (k - self.rows[v]) * self.chunk_size)
        return [s + a for s, a in zip(self.starts[v], add)]

    def __getitem__(self, k: int) -> np.ndarray:
        return np.asarray(self.row(int(k)), dtype=np.int64)

    def to_log(self) -> list[dict[str, t.Any]]:
        """The segments as plain data (a state's weight log carries what made them)."""
        return [{"row": r, "quotas": list(q)} for r, q in zip(self.rows, self.quotas)]


def first_row_after(position: int, chunk_size: int, partitions: int) -> int:
    """The first chunk row starting at or after plan position ``position``."""
    return -(-position // (chunk_size * partitions))


def weights_of(quotas: t.Sequence[int]) -> list[float]:
    return [q / QUOTA for q in quotas]


__all__: t.Sequence[str] = ["AdaptiveTable", "QUOTA", "first_row_after", "quantize", "weights_of"]
