"""The ``mixsql`` sqlglot dialect: DuckDB SQL plus the MIX statement.

``MIX`` is matched by text in ``_parse_statement`` (sqlglot's token types are a closed enum);
predicates are parsed by DuckDB's own expression parser, so every DuckDB scalar expression works.
Nothing here patches sqlglot's classes: the dialect subclasses DuckDB's tokenizer, parser and
generator, and the new nodes print through ``Generator.TRANSFORMS``.
"""

from __future__ import annotations

import typing as t
from decimal import Decimal, InvalidOperation

from sqlglot import expressions as exp
from sqlglot import tokens as sqlglot_tokens
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.tokens import TokenType

from mixsql.limits import MAX_INTEGER_DIGITS, MAX_WEIGHT_DIGITS, WEIGHT_EXPONENTS
from mixsql.parse.ast import (Adapt, Assign, Budget, Component, Curriculum, Dataset, MixStatement, Named, OrderKey, Path,
                               Setting, Stage, Weighting)

if sqlglot_tokens.SQLGLOTC_INSTALLED:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mixsql needs the pure-Python sqlglot: compiled sqlglot classes (sqlglot[c]) cannot be subclassed. "
        "Run `pip uninstall sqlglotc` (or reinstall plain `sqlglot`)."
    )

OPTION_CLAUSES = ("SEED", "CHUNK", "PARTITIONS", "BATCH", "ON", "OVERLAP", "LIMIT", "ORDER BY", "ADAPT")
EXHAUSTION_POLICIES = ("STOP", "REDISTRIBUTE", "REPEAT")
OVERLAP_RULES = ("FIRST", "ERROR")
UNITS = ("SAMPLES", "STEPS", "TOKENS")


def number_problem(text: str) -> str | None:
    """Why a weight, temperature or option literal is out of bounds, else None: it must be 0 or between
    1e-18 and 1e18, with at most 30 significant digits, so exact arithmetic on it stays small."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return f"{text!r} is not a number"
    if not value.is_finite():
        return f"{text!r} is not a finite number"
    if value == 0:
        return None
    if not WEIGHT_EXPONENTS[0] <= value.adjusted() <= WEIGHT_EXPONENTS[1]:
        return f"weight {text[:24]} is out of range: a weight is 0 or between 1e-18 and 1e18"
    if len("".join(map(str, value.as_tuple().digits)).strip("0")) > MAX_WEIGHT_DIGITS:
        return f"weight {text[:24]}... has more than {MAX_WEIGHT_DIGITS} significant digits"
    return None


def _has_dataset(c: Component) -> bool:
    """A component names its dataset: its own FROM, or every child of its sub-mixture does."""
    return c.args.get("from_") is not None or bool(c.children) and all(_has_dataset(k) for k in c.children)


def _flat(self: t.Any, node: exp.Expr) -> str:
    """Predicates print on one line even in pretty mode: the statement's layout is ours."""
    if not self.pretty:
        return self.sql(node)
    return type(self)(pretty=False, comments=self.comments).generate(node)


def _mix_sql(self: t.Any, expression: MixStatement) -> str:
    head = ""
    if expression.args.get("named"):
        sep = ",\n     " if self.pretty else ", "
        head = "WITH " + sep.join(self.sql(n) for n in expression.args["named"]) + ("\n" if self.pretty else " ")
    parts = [(",\n    " if self.pretty else ", ").join(self.sql(c) for c in expression.expressions)]
    if expression.args.get("weighting"):
        parts[0] = f"{self.sql(expression, 'weighting')}{chr(10) + '    ' if self.pretty else ' '}{parts[0]}"
    if expression.args.get("unit"):
        parts[0] = f"BY {expression.args['unit']} {parts[0]}"
    if expression.args.get("from_"):
        parts.append(f"FROM {self.sql(expression, 'from_')}")
    where = expression.args.get("where")
    if where is not None:
        parts.append(f"WHERE {_flat(self, where.this)}")
    if expression.args.get("curriculum") is not None:
        parts.append(self.sql(expression, "curriculum"))
    if expression.args.get("limit") is not None:
        parts.append(self.sql(expression, "limit"))
    for key, label in (("seed", "SEED"), ("chunk_size", "CHUNK SIZE"), ("partitions", "PARTITIONS"),
                       ("batch_size", "BATCH SIZE"), ("exhaustion", "ON EXHAUSTION"), ("overlap", "OVERLAP")):
        if expression.args.get(key) is not None:
            parts.append(f"{label} {self.sql(expression, key)}")
    if expression.args.get("adapt") is not None:
        parts.append(self.sql(expression, "adapt"))
    return head + "MIX " + ("\n" if self.pretty else " ").join(parts)


