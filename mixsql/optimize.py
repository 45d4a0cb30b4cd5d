"""``mixsql optimize``: offline optimisers' inputs read and checked, their weights written back as a
``.mixsql`` statement (optionally handed to ADO as its prior and starting weights).

Input formats (each error names the file and what is wrong; nothing is written on an error):

- **MixMin predictions**: a ``.npz`` with ``logprobs`` [examples, sources] (each example's total
  log-probability under each source's proxy), optional ``lengths`` [examples] (tokens) and
  ``sources`` (names; default: the statement's components in order); or a Parquet/CSV table with
  one column per component (its log-probabilities) and an optional ``length`` column.
- **AutoScale results**: a CSV or JSON list of runs with ``budget``, ``metric`` (validation loss:
  lower is better) and one column per component: its quantity relative to the base run (1 in the
  base run, e.g. 3 or 0.2 in the run that changes only it). Each budget needs its base run and
  two other quantities per component.
"""

from __future__ import annotations

import json
import math
import typing as t
from pathlib import Path

import numpy as np
from sqlglot import expressions as exp

from mixsql import atomic
from mixsql.errors import MixSQLError
from mixsql.mixing import autoscale as _autoscale
from mixsql.parse import parse, to_sql
from mixsql.parse.ast import Adapt, Budget


class OptimizeError(MixSQLError):
    """An optimiser input that cannot be used."""


