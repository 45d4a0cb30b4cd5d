"""Formatting: tables, cells, clipping, bytes; and how errors render."""

from __future__ import annotations

import pyarrow as pa

from mixsql import output
from mixsql.errors import BindError


def test_cells_clip_and_bytes() -> None:
    assert output.cell(None) == "NULL" and output.cell(0.123456789) == "0.123457"
    assert output.cell([1, "a"]) == '[1, "a"]' and output.cell("a\nb") == "a\\nb"
    assert output.clip("abcdef", 4) == "abc…" and output.clip("abc", 4) == "abc"
    assert output.shorten("abcdef", 3, say_how_much=True) == "abc… [3 more chars]" and output.shorten(5, 1) == 5
    assert [output.human_bytes(n) for n in (512, 1500, 2_000_000_000)] == ["512 B", "1.5 KB", "2.0 GB"]


def test_tables() -> None:
    assert output.aligned(["a", "n"], [["x", "1"], ["yy", "10"]], right={1}) == ["a    n", "--  --", "x    1",
                                                                              "yy  10"]
    table = pa.table({"a": ["x", "y,z"], "n": [1, None]})
    assert output.format_table(table, "csv", None) == 'a,n\r\nx,1\r\n"y,z",NULL\r\n'
    assert output.format_table(table, "json", None) == '{"a": "x", "n": 1}\n{"a": "y,z", "n": null}\n'
    text = output.format_table(table, "table", 1)
    assert text.splitlines()[0].split() == ["a", "n"] and "first 1 shown" in text


def test_errors_render_with_a_caret() -> None:
    e = BindError("unknown column 'lang'", hint="did you mean 'language'?", line=2, col=10, length=4,
                  source="MIX 1 AS a\n   WHERE lang = 'en' FROM c", path="f.mixsql")
    assert e.render().splitlines() == ["f.mixsql:2:10: error: unknown column 'lang'", "     WHERE lang = 'en' FROM c",
                                       "           ^~~~", "  hint: did you mean 'language'?"]
    assert str(e) == "unknown column 'lang' (line 2, col 10); did you mean 'language'?"
