"""The catalog: a directory of immutable Parquet tables queried through an embedded DuckDB.

Layout of ``DIR`` (default ``./.mixsql``)::

    catalog.json                    the commit point: datasets, their versions and table paths
    datasets/<name>-<version>/      one immutable directory per registered dataset version
        samples.parquet             one row per sample: pointer columns (file, row, block, byte range) + properties
        files.parquet               one row per source file: URL, format, size, mtime, row groups
    counts/<key>.json               binding's counts per component (``bind``), keyed by versions and predicates
    plans/<key>/                    compiled plans (``manifest``), keyed by versions, statement and parameters
    .lock                           held (flock) only by a process that registers

Why not a ``.duckdb`` file: DuckDB lets one process write a database file and no process read it
meanwhile, so a notebook holding the catalog would block a registration, and a registration would
block 256 ranks starting together. Here readers never take a lock: they read ``catalog.json``
(replaced atomically, ``atomic.write_text``) and query the immutable Parquet tables through their
own in-memory DuckDBs (``session`` for user SQL, ``engine`` for mixsql's own work). A writer builds the new version in a temporary directory and commits by
replacing ``catalog.json``; any failure or interruption before that leaves the catalog as it was.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import time
import typing as t
import uuid
import weakref
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from mixsql import atomic
from mixsql import fs as mfs
from mixsql.catalog import scan
from mixsql.errors import CatalogError, DataError, MixSQLError, position

FORMAT = 3
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_PREFIX = "mixsql_"
DEFAULT_CONTENT = ("text",)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset version."""

    name: str
    version: str
    samples: int
    bytes: int
    content: tuple[str, ...]
    sources: tuple[str, ...]
    registered_at: str
    directory: Path
    record_schema_b64: str = dataclasses.field(default="", repr=False)

    @property
    def record_schema(self) -> pa.Schema:
        """Arrow schema of a whole record (content fields included), unified over the files."""
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.record_schema_b64)))

    @property
    def samples_path(self) -> Path:
        return self.directory / "samples.parquet"

    @property
    def files_path(self) -> Path:
        return self.directory / "files.parquet"

    def files(self) -> list[mfs.SourceFile]:
        """The source files as registered, indexed by ``_file_id``."""
        table = pq.read_table(self.files_path)
        return [
            mfs.SourceFile(url=r["url"], format=r["format"], compression=r["compression"], size=r["size"],
                           mtime=r["mtime"])
            for r in table.to_pylist()
        ]