def _component_sql(self: t.Any, expression: Component) -> str:
    name = self.sql(expression, "this")
    out = f"{self.sql(expression, 'weight')} AS {name}" if expression.args.get("weight") is not None else name
    if expression.args.get("from_"):
        out += f" FROM {self.sql(expression, 'from_')}"
    where = expression.args.get("where")
    if where is not None:
        out += f" WHERE {_flat(self, where.this)}"
    if expression.children:
        weighting = f"{self.sql(expression, 'weighting')} " if expression.args.get("weighting") else ""
        if expression.args.get("unit"):
            weighting = f"BY {expression.args['unit']} {weighting}"
        out += f" MIX {weighting}(" + ", ".join(self.sql(c) for c in expression.children) + ")"
    if expression.args.get("max_epochs") is not None:
        out += f" MAX EPOCHS {self.sql(expression, 'max_epochs')}"
    return out


def _weighting_sql(self: t.Any, expression: Weighting) -> str:
    out = expression.name
    if expression.args.get("temperature") is not None:
        out += f" {self.sql(expression, 'temperature')}"
    if expression.args.get("by"):
        out += f" BY {expression.args['by']}"
    return out


def _curriculum_sql(self: t.Any, expression: Curriculum) -> str:
    sep = ",\n    " if self.pretty else ", "
    inner = sep.join(self.sql(e) for e in expression.expressions)
    return f"ORDER BY CURRICULUM (\n    {inner}\n)" if self.pretty else f"ORDER BY CURRICULUM ({inner})"


def _stage_sql(self: t.Any, expression: Stage) -> str:
    out = expression.name
    if expression.args.get("until") is not None:
        out += f" UNTIL {self.sql(expression, 'until')} {expression.args['unit']}"
    assigns = expression.args.get("expressions") or []
    return out + " (" + ", ".join(self.sql(a) for a in assigns) + ")"


def _assign_sql(self: t.Any, expression: Assign) -> str:
    return f"{self.sql(expression, 'this')} = {self.sql(expression, 'weight')}"


def _order_key_sql(self: t.Any, expression: OrderKey) -> str:
    out = f"{self.sql(expression, 'this')} BY {_flat(self, expression.args['key'])}"
    out += " DESC" if expression.args.get("desc") else " ASC"
    if expression.args.get("buckets") is not None:
        out += f" BUCKETS {self.sql(expression, 'buckets')}"
    return out


def _path_sql(self: t.Any, expression: Path) -> str:
    return ".".join(self.sql(i) for i in expression.expressions)


def _budget_sql(self: t.Any, expression: Budget) -> str:
    return f"LIMIT {self.sql(expression, 'this')} {expression.args['unit']}"


def _adapt_sql(self: t.Any, expression: Adapt) -> str:
    settings = ", ".join(f"{self.sql(x, 'this')} = {self.sql(x, 'expression')}" for x in expression.expressions)
    out = f"ADAPT USING {self.sql(expression, 'this')}({settings})"
    if expression.args.get("lag") is not None:
        out += f" LAG {self.sql(expression, 'lag')} STEPS"
    return out


def _named_sql(self: t.Any, expression: Named) -> str:
    return f"{self.sql(expression, 'this')} AS ({_flat(self, expression.expression)})"


def _dataset_sql(self: t.Any, expression: Dataset) -> str:
    return self.sql(expression, "this")


