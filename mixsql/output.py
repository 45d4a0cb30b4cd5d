"""Plain-text rendering of query results, shared by the command line and the shell's script mode."""

from __future__ import annotations

import csv
import io
import json
import typing as t

import pyarrow as pa


def format_table(table: pa.Table, fmt: str, max_rows: int | None) -> str:
    """A result as plain text: an aligned table (cut after ``max_rows``, with a note), JSON lines or CSV."""
    rows = table.to_pylist()
    names = table.column_names
    if fmt == "json":
        return "".join(json.dumps(r, default=str, ensure_ascii=False) + "\n" for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(names)
        writer.writerows([[cell(r[n]) for n in names] for r in rows])
        return buf.getvalue()
    shown = rows if max_rows is None else rows[:max_rows]
    cells = [[cell(r[n], 60) for n in names] for r in shown]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
               for f in table.schema]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(names), line(["-" * w for w in widths])] + [line(c) for c in cells]
    note = f"({len(rows):,} row{'s' * (len(rows) != 1)}"
    note += f", first {len(shown):,} shown; --max-rows 0 for all)" if len(shown) < len(rows) else ")"
    return "\n".join(out + [note]) + "\n"


def cell(value: t.Any, limit: int | None = None) -> str:
    if value is None:
        text = "NULL"
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, default=str, ensure_ascii=False)
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    text = text.replace("\n", "\\n")
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
