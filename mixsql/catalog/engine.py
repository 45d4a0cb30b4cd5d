"""mixsql's private DuckDB over one committed state of the catalog (see ``Engine``)."""

from __future__ import annotations

import typing as t

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mixsql import locks
from mixsql.catalog.duck import connect, ident, literal, lock_down
from mixsql.catalog.info import DatasetInfo, known
from mixsql.errors import CatalogError


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
        self._file_rows: dict[str, list[dict[str, t.Any]]] = {}
        # dataset -> (its members' (index, predicate) pairs, each sample's component): what binding
        # scanned, kept for the compile that follows (``bind.matches``); one entry per dataset
        self.matches: dict[str, tuple[tuple[tuple[int, str | None], ...], np.ndarray]] = {}
        # held while this engine lives: ``mixsql gc`` does not remove a dataset version being bound
        self._in_use = []
        for info in infos.values():
            try:
                held = locks.hold(info.files_path)
            except FileNotFoundError:
                held = None
            if held is None:
                raise CatalogError(f"dataset {info.name!r} version {info.version} is no longer in the catalog's "
                                   f"directory (removed by mixsql gc once superseded)",
                                   hint="open the catalog again: this state of it is superseded")
            self._in_use.append(held)
        self.con = connect()
        for info in infos.values():
            self.con.execute(f"CREATE VIEW {ident(info.name)} AS "
                             f"SELECT * FROM read_parquet([{', '.join(literal(p) for p in info.samples_paths)}])")
        allowed = [str(p) for i in infos.values() for p in (*i.samples_paths, i.files_path)]
        if allowed:
            self.con.execute(f"SET allowed_paths = [{', '.join(literal(p) for p in allowed)}]")
        lock_down(self.con)

    def dataset(self, name: str) -> DatasetInfo:
        try:
            return self.infos[name]
        except KeyError:
            raise CatalogError(f"unknown dataset {name!r}", hint=known(self.infos)) from None

    def datasets(self) -> list[str]:
        return sorted(self.infos)

    def file_rows(self, name: str) -> list[dict[str, t.Any]]:
        """The catalog's rows of the dataset's files (``FILES_SCHEMA``), in ``_file_id`` order."""
        if name not in self._file_rows:
            self._file_rows[name] = pq.read_table(self.dataset(name).files_path).to_pylist()
        return self._file_rows[name]

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
            if now is None or (now.version != versions.get(name) and versions.get(name) not in now.earlier):
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
