"""``bind.matches``: one scan's bit masks give the same components and counts as SQL's CASE and GROUP BY."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixsql.bind import matches
from mixsql.bind.matches import first_match


def _table(rng: np.random.Generator, file_rows: list[int], size: int) -> pa.Table:
    n = sum(file_rows)
    file_id = np.repeat(np.arange(len(file_rows), dtype=np.int32), file_rows)
    row = np.concatenate([np.arange(r) for r in file_rows]) if file_rows else np.zeros(0, dtype=np.int64)
    block = (row // size).astype(np.int32)  # blocks of a few rows, numbered from 0 in each file
    x = rng.integers(0, 10, n).astype(float)
    x[rng.random(n) < 0.1] = np.nan
    return pa.table({"_file_id": file_id, "_row": row, "_block": block,
                     "_bytes": rng.integers(0, 1000, n), "n_tokens": rng.integers(0, 50, n),
                     "x": pa.array(x, from_pandas=True)})


def _expected(con: duckdb.DuckDBPyConnection, predicates: list[str | None], own: list[str | None],
              indices: list[int]) -> dict:
    """The counts by SQL's CASE (first match) and per-sample predicate values, then plain NumPy."""
    cases = first_match(list(zip(indices, predicates)))
    hits = ", ".join(f"coalesce(({p}), FALSE)" if p else "FALSE" for p in own)
    rows = con.sql(f"SELECT coalesce({cases}, -1), _file_id, _block, _bytes, n_tokens, {hits} FROM d").fetchall()
    table = np.asarray(rows, dtype=np.int64).reshape(len(rows), 5 + len(own))
    component, file_block = table[:, 0], table[:, 1] * 1000 + table[:, 2]
    out: dict = {"component": component, "samples": [], "bytes": [], "tokens": [], "blocks": [], "overlaps": []}
    for k, i in enumerate(indices):
        mine = component == i
        out["samples"].append(int(mine.sum()))
        out["bytes"].append(int(table[mine, 3].sum()))
        out["tokens"].append(int(table[mine, 4].sum()))
        out["blocks"].append(len(set(file_block[mine].tolist())))
        out["overlaps"].append([int(((component == indices[a]) & (table[:, 5 + k] == 1)).sum()) for a in range(k)])
    return out


@pytest.mark.parametrize("members", [3, 12, 70])
@given(seed=st.integers(0, 2**32 - 1), files=st.lists(st.integers(0, 40), min_size=1, max_size=5),
       batch=st.sampled_from([1, 7, 1 << 20]))
@settings(max_examples=15, deadline=None)
def test_scan_agrees_with_sql(members: int, seed: int, files: list[int], batch: int) -> None:
    rng = np.random.default_rng(seed)
    con = duckdb.connect()
    size = int(rng.integers(1, 6))
    con.register("d", _table(rng, files, size))
    own: list[str | None] = []
    for _ in range(members):
        lo, hi = sorted(rng.integers(0, 10, 2))
        own.append(None if rng.random() < 0.1 else f"x BETWEEN {lo} AND {hi}")
    where = "x <> 3" if rng.random() < 0.5 else None
    full = [" AND ".join(f"({p})" for p in (where, o) if p) or None for o in own]
    indices = [int(i) for i in rng.permutation(200)[:members]]
    found = matches.scan(con, "d", indices, full, own, files, count=True, tokens=True, batch_rows=batch)
    want = _expected(con, full, own, indices)
    assert found.component.tolist() == want["component"].tolist()
    for name in ("samples", "bytes", "tokens", "blocks", "overlaps"):
        assert getattr(found, name) == want[name], name
    groups = [{"format": "parquet", "rows": r, "row_groups": [size] * (r // size) + ([r % size] if r % size else [])}
               for r in files]
    layout = matches.row_group_layout(groups)
    assert layout is not None
    by_layout = matches.scan(con, "d", indices, full, own, files, count=True, tokens=True, batch_rows=batch,
                             block_starts=layout[1])
    assert by_layout.component.tolist() == found.component.tolist()
    for name in ("samples", "bytes", "tokens", "blocks", "overlaps"):
        assert getattr(by_layout, name) == want[name], name
    bare = matches.scan(con, "d", indices, full, own, files, count=False, tokens=False, batch_rows=batch)
    assert bare.component.tolist() == found.component.tolist()


def test_lowest_bit_of_every_width() -> None:
    for kind in (np.uint8, np.uint16, np.uint32, np.uint64):
        bits = np.iinfo(kind).bits
        values = np.asarray([0] + [1 << b for b in range(bits)] + [(1 << (bits - 1)) | 1 << 3, (1 << bits) - 1],
                            dtype=kind)
        assert matches._lowest_bit(values).tolist() == [-1] + list(range(bits)) + [3, 0]
