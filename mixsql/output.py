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
    """One value as table text: NULL, JSON for lists and dicts, 6 significant digits for floats."""
    if value is None:
        text = "NULL"
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, default=str, ensure_ascii=False)
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (bytes, bytearray)):  # an image or other blob: its size, not its bytes
        text = f"<{len(value):,} bytes>"
    else:
        text = str(value)
    text = text.replace("\n", "\\n")
    return clip(text, limit) if limit else text


def json_value(value: t.Any) -> t.Any:
    """What JSON output shows of a value JSON has no type for: bytes as base64, others as text."""
    if isinstance(value, (bytes, bytearray)):
        import base64

        return base64.b64encode(value).decode("ascii")
    return str(value)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shorten(value: t.Any, limit: int, *, say_how_much: bool = False) -> t.Any:
    """A long string cut to ``limit`` characters (saying how many more there were); other values as they are."""
    if not isinstance(value, str) or len(value) <= limit:
        return value
    return value[:limit] + f"… [{len(value) - limit} more chars]" if say_how_much else clip(value, limit)


def aligned(head: list[str], body: list[list[str]], right: set[int]) -> list[str]:
    """Lines of a plain table: a header, a rule, the rows; columns in ``right`` aligned right."""
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(padded).rstrip()

    return [line(head), line(["-" * w for w in widths])] + [line(r) for r in body]


def human_bytes(n: int) -> str:
    """A byte count in decimal units: 512 B, 1.5 KB, 2.0 GB."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover
