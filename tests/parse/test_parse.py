"""The MIX dialect: the core form, round trips, comments, and syntax errors with positions."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import expressions as exp

from mixsql.errors import MixParseError
from mixsql.parse import MixStatement, MixSQL, parse, to_sql

CORE = """MIX 0.5 AS manuals WHERE domain = 'manual' AND language = 'en',
    0.3 AS code    WHERE domain = 'code' AND quality > 0.2,
    0.2 AS docs    WHERE domain = 'docs' AND list_contains(tags, 'howto')
FROM corpus
WHERE n_bytes BETWEEN 200 AND 200000
SEED 7
"""


def test_core_form_parses_exactly_as_written() -> None:
    mix = parse(CORE)
    assert [c.name for c in mix.components] == ["manuals", "code", "docs"]
    assert [c.args["weight"].this for c in mix.components] == ["0.5", "0.3", "0.2"]
    assert mix.args["from_"].name == "corpus"
    assert isinstance(mix.args["where"].this, exp.Between)
    assert mix.args["seed"].this == "7"
    assert all(c.args.get("from_") is None for c in mix.components)


def test_component_from_versus_statement_from() -> None:
    mix = parse("MIX 0.5 AS a FROM web WHERE x > 1, 0.5 AS b WHERE y FROM corpus WHERE z SEED 1 CHUNK SIZE 8")
    a, b = mix.components
    assert a.args["from_"].name == "web" and b.args.get("from_") is None
    assert mix.args["from_"].name == "corpus"
    assert mix.args["where"].this.sql() == "z"
    assert mix.args["chunk_size"].this == "8"
    # After a component's predicate, FROM starts the statement clauses.
    mix = parse("MIX 1 AS a WHERE x > 1 FROM corpus")
    assert mix.components[0].args.get("from_") is None and mix.args["from_"].name == "corpus"
    # Right after the name, FROM belongs to the component.
    mix = parse("MIX 1 AS a FROM corpus")
    assert mix.components[0].args["from_"].name == "corpus" and mix.args.get("from_") is None


@pytest.mark.parametrize("predicate", [
    "domain IN ('a', 'b')", "n_bytes BETWEEN 1 AND 1e6", "origin LIKE 'Lib/%'", "origin ILIKE '%json%'",
    "regexp_matches(origin, '^Lib/.*')", "list_contains(tags, 'example')", "NOT (a OR b) AND (c OR NOT d)",
    "quality * 2 + 1 > n_bytes / 1000", "len(tags) >= 2", "domain = ANY(['a', 'b'])", "meta.src = 'x'",
    "CAST(n_bytes AS DOUBLE) > 1.5", "coalesce(quality, 0) > 0.5", "language IS NOT NULL",
    "list_filter(tags, x -> x LIKE 'mod%') <> []", "CASE WHEN a THEN b ELSE c END",
])
def test_any_duckdb_scalar_expression_parses(predicate: str) -> None:
    mix = parse(f"MIX 1 AS a WHERE {predicate} FROM t")
    where = mix.components[0].args["where"].this
    assert where == sqlglot.parse_one(predicate, read="duckdb")


def test_round_trip_is_the_same_tree() -> None:
    for text in [CORE, "MIX 1 AS a FROM t", "MIX 2 a, 1 b WHERE x FROM t WHERE y CHUNK SIZE 3 SEED 9",
                 "MIX 0.25 AS \"odd name\" FROM \"my data\" WHERE \"col x\" > 1"]:
        tree = parse(text)
        for pretty in (True, False):
            printed = to_sql(tree, pretty=pretty)
            assert parse(printed) == tree, printed
    assert to_sql(parse(CORE)).splitlines()[3] == "FROM corpus"


def test_comments_semicolon_and_case_insensitive_keywords() -> None:
    mix = parse("-- a file\n/* block\ncomment */ mix 1 as a /* c */ from t -- end\n;\n-- trailing\n")
    assert isinstance(mix, MixStatement) and mix.components[0].name == "a"
    assert parse("MIX 1 AS a FROM t SEED 3 CHUNK SIZE 4") == parse("mix 1 as a from t seed 3 chunk size 4")


def test_plain_sql_still_parses_in_the_dialect() -> None:
    assert sqlglot.parse_one("SELECT mix FROM t WHERE mix > 1", read=MixSQL).sql() == "SELECT mix FROM t WHERE mix > 1"
    assert sqlglot.parse_one("SELECT 1", read="duckdb").sql() == "SELECT 1"  # nothing global was patched


def _err(text: str) -> MixParseError:
    with pytest.raises(MixParseError) as e:
        parse(text)
    return e.value


@pytest.mark.parametrize("text, line, col, fragment", [
    ("MIX 0.5 AS a WHERE x > , 0.5 AS b FROM t", 1, 24, "'>' needs a right-hand side"),
    ("MIX a WHERE x", 1, 5, "numeric weight"),
    ("MIX -0.5 AS a FROM t", 1, 5, "positive"),
    ("MIX 0.5 AS , 0.2 AS b FROM t", 1, 12, "component name"),
    ("MIX 0.5 AS a FROM t SEED 1 SEED 2", 1, 28, "SEED is given twice"),
    ("MIX 0.5 AS a FROM t SEED -1", 1, 26, "non-negative integer"),
    ("MIX 0.5 AS a FROM t CHUNK 5", 1, 27, "SIZE"),
    ("MIX 0.5 AS a WHERE (x > 1 FROM t", 1, 27, "expecting )"),
    ("MIX 0.5 AS a WHERE x = 'abc FROM t", 1, 24, "unterminated string"),
    ("MIX 0.5 AS a /* x FROM t", 1, 14, "unterminated comment"),
    ("MIX 1 AS a WHERE x > 1,\n  0.5 AS b WHERE y < FROM t", 2, 22, "incomplete expression"),
    ("MIX 1 AS a FROM t WHERE x GROUP BY y", 1, 27, "unexpected 'GROUP BY'"),
    ("", 1, 1, "empty statement"),
    ("SELECT 1", 1, 1, "expected a MIX statement"),
])
def test_syntax_errors_have_line_and_column(text: str, line: int, col: int, fragment: str) -> None:
    e = _err(text)
    assert (e.line, e.col) == (line, col), e.render()
    assert fragment in e.message


@pytest.mark.parametrize("text, col, fragment", [
    ("MIX 0.5 AS a FROM t; DROP TABLE t", 22, "only one statement"),
    ("MIX 0.5 AS a FROM t; SELECT 1", 22, "only one statement"),
    ("MIX 0.5 AS a FROM t; ATTACH 'x.db'", 22, "only one statement"),
    ("MIX 0.5 AS a FROM t; COPY t TO 'x.csv'", 22, "only one statement"),
    ("MIX 0.5 AS a FROM t; PRAGMA version", 22, "only one statement"),
    ("MIX 0.5 AS a FROM t; SET threads = 1", 22, "only one statement"),
    ("MIX 0.5 AS a WHERE x IN (SELECT 1) FROM t", 26, "subqueries"),
    ("MIX 0.5 AS a WHERE EXISTS (SELECT 1) FROM t", 28, "subqueries"),
    ("MIX 0.5 AS a WHERE x = (SELECT max(y) FROM read_csv('/etc/passwd')) FROM t", 25, "subqueries"),
    ("MIX 0.5 AS a WHERE read_text('/etc/passwd') IS NOT NULL FROM t", 20, "table function read_text"),
    ("MIX 0.5 AS a WHERE length(read_csv('x')) > 1 FROM t", 27, "table function read_csv"),
    ("MIX 0.5 AS a FROM read_csv('x')", 27, "table functions"),
    ("MIX 0.5 AS a FROM 'x.parquet'", 19, "not a file"),
    ("MIX 0.5 AS a FROM (SELECT 1)", 19, "subqueries"),
])
def test_only_expressions_are_accepted(text: str, col: int, fragment: str) -> None:
    e = _err(text)
    assert e.line == 1 and e.col == col, e.render()
    assert fragment in e.message


def test_render_shows_file_line_col_and_caret() -> None:
    e = _err("MIX 1 AS a,\n    0.5 AS b WHERE y < FROM t")
    e.path = "x.mixsql"
    lines = e.render().splitlines()
    assert lines[0].startswith("x.mixsql:2:24: error: ")
    assert lines[1] == "      0.5 AS b WHERE y < FROM t"
    assert lines[2] == "  " + " " * 23 + "^~~~"


def test_trailing_from_is_the_statements_when_earlier_components_have_none() -> None:
    mix = parse("MIX 1 AS a WHERE x, 1 AS b FROM corpus WHERE y")
    a, b = mix.components
    assert mix.args["from_"].name == "corpus" and mix.args["where"].this.sql() == "y"
    assert b.args.get("from_") is None and b.args.get("where") is None
    # When every earlier component has its own FROM, the last FROM stays the last component's.
    mix = parse("MIX 1 AS a FROM web, 1 AS b FROM corpus WHERE y")
    assert mix.args.get("from_") is None and mix.components[1].args["from_"].name == "corpus"
    assert mix.components[1].args["where"].this.sql() == "y"
    assert parse(to_sql(parse("MIX 1 AS a WHERE x, 1 AS b FROM corpus WHERE y"))) == \
        parse("MIX 1 AS a WHERE x, 1 AS b FROM corpus WHERE y")
