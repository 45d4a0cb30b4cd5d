"""The ``mixsql`` sqlglot dialect: DuckDB SQL plus the MIX statement.

``MIX`` is matched by text in ``_parse_statement`` (sqlglot's token types are a closed enum);
predicates are parsed by DuckDB's own expression parser, so every DuckDB scalar expression works.
Nothing here patches sqlglot's classes: the dialect subclasses DuckDB's tokenizer, parser and
generator, and the new nodes print through ``Generator.TRANSFORMS``.
"""

from __future__ import annotations

import typing as t

from sqlglot import expressions as exp
from sqlglot import tokens as sqlglot_tokens
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.tokens import TokenType

from mixsql.parse.ast import Component, Dataset, Mix

if sqlglot_tokens.SQLGLOTC_INSTALLED:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mixsql needs the pure-Python sqlglot: compiled sqlglot classes (sqlglot[c]) cannot be subclassed. "
        "Run `pip uninstall sqlglotc` (or reinstall plain `sqlglot`)."
    )

OPTION_CLAUSES = ("SEED", "CHUNK", "PARTITIONS")


def _flat(self: t.Any, node: exp.Expr) -> str:
    """Predicates print on one line even in pretty mode: the statement's layout is ours."""
    if not self.pretty:
        return self.sql(node)
    return type(self)(pretty=False, comments=self.comments).generate(node)


def _mix_sql(self: t.Any, expression: Mix) -> str:
    parts = [(",\n    " if self.pretty else ", ").join(self.sql(c) for c in expression.expressions)]
    if expression.args.get("from_"):
        parts.append(f"FROM {self.sql(expression, 'from_')}")
    where = expression.args.get("where")
    if where is not None:
        parts.append(f"WHERE {_flat(self, where.this)}")
    if expression.args.get("seed") is not None:
        parts.append(f"SEED {self.sql(expression, 'seed')}")
    if expression.args.get("chunk_size") is not None:
        parts.append(f"CHUNK SIZE {self.sql(expression, 'chunk_size')}")
    if expression.args.get("partitions") is not None:
        parts.append(f"PARTITIONS {self.sql(expression, 'partitions')}")
    return "MIX " + ("\n" if self.pretty else " ").join(parts)


def _component_sql(self: t.Any, expression: Component) -> str:
    out = f"{self.sql(expression, 'weight')} AS {self.sql(expression, 'this')}"
    if expression.args.get("from_"):
        out += f" FROM {self.sql(expression, 'from_')}"
    where = expression.args.get("where")
    if where is not None:
        out += f" WHERE {_flat(self, where.this)}"
    return out


def _dataset_sql(self: t.Any, expression: Dataset) -> str:
    return self.sql(expression, "this")


