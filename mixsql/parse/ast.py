"""Syntax-tree nodes of the MIX statement (sqlglot expressions, so predicates are plain sqlglot trees)."""

from __future__ import annotations

import typing as t

from sqlglot import expressions as exp


class Mix(exp.Expression):
    """``MIX component, ... [FROM dataset] [WHERE predicate] [SEED n] [CHUNK SIZE n] [PARTITIONS n]``."""

    arg_types = {"expressions": True, "from_": False, "where": False, "seed": False, "chunk_size": False,
                 "partitions": False}

    @property
    def components(self) -> list["Component"]:
        return list(self.expressions)


class Component(exp.Expression):
    """``weight AS name [FROM dataset] [WHERE predicate]``; ``this`` is the name identifier."""

    arg_types = {"this": True, "weight": True, "from_": False, "where": False}

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.this.name


class Dataset(exp.Expression):
    """The dataset a FROM names: an identifier of the catalog, never a path or table function."""

    arg_types = {"this": True}

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.this.name


def span(node: exp.Expr | None) -> tuple[int, int] | None:
    """(start, end) character offsets (0-based, end exclusive) of a node, from its own and its children's meta."""
    if node is None:
        return None
    starts, ends = [], []
    for n in node.walk():
        meta: dict[str, t.Any] = getattr(n, "_meta", None) or {}
        if "start" in meta and "end" in meta:
            starts.append(meta["start"])
            ends.append(meta["end"] + 1)
    return (min(starts), max(ends)) if starts else None
