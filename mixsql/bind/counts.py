"""Counting what each component matches (first match wins), cached in the catalog's ``counts/``; the selection SQL."""

from __future__ import annotations

import hashlib
import json
import re
import typing as t

import duckdb
from sqlglot import expressions as exp

from mixsql import atomic
from mixsql.bind.base import _Base
from mixsql.catalog.duck import ident
from mixsql.errors import BindError
from mixsql.parse import Component


CountRow = tuple[int, int, int, tuple[tuple[str, int], ...], "int | None"]  # samples, bytes, blocks, overlaps, tokens


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


class Counts(_Base):
    """The binder's counting of what each component matches, and the errors of a failed count."""

    def _cached_count(self, names: list[str], datasets: list[str], stmt_pred: str | None,
                      preds: list[str | None]) -> dict[int, CountRow]:
        """``_count``, cached in the catalog by (dataset versions, predicates): the second start of a run,
        or 256 ranks binding the same statement, scan nothing. Counted only by the private engine,
        over the committed tables of exactly those versions; an entry is used only if it names the
        same key inside and has the expected shape. Written atomically; skipped if the catalog
        cannot be written."""
        ident = json.dumps({"v": 3, "datasets": [[d, self.engine.dataset(d).version] for d in datasets],
                            "names": names, "where": stmt_pred, "preds": preds}, sort_keys=True)
        path = self.catalog.path / "counts" / f"{hashlib.sha256(ident.encode()).hexdigest()[:24]}.json"
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved["ident"] == ident:
                counts = {int(k): (int(v[0]), int(v[1]), int(v[2]), tuple((str(a), int(b)) for a, b in v[3]),
                                   None if v[4] is None else int(v[4]))
                          for k, v in saved["counts"].items()}
                if sorted(counts) == list(range(len(names))) and all(min(v[:3]) >= 0 for v in counts.values()):
                    return counts
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            pass
        counts = self._count(names, datasets, stmt_pred, preds)
        try:
            path.parent.mkdir(exist_ok=True)
            atomic.write_text(path, json.dumps({"ident": ident, "counts": {
                k: [v[0], v[1], v[2], [list(o) for o in v[3]], v[4]] for k, v in counts.items()}}))
        except OSError:
            pass
        return counts

    def _count(self, names: list[str], datasets: list[str], stmt_pred: str | None,
               preds: list[str | None]) -> dict[int, CountRow]:
        """Per component: samples, content bytes, distinct blocks, overlaps with earlier components, and
        tokens (None when the dataset has no ``n_tokens``).

        One scan per dataset, grouped by (component, file, block): a sample goes to the first
        component it matches (CASE), and for each later component the group counts how many of its
        samples that component's predicate also matches (its overlaps with the earlier one).
        """
        out: dict[int, CountRow] = {}
        for ds in dict.fromkeys(datasets):
            members = [i for i, d in enumerate(datasets) if d == ds]
            counted = self.engine.dataset(ds).tokenizer is not None
            cases = first_match([(k, preds[i]) for k, i in enumerate(members)])
            also = [(k, i) for k, i in enumerate(members) if preds[i] is not None and k > 0]
            inner = ", ".join([f"{cases} AS _c", "_file_id", "_block", "count(*) AS _n", "sum(_bytes) AS _b",
                               "sum(n_tokens) AS _t" if counted else "NULL::BIGINT AS _t"]
                              + [f"count_if(coalesce({_paren(preds[i])}, FALSE)) AS _m{k}" for k, i in also])
            outer = ", ".join(["_c", "count(*)", "sum(_n)", "coalesce(sum(_b), 0)", "coalesce(sum(_t), 0)"]
                              + [f"sum(_m{k})" for k, _ in also])
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
                column = next((5 + j for j, (later, _) in enumerate(also) if later == k), None)
                for a in range(k if column is not None else 0):  # component k's matches that earlier a took
                    ra = rows.get(a)
                    if ra is not None and ra[column]:
                        overlaps.append((names[members[a]], int(ra[column])))
                tokens = (int(r[4]) if r else 0) if counted else None
                out[i] = (int(r[2]), int(r[3]), int(r[1]), tuple(overlaps), tokens) if r else \
                    (0, 0, 0, tuple(overlaps), tokens)
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
