"""Read-only SQL over the catalog: writes and foreign files are refused."""

from __future__ import annotations

import duckdb
import pytest

import mixsql
from mixsql.errors import CatalogError
from tests.conftest import PARQUET_GLOB


def test_select_describe_explain(con: mixsql.Connection) -> None:
    assert con.sql("SELECT count(*) AS n FROM corpus WHERE domain = 'code'").to_pylist()[0]["n"] == 1108
    src = f"read_parquet('{PARQUET_GLOB}')"
    fields = [r[0] for r in duckdb.sql(f"DESCRIBE SELECT * FROM {src}").fetchall() if r[0] != "text"]
    described = [r["column_name"] for r in con.sql("DESCRIBE corpus").to_pylist()]
    assert [c for c in described if not c.startswith("_")] == fields  # every property, content left in the files
    assert con.sql("SUMMARIZE corpus").column("column_name").to_pylist() == described
    plan = con.sql("EXPLAIN SELECT * FROM corpus").to_pylist()
    assert plan and "ARROW_SCAN" in "".join(str(v) for r in plan for v in r.values())
    datasets = con.sql("SELECT name, samples FROM mixsql_datasets ORDER BY name").to_pylist()
    assert datasets == [{"name": "corpus", "samples": 4200}, {"name": "corpus_jsonl", "samples": 4200}]


@pytest.mark.parametrize("statement", [
    "CREATE TABLE x AS SELECT 1",
    "INSERT INTO corpus SELECT * FROM corpus",
    "COPY corpus TO 'out.csv'",
    "ATTACH 'other.db'",
    "PRAGMA version",
    "SET threads = 1",
    "DROP VIEW corpus",
    "SELECT 1; DROP VIEW corpus",
    "INSTALL httpfs",
])
def test_writes_are_refused(con: mixsql.Connection, statement: str) -> None:
    with pytest.raises(CatalogError, match="only read-only statements"):
        con.sql(statement)
    assert con.sql("SELECT count(*) AS n FROM corpus").to_pylist() == [{"n": 4200}]


@pytest.mark.parametrize("query", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM '/etc/passwd'",
])
def test_foreign_files_are_refused(con: mixsql.Connection, query: str) -> None:
    with pytest.raises(CatalogError, match="disabled by configuration|Permission|Table with name /etc/passwd does not exist"):
        con.sql(query)
