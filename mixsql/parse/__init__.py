"""Stage ``parse``: MIX statement text → ``MixStatement`` syntax tree, or a ``MixParseError`` with a position.

A statement may contain only expressions: subqueries, table functions and second statements are
rejected here, before anything reaches DuckDB.

>>> mix = parse("MIX 0.7 AS web WHERE lang = 'en', 0.3 AS code FROM corpus SEED 7")
>>> [c.name for c in mix.components]
['web', 'code']
"""

from __future__ import annotations

import re
import sys
import types

from sqlglot import expressions as exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from mixsql.errors import MixParseError, position
from mixsql.limits import MAX_COMPONENTS, MAX_NESTING
from mixsql.parse.ast import Component, Dataset, MixStatement, Named, span
from mixsql.parse.dialect import MixSQL

__all__ = ["Component", "Dataset", "MixStatement", "MixSQL", "is_mix", "parse", "span", "to_sql"]

_DIALECT = MixSQL()

# Table functions read files or run queries; they never belong in a predicate.
TABLE_FUNCTIONS = frozenset(
    """read_csv read_csv_auto read_parquet parquet_scan read_json read_json_auto read_ndjson read_ndjson_auto
    read_json_objects read_ndjson_objects read_text read_blob glob query query_table sniff_csv iceberg_scan
    delta_scan read_xlsx st_read sqlite_scan postgres_scan mysql_scan range generate_series unnest
    parquet_metadata parquet_schema parquet_file_metadata parquet_kv_metadata duckdb_settings duckdb_tables
    duckdb_databases duckdb_functions pragma_version""".split()
)


_OPERATORS = {"EQ": "=", "NEQ": "<>", "GT": ">", "GTE": ">=", "LT": "<", "LTE": "<=", "And": "AND", "Or": "OR",
              "Add": "+", "Sub": "-", "Mul": "*", "Div": "/", "Mod": "%", "Like": "LIKE", "ILike": "ILIKE",
              "Is": "IS", "DPipe": "||", "In": "IN"}


def parse(text: str, *, path: str | None = None) -> MixStatement:
    """Parse exactly one MIX statement (comments and a trailing ``;`` allowed)."""
    if not isinstance(text, str):
        raise TypeError(f"a MIX statement is text, not {type(text).__name__}")
    tokens = _tokenize(text, path)
    if not tokens:
        raise MixParseError("empty statement: expected MIX", line=1, col=1, source=text, path=path,
                            hint="a mixture starts with MIX <weight> AS <name> ...")
    statements = _split(tokens)
    if not statements:
        raise _at(tokens[0], text, path, "empty statement: expected MIX",
                  hint="a mixture starts with MIX <weight> AS <name> ...")
    first = statements[0]
    if (first[0].text.upper() != "MIX" or first[0].token_type == TokenType.STRING) \
            and first[0].token_type != TokenType.WITH:
        raise _at(first[0], text, path, "expected a MIX statement",
                  hint="plain SQL over the catalog runs with `mixsql sql` or con.sql(...)")
    if len(statements) > 1:
        raise _at(statements[1][0], text, path,
                  "only one statement is allowed: a MIX statement cannot be followed by other SQL",
                  hint="remove everything after the MIX statement's ';'")
    _check_nesting(first, text, path)
    try:
        trees = _DIALECT.parser().parse(first, text)
        mix = trees[0]
        if not isinstance(mix, MixStatement):  # pragma: no cover - guarded by the first-token check
            raise _at(first[0], text, path, "expected a MIX statement")
        _check_expressions(mix, first, text, path)
        _check_names(mix, text, path)
        _place_parameters(mix, first)
        to_sql(mix, pretty=False)  # whatever parses also prints: nothing deeper than the generator can go
    except ParseError as e:
        raise _from_parse_error(e, text, path) from None
    except RecursionError:
        raise MixParseError("the statement nests too deeply to be read", line=1, col=1, source=text, path=path,
                            hint=f"keep expressions to at most {MAX_NESTING} levels") from None
    if mix.comments:  # comments before MIX introduce the statement; keep them in front when printing
        mix.meta["leading_comments"] = [c.strip() for c in mix.pop_comments()]
    return mix