class MixSQL(DuckDB):
    """DuckDB SQL extended with ``MIX`` statements (registered with sqlglot as ``read="mixsql"``)."""

    class Tokenizer(DuckDB.Tokenizer):
        pass

    class Parser(DuckDB.Parser):
        def _parse_statement(self) -> exp.Expr | None:
            if self._curr and (self._curr.text.upper() == "MIX" or self._curr.token_type == TokenType.WITH):
                start = self._curr
                comments = start.comments
                named = self._parse_named() if self._match(TokenType.WITH) else None
                if not self._match_text_seq("MIX"):
                    self.raise_error("expecting MIX after the WITH clause")
                mix = self._parse_mix(start, named)
                if comments:
                    mix.add_comments(comments, prepend=True)
                return mix
            return super()._parse_statement()

        def _parse_primary(self) -> exp.Expr | None:
            # SQL joins adjacent string literals ('a' 'b' is 'ab'): in a predicate that is almost always
            # a missing comma (IN ('docs' 'manual')), which would silently match neither
            if self._curr and self._next and self._curr.token_type == TokenType.STRING \
                    and self._next.token_type == TokenType.STRING:
                self.raise_error(f"two strings in a row ('{self._curr.text}' '{self._next.text}'), which SQL "
                                 "would join into one: separate list items with a comma, or join strings with ||",
                                 self._next)
            return super()._parse_primary()

        def _parse_named(self) -> list[Named]:
            def one() -> Named:
                token = self._curr
                name = self._parse_id_var(any_token=False)
                if not isinstance(name, exp.Identifier):
                    self.raise_error("expecting a name: WITH <name> AS (<predicate>), ...", token)
                if not self._match(TokenType.ALIAS) or not self._match(TokenType.L_PAREN):
                    self.raise_error(f"expecting AS (<predicate>) after {token.text}")
                predicate = self._parse_disjunction()
                if predicate is None:
                    self.raise_error("expecting a predicate")
                self._match_r_paren()
                return self.expression(Named(this=name, expression=predicate), token=token)

            return self._parse_csv(one)

        def _parse_mix(self, start: t.Any, named: list[Named] | None = None) -> MixStatement:
            unit = self._parse_mix_unit()
            weighting = self._parse_weighting()
            components = self._parse_csv(lambda: self._parse_component(weighting is not None))
            if not components or any(c is None for c in components):
                self.raise_error("expecting a component: <weight> AS <name> [FROM <dataset>] [WHERE <predicate>]")
            args: dict[str, t.Any] = {"expressions": components}
            if weighting is not None:
                args["weighting"] = weighting
            if unit is not None:
                args["unit"] = unit
            if named:
                args["named"] = named
            last = components[-1]
            if not self._match(TokenType.FROM, advance=False) and last.args.get("from_") is not None \
                    and not last.children and not all(_has_dataset(c) for c in components[:-1]):
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
                key, value = self._parse_option()
                if key in args:
                    self.raise_error(f"{keyword.text.upper()} is given twice", keyword)
                args[key] = value
            if self._curr:
                self._raise_unexpected()
            return self.expression(MixStatement(**args), token=start)

        def _parse_option(self) -> tuple[str, t.Any]:
            if self._match(TokenType.ORDER_BY):
                if not self._match_text_seq("CURRICULUM"):
                    self.raise_error("a MIX statement is ordered with ORDER BY CURRICULUM (...)")
                return "curriculum", self._parse_curriculum()
            if self._match(TokenType.LIMIT):
                token = self._curr
                value = self._parse_integer("LIMIT")
                unit = self._parse_unit("LIMIT n", token)
                return "limit", self.expression(Budget(this=value, unit=unit), token=token)
            if self._match_text_seq("SEED"):
                return "seed", self._parse_integer("SEED")
            if self._match_text_seq("PARTITIONS"):
                return "partitions", self._parse_integer("PARTITIONS")
            if self._match_text_seq("CHUNK"):
                if not self._match_text_seq("SIZE"):
                    self.raise_error("expecting SIZE after CHUNK (CHUNK SIZE <samples>)")
                return "chunk_size", self._parse_integer("CHUNK SIZE")
            if self._match_text_seq("BATCH"):
                if not self._match_text_seq("SIZE"):
                    self.raise_error("expecting SIZE after BATCH (BATCH SIZE <global batch size in samples>)")
                return "batch_size", self._parse_integer("BATCH SIZE")
            if self._match_text_seq("ADAPT"):
                return "adapt", self._parse_adapt(self._prev)
            if self._match(TokenType.ON):
                if not self._match_text_seq("EXHAUSTION"):
                    self.raise_error("expecting EXHAUSTION after ON (ON EXHAUSTION STOP | REDISTRIBUTE | REPEAT)")
                return "exhaustion", self._parse_choice("ON EXHAUSTION", EXHAUSTION_POLICIES)
            self._advance()  # OVERLAP
            return "overlap", self._parse_choice("OVERLAP", OVERLAP_RULES)

        def _parse_adapt(self, keyword: t.Any) -> Adapt:
            if not self._match(TokenType.USING):
                self.raise_error("expecting USING after ADAPT (ADAPT USING ado(...))", self._curr or keyword)
            token = self._curr
            name = self._parse_id_var(any_token=False)
            if not isinstance(name, exp.Identifier):
                self.raise_error("expecting the algorithm after ADAPT USING (ado)", token or keyword)
            settings: list[Setting] = []
            if self._match(TokenType.L_PAREN):
                if not self._match(TokenType.R_PAREN):
                    settings = self._parse_csv(self._parse_setting)
                    if not self._match(TokenType.R_PAREN):
                        self.raise_error("expecting , or ) in the algorithm's options", self._curr)
            args: dict[str, t.Any] = {"this": name, "expressions": settings}
            if self._match_text_seq("LAG"):
                lag_token = self._curr
                args["lag"] = self._parse_integer("LAG")
                if not self._match_text_seq("STEPS"):
                    self.raise_error("expecting STEPS after LAG n (LAG 8 STEPS)", self._curr or lag_token)
            return self.expression(Adapt(**args), token=keyword)

        def _parse_setting(self) -> Setting:
            token = self._curr
            name = self._parse_id_var(any_token=False)
            if not isinstance(name, exp.Identifier) or not self._match(TokenType.EQ):
                self.raise_error("expecting name = value (e.g. update_every = 100)", token)
            value = self._parse_placeholder_value()
            if value is None:
                number = self._curr
                if not self._match(TokenType.NUMBER):
                    self.raise_error(f"expecting a number for {name.name}", number or token)
                problem = number_problem(self._prev.text)
                if problem:
                    self.raise_error(f"{name.name}: {problem}", self._prev)
                value = self.expression(exp.Literal.number(self._prev.text), token=self._prev)
            return self.expression(Setting(this=name, expression=value), token=token)

        def _parse_choice(self, clause: str, choices: tuple[str, ...]) -> exp.Var:
            token = self._curr
            if not token or token.text.upper() not in choices or token.token_type in self.TEXT_MATCH_EXCLUDED_TOKENS:
                self.raise_error(f"{clause} takes one of {', '.join(choices)}", token)
            self._advance()
            return self.expression(exp.var(token.text.upper()), token=token)

        def _parse_unit(self, clause: str, token: t.Any) -> str:
            unit = self._curr.text.upper() if self._curr else ""
            if unit not in UNITS or self._curr.token_type in self.TEXT_MATCH_EXCLUDED_TOKENS:
                self.raise_error(f"expecting a unit after {clause}: SAMPLES, STEPS or TOKENS", self._curr or token)
            self._advance()
            return unit

        def _parse_curriculum(self) -> Curriculum:
            token = self._curr
            if not self._match(TokenType.L_PAREN):
                self.raise_error("expecting ( after ORDER BY CURRICULUM", token)
            items = self._parse_csv(self._parse_curriculum_item)
            self._match_r_paren()
            return self.expression(Curriculum(expressions=items), token=token)

        def _parse_curriculum_item(self) -> exp.Expr:
            token = self._curr
            if token and token.text.upper() in ("STAGE", "RAMP") and self._next \
                    and self._next.token_type in (TokenType.L_PAREN, TokenType.VAR) \
                    and (self._next.token_type == TokenType.L_PAREN or self._next.text.upper() == "UNTIL"):
                self._advance()
                args: dict[str, t.Any] = {"this": token.text.upper()}
                if self._match_text_seq("UNTIL"):
                    at = self._curr
                    args["until"] = self._parse_integer("UNTIL")
                    args["unit"] = self._parse_unit("UNTIL n", at)
                if not self._match(TokenType.L_PAREN):
                    self.raise_error(f"expecting ( and the weights of the {args['this']}: "
                                     f"{args['this']} UNTIL n SAMPLES (name = weight, ...)")
                args["expressions"] = self._parse_csv(self._parse_assign) if not self._match(
                    TokenType.R_PAREN, advance=False) else []
                self._match_r_paren()
                return self.expression(Stage(**args), token=token)
            path = self._parse_path("expecting STAGE, RAMP or <component> BY <key> in ORDER BY CURRICULUM")
            if not self._match_text_seq("BY"):
                self.raise_error(f"expecting BY <key> after {path.name} (e.g. {path.name} BY quality DESC BUCKETS 10)")
            key = self._parse_disjunction()
            if key is None:
                self.raise_error("expecting an ordering key expression")
            args = {"this": path, "key": key}
            if self._match(TokenType.DESC):
                args["desc"] = True
            else:
                self._match(TokenType.ASC)
            if self._match_text_seq("BUCKETS"):
                args["buckets"] = self._parse_integer("BUCKETS")
            return self.expression(OrderKey(**args), token=token)

        def _parse_assign(self) -> Assign:
            token = self._curr
            path = self._parse_path("expecting <component> = <weight>")
            if not self._match(TokenType.EQ):
                self.raise_error(f"expecting = <weight> after {path.name}")
            return self.expression(Assign(this=path, weight=self._parse_weight(allow_zero=True)), token=token)

        def _parse_path(self, message: str) -> Path:
            token = self._curr
            parts = []
            while True:
                name = self._parse_id_var(any_token=False)
                if not isinstance(name, exp.Identifier):
                    self.raise_error(message, self._curr or token)
                parts.append(name)
                if not self._match(TokenType.DOT):
                    break
            return self.expression(Path(expressions=parts), token=token)

        def _parse_mix_unit(self) -> str | None:
            """``BY SAMPLES`` or ``BY TOKENS`` right after MIX: what the weights are shares of."""
            if not self._curr or self._curr.text.upper() != "BY" or not self._next \
                    or self._next.token_type == TokenType.ALIAS:  # a component named by
                return None
            self._advance()
            unit = self._curr.text.upper() if self._curr else ""
            if unit not in ("SAMPLES", "TOKENS") or self._curr.token_type in self.TEXT_MATCH_EXCLUDED_TOKENS:
                self.raise_error("MIX BY takes SAMPLES or TOKENS: what the weights are shares of", self._curr)
            self._advance()
            return unit

        def _parse_weighting(self) -> Weighting | None:
            token = self._curr
            if not token or token.text.upper() not in ("NATURAL", "TEMPERATURE") or token.token_type in \
                    self.TEXT_MATCH_EXCLUDED_TOKENS:
                return None
            if self._next and (self._next.token_type == TokenType.ALIAS):  # a component named natural
                return None
            self._advance()
            args: dict[str, t.Any] = {"this": token.text.upper()}
            if args["this"] == "TEMPERATURE":
                args["temperature"] = self._parse_weight()
            if self._match_text_seq("BY"):
                by = self._curr.text.upper() if self._curr else ""
                if by not in ("SAMPLES", "BYTES", "TOKENS"):
                    self.raise_error(f"{args['this']} BY takes SAMPLES, BYTES or TOKENS", self._curr)
                self._advance()
                args["by"] = by
            return self.expression(Weighting(**args), token=token)

        def _raise_unexpected(self) -> None:
            text = self._curr.text.upper()
            if self._curr.token_type == TokenType.FROM or text == "WHERE":
                self.raise_error(
                    f"unexpected {text}: a component's FROM and WHERE come right after its name, and the "
                    "statement's FROM and WHERE come once, after the last component"
                )
            self.raise_error(
                f"unexpected '{self._curr.text}': expected ',' and another component, FROM, WHERE, ORDER BY "
                "CURRICULUM, LIMIT, SEED, CHUNK SIZE, PARTITIONS, BATCH SIZE, ON EXHAUSTION or OVERLAP"
            )

        def _parse_component(self, weighted: bool) -> Component:
            args: dict[str, t.Any] = {}
            if weighted:
                if self._curr and self._curr.token_type in (TokenType.NUMBER, TokenType.COLON):
                    self.raise_error("this MIX takes its weights from the data (NATURAL or TEMPERATURE): "
                                     "its components have no weight of their own", self._curr)
            else:
                args["weight"] = self._parse_weight()
            self._match(TokenType.ALIAS)
            name_token = self._curr
            name = self._parse_id_var(any_token=False)
            if name is None or not isinstance(name, exp.Identifier):
                self.raise_error("expecting a component name" + ("" if weighted else
                                                                " after the weight (e.g. 0.5 AS web)"), name_token)
            args["this"] = name
            if self._match(TokenType.FROM):
                # FROM right after the name is the component's; after its WHERE it starts the statement's clauses.
                args["from_"] = self._parse_dataset()
            where = self._parse_where()
            if where is not None:
                args["where"] = where
            if self._match_text_seq("MIX"):
                unit = self._parse_mix_unit()
                if unit is not None:
                    args["unit"] = unit
                weighting = self._parse_weighting()
                if weighting is not None:
                    args["weighting"] = weighting
                if not self._match(TokenType.L_PAREN):
                    self.raise_error(f"expecting ( and the components of {name.name}: "
                                     f"{name.name} MIX (0.7 AS a WHERE ..., 0.3 AS b WHERE ...)")
                args["expressions"] = self._parse_csv(lambda: self._parse_component(weighting is not None))
                self._match_r_paren()
            if self._match_text_seq("MAX", "EPOCHS"):
                args["max_epochs"] = self._parse_integer("MAX EPOCHS")
            return self.expression(Component(**args), token=name_token)

        def _parse_placeholder_value(self) -> exp.Expr | None:
            if self._curr and self._curr.token_type == TokenType.COLON and self._next \
                    and self._next.token_type == TokenType.VAR:
                token = self._curr
                self._advance(2)
                node = exp.Placeholder(this=self._prev.text)
                node.meta.update(line=token.line, col=token.col, start=token.start, end=self._prev.end)
                return node
            return None

        def _parse_weight(self, allow_zero: bool = False) -> exp.Expr:
            placeholder = self._parse_placeholder_value()
            if placeholder is not None:
                return placeholder
            token = self._curr
            if token and token.token_type in (TokenType.DASH, TokenType.PLUS) and self._next \
                    and self._next.token_type == TokenType.NUMBER:
                if token.token_type == TokenType.DASH:
                    self.raise_error("a weight cannot be negative; it must be positive (0 only in a curriculum stage)", token)
                self._advance()
            if not self._match(TokenType.NUMBER):
                self.raise_error("expecting a numeric weight (e.g. MIX 0.5 AS web ...)", token)
            problem = number_problem(self._prev.text)
            if problem:
                self.raise_error(problem, self._prev)
            return self.expression(exp.Literal.number(self._prev.text), token=self._prev)

        def _parse_integer(self, clause: str) -> exp.Expr:
            placeholder = self._parse_placeholder_value()
            if placeholder is not None:
                return placeholder
            token = self._curr
            if not self._match(TokenType.NUMBER) or not self._prev.text.isdigit():
                self.raise_error(f"expecting a non-negative integer after {clause}", token)
            if len(self._prev.text.lstrip("0")) > MAX_INTEGER_DIGITS:
                self.raise_error(f"{clause} {self._prev.text[:24]}... is too large: an integer here has at most "
                                 f"{MAX_INTEGER_DIGITS} digits", self._prev)
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
            MixStatement: _mix_sql,
            Component: _component_sql,
            Dataset: _dataset_sql,
            Weighting: _weighting_sql,
            Curriculum: _curriculum_sql,
            Stage: _stage_sql,
            Assign: _assign_sql,
            OrderKey: _order_key_sql,
            Path: _path_sql,
            Budget: _budget_sql,
            Named: _named_sql,
            Adapt: _adapt_sql,
            exp.Placeholder: lambda self, e: f":{e.name}",
        }
