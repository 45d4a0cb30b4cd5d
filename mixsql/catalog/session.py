"""User SQL: a DuckDB that opens no file, and DuckDB's own parser deciding that a statement is a
query; errors pointing into the query."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from mixsql.catalog.duck import connect, lock_down
from mixsql.catalog.info import DatasetInfo, FILES_SCHEMA
from mixsql.errors import CatalogError, position


def user_session(infos: dict[str, DatasetInfo], plan: Path | None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that opens no file: each view scans an Arrow dataset opened read-only here."""
    import pyarrow.dataset as pads

    con = connect()
    lock_down(con)
    if plan is not None:  # an exported plan's tables, as views `manifest` and `lineage`
        for view in ("manifest", "lineage"):
            path = plan / f"{view}.parquet"
            if not path.exists():
                raise CatalogError(f"{plan} has no {path.name}", hint="export a plan with `mixsql plan FILE -o DIR`")
            con.register(view, pads.dataset(str(path.resolve()), format="parquet"))
    for info in infos.values():
        con.register(info.name, pads.dataset([str(p) for p in info.samples_paths], format="parquet"))
    files = [pq.read_table(i.files_path, schema=FILES_SCHEMA) for i in infos.values()]
    dataset_column = [pa.array([i.name] * f.num_rows, pa.string()) for i, f in zip(infos.values(), files)]
    table = pa.concat_tables([f.add_column(0, "dataset", d) for f, d in zip(files, dataset_column)]) if files \
        else FILES_SCHEMA.insert(0, pa.field("dataset", pa.string())).empty_table()
    con.register("mixsql_files", table)
    con.register("mixsql_datasets", pa.table({
        "name": pa.array([i.name for i in infos.values()], pa.string()),
        "version": pa.array([i.version for i in infos.values()], pa.string()),
        "samples": pa.array([i.samples for i in infos.values()], pa.int64()),
        "bytes": pa.array([i.bytes for i in infos.values()], pa.int64()),
        "registered_at": pa.array([i.registered_at for i in infos.values()], pa.string()),
    }))
    return con


def queries(con: duckdb.DuckDBPyConnection, text: str) -> list[str]:
    """The statements of ``text`` if each is a query or EXPLAIN of a query (DuckDB's own parser
    decides); else a CatalogError naming the first that is not."""
    try:
        statements = con.extract_statements(text)
    except duckdb.Error as e:
        raise query_error(e, text) from None
    if not statements:
        raise CatalogError("empty SQL statement", hint="e.g. SELECT count(*) FROM mixsql_datasets")
    out = []
    for st in statements:
        kind = st.type
        if kind == duckdb.StatementType.EXPLAIN:
            inner = _explained(st.query)
            try:
                parsed = con.extract_statements(inner) if inner.strip() else []
            except duckdb.Error as e:
                raise query_error(e, text) from None
            kind = parsed[0].type if len(parsed) == 1 else None
            if kind != duckdb.StatementType.SELECT:
                raise CatalogError(
                    f"only queries run here; EXPLAIN of {parsed[0].type.name if parsed else 'nothing'} is refused",
                    hint="EXPLAIN [ANALYZE] takes a query (SELECT ...); the catalog changes only through `register` "
                         "and `drop`")
        elif kind != duckdb.StatementType.SELECT:
            raise CatalogError(f"only read-only statements (queries) run here; {kind.name} is refused",
                               hint="the catalog changes only through `register` (and `drop`)")
        out.append(st.query)
    return out


def _explained(query: str) -> str:
    """The statement an EXPLAIN statement explains: the text after EXPLAIN [ANALYZE] [(options)]."""
    tokens = [(offset, kind) for offset, kind in duckdb.tokenize(query) if kind != duckdb.token_type.comment]
    bounds = [offset for offset, _ in tokens[1:]] + [len(query)]
    words = [query[offset:end].strip() for (offset, _), end in zip(tokens, bounds)]
    at = 1  # past EXPLAIN
    if at < len(words) and words[at].upper() == "ANALYZE":
        at += 1
    if at < len(words) and words[at].startswith("("):
        depth = 0
        while at < len(words):
            depth += words[at].count("(") - words[at].count(")")
            at += 1
            if depth <= 0:
                break
    return query[tokens[at][0]:] if at < len(tokens) else ""


def query_error(e: BaseException, query: str) -> CatalogError:
    """A DuckDB error as a CatalogError pointing into the query where DuckDB says (or names) the culprit."""
    text = str(e).strip()
    caret = re.search(r"\nLINE (\d+): (.*)\n( *)(\^+)", text)
    head, _, rest = text.partition("\n")
    hint = " ".join(line.strip() for line in rest.splitlines() if line.strip() and not line.startswith("LINE")
                    and not set(line.strip()) <= {"^"}) or None
    line = col = None
    length = 1
    if caret:
        line = int(caret.group(1))
        col = len(caret.group(3)) - len(f"LINE {caret.group(1)}: ") + 1
        length = len(caret.group(4))
    else:
        named = re.search(r'column "([^"]+)" not found|Table with name (\S+) does not exist|'
                          r'[Ff]unction with name (\w+) does not exist', head)
        if named:
            word = next(g for g in named.groups() if g)
            found = re.search(rf"(?i)(?<![\w.]){re.escape(word)}(?!\w)", query)
            if found:
                line, col = position(query, found.start())
                length = len(word)
    return CatalogError(head, hint=hint[:300] if hint else None, line=line, col=col, length=length,
                        source=query if line else None)
