"""The weight tree: each node's weight among its siblings (declared or from the data) and its effective share."""

from __future__ import annotations

import decimal
import typing as t
from fractions import Fraction

from sqlglot import expressions as exp

from mixsql.bind.base import _Base
from mixsql.bind.model import Node
from mixsql.errors import BindError
from mixsql.limits import TEMPERATURES
from mixsql.parse import Component


def _power(size: int, exponent: Fraction) -> Fraction:
    """size ** exponent, exactly when it is an integer power, else to 28 significant digits (decimal
    arithmetic: the same on every machine)."""
    if exponent.denominator == 1:
        return Fraction(size) ** exponent.numerator
    with decimal.localcontext(decimal.Context(prec=28)):
        return Fraction(decimal.Decimal(size) ** (decimal.Decimal(exponent.numerator) / exponent.denominator))


def _number_text(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


class Weights(_Base):
    """The binder's weight tree."""

    def _nodes(self, sizes: dict[str, tuple[int, int, int, t.Any]]) -> list[Node]:
        """Every node of the tree with its weight among its siblings and its effective share."""
        weights: dict[str, Fraction] = {}  # depth first, in statement order
        derived: dict[str, str | None] = {}
        first_child: dict[str, Component] = {}  # where an all-empty level is reported

        def size(c: Component, prefix: str, by: str, node: exp.Expr) -> int:
            path = prefix + c.name
            if c.children:
                return sum(size(k, path + ".", by, node) for k in c.children)
            s = sizes[path]
            if by == "TOKENS":
                if s[4] is None:
                    raise self.error(f"BY TOKENS needs token counts, and component {path!r} has none",
                                     node, hint="register its dataset with --tokenizer PATH")
                return s[4]
            return s[0] if by == "SAMPLES" else s[1]

        def level(components: list[Component], weighting: exp.Expr | None, prefix: str) -> None:
            label = None
            weight_of: t.Callable[[Component], Fraction] = self._weight
            if weighting is not None:
                by = weighting.args.get("by") or self._unit
                temperature = Fraction(1)
                if weighting.name == "TEMPERATURE":
                    temperature = self._number(weighting.args["temperature"], "TEMPERATURE", positive=True)
                    if not TEMPERATURES[0] <= temperature <= TEMPERATURES[1]:
                        raise self.error(f"TEMPERATURE must be from {_number_text(TEMPERATURES[0])} to "
                                         f"{_number_text(TEMPERATURES[1])}", weighting.args["temperature"],
                                         hint="1 gives the natural proportions, larger values flatten them, "
                                              "smaller ones sharpen them")
                label = weighting.name
                if weighting.name == "TEMPERATURE":
                    label = f"TEMPERATURE {_number_text(temperature)}"
                label = f"{label} BY {by}"
                weight_of = lambda c: _power(size(c, prefix, by, weighting), 1 / temperature)  # noqa: E731
            first_child[prefix.rstrip(".")] = components[0]
            for c in components:
                path = prefix + c.name
                weights[path] = weight_of(c)
                derived[path] = label
                if c.children:
                    level(c.children, c.args.get("weighting"), path + ".")

        level(self.mix.components, self.mix.args.get("weighting"), "")
        shares = self._effective(weights, lambda parent: self.error(
            "every component here is empty, so the data gives no weights", first_child[parent].this))
        return [Node(path=path, weight=w, share=shares[path], derived=derived[path],
                     children=tuple(p for p in weights if p.rpartition(".")[0] == path))
                for path, w in weights.items()]

    @staticmethod
    def _effective(weights: dict[str, Fraction], zero: t.Callable[[str], BindError]) -> dict[str, Fraction]:
        """Each node's share of the stream: its weight over its siblings', times its parent's share.
        ``zero(parent)`` is the error for a level whose weights are all 0 while it has a share to give."""
        by_parent: dict[str, list[str]] = {}
        for path in weights:
            by_parent.setdefault(path.rpartition(".")[0], []).append(path)
        share: dict[str, Fraction] = {}

        def walk(parent: str, amount: Fraction) -> None:
            siblings = by_parent.get(parent, [])
            total = sum((weights[p] for p in siblings), Fraction(0))
            if siblings and total == 0 and amount > 0:
                raise zero(parent)
            for p in siblings:
                share[p] = amount * weights[p] / total if total else Fraction(0)
                walk(p, share[p])

        walk("", Fraction(1))
        return share

    def _number(self, literal: exp.Expr, what: str, positive: bool = False) -> Fraction:
        try:
            value = Fraction(literal.this)
        except (ValueError, ZeroDivisionError, TypeError):
            raise self.error(f"{what} {literal.sql()!r} is not a number", literal) from None
        if positive and value <= 0:
            raise self.error(f"{what} must be positive", literal)
        return value

    def _weight(self, c: Component) -> Fraction:
        literal = c.args["weight"]
        value = self._number(literal, "weight")
        if value <= 0:
            raise self.error(f"component {c.name!r} has weight {literal.this}; a weight must be positive", literal,
                             hint="drop the component to leave it out, or give it weight 0 in a curriculum STAGE")
        return value
