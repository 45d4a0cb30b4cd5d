"""Binding, step by step: one ``_Binder`` per statement, made of the parts of this package."""

from __future__ import annotations

import typing as t

from sqlglot import expressions as exp

from mixsql.bind.adapt import Adapting
from mixsql.bind.checks import Checks
from mixsql.bind.counts import Counts, _conjunction, _selection_sql
from mixsql.bind.model import BoundComponent, BoundMix, DEFAULT_CHUNK_SIZE, DEFAULT_SEED
from mixsql.bind.rewrite import Rewrite
from mixsql.bind.schedule import Scheduling
from mixsql.bind.weights import Weights
from mixsql.catalog import Catalog
from mixsql.limits import MAX_BATCH_SIZE, MAX_CHUNK_SIZE, MAX_PARTITIONS
from mixsql.parse import MixStatement, to_sql
from mixsql.parse.ast import leaves as ast_leaves


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


class _Binder(Rewrite, Checks, Weights, Scheduling, Counts, Adapting):
    def _mix_unit(self) -> str:
        """The statement's MIX BY unit; a sub-mixture may repeat it but not change it."""
        unit = self.mix.args.get("unit") or "SAMPLES"

        def walk(components: t.Sequence[t.Any]) -> None:
            for c in components:
                own = c.args.get("unit")
                if own is not None and own != unit:
                    raise self.error(f"sub-mixture {c.name!r} mixes BY {own} inside a statement that mixes BY {unit}",
                                     c.this, hint=f"write MIX BY {own} at the start of the statement: one stream has "
                                                  "one unit for its shares")
                walk(c.children)

        walk(self.mix.components)
        return unit

    def _need_tokens(self, names: list[str], datasets: list[str], counts: dict[int, t.Any], node: t.Any,
                     what: str) -> None:
        """Token counts from one tokenizer for every component, or a clear error."""
        for i, name in enumerate(names):
            if counts[i][4] is None:
                raise self.error(f"{what} needs token counts, and dataset {datasets[i]!r} (component {name!r}) has "
                                 "none", node, hint=f"register {datasets[i]!r} again with --tokenizer PATH "
                                                    "(API: tokenizer=...)")
        prints = {}
        for ds in dict.fromkeys(datasets):
            info = self.engine.dataset(ds).tokenizer or {}
            prints.setdefault(info.get("fingerprint"), ds)
        if len(prints) > 1:
            (a, x), (b, y) = list(prints.items())[:2]
            raise self.error(f"{what} needs one tokenizer, and datasets {x!r} and {y!r} were counted with different "
                             f"ones ({a} and {b})", node, hint="register them with the same --tokenizer")

    def __init__(self, mix: MixStatement, catalog: Catalog, text: str, path: str | None) -> None:
        self.mix, self.catalog, self.text, self.path = mix, catalog, text, path
        self.engine = catalog.engine()  # one committed state of the catalog, never touched by user SQL
        self.con = self.engine.con
        self._schemas: dict[str, dict[str, str]] = {}
        self._wheres: list[tuple[exp.Expr, str, str]] = []  # (predicate, dataset, what): to place a failure

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
        self._unit = self._mix_unit()
        if self._unit == "TOKENS":
            self._need_tokens(names, datasets, counts, self.mix,
                              "a mixture BY TOKENS")
        nodes = self._nodes(sizes)
        by_path = {n.path: n for n in nodes}
        batch_size = self._option("batch_size", None, None, minimum=1, maximum=MAX_BATCH_SIZE)
        orderings = self._orderings(leaves, datasets)
        epochs = self._epochs(leaves)
        bound = []
        for i, ((name, leaf, _), ds, pred) in enumerate(zip(leaves, datasets, preds)):
            samples, nbytes, blocks, overlaps, tokens = counts[i]
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
                samples=samples, bytes=nbytes, blocks=blocks, overlaps=overlaps, tokens=tokens,
                max_epochs=epochs[i], ordering=orderings[i],
            ))
            if samples == 0:
                raise self._empty(leaf, name, ds, stmt_pred, pred, overlaps)
        policy = self._word("exhaustion", "STOP")
        self._counts_steps = False
        limit, token_limit = self._limit(batch_size)
        if token_limit is not None:
            self._need_tokens(names, datasets, counts, self.mix.args["limit"].this, "LIMIT n TOKENS")
        if policy == "REPEAT" and limit is None and token_limit is None:
            raise self.error("ON EXHAUSTION REPEAT without a LIMIT makes an endless stream",
                             self.mix.args["exhaustion"],
                             hint="add LIMIT <n> SAMPLES (or STEPS with BATCH SIZE)")
        chunk = self._option("chunk_size", chunk_size, DEFAULT_CHUNK_SIZE, minimum=1, maximum=MAX_CHUNK_SIZE)
        self._check_size(limit, bound, leaves, chunk, token_limit)
        adapt = self._adapt(batch_size, limit, token_limit)
        return BoundMix(
            text=self.text, path=self.path, tree=self.mix, components=tuple(bound),
            seed=self._option("seed", seed, DEFAULT_SEED, minimum=0),
            chunk_size=chunk,
            requested_partitions=self._option("partitions", partitions, None, minimum=1, maximum=MAX_PARTITIONS),
            catalog_version=self.engine.version,
            dataset_versions=tuple((ds, self.engine.dataset(ds).version) for ds in sorted(set(datasets))),
            schedule=self._schedule(nodes, names, batch_size), limit=limit, policy=policy, batch_size=batch_size,
            unit=self._unit, token_limit=token_limit,
            counts_steps=self._counts_steps, overlap=overlap, nodes=tuple(nodes),
            params=tuple(sorted(params.items(), key=lambda kv: kv[0])),
            template=template, adapt=adapt,
        )
