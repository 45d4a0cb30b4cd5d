"""The compiled plan: exact chunks, the planned samples, determinism, O(1) chunks, caching, the manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mixsql
from mixsql import manifest, plan
from tests.conftest import PARQUET_GLOB, ROOT

STATEMENT = """MIX 0.5 AS manuals WHERE domain = 'manual',
    0.3 AS code WHERE domain = 'code',
    0.2 AS docs WHERE domain = 'docs'
FROM {dataset} CHUNK SIZE 50 SEED 11"""


@pytest.fixture(params=["corpus", "corpus_jsonl"])
def mix(request: pytest.FixtureRequest, con: mixsql.Connection) -> mixsql.Mix:
    return con.mix(STATEMENT.format(dataset=request.param), partitions=4)


def test_every_chunk_holds_the_largest_remainder_counts(mix: mixsql.Mix, tmp_path: Path) -> None:
    path = mix.write_plan(tmp_path / "plan")
    rows = duckdb.sql(f"SELECT partition, chunk, component, sum(row_count)::BIGINT AS n FROM '{path}' "
                      "GROUP BY ALL").fetchall()
    got = {(q, k, c): n for q, k, c, n in rows}
    p = mix.plan()
    shares = [Fraction(1, 2), Fraction(3, 10), Fraction(1, 5)]
    full = 0
    for q in range(p.partitions):
        for k in range(p.partition_length(q) // 50):  # whole chunks
            expected = plan.chunk_counts(shares, 50, k)
            assert [got.get((q, k, name), 0) for name in p.names] == expected
            full += 1
    assert full >= 4
    total = duckdb.sql(f"SELECT sum(row_count) FROM '{path}'").fetchall()[0][0]
    assert total == len(mix) == len(p)


def test_stream_is_the_planned_samples_of_each_component(con: mixsql.Connection, mix: mixsql.Mix) -> None:
    p = mix.plan()
    rows = p.positions_rows(0, len(p))
    assert len(np.unique(rows)) == len(rows) == len(mix)  # no sample twice
    dataset = mix.bound.components[0].dataset
    for c in mix.bound.components:
        expected = {tuple(r) for r in con.sql(f"SELECT _file_id, _row FROM ({c.sql})").to_pylist() for r in [r.values()]}
        mine = rows[p.component[rows] == c.index]
        got = {(p.files[f].file_id, int(r)) for f, r in zip(p.file[mine], p.row[mine])}
        assert got <= expected and len(got) == len(mine)
        assert all(p.files[f].dataset == dataset for f in p.file[mine])
    # The limiting component is used up in full (up to its partitions' rounding).
    limiting = next(c for c in mix.bound.components if c.name == mix.spec.shape.limiting)
    used = int((p.component[rows] == limiting.index).sum())
    assert limiting.samples - used < p.partitions


def test_chunk_k_is_computed_alone(mix: mixsql.Mix) -> None:
    p = mix.plan()
    for q in range(p.partitions):
        whole = p.partition_rows(q, 0, p.partition_length(q))
        for k in range(len(whole) // 50):
            assert np.array_equal(p.chunk_rows(q, k), whole[k * 50:(k + 1) * 50])
        assert np.array_equal(p.partition_rows(q, 7, 93), whole[7:93])


def _ids_in_subprocess(catalog: Path, statement: str) -> list[str]:
    code = ("import json, sys, mixsql; con = mixsql.connect(sys.argv[1], create=False); "
            "m = con.mix(sys.argv[2]); print(json.dumps([s['id'] for s in m.samples(columns=['id'])]))")
    out = subprocess.run([sys.executable, "-c", code, str(catalog), statement], capture_output=True, text=True,
                         cwd=ROOT, check=True, timeout=120)
    return json.loads(out.stdout)


def test_determinism_across_processes_and_seeds(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    mixsql.connect(cat).register("corpus", [PARQUET_GLOB])
    text = STATEMENT.format(dataset="corpus")
    first = _ids_in_subprocess(cat, text)
    import shutil
    shutil.rmtree(cat / "plans")  # the second process compiles from scratch
    second = _ids_in_subprocess(cat, text)
    assert first == second and len(first) > 500
    other = _ids_in_subprocess(cat, text.replace("SEED 11", "SEED 12"))
    assert other != first and len(other) == len(first)


def test_shuffle_quality(con: mixsql.Connection) -> None:
    m = con.mix(STATEMENT.format(dataset="corpus"), partitions=1)
    p = m.plan()
    rows = p.positions_rows(0, len(p))
    for c in range(3):
        mine = rows[p.component[rows] == c]
        adjacent = (p.file[mine][1:] == p.file[mine][:-1]) & (np.abs(p.row[mine][1:] - p.row[mine][:-1]) == 1)
        assert adjacent.mean() < 0.05
        assert not np.all(np.diff(p.row[mine]) > 0)  # not file order


def test_plan_cache_is_reused_and_invalidated(tmp_path: Path, data_copy: Path) -> None:
    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", [str(data_copy / "parquet")])
    text = STATEMENT.format(dataset="corpus")
    first = con.mix(text).plan()
    again = con.mix(text).plan()
    assert first.directory == again.directory and first.key == again.key
    assert con.mix(text, seed=1).plan().key != first.key
    import pyarrow.parquet as pq
    part = data_copy / "parquet" / "corpus-00000.parquet"
    pq.write_table(pq.read_table(part).slice(0, 500), part)
    con.register("corpus", [str(data_copy / "parquet")], replace=True)
    assert con.mix(text).plan().key != first.key


def test_concurrent_compilation_builds_once(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    mixsql.connect(cat).register("corpus", [PARQUET_GLOB])
    code = ("import sys, mixsql; m = mixsql.connect(sys.argv[1], create=False).mix(sys.argv[2]); "
            "print(m.plan().directory)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(cat), STATEMENT.format(dataset="corpus")], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len({o.strip() for o, _ in outs}) == 1
    assert len([d for d in (cat / "plans").iterdir() if not d.name.startswith(".")]) == 1


def test_plan_and_head_cli(tmp_path: Path, sample_catalog: Path) -> None:
    stmt = tmp_path / "m.mixsql"
    stmt.write_text(STATEMENT.format(dataset="corpus"))
    run = [sys.executable, "-m", "mixsql", "--catalog", str(sample_catalog)]
    out = subprocess.run(run + ["plan", str(stmt), "-o", str(tmp_path / "out"), "--partitions", "2"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "in 2 partitions of 50-sample chunks" in out
    assert (tmp_path / "out" / "manifest.parquet").exists() and (tmp_path / "out" / "row.npy").exists()
    loaded = mixsql.CompiledPlan(tmp_path / "out")
    assert loaded.partitions == 2
    out = subprocess.run(run + ["head", str(stmt), "-n", "5", "--json", "--columns", "id,domain"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 5 and set(lines[0]) == {"id", "domain", "component"}
    out = subprocess.run(run + ["head", str(stmt), "-n", "1"], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    assert out.startswith("[0] ") and "more chars]" in out or len(out) < 400


def test_exported_plan_needs_no_catalog(tmp_path: Path, con: mixsql.Connection) -> None:
    m = con.mix(STATEMENT.format(dataset="corpus_jsonl"))
    m.write_plan(tmp_path / "p")
    from mixsql.read import Reader

    p = mixsql.CompiledPlan(tmp_path / "p")
    records = Reader(p, ["id"]).samples(p.positions_rows(0, 20))
    assert [r["id"] for r in records] == [s["id"] for s in m.samples(limit=20, columns=["id"])]


def test_bucket_of_matches_bucket_bounds() -> None:
    for n in range(1, 60):
        for k in range(1, n + 1):
            edges = plan.bucket_bounds(n, k)
            expected = np.repeat(np.arange(k), np.diff(edges))
            assert plan.bucket_of(np.arange(n), n, k).tolist() == expected.tolist(), (n, k)


@settings(max_examples=25, deadline=None)
@given(keys=st.lists(st.one_of(st.none(), st.integers(0, 6)), min_size=2, max_size=120),
       buckets=st.integers(2, 9), descending=st.booleans(), groups=st.integers(7, 40))
def test_buckets_are_key_quantiles(tmp_path_factory: pytest.TempPathFactory, keys: list[int | None], buckets: int,
                                   descending: bool, groups: int) -> None:
    """Bucket b serves exactly the samples of key rank [b*n//k, (b+1)*n//k) (key order, NULLs last,
    ties by file and row), for n not divisible by k, ascending or descending."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("buckets")
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(len(keys))], "id": list(range(len(keys))),
                             "key": pa.array(keys, pa.int64())}), root / "d.parquet", row_group_size=groups)
    con = mixsql.connect(root / "cat")
    con.register("d", [str(root / "d.parquet")])
    k = min(buckets, len(keys))
    order = "DESC" if descending else "ASC"
    mix = con.mix(f"MIX 1 AS docs FROM d ORDER BY CURRICULUM (docs BY key {order} BUCKETS {k}) PARTITIONS 1")
    served = [s["id"] for s in mix.samples(columns=["id"])]
    assert sorted(served) == list(range(len(keys)))
    present = sorted((i for i, v in enumerate(keys) if v is not None), key=lambda i: (-keys[i] if descending
                                                                                       else keys[i], i))
    ranked = present + [i for i, v in enumerate(keys) if v is None]
    edges = plan.bucket_bounds(len(keys), k)
    for b in range(k):
        assert sorted(served[edges[b]:edges[b + 1]]) == sorted(ranked[edges[b]:edges[b + 1]]), b