class MixSQL(DuckDB):
    """DuckDB SQL extended with ``MIX`` statements (registered with sqlglot as ``read="mixsql"``)."""

    class Tokenizer(DuckDB.Tokenizer):
        pass

    class Parser(DuckDB.Parser):
        def _parse_statement(self) -> exp.Expr | None:
            if self._curr and self._match_text_seq("MIX"):
                start = self._prev
                comments = start.comments
                mix = self._parse_mix(start)
                if comments:
                    mix.add_comments(comments, prepend=True)
                return mix
            return super()._parse_statement()

        def _parse_mix(self, start: t.Any) -> Mix:
            components = self._parse_csv(self._parse_component)
            if not components or any(c is None for c in components):
                self.raise_error("expecting a component: <weight> AS <name> [FROM <dataset>] [WHERE <predicate>]")
            args: dict[str, t.Any] = {"expressions": components}
            last = components[-1]
            if not self._match(TokenType.FROM, advance=False) and last.args.get("from_") is not None \
                    and any(c.args.get("from_") is None for c in components[:-1]):
                # `..., 0.2 AS docs FROM corpus [WHERE p]`: read literally, FROM would be docs' own and every
                # earlier component would lack a dataset; so it is the statement's FROM (and WHERE).
                args["from_"] = last.args.pop("from_")
                if last.args.get("where") is not None:
                    args["where"] = last.args.pop("where")
            if "from_" not in args and self._match(TokenType.FROM):
                args["from_"] = self._parse_dataset()
            where = self._parse_where() if "where" not in args else None
            if where is not None:
                args["where"] = where
            while self._curr and self._curr.text.upper() in OPTION_CLAUSES \
                    and self._curr.token_type not in self.TEXT_MATCH_EXCLUDED_TOKENS:
                keyword = self._curr
                if self._match_text_seq("SEED"):
                    key, value = "seed", self._parse_integer("SEED")
                elif self._match_text_seq("PARTITIONS"):
                    key, value = "partitions", self._parse_integer("PARTITIONS")
                else:
                    self._advance()
                    if not self._match_text_seq("SIZE"):
                        self.raise_error("expecting SIZE after CHUNK (CHUNK SIZE <samples>)")
                    key, value = "chunk_size", self._parse_integer("CHUNK SIZE")
                if key in args:
                    self.raise_error(f"{key.replace('_', ' ').upper()} is given twice", keyword)
                args[key] = value
            if self._curr:
                self._raise_unexpected()
            return self.expression(Mix(**args), token=start)

        def _raise_unexpected(self) -> None:
            text = self._curr.text.upper()
            if self._curr.token_type == TokenType.FROM or text == "WHERE":
                self.raise_error(
                    f"unexpected {text}: a component's FROM and WHERE come right after its name, and the "
                    "statement's FROM and WHERE come once, after the last component"
                )
            if self._curr.token_type in (TokenType.ORDER_BY, TokenType.LIMIT):
                self.raise_error(f"{self._curr.text.upper()} is not supported in a MIX statement yet")
            self.raise_error(
                f"unexpected '{self._curr.text}': expected ',' and another component, FROM, WHERE, SEED, CHUNK SIZE or PARTITIONS"
            )

        def _parse_component(self) -> Component:
            weight = self._parse_weight()
            self._match(TokenType.ALIAS)
            name_token = self._curr
            name = self._parse_id_var(any_token=False)
            if name is None or not isinstance(name, exp.Identifier):
                self.raise_error("expecting a component name after the weight (e.g. 0.5 AS web)", name_token)
            args: dict[str, t.Any] = {"this": name, "weight": weight}
            if self._match(TokenType.FROM):
                # FROM right after the name is the component's; after its WHERE it starts the statement's clauses.
                args["from_"] = self._parse_dataset()
            where = self._parse_where()
            if where is not None:
                args["where"] = where
            return self.expression(Component(**args), token=name_token)

        def _parse_weight(self) -> exp.Expr:
            token = self._curr
            if token and token.token_type in (TokenType.DASH, TokenType.PLUS) and self._next \
                    and self._next.token_type == TokenType.NUMBER:
                if token.token_type == TokenType.DASH:
                    self.raise_error("a weight must be a positive number", token)
                self._advance()
            if not self._match(TokenType.NUMBER):
                self.raise_error("expecting a numeric weight (e.g. MIX 0.5 AS web ...)", token)
            return self.expression(exp.Literal.number(self._prev.text), token=self._prev)

        def _parse_integer(self, clause: str) -> exp.Expr:
            token = self._curr
            if not self._match(TokenType.NUMBER) or not self._prev.text.isdigit():
                self.raise_error(f"expecting a non-negative integer after {clause}", token)
            return self.expression(exp.Literal.number(self._prev.text), token=self._prev)

        def _parse_dataset(self) -> Dataset:
            token = self._curr
            if token and token.token_type == TokenType.STRING:
                self.raise_error(
                    "FROM names a registered dataset, not a file: register the files first "
                    "(mixsql register NAME PATH...)", token)
            if token and token.token_type in (TokenType.L_PAREN,):
                self.raise_error("FROM takes a dataset name; subqueries are not allowed in a MIX statement", token)
            name = self._parse_id_var(any_token=False)
            if name is None or not isinstance(name, exp.Identifier):
                self.raise_error("expecting a dataset name after FROM", token)
            if self._curr and self._curr.token_type in (TokenType.L_PAREN, TokenType.DOT):
                self.raise_error(
                    "FROM takes the name of a registered dataset; table functions and qualified names are not "
                    "allowed in a MIX statement", self._curr)
            return self.expression(Dataset(this=name), token=token)

    class Generator(DuckDB.Generator):
        TRANSFORMS = {
            **DuckDB.Generator.TRANSFORMS,
            Mix: _mix_sql,
            Component: _component_sql,
            Dataset: _dataset_sql,
        }
