"""Checks against the catalog in DuckDB's own type system: names, datasets, columns, predicates,
keys, determinism and options."""

from __future__ import annotations

import difflib
import re
import typing as t

import duckdb
from sqlglot import expressions as exp

from mixsql.bind.base import _Base
from mixsql.errors import BindError
from mixsql.parse import Component, span


ORDERABLE = re.compile(r"^(BOOLEAN|TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|"
                       r"UHUGEINT|FLOAT|DOUBLE|DECIMAL.*|VARCHAR|DATE|TIME|TIMESTAMP.*|INTERVAL)$")


# sqlglot nodes that print as a keyword, not as DuckDB's function name
VOLATILE_ALIASES = {"CurrentTimestamp": "now", "CurrentDate": "current_date", "CurrentTime": "get_current_time",
                    "CurrentDatetime": "now", "CurrentTimestampLTZ": "now", "Localtimestamp": "current_localtimestamp",
                    "Localtime": "current_localtime", "CurrentSchema": "current_schema", "Uuid": "uuid",
                    "Rand": "random"}


_VOLATILE: set[str] = set()


def _volatile_functions(con: t.Any) -> set[str]:
    """Functions none of whose overloads DuckDB marks CONSISTENT: a fact of the DuckDB build, asked
    once per process (it costs a query of DuckDB's function catalog)."""
    if not _VOLATILE:
        rows = con.execute("SELECT lower(function_name), list(DISTINCT stability) FROM duckdb_functions() "
                           "GROUP BY 1").fetchall()
        _VOLATILE.update(name for name, kinds in rows if "CONSISTENT" not in kinds)
    return _VOLATILE


