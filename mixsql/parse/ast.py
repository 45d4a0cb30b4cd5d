"""Syntax-tree nodes of the MIX statement (sqlglot expressions, so predicates are plain sqlglot trees)."""

from __future__ import annotations

import typing as t

from sqlglot import expressions as exp


class MixStatement(exp.Expression):
    """``[WITH name AS (predicate), ...] MIX [BY SAMPLES|TOKENS] [weighting] component, ... [FROM dataset] [WHERE predicate]
    [ORDER BY CURRICULUM (...)] [LIMIT n SAMPLES] [options]``."""

    arg_types = {"expressions": True, "unit": False, "weighting": False, "from_": False, "where": False,
                 "curriculum": False, "limit": False, "seed": False, "chunk_size": False, "partitions": False, "batch_size": False,
                 "exhaustion": False, "overlap": False, "named": False, "adapt": False}

    @property
    def components(self) -> list["Component"]:
        return list(self.expressions)


class Component(exp.Expression):
    """``weight AS name [FROM dataset] [WHERE predicate] [MIX [weighting] (component, ...)] [MAX EPOCHS n]``.

    ``this`` is the name identifier; ``weight`` is absent when the enclosing MIX takes its weights from
    the data; ``expressions`` holds the children of a hierarchical component."""

    arg_types = {"this": True, "weight": False, "from_": False, "where": False, "unit": False, "weighting": False,
                 "expressions": False, "max_epochs": False}

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.this.name

    @property
    def children(self) -> list["Component"]:
        return list(self.args.get("expressions") or [])


class Weighting(exp.Expression):
    """``NATURAL [BY SAMPLES|BYTES|TOKENS]`` or ``TEMPERATURE t [BY ...]``: weights from the data."""

    arg_types = {"this": True, "temperature": False, "by": False}


class Dataset(exp.Expression):
    """The dataset a FROM names: an identifier of the catalog, never a path or table function."""

    arg_types = {"this": True}

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.this.name


class Path(exp.Expression):
    """A component's dotted path (``code.py``): ``expressions`` are its identifiers."""

    arg_types = {"expressions": True}

    @property
    def name(self) -> str:  # type: ignore[override]
        return ".".join(i.name for i in self.expressions)


class Curriculum(exp.Expression):
    """``ORDER BY CURRICULUM (item, ...)``: weight stages and ramps, and orders within components."""

    arg_types = {"expressions": True}


class Stage(exp.Expression):
    """``STAGE|RAMP [UNTIL n SAMPLES|STEPS] (path = weight, ...)``; ``this`` is STAGE or RAMP."""

    arg_types = {"this": True, "until": False, "unit": False, "expressions": False}


class Assign(exp.Expression):
    """``path = weight`` inside a stage."""

    arg_types = {"this": True, "weight": True}


class OrderKey(exp.Expression):
    """``path BY key [ASC|DESC] [BUCKETS n]``: visit a component's samples in key order, shuffled within buckets."""

    arg_types = {"this": True, "key": True, "desc": False, "buckets": False}


class Budget(exp.Expression):
    """``LIMIT n SAMPLES``: the stream's length."""

    arg_types = {"this": True, "unit": True}


class Adapt(exp.Expression):
    """``ADAPT USING algorithm(name = value, ...) [LAG n STEPS]``: weights learnt during the run."""

    arg_types = {"this": True, "expressions": False, "lag": False}


class Setting(exp.Expression):
    """``name = value``: one option of an ADAPT algorithm."""

    arg_types = {"this": True, "expression": True}


class Named(exp.Expression):
    """``name AS (predicate)`` of a WITH clause: a predicate defined once, used by name."""

    arg_types = {"this": True, "expression": True}


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


def leaves(components: t.Sequence[Component], prefix: str = "") -> t.Iterator[tuple[str, Component, list[Component]]]:
    """(dotted path, leaf, its ancestors outermost first) of every leaf, depth first in statement order."""
    for c in components:
        yield from _leaves(c, prefix, [])


def _leaves(c: Component, prefix: str, ancestors: list[Component]) -> t.Iterator[tuple[str, Component, list[Component]]]:
    path = f"{prefix}{c.name}"
    if c.children:
        for child in c.children:
            yield from _leaves(child, path + ".", ancestors + [c])
    else:
        yield path, c, ancestors
