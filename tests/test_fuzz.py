"""Fuzzing what users type: mutated golden statements through the whole path (parse, fmt, bind,
explain, a few samples). Nothing but a MixSQLError ever escapes, and what ``fmt`` prints parses
back to the same tree."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import expressions as exp

import mixsql
from mixsql.errors import MixSQLError
from mixsql.parse import parse, to_sql
from tests.conftest import JSONL_GLOB, PARQUET_GLOB, ROOT

GOLDEN = sorted((ROOT / "grammar" / "golden").glob("*/*.mixsql"))
TEXTS = [p.read_text() for p in GOLDEN]
TOKENS = ["(", ")", ",", ";", "'", '"', ".", "MIX", "AS", "FROM", "WHERE", "NOT", "AND", "OR", "=", "LIMIT", "SAMPLES",
          "STEPS", "SEED", "CHUNK SIZE", "PARTITIONS", "BATCH SIZE", "ORDER BY CURRICULUM (", "STAGE", "RAMP", "UNTIL",
          "BY", "DESC", "BUCKETS", "MAX EPOCHS", "ON EXHAUSTION REPEAT", "ON EXHAUSTION REDISTRIBUTE", "OVERLAP ERROR",
          "WITH w AS (quality > 0.5)", "NATURAL", "TEMPERATURE", "0", "1", "-1", "0.5", "1e400", "1e-30",
          "99999999999999999999999", "7", ":p", ":seed", "?", "$1", "random()", "now()", "corpus", "corpus_jsonl",
          "quality", "domain", "language", "'code'", "NULL", "TRUE", "-- c\n", "/*", "*/", "\n", "x.y", '""', '"a.b"',
          "🙂", "\x00", "read_parquet('x')", "(SELECT 1)", "abs(", "list_contains(", "[1, 2]", "x -> x"]
NUMBERS = ["0", "1", "2", "1024", "0.001", "1e18", "4096", "4097", "1048577", "9223372036854775807",
           "18446744073709551616", "3.5", "00", "1" * 30]


@pytest.fixture(scope="module")
def fuzz_con(tmp_path_factory: pytest.TempPathFactory) -> mixsql.Connection:
    con = mixsql.connect(tmp_path_factory.mktemp("fuzz") / "cat")
    con.register("corpus", [PARQUET_GLOB])
    con.register("corpus_jsonl", [JSONL_GLOB])
    yield con
    con.close()


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(TEXTS))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        op = draw(st.sampled_from(["delete", "insert", "duplicate", "number", "swap"]))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + " " + draw(st.sampled_from(TOKENS)) + " " + text[i:]
        elif op == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        elif op == "number":
            digits = [k for k, ch in enumerate(text) if ch.isdigit()]
            if digits:
                k = draw(st.sampled_from(digits))
                end = k
                while end < len(text) and (text[end].isdigit() or text[end] == "."):
                    end += 1
                text = text[:k] + draw(st.sampled_from(NUMBERS)) + text[end:]
        else:
            text = text[i:j] + text[:i] + text[j:]
    return text


def _params(text: str) -> dict:
    for line in text.splitlines():
        if line.startswith("-- params:"):
            try:
                return json.loads(line.removeprefix("-- params:"))
            except ValueError:
                return {}
    return {}


def same(a: exp.Expr, b: exp.Expr) -> bool:
    """The same tree, whether or not fmt quoted an identifier (it quotes keywords used as names)."""
    def plain(tree: exp.Expr) -> exp.Expr:
        tree = tree.copy()
        for node in tree.find_all(exp.Identifier):
            node.set("quoted", False)
        return tree
    return plain(a) == plain(b)


def run_path(con: mixsql.Connection, text: str) -> None:
    """The whole path a statement takes; only MixSQLError may escape."""
    try:
        tree = parse(text)
    except MixSQLError as e:
        assert e.render()
        return
    printed = to_sql(tree)
    again = parse(printed)
    assert same(again, tree) and to_sql(again) == printed, (text, printed)
    assert same(parse(to_sql(tree, pretty=False)), tree)
    try:
        mix = con.mix(text, params=_params(text), check=False)
        str(mix.explanation())
        if mix.spec.error is None:
            samples = list(mix.samples(limit=5))
            assert all(s["component"] in mix.components for s in samples)
    except MixSQLError as e:
        assert e.render()


def test_golden_statements_go_the_whole_path(fuzz_con: mixsql.Connection) -> None:
    for text in TEXTS:
        run_path(fuzz_con, text)


@settings(max_examples=int(os.environ.get("MIXSQL_FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(text=mutated())
def test_mutated_statements_raise_only_mixsql_errors(fuzz_con: mixsql.Connection, text: str) -> None:
    run_path(fuzz_con, text)


@settings(max_examples=int(os.environ.get("MIXSQL_FUZZ_EXAMPLES", "100")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from(TOKENS), max_size=30).map(" ".join))
def test_token_soup_raises_only_mixsql_errors(fuzz_con: mixsql.Connection, text: str) -> None:
    run_path(fuzz_con, "MIX " + text)
