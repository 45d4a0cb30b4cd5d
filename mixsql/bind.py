"""Stage ``bind``: check a parsed MIX statement against the catalog and compile each component to SQL.

Binding resolves every dataset and column (with "did you mean" hints), requires predicates to be
BOOLEAN in DuckDB's own type system, and counts what each component matches. A sample that
matches several components belongs to the first of them in statement order, exactly as a SQL
``CASE WHEN`` would assign it; the compiled SQL says so explicitly (``(earlier) IS NOT TRUE``), and
the overlaps are counted so EXPLAIN can report them.
"""

from __future__ import annotations

import dataclasses
import decimal
import difflib
import hashlib
import json
import math
import re
import typing as t
from fractions import Fraction

import duckdb
from sqlglot import expressions as exp

from mixsql import atomic
from mixsql.catalog import Catalog
from mixsql.catalog.store import ident
from mixsql.errors import BindError, CatalogError, position
from mixsql.parse import Component, MixStatement, span, to_sql
from mixsql.limits import (MAX_BATCH_SIZE, MAX_BUCKETS, MAX_CHUNK_SIZE, MAX_EXPANDED_NODES, MAX_INTEGER_DIGITS,
                           MAX_PARTITIONS, MAX_WITH_CHAIN, TEMPERATURES, max_stream_samples)
from mixsql.parse.dialect import number_problem
from mixsql.parse.ast import Assign, Budget, OrderKey, Stage, Weighting
from mixsql.parse.ast import leaves as ast_leaves

DEFAULT_SEED = 0
DEFAULT_CHUNK_SIZE = 1024
DEFAULT_BUCKETS = 10
ORDERABLE = re.compile(r"^(BOOLEAN|TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|"
                       r"UHUGEINT|FLOAT|DOUBLE|DECIMAL.*|VARCHAR|DATE|TIME|TIMESTAMP.*|INTERVAL)$")


# sqlglot nodes that print as a keyword, not as DuckDB's function name
VOLATILE_ALIASES = {"CurrentTimestamp": "now", "CurrentDate": "current_date", "CurrentTime": "get_current_time",
                    "CurrentDatetime": "now", "CurrentTimestampLTZ": "now", "Localtimestamp": "current_localtimestamp",
                    "Localtime": "current_localtime", "CurrentSchema": "current_schema", "Uuid": "uuid",
                    "Rand": "random"}


@dataclasses.dataclass(frozen=True)
class Ordering:
    """A component visited in key order: shuffled within ``buckets`` quantiles of the key."""

    key: str  # DuckDB SQL of the key
    descending: bool
    buckets: int


@dataclasses.dataclass(frozen=True)
class BoundComponent:
    """One leaf component of a bound mixture (``name`` is its dotted path in a hierarchy)."""

    index: int
    name: str
    dataset: str
    weight: Fraction  # its own weight as written or derived from the data, relative to its siblings
    share: Fraction  # effective share of the stream at the declared weights (product along its path)
    predicate: str | None  # DuckDB SQL of statement WHERE AND ancestors' AND its own WHERE; None if none
    sql: str  # the exact selection, overlaps with earlier components excluded
    samples: int  # samples this component owns
    bytes: int  # content bytes of those samples
    blocks: int  # distinct blocks (row groups, JSONL ranges) holding them: what reading them decodes
    overlaps: tuple[tuple[str, int], ...]  # (earlier component, samples matching both that it took)
    max_epochs: int | None = 1  # passes over its samples the stream may make; None: unlimited
    ordering: Ordering | None = None


@dataclasses.dataclass(frozen=True)
class Node:
    """A component of the statement's tree (leaf or inner), for EXPLAIN."""

    path: str
    weight: Fraction  # relative to its siblings (declared, or derived from the data)
    share: Fraction  # effective: product of normalised weights along the path
    derived: str | None  # "NATURAL BY SAMPLES", "TEMPERATURE 2 BY BYTES": how the weight was derived
    children: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Segment:
    """Between plan positions ``start`` and ``end`` (None: forever) the leaf shares go linearly from
    ``begin`` to ``finish`` (equal for a STAGE)."""

    start: int
    end: int | None
    begin: tuple[Fraction, ...]
    finish: tuple[Fraction, ...]
    kind: str  # DECLARED, STAGE or RAMP

    def at(self, x: Fraction | int) -> tuple[Fraction, ...]:
        if self.end is None or self.begin == self.finish:
            return self.begin
        f = Fraction(x - self.start, self.end - self.start)
        return tuple(a + (b - a) * f for a, b in zip(self.begin, self.finish))


