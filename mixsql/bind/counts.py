"""Counting what each component matches (first match wins), cached in the catalog's ``counts/``; the selection SQL."""

from __future__ import annotations

import hashlib
import json
import re
import typing as t
from pathlib import Path

import duckdb
from sqlglot import expressions as exp

from mixsql import atomic
from mixsql.bind import matches
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
        counts = _saved(path, ident, len(names))
        if counts is not None:
            return counts
        lock = path.parent / f".{path.stem}.lock"
        try:
            path.parent.mkdir(exist_ok=True)
            open(lock, "a+").close()
        except OSError:  # a read-only catalog: counted here, not cached
            return self._count(names, datasets, stmt_pred, preds)
        # of the processes binding the same statement at once (256 ranks starting), one counts
        with atomic.locked(lock, timeout=600, ready=lambda: path.exists(), busy=lambda: BindError(
                "timed out waiting for another process to count this statement's components")) as held:
            counts = _saved(path, ident, len(names))
            if counts is not None:
                return counts
            counts = self._count(names, datasets, stmt_pred, preds)
            if held:
                try:
                    atomic.write_text(path, json.dumps({"ident": ident, "counts": {
                        k: [v[0], v[1], v[2], [list(o) for o in v[3]], v[4]] for k, v in counts.items()}}))
                except OSError:
                    pass
        return counts

    def _count(self, names: list[str], datasets: list[str], stmt_pred: str | None,
               preds: list[str | None]) -> dict[int, CountRow]:
        """Per component: samples, content bytes, distinct blocks, overlaps with earlier components, and
        tokens (None when the dataset has no ``n_tokens``).

        One scan per dataset (``matches.scan``): a sample goes to the first component it matches, and
        for each later component the scan counts how many of its samples that component's own
        predicate also matches (its overlaps with the earlier one). The samples' components are kept
        on the engine for compiling.
        """
        out: dict[int, CountRow] = {}
        for ds in dict.fromkeys(datasets):
            members = [i for i, d in enumerate(datasets) if d == ds]
            counted = self.engine.dataset(ds).tokenizer is not None
            full = [_conjunction([stmt_pred, preds[i]]) for i in members]
            files = self.engine.file_rows(ds)
            layout = matches.row_group_layout(files)
            try:
                found = matches.scan(self.con, ds, members, full, [preds[i] for i in members],
                                     [f["rows"] for f in files], count=True, tokens=counted,
                                     block_starts=None if layout is None else layout[1])
            except duckdb.Error as e:
                raise self._evaluation_error(e, ds) from None
            self.engine.matches[ds] = (tuple(zip(members, full)), found.component)
            for k, i in enumerate(members):
                overlaps = tuple((names[members[a]], found.overlaps[k][a]) for a in range(k)
                                 if preds[i] is not None and found.overlaps[k][a])
                out[i] = (found.samples[k], found.bytes[k], found.blocks[k], overlaps,
                          found.tokens[k] if counted else None)
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


def _saved(path: Path, ident: str, components: int) -> dict[int, CountRow] | None:
    """The counts cached at ``path`` if it holds ``ident``'s, in the expected shape."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved["ident"] == ident:
            counts = {int(k): (int(v[0]), int(v[1]), int(v[2]), tuple((str(a), int(b)) for a, b in v[3]),
                               None if v[4] is None else int(v[4]))
                      for k, v in saved["counts"].items()}
            if sorted(counts) == list(range(components)) and all(min(v[:3]) >= 0 for v in counts.values()):
                return counts
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        pass
    return None
