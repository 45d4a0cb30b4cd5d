"""``mixsql stats DATASET``: what a dataset holds, property by property, before any mixture is written.

Per property: type, non-null and null counts, distinct values (exact up to 100,000 samples, else
DuckDB's approximate count), quantiles of numbers, the most frequent values of categories. Then the
breakdown of samples, content bytes (and tokens, when a token-count property exists) by each main
categorical property (text or boolean with at most 64 distinct values).
"""

from __future__ import annotations

import dataclasses
import typing as t

from mixsql.api import Connection
from mixsql.catalog.duck import ident
from mixsql.errors import MixSQLError
from mixsql.output import aligned as _table
from mixsql.output import clip
from mixsql.output import human_bytes as _bytes

RESERVED = ("_file_id", "_row", "_block", "_offset", "_length", "_bytes")
TOKEN_COLUMNS = ("n_tokens", "num_tokens", "tokens", "token_count")
MAX_CATEGORIES = 64
NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
           "FLOAT", "DOUBLE", "DECIMAL")


@dataclasses.dataclass(frozen=True)
class Property:
    name: str
    type: str
    count: int
    nulls: int
    distinct: int
    summary: str  # quantiles for numbers, the most frequent values for categories


@dataclasses.dataclass(frozen=True)
class Breakdown:
    property: str
    rows: tuple[tuple[t.Any, int, int, int | None], ...]  # (value, samples, bytes, tokens)


@dataclasses.dataclass(frozen=True)
class Stats:
    dataset: str
    samples: int
    bytes: int
    tokens: str | None  # the token-count property, if any
    properties: tuple[Property, ...]
    breakdowns: tuple[Breakdown, ...]

    def to_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return render(self)


_q = ident


def stats(con: Connection, dataset: str) -> Stats:
    """Compute the statistics of ``dataset`` (a few scans of the catalog, never of the data files)."""
    if dataset not in con.datasets():
        raise MixSQLError(f"unknown dataset {dataset!r}", hint=f"datasets: {', '.join(con.datasets()) or 'none yet'}")
    ds = _q(dataset)
    info = con.dataset(dataset)
    summary = {r["column_name"]: r for r in con.sql(f"SUMMARIZE {ds}").to_pylist()}
    exact = info.samples <= 100_000
    names = [n for n in summary if n not in RESERVED]
    counted = con.sql("SELECT " + ", ".join(
        [f"count({_q(n)}) AS {_q('c_' + n)}" for n in names]
        + ([f"count(DISTINCT {_q(n)}) AS {_q('d_' + n)}" for n in names] if exact else [])
        + ["count(*) AS _all"]) + f" FROM {ds}").to_pylist()[0]
    properties, categorical = [], []
    count = int(counted["_all"])
    for name in names:
        row = summary[name]
        kind = row["column_type"]
        nulls = count - int(counted["c_" + name])
        distinct = int(counted["d_" + name]) if exact else int(row["approx_unique"] or 0)
        if kind.split("(")[0] in NUMERIC:
            summary_text = (f"min {row['min']}  q25 {_num(row['q25'])}  median {_num(row['q50'])}  "
                            f"q75 {_num(row['q75'])}  max {row['max']}  mean {_num(row['avg'])}")
        elif kind in ("VARCHAR", "BOOLEAN"):
            top = con.sql(f"SELECT {_q(name)} AS v, count(*) AS n FROM {ds} GROUP BY 1 ORDER BY n DESC, v "
                          f"LIMIT 5").to_pylist()
            summary_text = ", ".join(f"{_short(r['v'])} ({r['n']:,})" for r in top)
            if distinct <= MAX_CATEGORIES:
                categorical.append(name)
        elif kind.endswith("[]"):
            lengths = con.sql(f"SELECT avg(len({_q(name)})) AS a, max(len({_q(name)})) AS m FROM {ds}").to_pylist()[0]
            summary_text = f"lists of {_num(lengths['a'])} items on average (at most {lengths['m']})"
        else:
            summary_text = f"min {_short(row['min'])}  max {_short(row['max'])}"
        properties.append(Property(name=name, type=kind, count=count - nulls, nulls=nulls, distinct=distinct,
                                   summary=summary_text))
    tokens = next((c for c in TOKEN_COLUMNS if c in summary and summary[c]["column_type"].split("(")[0] in NUMERIC),
                  None)
    breakdowns = []
    for name in categorical:
        token_sum = f", sum({_q(tokens)})::BIGINT AS t" if tokens else ", NULL AS t"
        rows = con.sql(f"SELECT {_q(name)} AS v, count(*) AS n, coalesce(sum(_bytes), 0)::BIGINT AS b{token_sum} "
                       f"FROM {ds} GROUP BY 1 ORDER BY b DESC, v").to_pylist()
        breakdowns.append(Breakdown(property=name, rows=tuple((r["v"], r["n"], r["b"], r["t"]) for r in rows)))
    return Stats(dataset=dataset, samples=info.samples, bytes=info.bytes, tokens=tokens,
                 properties=tuple(properties), breakdowns=tuple(breakdowns))


def render(s: Stats) -> str:

    out = [f"dataset {s.dataset}: {s.samples:,} samples, {_bytes(s.bytes)} of content"
           + (f", token counts in {s.tokens!r}" if s.tokens else ""), ""]
    out += _table(["property", "type", "non-null", "nulls", "distinct", "values"],
                  [[p.name, p.type, f"{p.count:,}", f"{p.nulls:,}", f"{p.distinct:,}", p.summary]
                   for p in s.properties], {2, 3, 4})
    for b in s.breakdowns:
        out += ["", f"by {b.property}:"]
        head = [b.property, "samples", "share", "bytes", "share"] + (["tokens"] if s.tokens else [])
        body = [[_short(v), f"{n:,}", f"{n / max(s.samples, 1):.1%}", _bytes(nb), f"{nb / max(s.bytes, 1):.1%}"]
                + ([f"{tk or 0:,}"] if s.tokens else []) for v, n, nb, tk in b.rows]
        out += ["  " + line for line in _table(head, body, {1, 2, 3, 4, 5})]
    return "\n".join(out)


def _num(value: t.Any) -> str:
    if value is None:
        return "NULL"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _short(value: t.Any, limit: int = 30) -> str:
    return clip("NULL" if value is None else str(value), limit)