@dataclasses.dataclass(frozen=True)
class BoundMix:
    """A MIX statement bound to a catalog version: everything the planner needs."""

    text: str
    path: str | None
    tree: MixStatement  # with parameters substituted
    components: tuple[BoundComponent, ...]
    seed: int
    chunk_size: int
    requested_partitions: int | None  # the statement's PARTITIONS or an override; None: the planner's default
    catalog_version: str
    dataset_versions: tuple[tuple[str, str], ...]
    schedule: tuple[Segment, ...] = ()  # empty: the declared shares throughout
    limit: int | None = None  # the stream's length in samples (LIMIT), None: until exhaustion
    policy: str = "STOP"  # ON EXHAUSTION
    batch_size: int | None = None
    overlap: str = "FIRST"
    nodes: tuple[Node, ...] = ()
    params: tuple[tuple[str, t.Any], ...] = ()
    template: str = ""  # the statement before parameters are bound, canonical: its identity across configs

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.components]


def bind(
    mix: MixStatement,
    catalog: Catalog,
    *,
    text: str,
    path: str | None = None,
    seed: int | None = None,
    chunk_size: int | None = None,
    partitions: int | None = None,
    params: t.Mapping[str, t.Any] | None = None,
) -> BoundMix:
    """Bind ``mix`` (parsed from ``text``) to ``catalog``; keyword arguments override the statement's options,
    and ``params`` binds its ``:name`` parameters."""
    b = _Binder(mix, catalog, text, path)
    return b.bind(seed=seed, chunk_size=chunk_size, partitions=partitions, params=dict(params or {}))


