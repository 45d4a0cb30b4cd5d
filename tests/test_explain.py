"""EXPLAIN's numbers against independent DuckDB counts over the raw files."""

from __future__ import annotations

from fractions import Fraction

import duckdb
import pytest

import mixsql
from mixsql import plan
from tests.conftest import JSONL_GLOB, PARQUET_GLOB, SAMPLE

STATEMENT = """MIX 0.5 AS manuals WHERE domain = 'manual' AND language = 'en',
    0.3 AS code    WHERE domain = 'code' AND quality > 0.2,
    0.2 AS docs    WHERE domain = 'docs' OR list_contains(tags, 'example')
FROM corpus
WHERE n_bytes BETWEEN 200 AND 200000
CHUNK SIZE 100"""


def _independent(source: str) -> dict[str, tuple[int, int]]:
    rows = duckdb.sql(f"""
        SELECT CASE WHEN domain = 'manual' AND language = 'en' THEN 'manuals'
                    WHEN domain = 'code' AND quality > 0.2 THEN 'code'
                    WHEN domain = 'docs' OR list_contains(tags, 'example') THEN 'docs' END AS c,
               count(*) AS n, sum(strlen(text)) AS b
        FROM {source} WHERE n_bytes BETWEEN 200 AND 200000 GROUP BY c""").fetchall()
    return {c: (n, b) for c, n, b in rows if c is not None}


@pytest.mark.parametrize("dataset, source", [
    ("corpus", f"read_parquet('{PARQUET_GLOB}')"),
    ("corpus_jsonl", f"read_json('{JSONL_GLOB}')"),
])
def test_counts_bytes_and_overlaps_match_duckdb(con: mixsql.Connection, dataset: str, source: str) -> None:
    mix = con.mix(STATEMENT.replace("FROM corpus", f"FROM {dataset}"))
    expected = _independent(source)
    e = mix.explanation()
    assert {c.name: (c.samples, c.bytes) for c in e.components} == expected
    def both(earlier: str) -> int:
        return duckdb.sql(f"""SELECT count(*) FROM {source} WHERE n_bytes BETWEEN 200 AND 200000 AND ({earlier})
            AND (domain = 'docs' OR list_contains(tags, 'example'))""").fetchall()[0][0]

    manuals = both("domain = 'manual' AND language = 'en'")
    code = both("domain = 'code' AND quality > 0.2")
    docs = next(c for c in e.components if c.name == "docs")
    assert manuals > 0 and code > 0 and docs.overlaps == (("manuals", manuals), ("code", code))
    text = mix.explain()
    assert f"{code:,} samples match both 'code' and 'docs'; they belong to 'code'" in text


def test_compiled_sql_selects_exactly_the_components_samples(con: mixsql.Connection) -> None:
    mix = con.mix(STATEMENT)
    expected = _independent(f"read_parquet('{PARQUET_GLOB}')")
    for name, sql in mix.sql().items():
        n = con.sql(f"SELECT count(*) AS n FROM ({sql})").to_pylist()[0]["n"]
        assert n == expected[name][0]


def _partition_stream_length(shares: list[Fraction], chunk: int, pools: list[int], rotation: int) -> tuple[int, int]:
    used = [0] * len(pools)
    position = 0
    while True:
        k, offset = divmod(position, chunk)
        component = int(plan.chunk_order(plan.chunk_counts(shares, chunk, k), rotation)[offset])
        if used[component] == pools[component]:
            return position, component
        used[component] += 1
        position += 1


@pytest.mark.parametrize("partitions", [None, 1, 3, 8])
def test_stream_length_and_limiting_component(con: mixsql.Connection, partitions: int | None) -> None:
    mix = con.mix(STATEMENT, partitions=partitions)
    e = mix.explanation()
    counts = [c.samples for c in e.components]
    shares = [Fraction(5, 10), Fraction(3, 10), Fraction(2, 10)]
    P = e.stream.partitions
    assert P == (partitions or P) and P >= 1
    # Brute force: lay out each partition's stream sample by sample; the plan order interleaves them.
    ends = []
    for q in range(P):
        pools = [(q + 1) * n // P - q * n // P for n in counts]
        length, component = _partition_stream_length(shares, 100, pools, q * 100 // P)
        ends.append((P * length + q, component))
    expected, limiting = min(ends)
    assert len(mix) == expected == e.stream.samples
    assert e.stream.limiting == e.components[limiting].name
    assert sum(c.taken for c in e.components) == expected
    assert sum(e.stream.partition_length(q) for q in range(P)) == expected
    assert "runs out first, ends the stream" in mix.explain()
    assert e.to_dict()["stream"]["samples"] == expected


@pytest.mark.parametrize("chunk", [10, 100])
def test_default_partitions_leave_each_partition_a_whole_chunk_and_blocks(con: mixsql.Connection, chunk: int) -> None:
    text = STATEMENT.replace("CHUNK SIZE 100", f"CHUNK SIZE {chunk}")
    e = con.mix(text).explanation()
    P = e.stream.partitions
    assert P & (P - 1) == 0 and 1 <= P <= 64
    single = con.mix(text, partitions=1).explanation().stream.samples
    blocks = min(c.blocks for c in e.components)
    assert single // P >= chunk and blocks // P >= plan.MIN_BLOCKS_PER_PARTITION or P == 1
    assert P == 64 or single // (2 * P) < chunk or blocks // (2 * P) < plan.MIN_BLOCKS_PER_PARTITION


def test_blocks_are_the_row_groups_holding_the_samples(con: mixsql.Connection) -> None:
    e = con.mix(STATEMENT).explanation()
    for c in e.components:
        expected = con.sql(f"SELECT count(DISTINCT (_file_id, _block)) AS n FROM ({c.sql})").to_pylist()[0]["n"]
        assert c.blocks == expected > 0
    groups = con.sql("SELECT count(DISTINCT (_file_id, _block)) AS n FROM corpus").to_pylist()[0]["n"]
    assert groups == sum(len(f.row_groups) for f in mixsql.CompiledPlan(con.mix(STATEMENT).plan().directory).files)


def test_component_from_mixes_datasets(con: mixsql.Connection) -> None:
    mix = con.mix("MIX 1 AS p FROM corpus WHERE domain = 'code', 1 AS j FROM corpus_jsonl WHERE domain = 'code'")
    a, b = mix.explanation().components
    assert (a.dataset, b.dataset) == ("corpus", "corpus_jsonl")
    assert a.samples == b.samples and a.overlaps == b.overlaps == ()  # overlap is per dataset


def test_sample_statement_explains(con: mixsql.Connection) -> None:
    mix = con.load(SAMPLE / "pretrain.mixsql")
    assert mix.components == ["manuals", "code", "docs"]
    assert len(mix) > 0 and "compiled SQL" in mix.explain()