def test_a_cached_plan_must_be_the_plan_of_its_key(tmp_path: Path) -> None:
    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", [PARQUET_GLOB])
    text = STATEMENT.format(dataset="corpus")
    directory = con.mix(text).plan().directory
    meta = json.loads((directory / "plan.json").read_text())
    (directory / "plan.json").write_text(json.dumps({**meta, "datasets": [["corpus", "0" * 16]]}))
    with pytest.raises(mixsql.MixSQLError, match="is not the plan of this statement and data"):
        con.mix(text).plan()
    (directory / "plan.json").write_text(json.dumps({**meta, "key": "f" * 24}))
    with pytest.raises(mixsql.MixSQLError, match="is not the plan of this statement and data"):
        con.mix(text).plan()
    (directory / "plan.json").write_text(json.dumps(meta))
    assert len(con.mix(text).plan()) == len(con.mix(text))


@given(component=st.lists(st.integers(-1, 3), max_size=200), value=st.integers(-1, 3), step=st.integers(1, 64))
def test_positions_found_a_slice_at_a_time_are_flatnonzero(component: list[int], value: int, step: int) -> None:
    array = np.asarray(component, dtype=np.int8)
    found = manifest._positions(array, value, np.int32, step)
    assert found.dtype == np.int32
    assert found.tolist() == np.flatnonzero(array == value).tolist()


@given(sizes=st.lists(st.integers(1, 50), max_size=20), budget=st.integers(1, 120))
@settings(max_examples=40, deadline=None)
def test_pools_computed_ahead_come_back_in_order_within_the_budget(sizes: list[int], budget: int) -> None:
    """``_in_order``: every item's result, in order; beyond the first, the items in flight at once
    never hold more than the budget."""
    import threading
    import time

    lock, running, peak = threading.Lock(), [0], [0]

    def work(k: int) -> int:
        with lock:
            running[0] += sizes[k]
            peak[0] = max(peak[0], running[0])
        time.sleep(0.002)  # long enough for the next items to start, where the budget lets them
        with lock:
            running[0] -= sizes[k]
        return k * k

    assert list(manifest._in_order(list(range(len(sizes))), work, sizes, budget)) == [k * k for k in range(len(sizes))]
    assert peak[0] <= max([budget, *sizes])
