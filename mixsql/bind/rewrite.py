"""Rewriting the tree before it is checked: ``:name`` parameters become literals (validated), WITH
names are expanded (bounded)."""

from __future__ import annotations

import difflib
import math
import typing as t
from fractions import Fraction

from sqlglot import expressions as exp

from mixsql.bind.base import _Base
from mixsql.errors import BindError
from mixsql.limits import MAX_EXPANDED_NODES, MAX_INTEGER_DIGITS, MAX_WITH_CHAIN
from mixsql.parse import Component, MixStatement
from mixsql.parse.ast import Adapt, Assign, Budget, OrderKey, Setting, Stage, Weighting
from mixsql.parse.dialect import number_problem


def _sql_value(value: t.Any) -> exp.Expr:
    """A Python value as a SQL literal."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float, Fraction)):
        if isinstance(value, float) and not math.isfinite(value):
            raise TypeError(value)
        return exp.Literal.number(str(value))
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, (list, tuple)):
        return exp.Array(expressions=[_sql_value(v) for v in value])
    raise TypeError(value)


def _clip(value: t.Any, limit: int = 40) -> str:
    big = isinstance(value, int) and value.bit_length() >= 4000  # repr of a huge int is slow and long
    text = f"an integer of {value.bit_length()} bits" if big else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class Rewrite(_Base):
    """The binder's rewriting of parameters and WITH names."""

    def _substitute(self, params: dict[str, t.Any]) -> MixStatement:
        """A copy of the tree with every ``:name`` replaced by its value (positions kept for errors)."""
        tree = self.mix.copy()
        used: set[str] = set()
        for node in list(tree.find_all(exp.Placeholder)):
            name = node.name
            if name not in params:
                close = difflib.get_close_matches(name, list(params), n=1)
                raise self.error(f"parameter :{name} has no value", node,
                                 hint=f"did you mean {close[0]!r}?" if close else
                                 f"bind it: con.load(path, params={{'{name}': ...}}) or --param {name}=VALUE")
            used.add(name)
            literal = self._literal(name, params[name], node)
            literal.meta.update({k: v for k, v in node.meta.items() if k in ("line", "col", "start", "end")})
            for child in literal.walk():
                child.meta.update({k: v for k, v in node.meta.items() if k in ("line", "col", "start", "end")})
            node.replace(literal)
        unused = sorted(set(params) - used)
        if unused:
            raise BindError(f"parameter {unused[0]!r} is not used by the statement",
                            hint=f"its parameters: {', '.join(':' + p for p in sorted(used)) or 'none'}",
                            source=self.text, path=self.path)
        return tree

    def _literal(self, name: str, value: t.Any, node: exp.Expr) -> exp.Expr:
        parent = node.parent
        if isinstance(parent, (MixStatement, Component, Budget, Stage, Assign, Weighting, OrderKey, Adapt, Setting)):
            # a weight, a stage point or an option: a number, never text
            integer = node.arg_key not in ("weight", "temperature") and not isinstance(parent, Setting)
            kind = "a non-negative integer" if integer else "a number"
            if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)) or \
                    (integer and not (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))):
                raise self.error(f"parameter :{name} must be {kind} here, not {_clip(value)} "
                                 f"({type(value).__name__})", node,
                                 hint=f"bind it to {kind}, e.g. --param {name}={'7' if integer else '0.5'}")
            if integer:
                text = str(int(value)) if value >= 0 and value < 10 ** MAX_INTEGER_DIGITS else None
                if text is None:
                    raise self.error(f"parameter :{name} must be {kind} of at most {MAX_INTEGER_DIGITS} digits here, "
                                     f"not {_clip(value)}", node)
                return exp.Literal.number(text)
            text = str(float(value)) if isinstance(value, Fraction) else str(value)
            problem = number_problem(text) if not (isinstance(value, float) and not math.isfinite(value)) \
                else f"{value} is not a finite number"
            if problem or value < 0:
                raise self.error(f"parameter :{name}: {problem or 'a weight cannot be negative'}", node)
            return exp.Literal.number(text)
        try:
            return _sql_value(value)
        except TypeError:
            raise self.error(f"parameter :{name} has a value of type {type(value).__name__}, which SQL cannot hold",
                             node, hint="use a number, string, boolean, None or a list of those") from None

    def _expand_named(self) -> None:
        """Replace uses of WITH names in predicates by their (parenthesised) definitions."""
        definitions: dict[str, exp.Expr] = {}
        sizes: dict[str, int] = {}  # nodes once expanded: counted before anything is expanded
        chains: dict[str, int] = {}

        def uses(tree: exp.Expr) -> list[str]:
            return [c.name.lower() for c in tree.find_all(exp.Column) if len(c.parts) == 1 and c.name.lower() in sizes]

        def size(tree: exp.Expr) -> int:
            return sum(1 for _ in tree.walk()) + sum(sizes[u] - 1 for u in uses(tree))

        for named in self.mix.args.get("named") or []:
            key = named.name.lower()
            if key in definitions:
                raise self.error(f"{named.name!r} is defined twice in WITH", named.this)
            used = uses(named.expression)
            sizes[key], chains[key] = size(named.expression), 1 + max((chains[u] for u in used), default=0)
            if sizes[key] > MAX_EXPANDED_NODES or chains[key] > MAX_WITH_CHAIN:
                found = f"a chain of {chains[key]} names" if chains[key] > MAX_WITH_CHAIN else f"{sizes[key]:,} nodes"
                raise self.error(f"WITH {named.name!r} expands to {found}, more than a predicate may hold "
                                 f"({MAX_WITH_CHAIN} names deep, {MAX_EXPANDED_NODES:,} nodes)", named.this,
                                 hint="each use of a WITH name copies its definition: define fewer layers")
            expression = named.expression.copy()
            self._replace_names(expression, definitions)
            definitions[key] = expression
        if definitions:
            for where in list(self.mix.find_all(exp.Where)):
                if size(where) > MAX_EXPANDED_NODES:
                    raise self.error(f"this WHERE expands to {size(where):,} nodes with its WITH names, more than "
                                     f"a predicate may hold ({MAX_EXPANDED_NODES:,})", where.this,
                                     hint="each use of a WITH name copies its definition: use fewer")
                self._replace_names(where, definitions)

    def _replace_names(self, tree: exp.Expr, definitions: dict[str, exp.Expr]) -> None:
        for col in list(tree.find_all(exp.Column)):
            if len(col.parts) == 1 and col.name.lower() in definitions:
                replacement = exp.Paren(this=definitions[col.name.lower()].copy())
                col.replace(replacement)