class Checks(_Base):
    """The binder's checks of names, datasets, columns, predicates, keys and options."""

    def _check_names(self, components: list[Component]) -> None:
        seen: dict[str, Component] = {}
        for c in components:
            key = c.name.lower()
            if key in seen:
                raise self.error(f"duplicate component name {c.name!r}", c.this,
                                 hint="each component needs its own name")
            seen[key] = c
            if c.children:
                self._check_names(c.children)

    def _dataset(self, node: exp.Expr | None, c: Component, name: str) -> str:
        if node is None:
            last = self.mix.components[-1]
            hint = "add FROM <dataset> after the last component (or after this component's name)"
            if last.args.get("from_") is not None and last.args.get("where") is None:
                hint = (f"the FROM after {last.name!r} is that component's own (a FROM right after a name belongs "
                        f"to the component); for a statement-wide FROM, write it after a WHERE or give each "
                        f"component its own FROM")
            raise self.error(f"component {name!r} has no dataset", c.this, hint=hint)
        name = node.name
        known = self.engine.datasets()
        if name in known:
            return name
        folded = [k for k in known if k.lower() == name.lower()]
        if len(folded) == 1:
            return folded[0]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else (
            f"registered datasets: {', '.join(known)}" if known else "register one with: mixsql register NAME PATH...")
        raise self.error(f"unknown dataset {name!r}", node, hint=hint)

    def schema(self, dataset: str) -> dict[str, str]:
        if dataset not in self._schemas:
            rows = self.con.execute(f'DESCRIBE "{dataset}"').fetchall()
            self._schemas[dataset] = {r[0]: r[1] for r in rows}
        return self._schemas[dataset]

    def _deterministic(self, tree: exp.Expr, what: str) -> None:
        """Refuse functions whose result changes between runs (random(), now(), ...): the plan must be
        a pure function of the data and the statement. DuckDB says which (a function none of whose
        overloads is CONSISTENT)."""
        calls = [node for node in tree.find_all(exp.Func) if not isinstance(node, (exp.Connector, exp.Cast))]
        if not calls:  # AND, OR and casts alone: nothing to ask DuckDB's function catalog about
            return
        volatile = _volatile_functions(self.con)
        for node in calls:
            sql = node.sql(dialect="duckdb", comments=False)
            names = {sql.split("(", 1)[0].strip().lower(), VOLATILE_ALIASES.get(type(node).__name__, "")}
            if isinstance(node, exp.Anonymous):
                names.add(node.name.lower())
            found = sorted(names & volatile)
            if found:
                raise self.error(f"{found[0]}() gives a different result each time it runs, and {what} must give "
                                 "the same one in every run", node if span(node) else tree,
                                 hint="a predicate must depend only on the sample: for a random subset, filter on "
                                      "a hash of its id (e.g. hash(id) % 10 = 0)")

    def _check_predicate(self, pred: exp.Expr, dataset: str, what: str) -> None:
        self._deterministic(pred, what)
        self._check_columns(pred, dataset, what)
        sql = pred.sql(dialect="duckdb", comments=False)
        try:
            # In WHERE position first, so aggregates and window functions are refused as DuckDB would.
            self.con.execute(f'SELECT 1 FROM "{dataset}" WHERE ({sql}) LIMIT 0').fetchall()
            rows = self.con.execute(f'DESCRIBE SELECT ({sql}) AS p FROM "{dataset}"').fetchall()
        except duckdb.Error as e:
            raise self._duck_error(e, pred, what) from None
        kind = rows[0][1]
        if kind != "BOOLEAN":
            raise self.error(f"{what} is not a condition: it has type {kind}, a predicate must be BOOLEAN", pred,
                             hint="compare it with something, e.g. quality > 0.5")

    def _check_columns(self, pred: exp.Expr, dataset: str, what: str) -> None:
        columns = self.schema(dataset)
        lowered = {c.lower(): c for c in columns}
        lambda_params = {p.name.lower() for lam in pred.find_all(exp.Lambda) for p in lam.expressions}
        for col in pred.find_all(exp.Column):
            parts = [p.name for p in col.parts]
            root = parts[0]
            if root.lower() in lowered:
                continue
            if root.lower() == dataset.lower() and len(parts) > 1 and parts[1].lower() in lowered:
                continue
            if root.lower() in lambda_params:
                continue
            close = difflib.get_close_matches(root, list(columns), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else \
                f"{dataset}'s properties: {', '.join(c for c in columns if not c.startswith('_'))}"
            raise self.error(f"unknown column {root!r} in {what} (dataset {dataset!r})", col, hint=hint)

    def _duck_error(self, e: duckdb.Error, pred: exp.Expr, what: str) -> BindError:
        message = str(e).strip().split("\n")
        first = re.sub(r"^[A-Za-z ]+Error: ", "", message[0]).strip()
        hint = None
        for line in message[1:]:
            if line.startswith("Did you mean"):
                hint = line.strip()
        node: exp.Expr = pred
        found = re.search(r'name (\w+) does not exist', first)
        if found:
            for f in pred.find_all(exp.Func):
                if (f.name if isinstance(f, exp.Anonymous) else f.sql_name()).lower() == found.group(1).lower():
                    node = f
                    break
        aggregate = "aggregate" in first.lower() or "window" in first.lower()
        if aggregate:
            hint = "a predicate looks at one sample at a time; aggregates and window functions are not allowed"
        return self.error(f"in {what}: {first}", node, hint=hint)

    def _key_type(self, key: exp.Expr, dataset: str) -> str:
        self._deterministic(key, "the curriculum key")
        self._check_columns(key, dataset, "the curriculum key")
        sql = key.sql(dialect="duckdb", comments=False)
        try:
            rows = self.con.execute(f'DESCRIBE SELECT ({sql}) AS k FROM "{dataset}"').fetchall()
        except duckdb.Error as e:
            raise self._duck_error(e, key, "the curriculum key") from None
        return rows[0][1]

    def _word(self, key: str, default: str) -> str:
        node = self.mix.args.get(key)
        return default if node is None else node.name.upper()

    def _option(self, key: str, override: int | None, default: t.Any, minimum: int,
                maximum: int = 2**63 - 1) -> t.Any:
        node = self.mix.args.get(key)
        if override is not None:
            if isinstance(override, bool) or not isinstance(override, int) or not minimum <= override <= maximum:
                raise BindError(f"{key} must be an integer from {minimum} to {maximum}, not {override!r}")
            return override
        if node is None:
            return default
        value = int(node.this)
        if not minimum <= value <= maximum:
            raise self.error(f"{key.replace('_', ' ').upper()} must be from {minimum} to {maximum}", node)
        return value
