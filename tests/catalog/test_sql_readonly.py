"""The SQL surface is read-only by construction: no statement, however wrapped, changes a byte of
the catalog, and nothing a user session runs changes what binding and planning compute."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixsql
from mixsql.errors import CatalogError

from tests.conftest import PARQUET_GLOB, ROOT


def digest(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with the hash of its bytes."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = Path(root) / name
            out[str(path.relative_to(directory))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture()
def own(tmp_path: Path) -> mixsql.Connection:
    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", [PARQUET_GLOB])
    yield con
    con.close()


def samples_path(con: mixsql.Connection) -> str:
    return str(con.dataset("corpus").samples_paths[0])


def test_explain_analyze_cannot_write(own: mixsql.Connection) -> None:
    before = digest(own.path)
    target = samples_path(own)
    for statement in [
        f"EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{target}' (FORMAT parquet, USE_TMP_FILE false)",
        "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
        "EXPLAIN ANALYZE DROP VIEW corpus",
        "EXPLAIN ANALYZE CREATE MACRO lower(x) AS 'pwned'",
        "EXPLAIN ANALYZE CREATE OR REPLACE VIEW corpus AS SELECT 1 AS a",
        "EXPLAIN (FORMAT json) CREATE TABLE t AS SELECT 1",
        "EXPLAIN /* comment */ ANALYZE INSERT INTO corpus SELECT * FROM corpus",
    ]:
        with pytest.raises(CatalogError, match="refused|only"):
            own.sql(statement)
    with pytest.raises(CatalogError, match="syntax error"):
        own.sql("EXPLAIN")
    assert digest(own.path) == before
    assert own.sql("SELECT count(*) AS n FROM corpus").to_pylist() == [{"n": 4200}]


def test_explain_of_a_query_runs(own: mixsql.Connection) -> None:
    assert own.sql("EXPLAIN SELECT count(*) FROM corpus").num_rows >= 1
    assert own.sql("EXPLAIN ANALYZE SELECT count(*) FROM corpus").num_rows >= 1
    assert own.sql("EXPLAIN (FORMAT json) SELECT 1").num_rows >= 1
    assert own.sql("FROM corpus SELECT count(*) AS n").to_pylist() == [{"n": 4200}]
    assert own.sql("VALUES (1), (2)").num_rows == 2
    assert own.sql("SHOW TABLES").num_rows >= 3


def test_the_session_opens_no_file_even_past_the_statement_check(own: mixsql.Connection) -> None:
    """Run directly in the user session's DuckDB, a write still fails: it can open no file at all."""
    session = own.catalog.session()
    before = digest(own.path)
    for statement in [f"COPY (SELECT 1 AS a) TO '{samples_path(own)}' (FORMAT parquet)",
                      f"SELECT * FROM read_parquet('{samples_path(own)}')",
                      "SET enable_external_access = true", "SET allowed_paths = ['/']"]:
        with pytest.raises(duckdb.Error):
            session.execute(statement)
    assert digest(own.path) == before


def test_a_session_cannot_poison_binding(own: mixsql.Connection, tmp_path: Path) -> None:
    """Views and macros a session replaces (here past the statement check) change neither the
    counts, the plan nor the caches that other processes read."""
    text = "MIX 0.5 AS code WHERE lower(domain) = 'code', 0.5 AS rest FROM corpus"
    reference = mixsql.connect(tmp_path / "ref")
    reference.register("corpus", [PARQUET_GLOB])
    expected = reference.mix(text).explanation().to_dict()
    session = own.catalog.session()
    session.execute("CREATE OR REPLACE VIEW corpus AS SELECT *, 'code' AS domain2 FROM corpus WHERE false")
    session.execute("CREATE MACRO lower(x) AS 'pwned'")
    mix = own.mix(text)
    got = mix.explanation().to_dict()
    assert [c["samples"] for c in got["components"]] == [c["samples"] for c in expected["components"]]
    first = [s["component"] for s in mix.samples(limit=200)]
    fresh = mixsql.connect(own.path, create=False).mix(text)
    assert [s["component"] for s in fresh.samples(limit=200)] == first
    assert [s["component"] for s in reference.mix(text).samples(limit=200)] == first


STATEMENTS = [
    "COPY (SELECT 1 AS a) TO '{target}' (FORMAT parquet, USE_TMP_FILE false)",
    "COPY corpus TO '{dir}/out.csv'",
    "CREATE TABLE t AS SELECT 1",
    "CREATE OR REPLACE VIEW corpus AS SELECT 1 AS a",
    "CREATE MACRO lower(x) AS 'pwned'",
    "CREATE SEQUENCE s",
    "DROP VIEW corpus",
    "INSERT INTO corpus SELECT * FROM corpus",
    "UPDATE corpus SET quality = 0",
    "DELETE FROM corpus",
    "ATTACH '{dir}/x.db' AS x",
    "DETACH memory",
    "CALL pragma_version()",
    "PRAGMA enable_profiling",
    "SET threads = 1",
    "RESET threads",
    "INSTALL httpfs",
    "LOAD httpfs",
    "EXPORT DATABASE '{dir}/export'",
    "IMPORT DATABASE '{dir}'",
    "CHECKPOINT",
    "VACUUM",
    "BEGIN TRANSACTION",
    "PIVOT corpus ON domain",
    "SELECT * FROM read_parquet('{target}')",
    "SELECT * FROM '{target}'",
    "SELECT * FROM query('COPY corpus TO ''{dir}/q.csv''')",
    "SELECT * FROM glob('{dir}/*')",
    "SELECT count(*) FROM corpus",
    "DESCRIBE corpus",
    "SUMMARIZE corpus",
]
PREFIXES = ["", "EXPLAIN ", "EXPLAIN ANALYZE ", "EXPLAIN (FORMAT json) ", "/* c */ EXPLAIN ANALYZE ", "SELECT 1; "]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from(PREFIXES), body=st.sampled_from(STATEMENTS), suffix=st.sampled_from(["", ";", "; SELECT 1"]))
def test_fuzz_statement_kinds_leave_the_catalog_unchanged(own: mixsql.Connection, prefix: str, body: str,
                                                          suffix: str) -> None:
    before = digest(own.path)
    statement = prefix + body.format(target=samples_path(own), dir=own.path) + suffix
    try:
        own.sql(statement)
    except CatalogError:
        pass
    assert digest(own.path) == before, statement
    assert own.sql("SELECT count(*) AS n FROM corpus").to_pylist() == [{"n": 4200}]


def test_cli_sql_explain_analyze_copy_is_refused(own: mixsql.Connection) -> None:
    before = digest(own.path)
    statement = f"EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{samples_path(own)}' (FORMAT parquet, USE_TMP_FILE false)"
    proc = subprocess.run([sys.executable, "-m", "mixsql", "--catalog", str(own.path), "sql", statement],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "refused" in proc.stderr
    assert digest(own.path) == before
