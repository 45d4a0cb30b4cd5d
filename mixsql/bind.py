"""Stage ``bind``: check a parsed MIX statement against the catalog and compile each component to SQL.

Binding resolves every dataset and column (with "did you mean" hints), requires predicates to be
BOOLEAN in DuckDB's own type system, and counts what each component matches. A sample that
matches several components belongs to the first of them in statement order, exactly as a SQL
``CASE WHEN`` would assign it; the compiled SQL says so explicitly (``(earlier) IS NOT TRUE``), and
the overlaps are counted so EXPLAIN can report them.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing as t
from fractions import Fraction

import duckdb
from sqlglot import expressions as exp

from mixsql.catalog import Catalog
from mixsql.errors import BindError, CatalogError, position
from mixsql.parse import Component, Mix, span

DEFAULT_SEED = 0
DEFAULT_CHUNK_SIZE = 1024
MAX_PARTITIONS = 4096


@dataclasses.dataclass(frozen=True)
class BoundComponent:
    """One component of a bound mixture."""

    index: int
    name: str
    dataset: str
    weight: Fraction  # as written
    share: Fraction  # normalised: weight / sum of weights
    predicate: str | None  # DuckDB SQL of statement WHERE AND component WHERE, None if both absent
    sql: str  # the exact selection, overlaps with earlier components excluded
    samples: int  # samples this component owns
    bytes: int  # content bytes of those samples
    blocks: int  # distinct blocks (row groups, JSONL ranges) holding them: what reading them decodes
    overlaps: tuple[tuple[str, int], ...]  # (earlier component, samples matching both that it took)


@dataclasses.dataclass(frozen=True)
class BoundMix:
    """A MIX statement bound to a catalog version: everything the planner needs."""

    text: str
    path: str | None
    tree: Mix
    components: tuple[BoundComponent, ...]
    seed: int
    chunk_size: int
    partitions: int | None  # as requested (statement or override); None: the planner's default
    catalog_version: str
    dataset_versions: tuple[tuple[str, str], ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.components]


def bind(
    mix: Mix,
    catalog: Catalog,
    *,
    text: str,
    path: str | None = None,
    seed: int | None = None,
    chunk_size: int | None = None,
    partitions: int | None = None,
) -> BoundMix:
    """Bind ``mix`` (parsed from ``text``) to ``catalog``; keyword arguments override the statement's options."""
    b = _Binder(mix, catalog, text, path)
    return b.bind(seed=seed, chunk_size=chunk_size, partitions=partitions)


