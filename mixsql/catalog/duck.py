"""The DuckDB connections the catalog opens: locked down (no file access beyond what each allows, no
extensions, configuration locked), kept alive in forked DataLoader workers, and SQL quoting."""

from __future__ import annotations

import os
import typing as t
import weakref

import duckdb


_CONNECTIONS: "weakref.WeakSet[duckdb.DuckDBPyConnection]" = weakref.WeakSet()


_INHERITED: list[duckdb.DuckDBPyConnection] = []


def _keep_inherited() -> None:
    """In a forked child (a DataLoader worker), hold on to the parent's DuckDB connections forever:
    destroying one there, whose threads did not survive the fork, would crash the child."""
    _INHERITED.extend(_CONNECTIONS)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_keep_inherited)


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    _CONNECTIONS.add(con)
    return con


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("SET enable_progress_bar = false")  # a library prints nothing of its own
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET python_enable_replacements = false")  # no scans of the caller's Python variables
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + str(name).replace('"', '""') + '"'


def literal(value: t.Any) -> str:
    return "'" + str(value).replace("'", "''") + "'"