def read_predictions(path: str | Path, components: t.Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """(logprobs [examples, components], lengths or None) from a predictions file (module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise OptimizeError(f"no predictions file {p}")
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as data:
            if "logprobs" not in data:
                raise OptimizeError(f"{p} has no array 'logprobs'", hint="np.savez(path, logprobs=..., lengths=...)")
            lp = np.asarray(data["logprobs"], dtype=np.float64)
            lengths = np.asarray(data["lengths"], dtype=np.float64) if "lengths" in data else None
            sources = [str(s) for s in data["sources"]] if "sources" in data else list(components)
        if lp.ndim != 2 or lp.shape[1] != len(sources):
            raise OptimizeError(f"{p}: logprobs has shape {lp.shape}, but there are {len(sources)} sources")
        if sorted(sources) != sorted(components):
            raise OptimizeError(f"{p}: its sources {sources} are not the statement's components {list(components)}")
        order = [sources.index(c) for c in components]
        return lp[:, order], lengths
    import pyarrow.csv
    import pyarrow.parquet as pq

    table = pq.read_table(p) if p.suffix == ".parquet" else pyarrow.csv.read_csv(p)
    missing = [c for c in components if c not in table.column_names]
    if missing:
        raise OptimizeError(f"{p} has no column for component {missing[0]!r}",
                            hint=f"one log-probability column per component: {', '.join(components)}")
    lp = np.stack([np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float64)
                   for c in components], axis=1)
    lengths = np.asarray(table.column("length").to_numpy(zero_copy_only=False), dtype=np.float64) \
        if "length" in table.column_names else None
    return lp, lengths


def read_runs(path: str | Path, components: t.Sequence[str]) -> list[dict[str, float]]:
    """AutoScale's runs: one dict per run with ``budget``, ``metric`` and each component's quantity."""
    p = Path(path)
    if not p.is_file():
        raise OptimizeError(f"no results file {p}")
    if p.suffix == ".json":
        rows = json.loads(p.read_text(encoding="utf-8"))
    else:
        import pyarrow.csv

        rows = pyarrow.csv.read_csv(p).to_pylist()
    if not isinstance(rows, list) or not rows:
        raise OptimizeError(f"{p} holds no runs", hint="a list of runs: budget, metric, one column per component")
    out = []
    for i, row in enumerate(rows):
        for key in ("budget", "metric", *components):
            value = row.get(key) if isinstance(row, dict) else None
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise OptimizeError(f"{p}, run {i}: {key} is {value!r}, not a finite number",
                                    hint="every run has budget, metric and one quantity per component")
        out.append({**{k: float(row[k]) for k in ("budget", "metric", *components)},
                    **({"run": row["run"]} if "run" in row else {}),
                    **({"unit": str(row["unit"])} if row.get("unit") else {}),
                    **({"datasets": row["datasets"]} if isinstance(row.get("datasets"), dict) else {})})
    return out


def check_versions(runs: t.Sequence[t.Mapping[str, t.Any]], versions: t.Callable[[str], str | None]) -> None:
    """Every run that records the dataset versions it was trained on (``datasets``) must match the
    catalog now: results of other data would steer the mixture of this one."""
    for run in runs:
        for name, version in (run.get("datasets") or {}).items():
            now = versions(name)
            if now != version:
                raise OptimizeError(f"run {run.get('run', '?')!r} was trained on dataset {name!r} version {version}, "
                                    f"but the catalog now has {now or 'no such dataset'}",
                                    hint="run the proxies again on the current data (clear their results)")


def autoscale_weights(runs: t.Sequence[t.Mapping[str, float]], components: t.Sequence[str], budget: float,
                      floor: float = 0.2) -> tuple[np.ndarray, dict[str, t.Any]]:
    """Weights at ``budget`` from DDO at each run budget (one budget: DDO there; two or more: the two
    largest projected). Returns the weights and what the fit says (per budget: fits, quantities)."""
    budgets = sorted({r["budget"] for r in runs})
    k = len(components)
    report: dict[str, t.Any] = {"budgets": {}}
    optimal = []
    for b in budgets:
        mine = [r for r in runs if r["budget"] == b]
        base = [r for r in mine if all(r[c] == 1 for c in components)]
        if len(base) != 1:
            raise OptimizeError(f"budget {b:g} needs exactly one base run (every component at quantity 1), not "
                                f"{len(base)}")
        fits = []
        for c in components:
            points = [(r[c], r["metric"] / base[0]["metric"]) for r in mine
                      if all(r[o] == 1 for o in components if o != c) and r[c] != 1]
            if len(points) < 2:
                raise OptimizeError(f"budget {b:g}: component {c!r} has {len(points)} run(s) beside the base one; "
                                    "DDO needs two (e.g. at quantities 3 and 0.2)")
            x = [1.0] + [p[0] for p in points]
            y = [1.0] + [p[1] for p in points]
            fits.append(_autoscale.fit_domain(x, y))
        n = _autoscale.ddo_quantities(fits, total=k, floor=floor)
        absolute = n * (b / k)
        optimal.append(absolute)
        report["budgets"][b] = {"fits": [dict(a=f.a, b=f.b, c=f.c, residual=f.residual) for f in fits],
                                "quantities": absolute.tolist()}
    if budget in budgets:
        report["projection"] = None
        return _autoscale.weights(optimal[budgets.index(budget)]), report
    if len(optimal) < 2:
        raise OptimizeError(f"the runs are at one budget ({budgets[0]:g}); projecting to {budget:g} needs DDO at two",
                            hint="add the 2K+1 runs at a second budget, or ask for --budget "
                                 f"{budgets[0]:g}")
    quantities, s = _autoscale.project(optimal[-2], optimal[-1], budget)
    report["projection"] = {"from": budgets[-2:], "s": s, "quantities": quantities.tolist()}
    return _autoscale.weights(quantities), report


def ddo_runs(components: t.Sequence[str], budget: int, multipliers: t.Sequence[float] = (3.0, 0.2)
             ) -> list[dict[str, t.Any]]:
    """AutoScale's 2K+1 proxy runs at ``budget``: the base run (every component at budget / K) and,
    per component, one run per multiplier with only its quantity changed. Each run: name, budget
    (its total), and each component's relative and absolute quantity."""
    k = len(components)
    runs = [{"name": "base", "x": {c: 1.0 for c in components}}]
    for c in components:
        for m in multipliers:
            runs.append({"name": f"{c}_x{m:g}", "x": {o: (m if o == c else 1.0) for o in components}})
    for run in runs:
        quantities = {c: budget / k * x for c, x in run["x"].items()}
        run["quantities"] = quantities
        run["budget"] = int(round(sum(quantities.values())))
    return runs


def write_ddo_plan(text: str, budgets: t.Sequence[int], directory: str | Path, unit: str = "SAMPLES") -> Path:
    """One ``.mixsql`` per AutoScale proxy run at each budget, and ``runs.json`` listing them (name,
    budget, quantities, file): the table the runs' metrics are added to for ``optimize autoscale``."""
    components = [c.name for c in parse(text).components]
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for budget in budgets:
        for run in ddo_runs(components, int(budget)):
            name = f"b{budget}_{run['name']}.mixsql"
            weights = {c: q / run["budget"] for c, q in run["quantities"].items()}
            body = with_weights(text, weights, limit=(run["budget"], unit), unit=unit,
                                note=f"AutoScale proxy run {run['name']} at budget {budget}: quantities "
                                     + ", ".join(f"{c} {q:g}" for c, q in run["quantities"].items()))
            atomic.write_text(out / name, body)
            listing.append({"file": name, "run": run["name"], "budget": budget, "unit": unit.lower(),
                            **run["x"], "metric": None})
    atomic.write_text(out / "runs.json", json.dumps(listing, indent=1) + "\n")
    return out / "runs.json"


def write_mixmin_plan(text: str, budget: int, directory: str | Path, unit: str = "SAMPLES") -> Path:
    """MixMin's K proxy runs: one ``.mixsql`` per component, that component alone at ``budget``, and
    ``runs.json`` listing them (the sweep fills in each one's log-probabilities on the target set)."""
    tree = parse(text)
    if any(c.children for c in tree.components):
        raise OptimizeError("only a flat statement (no sub-mixtures) has one proxy per component for now")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for c in tree.components:
        alone = tree.copy()
        alone.set("expressions", [x for x in alone.components if x.name == c.name])
        alone.set("weighting", None)
        alone.components[0].set("weight", exp.Literal.number("1"))
        alone.set("limit", Budget(this=exp.Literal.number(str(int(budget))), unit=unit.upper()))
        alone.set("adapt", None)
        name = f"{c.name}.mixsql"
        atomic.write_text(out / name, f"-- MixMin proxy run: component {c.name} alone, budget {budget}\n"
                          + to_sql(alone) + "\n")
        listing.append({"file": name, "run": c.name, "method": "mixmin", "component": c.name, "budget": budget,
                        "unit": unit.lower(), "logprobs": None})
    atomic.write_text(out / "runs.json", json.dumps(listing, indent=1) + "\n")
    return out / "runs.json"


def with_weights(text: str, weights: t.Mapping[str, float], *, adapt: bool = False, note: str = "",
                 limit: tuple[int, str] | None = None, unit: str | None = None) -> str:
    """The statement ``text`` with its components' weights replaced (a flat statement; ``unit``
    "tokens" makes it MIX BY TOKENS, "samples" by samples), and with ``adapt`` an ``ADAPT USING
    ado()`` clause (if it has none): the weights become ADO's prior and starting point."""
    tree = parse(text)
    if any(c.children for c in tree.components):
        raise OptimizeError("only a flat statement (no sub-mixtures) takes optimised leaf weights for now",
                            hint="flatten the sub-mixtures into components")
    names = [c.name for c in tree.components]
    if sorted(names) != sorted(weights):
        raise OptimizeError(f"the weights are for {sorted(weights)}, the statement's components are {names}")
    tree.set("weighting", None)
    for c in tree.components:
        c.set("weight", exp.Literal.number(f"{max(float(weights[c.name]), 0.0):.6g}"))
    if unit is not None:  # what the weights are shares of: the quantities' unit
        tree.set("unit", "TOKENS" if unit.upper() == "TOKENS" else None)
    if limit is not None:
        tree.set("limit", Budget(this=exp.Literal.number(str(int(limit[0]))), unit=limit[1].upper()))
    if adapt and tree.args.get("adapt") is None:
        tree.set("adapt", Adapt(this=exp.to_identifier("ado"), expressions=[]))
    head = "".join(f"-- {line}\n" for line in note.splitlines() if line.strip())
    return head + to_sql(tree) + "\n"


def write_statement(path: str | Path, text: str) -> None:
    atomic.write_text(path, text)