class _Binder:
    def __init__(self, mix: MixStatement, catalog: Catalog, text: str, path: str | None) -> None:
        self.mix, self.catalog, self.text, self.path = mix, catalog, text, path
        self.engine = catalog.engine()  # one committed state of the catalog, never touched by user SQL
        self.con = self.engine.con
        self._schemas: dict[str, dict[str, str]] = {}
        self._volatile: set[str] | None = None
        self._wheres: list[tuple[exp.Expr, str, str]] = []  # (predicate, dataset, what): to place a failure

    # -- errors -----------------------------------------------------------------------------------

    def error(self, message: str, node: exp.Expr | None, hint: str | None = None) -> BindError:
        where = span(node)
        if where is None:
            return BindError(message, hint=hint, source=self.text, path=self.path)
        line, col = position(self.text, where[0])
        return BindError(message, hint=hint, line=line, col=col, length=where[1] - where[0], source=self.text,
                         path=self.path)

    # -- steps ------------------------------------------------------------------------------------

    def bind(self, *, seed: int | None, chunk_size: int | None, partitions: int | None,
             params: dict[str, t.Any]) -> BoundMix:
        template = to_sql(self.mix, pretty=False)
        self.mix = self._substitute(params)
        self._expand_named()
        self._check_names(self.mix.components)
        leaves = list(ast_leaves(self.mix.components))
        default_from = self.mix.args.get("from_")
        statement_where = self.mix.args.get("where")
        datasets = []
        for name, leaf, ancestors in leaves:
            node = next((n.args["from_"] for n in [leaf] + ancestors[::-1] if n.args.get("from_") is not None),
                        default_from)
            datasets.append(self._dataset(node, leaf, name))
        for named in self.mix.args.get("named") or []:
            for ds in dict.fromkeys(datasets):
                if named.name.lower() in {c.lower() for c in self.schema(ds)}:
                    raise self.error(f"WITH {named.name!r} has the name of a property of dataset {ds!r}", named.this,
                                     hint="give the named predicate another name")
        if statement_where is not None:
            for ds in dict.fromkeys(datasets):
                self._check_predicate(statement_where.this, ds, "the statement's WHERE")
                self._wheres.append((statement_where.this, ds, "the statement's WHERE"))
        preds: list[str | None] = []
        checked: set[tuple[int, str]] = set()  # an ancestor's WHERE is checked once per dataset, not per leaf
        for (name, leaf, ancestors), ds in zip(leaves, datasets):
            own = []
            for n in ancestors + [leaf]:
                where = n.args.get("where")
                if where is not None:
                    if (id(n), ds) not in checked:
                        self._check_predicate(where.this, ds, f"the WHERE of component {n.name!r}")
                        checked.add((id(n), ds))
                        self._wheres.append((where.this, ds, f"the WHERE of component {n.name!r}"))
                    own.append(where.this.sql(dialect="duckdb", comments=False))
            preds.append(_conjunction(own))
        stmt_pred = None if statement_where is None else statement_where.this.sql(dialect="duckdb", comments=False)
        names = [name for name, _, _ in leaves]
        counts = self._cached_count(names, datasets, stmt_pred, preds)
        overlap = self._word("overlap", "FIRST")
        sizes = {name: counts[i] for i, name in enumerate(names)}
        nodes = self._nodes(sizes)
        by_path = {n.path: n for n in nodes}
        batch_size = self._option("batch_size", None, None, minimum=1, maximum=MAX_BATCH_SIZE)
        orderings = self._orderings(leaves, datasets)
        epochs = self._epochs(leaves)
        bound = []
        for i, ((name, leaf, _), ds, pred) in enumerate(zip(leaves, datasets, preds)):
            samples, nbytes, blocks, overlaps = counts[i]
            earlier = [preds[j] for j in range(i) if datasets[j] == ds]
            full = _conjunction([stmt_pred, pred])
            if overlaps and overlap == "ERROR":
                taken = ", ".join(f"{other!r} ({n:,} samples)" for other, n in overlaps)
                raise self.error(f"component {name!r} overlaps earlier components: {taken}, and the statement says "
                                 "OVERLAP ERROR", (leaf.args.get("where") or leaf.this),
                                 hint="make the predicates disjoint, or drop OVERLAP ERROR (a sample then goes to "
                                      "the first component it matches)")
            bound.append(BoundComponent(
                index=i, name=name, dataset=ds, weight=by_path[name].weight, share=by_path[name].share,
                predicate=full,
                sql=_selection_sql(ds, stmt_pred, pred, earlier),
                samples=samples, bytes=nbytes, blocks=blocks, overlaps=overlaps,
                max_epochs=epochs[i], ordering=orderings[i],
            ))
            if samples == 0:
                raise self._empty(leaf, name, ds, stmt_pred, pred, overlaps)
        policy = self._word("exhaustion", "STOP")
        limit = self._limit(batch_size)
        if policy == "REPEAT" and limit is None:
            raise self.error("ON EXHAUSTION REPEAT without a LIMIT makes an endless stream",
                             self.mix.args["exhaustion"],
                             hint="add LIMIT <n> SAMPLES (or STEPS with BATCH SIZE)")
        self._check_size(limit, bound, leaves)
        return BoundMix(
            text=self.text, path=self.path, tree=self.mix, components=tuple(bound),
            seed=self._option("seed", seed, DEFAULT_SEED, minimum=0),
            chunk_size=self._option("chunk_size", chunk_size, DEFAULT_CHUNK_SIZE, minimum=1, maximum=MAX_CHUNK_SIZE),
            requested_partitions=self._option("partitions", partitions, None, minimum=1, maximum=MAX_PARTITIONS),
            catalog_version=self.engine.version,
            dataset_versions=tuple((ds, self.engine.dataset(ds).version) for ds in sorted(set(datasets))),
            schedule=self._schedule(nodes, names, batch_size), limit=limit, policy=policy, batch_size=batch_size,
            overlap=overlap, nodes=tuple(nodes), params=tuple(sorted(params.items(), key=lambda kv: kv[0])),
            template=template,
        )

    # -- parameters and named predicates ------------------------------------------------------------

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
        if isinstance(parent, (MixStatement, Component, Budget, Stage, Assign, Weighting, OrderKey)):
            # a weight, a stage point or an option: a number, never text
            integer = node.arg_key not in ("weight", "temperature")
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

    # -- weights ------------------------------------------------------------------------------------

    def _nodes(self, sizes: dict[str, tuple[int, int, int, t.Any]]) -> list[Node]:
        """Every node of the tree with its weight among its siblings and its effective share."""
        weights: dict[str, Fraction] = {}  # depth first, in statement order
        derived: dict[str, str | None] = {}
        first_child: dict[str, Component] = {}  # where an all-empty level is reported

        def size(c: Component, prefix: str, by: str) -> int:
            path = prefix + c.name
            if c.children:
                return sum(size(k, path + ".", by) for k in c.children)
            s = sizes[path]
            return s[0] if by == "SAMPLES" else s[1]

        def level(components: list[Component], weighting: exp.Expr | None, prefix: str) -> None:
            label = None
            weight_of: t.Callable[[Component], Fraction] = self._weight
            if weighting is not None:
                by = weighting.args.get("by") or "SAMPLES"
                temperature = Fraction(1)
                if weighting.name == "TEMPERATURE":
                    temperature = self._number(weighting.args["temperature"], "TEMPERATURE", positive=True)
                    if not TEMPERATURES[0] <= temperature <= TEMPERATURES[1]:
                        raise self.error(f"TEMPERATURE must be from {_number(TEMPERATURES[0])} to "
                                         f"{_number(TEMPERATURES[1])}", weighting.args["temperature"],
                                         hint="1 gives the natural proportions, larger values flatten them, "
                                              "smaller ones sharpen them")
                label = f"TEMPERATURE {_number(temperature)}" if weighting.name == "TEMPERATURE" else weighting.name
                label = f"{label} BY {by}"
                weight_of = lambda c: _power(size(c, prefix, by), 1 / temperature)  # noqa: E731
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

    # -- schedule, ordering, budget -------------------------------------------------------------------

    def _resolve_path(self, path: exp.Expr, nodes: t.Sequence[str], what: str) -> str:
        name = path.name
        lowered = {n.lower(): n for n in nodes}
        if name.lower() in lowered:
            return lowered[name.lower()]
        close = difflib.get_close_matches(name, list(nodes), n=1)
        raise self.error(f"unknown component {name!r} in {what}", path,
                         hint=f"did you mean {close[0]!r}?" if close else f"components: {', '.join(nodes)}")

    def _schedule(self, nodes: list[Node], leaves: list[str], batch_size: int | None) -> tuple[Segment, ...]:
        curriculum = self.mix.args.get("curriculum")
        stages = [s for s in (curriculum.expressions if curriculum is not None else []) if isinstance(s, Stage)]
        if not stages:
            return ()
        by_path = {n.path: n for n in nodes}
        declared = tuple(by_path[leaf].share for leaf in leaves)
        segments: list[Segment] = []
        start, previous = 0, declared
        for i, stage in enumerate(stages):
            weights = {n.path: n.weight for n in nodes}
            for assign in stage.expressions:
                target = self._resolve_path(assign.this, list(by_path), "the curriculum")
                weights[target] = self._number(assign.args["weight"], "weight")
            shares = self._stage_shares(weights, leaves, stage)
            until = stage.args.get("until")
            end = None
            if until is None:
                if i != len(stages) - 1:
                    raise self.error(f"only the last {stage.name} may omit UNTIL", stage,
                                     hint="give it UNTIL <n> SAMPLES or STEPS")
                if stage.name == "RAMP":
                    raise self.error("a RAMP needs UNTIL: where it arrives at its weights", stage)
            else:
                end = self._in_samples(until, stage.args["unit"], batch_size)
                if end <= start:
                    raise self.error(f"stage points must increase: UNTIL {until.sql()} {stage.args['unit']} is "
                                     f"at sample {end:,}, not after the previous point ({start:,})", until)
            begin = previous if stage.name == "RAMP" else shares
            segments.append(Segment(start=start, end=end, begin=begin, finish=shares, kind=stage.name))
            if end is not None:
                start, previous = end, shares
        if segments[-1].end is not None:  # a stage is an interval: the MIX weights return; a ramp's target holds
            after = previous if segments[-1].kind == "RAMP" else declared
            segments.append(Segment(start=start, end=None, begin=after, finish=after,
                                    kind="HOLD" if segments[-1].kind == "RAMP" else "MIX"))
        return tuple(segments)

    def _stage_shares(self, weights: dict[str, Fraction], leaves: list[str], stage: exp.Expr) -> tuple[Fraction, ...]:
        share = self._effective(weights, lambda parent: self.error(
            f"every component {'of ' + repr(parent) + ' ' if parent else ''}has weight 0 in this {stage.name}", stage,
            hint="give at least one a positive weight"))
        return tuple(share[leaf] for leaf in leaves)

    def _in_samples(self, literal: exp.Expr, unit: str, batch_size: int | None) -> int:
        """A point or budget (n SAMPLES or n STEPS) as a number of samples."""
        value = int(literal.this)
        if unit == "SAMPLES":
            return value
        if unit == "STEPS":
            if batch_size is None:
                raise self.error("STEPS need the global batch size", literal,
                                 hint="add BATCH SIZE <samples per global batch> to the statement")
            return value * batch_size
        raise self.error("TOKENS need token counts per sample, which this catalog does not have yet", literal,
                         hint="use SAMPLES, or STEPS with BATCH SIZE")

    def _limit(self, batch_size: int | None) -> int | None:
        budget = self.mix.args.get("limit")
        if budget is None:
            return None
        value = self._in_samples(budget.this, budget.args["unit"], batch_size)
        if value < 1:
            raise self.error("LIMIT must be at least 1", budget.this)
        return value

    def _orderings(self, leaves: list[tuple[str, Component, list[Component]]],
                   datasets: list[str]) -> list[Ordering | None]:
        curriculum = self.mix.args.get("curriculum")
        out: list[Ordering | None] = [None] * len(leaves)
        paths = [name for name, _, _ in leaves]
        inner = sorted({name.rsplit(".", k)[0] for name in paths for k in range(1, name.count(".") + 1)})
        for item in (curriculum.expressions if curriculum is not None else []):
            if not isinstance(item, OrderKey):
                continue
            target = self._resolve_path(item.this, paths + inner, "the curriculum")
            buckets = DEFAULT_BUCKETS if item.args.get("buckets") is None else int(item.args["buckets"].this)
            if not 1 <= buckets <= MAX_BUCKETS:
                raise self.error(f"BUCKETS must be from 1 to {MAX_BUCKETS:,}", item.args["buckets"])
            key = item.args["key"]
            for i, path in enumerate(paths):
                if path != target and not path.startswith(target + "."):
                    continue
                if out[i] is not None:
                    raise self.error(f"component {path!r} is ordered twice in the curriculum", item.this)
                kind = self._key_type(key, datasets[i])
                if not ORDERABLE.match(kind):
                    raise self.error(f"the curriculum key of {path!r} has type {kind}, which cannot be ordered", key,
                                     hint="order by a number, text, date or time (e.g. quality DESC)")
                out[i] = Ordering(key=key.sql(dialect="duckdb", comments=False),
                                  descending=bool(item.args.get("desc")), buckets=buckets)
        return out

    def _key_type(self, key: exp.Expr, dataset: str) -> str:
        self._deterministic(key, "the curriculum key")
        self._check_columns(key, dataset, "the curriculum key")
        sql = key.sql(dialect="duckdb", comments=False)
        try:
            rows = self.con.execute(f'DESCRIBE SELECT ({sql}) AS k FROM "{dataset}"').fetchall()
        except duckdb.Error as e:
            raise self._duck_error(e, key, "the curriculum key") from None
        return rows[0][1]

    def _epochs(self, leaves: list[tuple[str, Component, list[Component]]]) -> list[int | None]:
        policy = self._word("exhaustion", "STOP")
        out: list[int | None] = []
        for _, leaf, ancestors in leaves:
            node = next((n.args["max_epochs"] for n in [leaf] + ancestors[::-1]
                         if n.args.get("max_epochs") is not None), None)
            if node is None:
                out.append(None if policy == "REPEAT" else 1)
                continue
            value = int(node.this)
            if value < 1:
                raise self.error("MAX EPOCHS must be at least 1", node)
            out.append(value)
        return out

    def _check_size(self, limit: int | None, components: list[BoundComponent],
                    leaves: list[tuple[str, Component, list[Component]]]) -> None:
        """The stream fits what this machine can compile (``limits.max_stream_samples``), checked
        before the planner allocates anything for it."""
        most = max_stream_samples()
        if limit is not None:
            if limit > most:
                raise self.error(f"LIMIT {limit:,} samples is more than this machine can plan: a plan holds every "
                                 f"sample of its stream, and at most {most:,} fit in its memory",
                                 self.mix.args["limit"].this,
                                 hint="lower the LIMIT (a run can be planned in stages, one statement each)")
            return
        supply = [c.samples * (c.max_epochs or 0) for c in components]
        if sum(supply) > most:
            top = max(range(len(components)), key=lambda i: supply[i])
            _, leaf, ancestors = leaves[top]
            node = next((n.args["max_epochs"] for n in [leaf] + ancestors[::-1]
                         if n.args.get("max_epochs") is not None), leaf.this)
            raise self.error(f"the stream can hold {sum(supply):,} samples, more than this machine can plan (at most "
                             f"{most:,} fit in its memory)", node,
                             hint="add LIMIT <n> SAMPLES, or lower MAX EPOCHS")

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
        if self._volatile is None:
            rows = self.con.execute("SELECT lower(function_name), list(DISTINCT stability) FROM duckdb_functions() "
                                    "GROUP BY 1").fetchall()
            self._volatile = {name for name, kinds in rows if "CONSISTENT" not in kinds}
        for node in tree.find_all(exp.Func):
            sql = node.sql(dialect="duckdb", comments=False)
            names = {sql.split("(", 1)[0].strip().lower(), VOLATILE_ALIASES.get(type(node).__name__, "")}
            if isinstance(node, exp.Anonymous):
                names.add(node.name.lower())
            found = sorted(names & self._volatile)
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

    def _cached_count(self, names: list[str], datasets: list[str], stmt_pred: str | None,
                      preds: list[str | None]) -> dict[int, tuple[int, int, int, tuple[tuple[str, int], ...]]]:
        """``_count``, cached in the catalog by (dataset versions, predicates): the second start of a run,
        or 256 ranks binding the same statement, scan nothing. Counted only by the private engine,
        over the committed tables of exactly those versions; an entry is used only if it names the
        same key inside and has the expected shape. Written atomically; skipped if the catalog
        cannot be written."""
        ident = json.dumps({"v": 2, "datasets": [[d, self.engine.dataset(d).version] for d in datasets],
                            "names": names, "where": stmt_pred, "preds": preds}, sort_keys=True)
        path = self.catalog.path / "counts" / f"{hashlib.sha256(ident.encode()).hexdigest()[:24]}.json"
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved["ident"] == ident:
                counts = {int(k): (int(v[0]), int(v[1]), int(v[2]), tuple((str(a), int(b)) for a, b in v[3]))
                          for k, v in saved["counts"].items()}
                if sorted(counts) == list(range(len(names))) and all(min(v[:3]) >= 0 for v in counts.values()):
                    return counts
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            pass
        counts = self._count(names, datasets, stmt_pred, preds)
        try:
            path.parent.mkdir(exist_ok=True)
            atomic.write_text(path, json.dumps({"ident": ident, "counts": {
                k: [v[0], v[1], v[2], [list(o) for o in v[3]]] for k, v in counts.items()}}))
        except OSError:
            pass
        return counts

    def _count(self, names: list[str], datasets: list[str], stmt_pred: str | None,
               preds: list[str | None]) -> dict[int, tuple[int, int, int, tuple[tuple[str, int], ...]]]:
        """Per component: samples, content bytes, distinct blocks, and overlaps with earlier components.

        One scan per dataset, grouped by (component, file, block): a sample goes to the first
        component it matches (CASE), and for each later component the group counts how many of its
        samples that component's predicate also matches (its overlaps with the earlier one).
        """
        out: dict[int, tuple[int, int, int, tuple[tuple[str, int], ...]]] = {}
        for ds in dict.fromkeys(datasets):
            members = [i for i, d in enumerate(datasets) if d == ds]
            cases = first_match([(k, preds[i]) for k, i in enumerate(members)])
            also = [(k, i) for k, i in enumerate(members) if preds[i] is not None and k > 0]
            inner = ", ".join([f"{cases} AS _c", "_file_id", "_block", "count(*) AS _n", "sum(_bytes) AS _b"]
                              + [f"count_if(coalesce({_paren(preds[i])}, FALSE)) AS _m{k}" for k, i in also])
            outer = ", ".join(["_c", "count(*)", "sum(_n)", "coalesce(sum(_b), 0)"] + [f"sum(_m{k})" for k, _ in also])
            where = f" WHERE {stmt_pred}" if stmt_pred else ""
            sql = (f'SELECT {outer} FROM (SELECT {inner} FROM "{ds}"{where} GROUP BY ALL) '
                   f'WHERE _c IS NOT NULL GROUP BY _c')
            try:
                rows = {int(r[0]): r for r in self.con.execute(sql).fetchall()}
            except duckdb.Error as e:
                raise self._evaluation_error(e, ds) from None
            for k, i in enumerate(members):
                r = rows.get(k)
                overlaps = []
                column = next((4 + j for j, (later, _) in enumerate(also) if later == k), None)
                for a in range(k if column is not None else 0):  # component k's matches that earlier a took
                    ra = rows.get(a)
                    if ra is not None and ra[column]:
                        overlaps.append((names[members[a]], int(ra[column])))
                out[i] = (int(r[2]), int(r[3]), int(r[1]), tuple(overlaps)) if r else (0, 0, 0, tuple(overlaps))
        return out

    def _evaluation_error(self, e: duckdb.Error, dataset: str) -> BindError:
        """A predicate that type-checks but fails on the data (a literal that does not convert): the
        error points at the predicate that fails alone, and at the literal DuckDB names (error path)."""
        first = re.sub(r"^[A-Za-z ]+Error: ", "", str(e).strip().split("\n")[0])
        hint = "check the literals compared with each property's type"
        for pred, ds, what in self._wheres:
            if ds != dataset:
                continue
            try:
                self.con.execute(f"SELECT count(*) FROM {ident(ds)} WHERE ({pred.sql(dialect='duckdb')})").fetchall()
            except duckdb.Error:
                named = re.findall(r"'([^']*)'", first)
                node = next((lit for lit in pred.find_all(exp.Literal) if lit.is_string and lit.this in named), pred)
                return self.error(f"in {what}: {first}", node, hint=hint)
        return BindError(f"evaluating the predicates of dataset {dataset!r} failed: {first}", source=self.text,
                         path=self.path, hint=hint)

    def _empty(self, c: Component, name: str, ds: str, stmt_pred: str | None, pred: str | None,
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
        return self.error(f"component {name!r} matches no sample of dataset {ds!r}", node, hint=hint)


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
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 4000 else f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else text[:limit] + "..."


def _power(size: int, exponent: Fraction) -> Fraction:
    """size ** exponent, exactly when it is an integer power, else to 28 significant digits (decimal
    arithmetic: the same on every machine)."""
    if exponent.denominator == 1:
        return Fraction(size) ** exponent.numerator
    with decimal.localcontext(decimal.Context(prec=28)):
        return Fraction(decimal.Decimal(size) ** (decimal.Decimal(exponent.numerator) / exponent.denominator))


def _number(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


def _paren(sql: str) -> str:
    return f"({sql})"


def _conjunction(preds: t.Sequence[str | None]) -> str | None:
    present = [p for p in preds if p]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return " AND ".join(_paren(p) for p in present)


def first_match(members: t.Sequence[tuple[int, str | None]]) -> str:
    """The rule that gives each sample one component: ``CASE WHEN p0 THEN id0 WHEN p1 THEN id1 ... END``
    over (id, predicate) in statement order, a missing predicate matching every sample; NULL when
    none matches. Binding counts with it and compiling selects with it."""
    return "CASE " + " ".join(f"WHEN {_paren(p) if p else 'TRUE'} THEN {i}" for i, p in members) + " END"


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


__all__ = ["BoundComponent", "BoundMix", "CatalogError", "DEFAULT_CHUNK_SIZE", "DEFAULT_SEED", "Node", "Ordering",
           "Segment", "bind", "first_match"]