class _Binder:
    def __init__(self, mix: Mix, catalog: Catalog, text: str, path: str | None) -> None:
        self.mix, self.catalog, self.text, self.path = mix, catalog, text, path
        self.con = catalog.session()
        self._schemas: dict[str, dict[str, str]] = {}

    # -- errors -----------------------------------------------------------------------------------

    def error(self, message: str, node: exp.Expr | None, hint: str | None = None) -> BindError:
        where = span(node)
        if where is None:
            return BindError(message, hint=hint, source=self.text, path=self.path)
        line, col = position(self.text, where[0])
        return BindError(message, hint=hint, line=line, col=col, length=where[1] - where[0], source=self.text,
                         path=self.path)

    # -- steps ------------------------------------------------------------------------------------

    def bind(self, *, seed: int | None, chunk_size: int | None, partitions: int | None) -> BoundMix:
        components = self.mix.components
        self._check_names(components)
        weights = [self._weight(c) for c in components]
        total = sum(weights, Fraction(0))
        default_from = self.mix.args.get("from_")
        statement_where = self.mix.args.get("where")
        datasets = [self._dataset(c.args.get("from_") or default_from, c) for c in components]
        if statement_where is not None:
            for ds in dict.fromkeys(datasets):
                self._check_predicate(statement_where.this, ds, "the statement's WHERE")
        preds: list[str | None] = []
        for c, ds in zip(components, datasets):
            where = c.args.get("where")
            if where is not None:
                self._check_predicate(where.this, ds, f"the WHERE of component {c.name!r}")
            preds.append(None if where is None else where.this.sql(dialect="duckdb", comments=False))
        stmt_pred = None if statement_where is None else statement_where.this.sql(dialect="duckdb", comments=False)
        counts = self._count(components, datasets, stmt_pred, preds)
        bound = []
        for i, (c, ds, pred, w) in enumerate(zip(components, datasets, preds, weights)):
            samples, nbytes, blocks, overlaps = counts[i]
            earlier = [preds[j] for j in range(i) if datasets[j] == ds]
            bound.append(BoundComponent(
                index=i, name=c.name, dataset=ds, weight=w, share=w / total,
                predicate=_conjunction([stmt_pred, pred]),
                sql=_selection_sql(ds, stmt_pred, pred, earlier),
                samples=samples, bytes=nbytes, blocks=blocks, overlaps=overlaps,
            ))
            if samples == 0:
                raise self._empty(c, ds, stmt_pred, pred, overlaps)
        return BoundMix(
            text=self.text, path=self.path, tree=self.mix, components=tuple(bound),
            seed=self._option("seed", seed, DEFAULT_SEED, minimum=0),
            chunk_size=self._option("chunk_size", chunk_size, DEFAULT_CHUNK_SIZE, minimum=1),
            partitions=self._option("partitions", partitions, None, minimum=1, maximum=MAX_PARTITIONS),
            catalog_version=self.catalog.version,
            dataset_versions=tuple((ds, self.catalog.dataset(ds).version) for ds in sorted(set(datasets))),
        )

    def _check_names(self, components: list[Component]) -> None:
        seen: dict[str, Component] = {}
        for c in components:
            key = c.name.lower()
            if key in seen:
                raise self.error(f"duplicate component name {c.name!r}", c.this,
                                 hint="each component needs its own name")
            seen[key] = c

    def _weight(self, c: Component) -> Fraction:
        literal = c.args["weight"]
        try:
            value = Fraction(literal.this)
        except (ValueError, ZeroDivisionError):
            raise self.error(f"weight {literal.this!r} is not a number", literal) from None
        if value <= 0:
            raise self.error(f"component {c.name!r} has weight {literal.this}; a weight must be positive", literal,
                             hint="drop the component to leave it out of the mixture")
        return value

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

    def _dataset(self, node: exp.Expr | None, c: Component) -> str:
        if node is None:
            last = self.mix.components[-1]
            hint = "add FROM <dataset> after the last component (or after this component's name)"
            if last.args.get("from_") is not None and last.args.get("where") is None:
                hint = (f"the FROM after {last.name!r} is that component's own (a FROM right after a name belongs "
                        f"to the component); for a statement-wide FROM, write it after a WHERE or give each "
                        f"component its own FROM")
            raise self.error(f"component {c.name!r} has no dataset", c.this, hint=hint)
        name = node.name
        known = self.catalog.datasets()
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

    def _check_predicate(self, pred: exp.Expr, dataset: str, what: str) -> None:
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

    def _count(self, components: list[Component], datasets: list[str], stmt_pred: str | None,
               preds: list[str | None]) -> dict[int, tuple[int, int, int, tuple[tuple[str, int], ...]]]:
        """Per component: samples, content bytes, distinct blocks, and overlaps with earlier components.

        One scan per dataset, grouped by (component, file, block): a sample goes to the first
        component it matches (CASE), and for each later component the group counts how many of its
        samples that component's predicate also matches (its overlaps with the earlier one).
        """
        out: dict[int, tuple[int, int, int, tuple[tuple[str, int], ...]]] = {}
        for ds in dict.fromkeys(datasets):
            members = [i for i, d in enumerate(datasets) if d == ds]
            cases = " ".join(f"WHEN {_paren(preds[i]) if preds[i] else 'TRUE'} THEN {k}"
                             for k, i in enumerate(members))
            also = [(k, i) for k, i in enumerate(members) if preds[i] is not None and k > 0]
            inner = ", ".join([f"CASE {cases} END AS _c", "_file_id", "_block", "count(*) AS _n", "sum(_bytes) AS _b"]
                              + [f"count_if(coalesce({_paren(preds[i])}, FALSE)) AS _m{k}" for k, i in also])
            outer = ", ".join(["_c", "count(*)", "sum(_n)", "coalesce(sum(_b), 0)"] + [f"sum(_m{k})" for k, _ in also])
            where = f" WHERE {stmt_pred}" if stmt_pred else ""
            sql = (f'SELECT {outer} FROM (SELECT {inner} FROM "{ds}"{where} GROUP BY ALL) '
                   f'WHERE _c IS NOT NULL GROUP BY _c')
            try:
                rows = {int(r[0]): r for r in self.con.execute(sql).fetchall()}
            except duckdb.Error as e:
                first = str(e).strip().split("\n")[0]
                raise BindError(f"evaluating the predicates of dataset {ds!r} failed: {first}", source=self.text,
                                path=self.path, line=1, col=1,
                                hint="check the literals compared with each property's type") from None
            for k, i in enumerate(members):
                r = rows.get(k)
                overlaps = []
                column = next((4 + j for j, (later, _) in enumerate(also) if later == k), None)
                for a in range(k if column is not None else 0):  # component k's matches that earlier a took
                    ra = rows.get(a)
                    if ra is not None and ra[column]:
                        overlaps.append((components[members[a]].name, int(ra[column])))
                out[i] = (int(r[2]), int(r[3]), int(r[1]), tuple(overlaps)) if r else (0, 0, 0, tuple(overlaps))
        return out

    def _empty(self, c: Component, ds: str, stmt_pred: str | None, pred: str | None,
               overlaps: tuple[tuple[str, int], ...]) -> BindError:
        if overlaps:
            taken = ", ".join(f"{name!r} ({n})" for name, n in overlaps)
            hint = f"every sample it matches belongs to an earlier component: {taken}; a sample goes to the first match"
        elif pred is None:
            hint = "it has no WHERE, so it takes the samples no earlier component matches, but earlier " \
                   "components take every sample"
        elif stmt_pred:
            alone = self.con.execute(f'SELECT count(*) FROM "{ds}" WHERE {pred}').fetchall()[0]
            hint = (f"its own WHERE matches {alone[0]} samples, but none pass the statement's WHERE"
                    if alone and alone[0] else "check its predicate against the data: mixsql sql \"SELECT ...\"")
        else:
            hint = "check its predicate against the data: mixsql sql \"SELECT ...\""
        node = c.args.get("where").this if c.args.get("where") is not None else c.this
        return self.error(f"component {c.name!r} matches no sample of dataset {ds!r}", node, hint=hint)


def _paren(sql: str) -> str:
    return f"({sql})"


def _conjunction(preds: t.Sequence[str | None]) -> str | None:
    present = [p for p in preds if p]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return " AND ".join(_paren(p) for p in present)


def _selection_sql(dataset: str, stmt_pred: str | None, pred: str | None, earlier: t.Sequence[str | None]) -> str:
    """The component's exact sample set as a query a user can paste into `mixsql sql`."""
    terms = [_paren(p) for p in (stmt_pred, pred) if p]
    for other in earlier:
        if other is None:  # an earlier component without WHERE takes every remaining sample
            terms.append("FALSE")
        else:
            terms.append(f"{_paren(other)} IS NOT TRUE")
    where = f" WHERE {' AND '.join(terms)}" if terms else ""
    return f'SELECT * FROM "{dataset}"{where}'


__all__ = ["BoundComponent", "BoundMix", "bind", "DEFAULT_CHUNK_SIZE", "DEFAULT_SEED", "CatalogError"]