def is_mix(text: str) -> bool:
    """A MIX statement (possibly after a WITH clause), as opposed to plain SQL: the first word outside
    parentheses that is not part of a WITH list is MIX. What the shell uses to tell them apart."""
    try:
        tokens = _DIALECT.tokenize(text)
    except TokenError:
        return bool(re.match(r"(?is)\s*mix\b", text))
    if not tokens or tokens[0].text.upper() not in ("MIX", "WITH"):
        return False
    depth = 0
    for token in tokens:
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
        elif depth == 0 and token.token_type not in (TokenType.WITH, TokenType.ALIAS, TokenType.COMMA,
                                                     TokenType.VAR, TokenType.IDENTIFIER) or \
                depth == 0 and token.text.upper() == "MIX":
            return token.text.upper() == "MIX"
    return False


def to_sql(mix: MixStatement, *, pretty: bool = True) -> str:
    """Print a statement in the canonical spelling (``mixsql fmt``); it parses to the same tree."""
    leading = mix.meta.get("leading_comments") or []
    head = "".join(f"-- {line.strip()}\n" for c in leading for line in c.splitlines() if line.strip())
    return head + mix.sql(dialect=_DIALECT, pretty=pretty)


def _tokenize(text: str, path: str | None) -> list[Token]:
    try:
        return _DIALECT.tokenize(text)
    except TokenError as e:
        cause = e.__cause__
        found = re.search(r"Missing (.+) from \d+:(\d+)", str(cause or ""))
        if found:
            delimiter, offset = found.group(1), int(found.group(2))
            line, col = position(text, offset)
            raise MixParseError(f"unterminated {'string' if delimiter == chr(39) else 'quoted name'}: "
                                f"missing closing {delimiter}", line=line, col=col, source=text, path=path,
                                hint=f"close it with {delimiter}") from None
        opened = text.rfind("/*")
        if opened >= 0 and text.find("*/", opened) < 0:
            line, col = position(text, opened)
            raise MixParseError("unterminated comment: missing */", line=line, col=col, length=2, source=text,
                                path=path) from None
        start = e.start or 0
        line, col = position(text, start)
        raise MixParseError(f"cannot read the statement: {cause or e}", line=line, col=col, source=text,
                            path=path) from None


def _split(tokens: list[Token]) -> list[list[Token]]:
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    return [s for s in statements if s]


def _at(token: Token, text: str, path: str | None, message: str, hint: str | None = None) -> MixParseError:
    line, col = position(text, token.start)
    return MixParseError(message, line=line, col=col, length=token.end - token.start + 1, source=text, path=path,
                         hint=hint)


def _from_parse_error(e: ParseError, text: str, path: str | None) -> MixParseError:
    info = e.errors[0] if e.errors else {}
    description = str(info.get("description") or e).strip()
    found = re.match(r"Required keyword: '(\w+)' missing for <class '[\w.]+\.(\w+)'>", description)
    if found:
        op = _OPERATORS.get(found.group(2))
        description = (f"incomplete expression: '{op}' needs a right-hand side" if op and found.group(1) == "expression"
                       else f"incomplete expression: {found.group(2)} is missing its {found.group(1)}")
    line, end_col = info.get("line"), info.get("col")
    highlight = info.get("highlight") or ""
    highlight = re.sub(r"\x1b\[[0-9;]*m", "", highlight)
    if line is None or end_col is None:
        return MixParseError(description, source=text, path=path)
    # sqlglot reports the column of the token's last character; point at its first.
    col = max(1, int(end_col) - max(len(highlight), 1) + 1)
    if not highlight.strip():
        description = description.rstrip(".") + " (the statement ends too early)"
    if description[1:2].islower():
        description = description[:1].lower() + description[1:]
    return MixParseError(description, line=int(line), col=col,
                         length=len(highlight) or 1, source=text, path=path)


def _check_nesting(tokens: list[Token], text: str, path: str | None) -> None:
    """At most MAX_NESTING levels of parentheses, and of prefix operators in a row, before parsing
    (sqlglot parses recursively); and no positional parameter (``?``, ``$1``)."""
    depth = run = 0
    for token in tokens:
        kind = token.token_type
        if kind in (TokenType.PLACEHOLDER, TokenType.PARAMETER):
            raise _at(token, text, path, f"{token.text}-parameters are not supported: parameters bind by name",
                      hint="write :name (e.g. quality > :min_quality) and bind it with --param name=VALUE")
        if kind == TokenType.L_PAREN:
            depth += 1
            if depth > MAX_NESTING:
                raise _at(token, text, path, f"expressions nest more than {MAX_NESTING} parentheses deep",
                          hint="simplify the expression; a predicate rarely needs more than a few levels")
        elif kind == TokenType.R_PAREN:
            depth = max(0, depth - 1)
        if kind in (TokenType.NOT, TokenType.DASH, TokenType.PLUS, TokenType.TILDE):
            run += 1
            if run > MAX_NESTING:
                raise _at(token, text, path, f"more than {MAX_NESTING} prefix operators in a row",
                          hint="NOT NOT x is x: simplify the expression")
        else:
            run = 0


