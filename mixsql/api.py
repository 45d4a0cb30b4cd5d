"""The Python API: ``mixsql.connect(dir)`` → ``Connection`` → ``Mix``.

>>> import mixsql                                                   # doctest: +SKIP
>>> con = mixsql.connect(".mixsql")                                 # doctest: +SKIP
>>> con.register("corpus", ["sample_data/parquet/*.parquet"])       # doctest: +SKIP
>>> mix = con.mix("MIX 0.7 AS en WHERE language = 'en', 0.3 AS code WHERE domain = 'code' FROM corpus")  # doctest: +SKIP
>>> print(mix.explain())                                            # doctest: +SKIP
"""

from __future__ import annotations

import os
import typing as t
from pathlib import Path

import pyarrow as pa

from mixsql import plan as _plan
from mixsql.bind import BoundMix, bind
from mixsql.catalog import Catalog, DatasetInfo
from mixsql.errors import MixSQLError
from mixsql.explain import Explanation, explain
from mixsql.parse import parse, to_sql


class Mix:
    """A MIX statement parsed and bound to one catalog version."""

    def __init__(self, bound: BoundMix, connection: "Connection") -> None:
        self._bound = bound
        self._connection = connection

    @property
    def bound(self) -> BoundMix:
        return self._bound

    @property
    def components(self) -> list[str]:
        """Component names, in statement order."""
        return self._bound.names

    @property
    def seed(self) -> int:
        return self._bound.seed

    @property
    def chunk_size(self) -> int:
        return self._bound.chunk_size

    @property
    def catalog_version(self) -> str:
        return self._bound.catalog_version

    def sql(self) -> dict[str, str]:
        """Each component's exact sample set as DuckDB SQL."""
        return {c.name: c.sql for c in self._bound.components}

    def explanation(self) -> Explanation:
        """EXPLAIN as data (``.to_dict()`` for JSON)."""
        return explain(self._bound)

    def explain(self) -> str:
        """EXPLAIN as text: counts, weights, stream length, overlaps and compiled SQL per component."""
        return str(self.explanation())

    def __len__(self) -> int:
        """Samples in the stream before its first component runs out."""
        return _plan.shape(self._bound).samples

    def __str__(self) -> str:
        return to_sql(self._bound.tree)

    def __repr__(self) -> str:
        return f"<mixsql.Mix components={self.components} seed={self.seed} chunk_size={self.chunk_size}>"


class Connection:
    """A handle on a catalog directory. Cheap to create; holds no lock."""

    def __init__(self, path: str | os.PathLike[str] = ".mixsql", *, create: bool = True) -> None:
        self.catalog = Catalog(path, create=create)

    @property
    def path(self) -> Path:
        return self.catalog.path

    @property
    def version(self) -> str:
        """The catalog's content version."""
        return self.catalog.version

    def register(self, name: str, paths: t.Sequence[str] | str, *, replace: bool = False,
                 content: t.Sequence[str] | None = None) -> DatasetInfo:
        """Index the samples of JSONL/Parquet files (paths, globs, directories or fsspec URLs) as ``name``."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [os.fspath(paths)]
        return self.catalog.register(name, [os.fspath(p) for p in paths], replace=replace, content=content)

    def drop(self, name: str) -> None:
        """Remove a dataset from the catalog (never its files)."""
        self.catalog.drop(name)

    def datasets(self) -> list[str]:
        """Registered dataset names."""
        return self.catalog.datasets()

    def dataset(self, name: str) -> DatasetInfo:
        return self.catalog.dataset(name)

    def sql(self, query: str) -> pa.Table:
        """Read-only SQL over the catalog (one view per dataset, plus mixsql_files and mixsql_datasets)."""
        return self.catalog.sql(query)

    def mix(self, text: str, *, seed: int | None = None, chunk_size: int | None = None,
            path: str | None = None) -> Mix:
        """Parse and bind a MIX statement; ``seed``/``chunk_size`` override the statement's."""
        try:
            tree = parse(text, path=path)
            bound = bind(tree, self.catalog, text=text, path=path, seed=seed, chunk_size=chunk_size)
            _plan.check(bound)
        except MixSQLError as e:
            raise e.with_source(text, path)
        return Mix(bound, self)

    def load(self, path: str | os.PathLike[str], *, seed: int | None = None, chunk_size: int | None = None) -> Mix:
        """Read, parse and bind a ``.mixsql`` file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise MixSQLError(f"no such file: {p}") from None
        except UnicodeDecodeError as e:
            raise MixSQLError(f"{p} is not UTF-8 text: {e}") from None
        return self.mix(text, seed=seed, chunk_size=chunk_size, path=str(path))

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<mixsql.Connection {self.path} datasets={self.datasets()}>"


def connect(path: str | os.PathLike[str] = ".mixsql", *, create: bool = True) -> Connection:
    """Open the catalog in directory ``path`` (created if missing unless ``create=False``)."""
    return Connection(path, create=create)