class Catalog:
    """Open (and create if missing) the catalog in ``path``."""

    def __init__(self, path: str | os.PathLike[str] = ".mixsql", *, create: bool = True) -> None:
        self.path = Path(path).expanduser().absolute()
        self._index_path = self.path / "catalog.json"
        if not self._index_path.exists():
            if not create:
                raise CatalogError(f"no mixsql catalog at {self.path}",
                                   hint="register a dataset first: mixsql --catalog DIR register NAME PATH...")
            self.path.mkdir(parents=True, exist_ok=True)
            with self._write_lock():
                if not self._index_path.exists():
                    self._write_index({"format": FORMAT, "datasets": {}})
        self._stamp: tuple[int, int, int] | None = None
        self._index: dict[str, t.Any] = {}
        self._con: duckdb.DuckDBPyConnection | None = None
        self._engine: Engine | None = None
        self._load()

    # -- reading ---------------------------------------------------------------------------------

    def _load(self) -> bool:
        """Re-read catalog.json if another process committed since; True if it changed."""
        for attempt in range(50):
            try:
                st = os.stat(self._index_path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if stamp == self._stamp:
                    return False
                index = json.loads(self._index_path.read_text(encoding="utf-8"))
                break
            except FileNotFoundError:
                raise CatalogError(f"the catalog at {self.path} was removed") from None
            except json.JSONDecodeError:
                time.sleep(0.01 * (attempt + 1))  # not on POSIX (os.replace is atomic), but on odd filesystems
        else:
            raise CatalogError(f"{self._index_path} is not valid JSON", hint="restore it or remove the catalog directory")
        if index.get("format") != FORMAT:
            raise CatalogError(f"the catalog at {self.path} has format {index.get('format')}; this mixsql reads {FORMAT}",
                               hint="remove the directory and register the datasets again")
        self._index, self._stamp = index, stamp
        if self._con is not None:
            self._con.close()
            self._con = None
        self._engine = None  # not closed: a binding in flight keeps the state it started from
        return True

    def datasets(self) -> list[str]:
        """Names of the registered datasets, sorted."""
        self._load()
        return sorted(self._index["datasets"])

    def dataset(self, name: str) -> DatasetInfo:
        """The registered version of dataset ``name``."""
        self._load()
        try:
            entry = self._index["datasets"][name]
        except KeyError:
            raise CatalogError(f"unknown dataset {name!r}", hint=_known(self._index["datasets"])) from None
        return DatasetInfo(
            name=name, version=entry["version"], samples=entry["samples"], bytes=entry["bytes"],
            content=tuple(entry["content"]), sources=tuple(entry["sources"]),
            registered_at=entry["registered_at"], directory=self.path / entry["directory"],
            record_schema_b64=entry.get("record_schema", ""),
        )

    @property
    def version(self) -> str:
        """Content version of the whole catalog: changes whenever any dataset's data changes."""
        self._load()
        parts = sorted(f"{n}={e['version']}" for n, e in self._index["datasets"].items())
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def session(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB that user SQL runs in: one view per dataset, rebuilt when the catalog changes.

        It cannot open a file at all (external access off, no allowed paths, no replacement scans
        of Python variables, configuration locked): its views scan Arrow datasets that this process
        opened read-only. Nothing run here can write a file, and mixsql's own binding and planning
        never run here (``engine``), so a session can change nothing that another one computes.
        """
        self._load()
        if self._con is None:
            self._con = _user_session(self._infos(), None)
        return self._con

    def engine(self) -> "Engine":
        """mixsql's private DuckDB over the catalog as committed now (see ``Engine``)."""
        self._load()
        if self._engine is None:
            self._engine = Engine(self._infos(), self.version)
        return self._engine

    def interrupt(self) -> None:
        """Interrupt whatever this process runs in the catalog's DuckDBs (Ctrl-C in the shell)."""
        for con in (self._con, self._engine and self._engine.con):
            if con is not None:
                con.interrupt()

    def _infos(self) -> dict[str, DatasetInfo]:
        return {n: self.dataset(n) for n in sorted(self._index["datasets"])}

    def sql(self, query: str, *, plan: str | os.PathLike[str] | None = None) -> pa.Table:
        """Run read-only SQL (queries: SELECT, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, and EXPLAIN
        of a query) over the catalog; with ``plan`` (an exported plan's directory) also over its
        ``manifest`` and ``lineage`` tables."""
        con = self.session() if plan is None else _user_session(self._infos(), Path(plan))
        statements = _queries(con, query)
        try:
            result = None
            for st in statements:
                result = con.sql(st)
            assert result is not None
            return result.to_arrow_table()
        except duckdb.Error as e:
            raise _query_error(e, query) from None

    # -- writing ---------------------------------------------------------------------------------

    def _write_lock(self, timeout: float = 600.0) -> t.ContextManager[bool]:
        return atomic.locked(self.path / ".lock", timeout=timeout, busy=lambda: CatalogError(
            f"another process is registering into {self.path}", hint="wait for it to finish and try again"))

    def _write_index(self, index: dict[str, t.Any]) -> None:
        atomic.write_text(self._index_path, json.dumps(index, indent=1, sort_keys=True), sync=True)

    def register(
        self,
        name: str,
        paths: t.Sequence[str],
        *,
        replace: bool = False,
        content: t.Sequence[str] | None = None,
        progress: t.Callable[[int, int, str], None] | None = None,
    ) -> DatasetInfo:
        """Index the samples of the files that ``paths`` name as dataset ``name`` (``progress`` is
        called with (files done, files, file) as the scan goes).

        ``content`` names the fields that stay in the source files (default ``["text"]``); every
        other field becomes a property with its own type. All or nothing: on any error the
        catalog is exactly as it was.
        """
        _check_name(name)
        content = tuple(content) if content else DEFAULT_CONTENT
        with self._write_lock():
            self._stamp = None
            self._load()
            old = self._index["datasets"].get(name)
            if old is not None and not replace:
                raise CatalogError(f"dataset {name!r} is already registered",
                                   hint="use --replace (API: replace=True) to register it again")
            _sweep(self.path)
            tmp = self.path / f".tmp-{uuid.uuid4().hex}"
            tmp.mkdir(parents=True)
            try:
                entry = _build(tmp, paths, content, progress)
                final = self.path / "datasets" / f"{name}-{entry['version']}-{uuid.uuid4().hex[:8]}"
                final.parent.mkdir(exist_ok=True)
                os.rename(tmp, final)
                entry["directory"] = str(final.relative_to(self.path))
                index = json.loads(json.dumps(self._index))
                index["datasets"][name] = entry
                try:
                    self._write_index(index)
                except BaseException:
                    shutil.rmtree(final, ignore_errors=True)
                    raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if old is not None:
                shutil.rmtree(self.path / old["directory"], ignore_errors=True)
            self._load()
            return self.dataset(name)

    def drop(self, name: str) -> None:
        """Remove dataset ``name`` from the catalog (its source files are untouched)."""
        with self._write_lock():
            self._stamp = None
            self._load()
            if name not in self._index["datasets"]:
                raise CatalogError(f"unknown dataset {name!r}", hint=_known(self._index["datasets"]))
            index = json.loads(json.dumps(self._index))
            old = index["datasets"].pop(name)
            self._write_index(index)
            shutil.rmtree(self.path / old["directory"], ignore_errors=True)
            self._load()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        self._engine = None


class Engine:
    """mixsql's own DuckDB over one committed state of the catalog (``infos``, ``version``).

    Binding, counting, compiling and lineage run here and never user SQL: the only text from a
    statement that reaches it is a parsed predicate or key, an expression (``parse`` admits
    nothing else). Its views read the catalog's Parquet tables natively (the fast path for
    counting and compiling); those files are its only allowed paths, external access is off and
    the configuration locked. Pinned to one state, a binding that started before another process
    committed finishes on the data it started with, and everything it caches is keyed by the
    dataset versions of that state.
    """

    def __init__(self, infos: dict[str, DatasetInfo], version: str) -> None:
        self.infos = infos
        self.version = version
        self.con = _connect()
        for info in infos.values():
            self.con.execute(f"CREATE VIEW {ident(info.name)} AS SELECT * FROM read_parquet({_lit(info.samples_path)})")
        allowed = [str(p) for i in infos.values() for p in (i.samples_path, i.files_path)]
        if allowed:
            self.con.execute(f"SET allowed_paths = [{', '.join(_lit(p) for p in allowed)}]")
        _lock_down(self.con)

    def dataset(self, name: str) -> DatasetInfo:
        try:
            return self.infos[name]
        except KeyError:
            raise CatalogError(f"unknown dataset {name!r}", hint=_known(self.infos)) from None

    def datasets(self) -> list[str]:
        return sorted(self.infos)

    def properties(self, samples: pa.Table, file_ids: t.Sequence[int], columns: list[str],
                   versions: t.Mapping[str, str]) -> pa.Table:
        """``samples`` (with ``dataset`` and ``row`` columns, in order) joined with the requested
        properties of each sample from its dataset's catalog rows; NULL where a dataset lacks one.
        ``versions`` are the dataset versions the samples were planned from: a dataset replaced
        since is an error, never properties of other data."""
        keyed = samples.append_column("_file_id", pa.array(file_ids, pa.int32())) \
            .append_column("_at", pa.array(range(samples.num_rows), pa.int64()))
        out: dict[str, list[t.Any]] = {c: [None] * samples.num_rows for c in columns}
        names = sorted(set(samples.column("dataset").to_pylist()))
        for name in names:
            now = self.infos.get(name)
            if now is None or now.version != versions.get(name):
                raise CatalogError(
                    f"dataset {name!r} was {'dropped' if now is None else 'replaced'} since this plan was compiled "
                    f"(version {versions.get(name)} -> {now.version if now else '(none)'}): its properties now "
                    "describe other data", hint="load the statement again to plan it over the current data")
            known = [r[0] for r in self.con.execute(f"DESCRIBE {ident(name)}").fetchall()]
            unknown = [c for c in columns if c not in known]
            if unknown and len(names) == 1:
                raise CatalogError(f"dataset {name!r} has no property {unknown[0]!r}",
                                   hint=f"its properties: {', '.join(k for k in known if not k.startswith('_'))}")
            wanted = [c for c in columns if c in known]
            part = keyed.filter(pa.compute.equal(keyed.column("dataset"), name))
            select = ", ".join(["l._at"] + [f"d.{ident(c)}" for c in wanted])
            try:
                self.con.register("mixsql_lineage", part)
                rows = self.con.sql(f"SELECT {select} FROM mixsql_lineage l JOIN {ident(name)} d "
                                    f"ON d._file_id = l._file_id AND d._row = l.row").fetchall()
            except duckdb.IOException as e:
                raise CatalogError(f"dataset {name!r} changed while its properties were read: {e}",
                                   hint="load the statement again") from None
            finally:
                self.con.unregister("mixsql_lineage")
            for r in rows:
                for c, v in zip(wanted, r[1:]):
                    out[c][r[0]] = v
        for c in columns:
            samples = samples.append_column(c, pa.array(out[c]))
        return samples


_CONNECTIONS: "weakref.WeakSet[duckdb.DuckDBPyConnection]" = weakref.WeakSet()
_INHERITED: list[duckdb.DuckDBPyConnection] = []


def _keep_inherited() -> None:
    """In a forked child (a DataLoader worker), hold on to the parent's DuckDB connections forever:
    destroying one there, whose threads did not survive the fork, would crash the child."""
    _INHERITED.extend(_CONNECTIONS)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_keep_inherited)


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    _CONNECTIONS.add(con)
    return con


def _lock_down(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("SET enable_progress_bar = false")  # a library prints nothing of its own
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET python_enable_replacements = false")  # no scans of the caller's Python variables
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


FILES_SCHEMA = pa.schema([("file_id", pa.int32()), ("url", pa.string()), ("format", pa.string()),
                          ("compression", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()),
                          ("rows", pa.int64()), ("row_groups", pa.list_(pa.int64()))])


def _user_session(infos: dict[str, DatasetInfo], plan: Path | None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that opens no file: each view scans an Arrow dataset opened read-only here."""
    import pyarrow.dataset as pads

    con = _connect()
    _lock_down(con)
    if plan is not None:  # an exported plan's tables, as views `manifest` and `lineage`
        for view in ("manifest", "lineage"):
            path = plan / f"{view}.parquet"
            if not path.exists():
                raise CatalogError(f"{plan} has no {path.name}", hint="export a plan with `mixsql plan FILE -o DIR`")
            con.register(view, pads.dataset(str(path.resolve()), format="parquet"))
    for info in infos.values():
        con.register(info.name, pads.dataset(str(info.samples_path), format="parquet"))
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


def _queries(con: duckdb.DuckDBPyConnection, text: str) -> list[str]:
    """The statements of ``text`` if each is a query or EXPLAIN of a query (DuckDB's own parser
    decides); else a CatalogError naming the first that is not."""
    try:
        statements = con.extract_statements(text)
    except duckdb.Error as e:
        raise _query_error(e, text) from None
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
                raise _query_error(e, text) from None
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


def ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + str(name).replace('"', '""') + '"'


def _build(tmp: Path, paths: t.Sequence[str], content: tuple[str, ...],
           progress: t.Callable[[int, int, str], None] | None = None) -> dict[str, t.Any]:
    """Scan every file into a part, unify the schemas, and write the dataset's two tables."""
    urls = mfs.expand(paths)
    parts: list[tuple[str, Path, pa.Schema]] = []
    records: list[tuple[str, pa.Schema]] = []
    file_rows: list[dict[str, t.Any]] = []
    for file_id, url in enumerate(urls):
        if progress is not None:
            progress(file_id, len(urls), url)
        src = mfs.describe(url)
        row_groups: list[int] | None = None
        if src.format == "parquet":
            table, row_groups, record = scan.scan_parquet(src, file_id, content)
        else:
            table, record = scan.scan_jsonl(src, file_id, content)
        records.append((url, record))
        if mfs.describe(url) != src:
            raise CatalogError(f"{url} changed while it was being registered", hint="register again once it is stable")
        part = tmp / f"part-{file_id:06d}.parquet"
        pq.write_table(table, part, compression="zstd")
        parts.append((url, part, table.schema))
        file_rows.append({"file_id": file_id, "url": url, "format": src.format, "compression": src.compression,
                          "size": src.size, "mtime": src.mtime, "rows": table.num_rows, "row_groups": row_groups})
    if progress is not None:
        progress(len(urls), len(urls), "writing the catalog tables")
    schema = scan.unify([(u, s) for u, _, s in parts])
    record_schema = scan.unify(records)
    spelled: dict[str, tuple[str, str]] = {}
    for url, record in records:  # one SQL column per name, across the files too
        for name in record.names:
            other = spelled.setdefault(name.lower(), (name, url))
            if other[0] != name:
                raise DataError(f"field {other[0]!r} in {other[1]} and field {name!r} in {url} differ only in case, "
                                "and SQL cannot tell them apart", file=url,
                                hint="rename one of them in the data (or register the files as separate datasets)")
    if sum(r["rows"] for r in file_rows) == 0:
        raise CatalogError(f"{', '.join(paths)}: no file holds a record", hint="register files that hold samples")
    samples = 0
    total_bytes = 0
    with pq.ParquetWriter(tmp / "samples.parquet", schema, compression="zstd") as writer:
        for _, part, _ in parts:
            table = _conform(pq.read_table(part), schema)
            samples += table.num_rows
            total_bytes += int(pa.compute.sum(table.column("_bytes")).as_py() or 0)
            writer.write_table(table, row_group_size=1 << 17)
            part.unlink()
    pq.write_table(pa.Table.from_pylist(file_rows, schema=FILES_SCHEMA), tmp / "files.parquet")
    fingerprint = json.dumps({
        "format": FORMAT, "content": content, "schema": [f"{f.name}:{f.type}" for f in schema],
        "files": [[r["url"], r["size"], r["mtime"], r["format"], r["compression"]] for r in file_rows],
    }, sort_keys=True)
    return {
        "version": hashlib.sha256(fingerprint.encode()).hexdigest()[:16],
        "samples": samples,
        "bytes": total_bytes,
        "files": len(file_rows),
        "content": list(content),
        "record_schema": base64.b64encode(record_schema.serialize().to_pybytes()).decode("ascii"),
        "sources": [str(p) for p in paths],
        "registered_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            columns.append(col if col.type == f.type else col.cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _sweep(root: Path) -> None:
    """Remove temporary directories left by registrations that were killed (we hold the lock)."""
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(".catalog.json.*"):  # atomic.replacing's temporary names
        with contextlib.suppress(OSError):
            stale.unlink()


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise CatalogError(f"invalid dataset name {name!r}",
                           hint="use letters, digits and underscores, starting with a letter or underscore")
    if name.lower().startswith(RESERVED_PREFIX):
        raise CatalogError(f"dataset names starting with {RESERVED_PREFIX!r} are reserved for mixsql's own tables")


def _known(datasets: t.Mapping[str, t.Any]) -> str:
    return f"registered datasets: {', '.join(sorted(datasets))}" if datasets else "the catalog has no datasets yet"


def _lit(value: t.Any) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _duck_message(e: BaseException) -> str:
    return str(e).strip()


def _query_error(e: BaseException, query: str) -> CatalogError:
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


__all__ = ["Catalog", "DatasetInfo", "Engine", "MixSQLError", "ident"]
