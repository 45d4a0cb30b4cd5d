"""The adaptive chunk table: a pure function of the weight log; monotone, exact per segment,
prefix stable, within supply."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixsql.adaptive import QUOTA, AdaptiveTable, first_row_after, quantize
from mixsql.errors import MixSQLError


@st.composite
def logs(draw: st.DrawFn) -> tuple[int, list[int], list[tuple[int, list[float]]]]:
    k = draw(st.integers(2, 4))
    chunk = draw(st.sampled_from([8, 16, 50, 64]))
    capacity = draw(st.lists(st.integers(50, 5000), min_size=k, max_size=k))
    changes, row = [], 0
    for _ in range(draw(st.integers(0, 5))):
        row += draw(st.integers(0, 30))
        changes.append((row, draw(st.lists(st.floats(0, 1), min_size=k, max_size=k).filter(lambda w: sum(w) > 0))))
    return chunk, capacity, changes


@settings(max_examples=80, deadline=None)
@given(logs(), st.lists(st.floats(0.01, 1), min_size=4, max_size=4))
def test_rows_are_monotone_exact_within_supply_and_prefix_stable(log: tuple, prior: list[float]) -> None:
    chunk, capacity, changes = log
    k = len(capacity)
    table = AdaptiveTable(chunk, capacity, quantize(prior[:k], chunk))
    def last() -> int:  # the last row that exists (all run out: none after)
        return table.rows[-1] if not any(table.quotas[-1]) else 10 ** 9

    for row, weights in changes:
        before = [table[j] for j in range(min(row, last()) + 1)]
        table.append(row, quantize(weights, chunk))
        assert all(np.array_equal(table[j], b) for j, b in enumerate(before))  # nothing before the change moves
    n = min(max((r for r, _ in changes), default=0) + 40, last() + 1)
    rows = np.asarray([table[j] for j in range(n)])
    counts = np.diff(rows, axis=0)
    assert (counts >= 0).all() and (counts.sum(axis=1) == chunk).all()  # whole rows while any is left
    assert (rows <= np.asarray(capacity)[None, :]).all()  # never beyond a component's supply
    if last() < 10 ** 9:
        with pytest.raises(MixSQLError, match="run out of samples"):
            table[last() + 1]
    for v, (start, quotas) in enumerate(zip(table.rows, table.quotas)):  # each segment follows its quotas
        end = table.rows[v + 1] if v + 1 < len(table.rows) else start + 20
        for j in range(start, end + 1):
            expected = np.asarray(table.starts[v]) + np.asarray(quotas) * (j - start) * chunk / QUOTA
            assert (np.abs(rows[j] - expected) < 1).all() if j < len(rows) else True


def test_a_component_that_runs_out_leaves_and_the_others_share_its_weight() -> None:
    table = AdaptiveTable(10, [35, 10_000], quantize([0.5, 0.5], 10))
    rows = np.asarray([table[j] for j in range(12)])
    assert rows[:, 0].max() <= 35 and rows[-1, 0] == rows[7, 0]  # component 0 stops before it would exceed
    assert (np.diff(rows, axis=0).sum(axis=1) == 10).all()  # the other takes the whole rows
    short = AdaptiveTable(10, [5, 5], quantize([0.5, 0.5], 10))
    assert short[1].tolist() == [5, 5]  # one row takes every sample there is
    with pytest.raises(MixSQLError, match="run out of samples by chunk row 1 under the adapted weights, and row 2 is needed"):
        short[2]


def test_quantize_and_refusals() -> None:
    q = quantize([0.2, 0.3, 0.5], 64)
    assert sum(q) == QUOTA and q == quantize([2, 3, 5], 64)
    q = quantize([1e-9, 1.0], 16)
    assert q[0] == QUOTA // 16  # a positive weight gets a sample in every chunk row
    assert quantize([0, 1], 16) == (0, QUOTA)
    for bad in ([0, 0], [float("nan"), 1], [-1, 2], []):
        with pytest.raises(MixSQLError, match="weights must be"):
            quantize(bad, 16)
    table = AdaptiveTable(16, [100, 100], quantize([1, 1], 16))
    table.append(5, quantize([1, 3], 16))
    with pytest.raises(MixSQLError, match="append-only"):
        table.append(4, quantize([1, 1], 16))
    assert first_row_after(0, 16, 2) == 0 and first_row_after(1, 16, 2) == 1 and first_row_after(32, 16, 2) == 1