def _check_names(mix: MixStatement, text: str, path: str | None) -> None:
    """Component and WITH names are non-empty and free of '.', which separates the parts of a
    component's path; and the statement has at most MAX_COMPONENTS components."""
    count = 0
    for node in mix.walk():
        if isinstance(node, Component):
            count += 1
            if count > MAX_COMPONENTS:
                raise _node_error(node.this, text, path, f"a statement holds at most {MAX_COMPONENTS:,} components",
                                  hint="merge small components (one WHERE can match several sources)")
        what = "component" if isinstance(node, Component) else "WITH" if isinstance(node, Named) else None
        if what is not None:
            name = node.this.name
            if not name.strip():
                raise _node_error(node.this, text, path, f"a {what} name cannot be empty",
                                  hint='give it a name, e.g. AS web')
            if "." in name:
                raise _node_error(node.this, text, path, f"{what} name {name!r} contains '.', which separates the "
                                  "parts of a component's path (code.py)", hint="use another name, e.g. with '_'")


def _node_error(node: exp.Expr, text: str, path: str | None, message: str, hint: str | None = None) -> MixParseError:
    where = span(node)
    if where is None:
        return MixParseError(message, hint=hint, source=text, path=path)
    line, col = position(text, where[0])
    return MixParseError(message, line=line, col=col, length=where[1] - where[0], source=text, path=path, hint=hint)


def _place_parameters(mix: MixStatement, tokens: list[Token]) -> None:
    """Give every ``:name`` parameter its position (sqlglot's own placeholder parser records none)."""
    spots: dict[str, list[tuple[int, int]]] = {}
    for colon, name in zip(tokens, tokens[1:]):
        if colon.token_type == TokenType.COLON and name.start == colon.end + 1:
            spots.setdefault(name.text, []).append((colon.start, name.end))
    for node in mix.find_all(exp.Placeholder):
        if "start" not in node.meta and spots.get(node.name):
            start, end = spots[node.name].pop(0)
            node.meta.update(start=start, end=end)


def _check_expressions(mix: MixStatement, tokens: list[Token], text: str, path: str | None) -> None:
    """Predicates are scalar expressions only: no subqueries, table functions or statements."""
    for token in tokens:
        if token.token_type == TokenType.SELECT:
            raise _at(token, text, path, "subqueries are not allowed in a MIX statement: a predicate is one "
                      "scalar expression", hint="filter on the dataset's properties with scalar SQL expressions")
    for node in mix.walk():
        problem, hint = None, "filter on the dataset's properties with scalar SQL expressions"
        if isinstance(node, (exp.Query, exp.Subquery, exp.Exists)):
            problem = "subqueries are not allowed in a MIX statement: a predicate is one scalar expression"
        elif isinstance(node, exp.Func):
            name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
            if name in TABLE_FUNCTIONS:
                problem = f"table function {name}() is not allowed in a MIX statement"
        elif isinstance(node, (exp.Command, exp.Table)):
            problem = "only expressions over the dataset's properties are allowed in a MIX statement"
        elif isinstance(node, exp.In) and not node.expressions and not any(
                node.args.get(k) for k in ("query", "unnest", "field")):
            problem, hint = "IN needs a list of values", "put them in parentheses: domain IN ('code', 'docs')"
        if problem:
            where_span = span(node) or (0, 1)
            line, col = position(text, where_span[0])
            raise MixParseError(problem, line=line, col=col, length=where_span[1] - where_span[0], source=text,
                                path=path, hint=hint)


class _CallableModule(types.ModuleType):
    """``mixsql.parse`` is both this stage and its function: importing the stage sets the package's
    attribute to the module, so the module itself parses when called."""

    def __call__(self, text: str, *, path: str | None = None) -> MixStatement:
        return parse(text, path=path)


sys.modules[__name__].__class__ = _CallableModule
