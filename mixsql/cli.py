"""The ``mixsql`` command line: register data, query the catalog, explain and format mixtures.

Errors print as ``FILE:LINE:COL: error: message`` with the source line and a caret, exit status 2.
"""

from __future__ import annotations

import json
import re
import sys
import time
import typing as t
from pathlib import Path

from mixsql import cpu

cpu.prefer_avx2_sort()  # this command's own process: before anything below imports NumPy

import click  # noqa: E402

from mixsql.api import Connection, parse_param
from mixsql.catalog.duck import ident
from mixsql.errors import MixSQLError
from mixsql.catalog.gc import DEFAULT_GRACE_SECONDS
from mixsql.output import cell, human_bytes, json_value, shorten
from mixsql.output import format_table as _format

EXIT_USER_ERROR = 2


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> t.Any:
        try:
            return super().invoke(ctx)
        except MixSQLError as e:
            click.echo(e.render(color=sys.stderr.isatty()), err=True)
            ctx.exit(EXIT_USER_ERROR)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--catalog", "catalog", default=".mixsql", show_default=True, envvar="MIXSQL_CATALOG",
              type=click.Path(file_okay=False), help="Catalog directory (env MIXSQL_CATALOG).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.option("--storage-option", "storage", multiple=True, metavar="KEY=VALUE",
              help="An fsspec storage option for remote data files, e.g. endpoint_url=http://... (repeatable; "
                   "never stored). VALUE is text; true/false, numbers and JSON objects are read as such, except "
                   "for credentials.")
@click.option("--cache-dir", default=None, metavar="DIR",
              help="Local disk cache of remote blocks (default $MIXSQL_CACHE_DIR or ~/.cache/mixsql/blocks; "
                   "'' for none).")
@click.version_option(package_name="mixsql")
@click.pass_context
def main(ctx: click.Context, catalog: str, quiet: bool, storage: tuple[str, ...], cache_dir: str | None) -> None:
    """mixsql: declare pre-training data mixtures in SQL.

    \b
    mixsql register corpus 'data/*.parquet'      index samples (pointers + properties)
    mixsql sql "SELECT domain, count(*) FROM corpus GROUP BY ALL"
    mixsql explain pretrain.mixsql               what the mixture will do
    mixsql shell                                 explore and try mixtures interactively
    """
    ctx.obj = {"catalog": catalog, "quiet": quiet, "storage": dict(_storage_option(item) for item in storage),
               "cache_dir": cache_dir}


CREDENTIALS = ("key", "secret", "token", "password", "username", "account_key", "sas_token", "session_token",
               "aws_access_key_id", "aws_secret_access_key", "aws_session_token")


def _storage_option(item: str) -> tuple[str, t.Any]:
    """KEY=VALUE: VALUE as text, or JSON where it reads as a flag, number or object (not for credentials)."""
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
        raise MixSQLError(f"--storage-option {item.split('=', 1)[0]!r} is not KEY=VALUE",
                          hint="e.g. --storage-option endpoint_url=http://127.0.0.1:9000")
    name = name.strip()
    if name.lower() in CREDENTIALS:
        return name, value
    try:
        parsed = json.loads(value)
    except ValueError:
        return name, value
    return name, parsed if isinstance(parsed, (bool, int, float, dict, list)) or parsed is None else value


def _connect(ctx: click.Context, create: bool = False) -> Connection:
    cache_dir = ctx.obj.get("cache_dir")
    extra: dict[str, t.Any] = {}
    if ctx.obj.get("storage"):
        extra["storage_options"] = ctx.obj["storage"]
    if cache_dir is not None:
        extra["cache_dir"] = cache_dir or None
    return Connection(ctx.obj["catalog"], create=create, **extra)


def _planned(ctx: click.Context, mix: t.Any) -> t.Any:
    """``mix`` with its plan compiled (or found in the cache), a progress bar on a terminal meanwhile."""
    with _bar(ctx, "planning") as progress:
        mix.plan(progress)
    return mix


def _packing(f: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    """Options of a packed stream: --seq-len, --pack, and the tokenizer's --eos/--bos."""
    f = click.option("--pack", type=click.Choice(["mixed", "component"]), default="mixed", show_default=True,
                     help="mixed: pack each partition's stream as it is; component: every sequence from one "
                          "component.")(f)
    f = click.option("--bos", default=None, metavar="TOKEN", help="Start every document with this token.")(f)
    f = click.option("--eos", default=None, metavar="TOKEN",
                     help="The end-of-document token (default: the tokenizer's end-of-text token).")(f)
    return click.option("--seq-len", "seq_len", type=int, default=None, metavar="L",
                        help="Packed sequences of L tokens instead of samples (needs --tokenizer at registration).")(f)


def _saved_state(path: str) -> t.Any:
    """A saved state: JSON, or a torch checkpoint (loaded as data, on the CPU)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        import torch

        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same mistake
            raise MixSQLError(f"{path} is neither a JSON state nor a torch checkpoint: {e}") from None


def _token(value: str | None) -> str | int | None:
    return int(value) if value is not None and value.isdigit() else value


def _bar(ctx: click.Context, description: str) -> t.Any:
    """A progress bar on a terminal for work that takes more than a second; nothing in a pipe or with -q."""
    from mixsql.progress import bar

    return bar(description, enabled=False if ctx.obj["quiet"] else None)


def _overrides(f: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    f = click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
                     help="Bind the statement's :NAME (repeatable). VALUE is read as JSON (numbers, true, "
                          "[lists]) or else taken as text.")(f)
    f = click.option("--partitions", type=int, help="Override the statement's PARTITIONS.")(f)
    f = click.option("--chunk-size", type=int, help="Override the statement's CHUNK SIZE.")(f)
    return click.option("--seed", type=int, help="Override the statement's SEED.")(f)


def _load(ctx: click.Context, file: str, opts: dict[str, t.Any]) -> t.Any:
    params = dict(parse_param(item) for item in opts.pop("params", ()))
    return _connect(ctx).load(file, params=params, **opts)


@main.command()
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@click.option("--replace", is_flag=True, help="Replace the dataset if it is already registered.")
@click.option("--append", is_flag=True,
              help="Add PATHS to the registered dataset NAME as a new version, scanning only them.")
@click.option("--content", default=None,
              help="Comma-separated fields that stay in the files (the rest become properties) [default: text, "
                   "or the --tokens column].")
@click.option("--tokenizer", "tokenizer", metavar="PATH", default=None,
              help="A Hugging Face tokenizer.json: store each sample's token count as n_tokens.")
@click.option("--tokens", "tokens", metavar="COLUMN", default=None,
              help="A column of token ids (list of integers) to use as they are; needs --tokenizer.")
@click.option("--eos", default=None, metavar="TOKEN",
              help="The separator of documents in .npy token arrays (default: the tokenizer's end-of-text token).")
@click.option("--images", default=None, metavar="COLUMNS",
              help="Comma-separated Parquet columns of encoded images [default: byte columns named image, jpg, png ...].")
@click.option("--ray", "ray", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Scan the files as tasks on a Ray cluster: --ray=HOST:PORT (or ray://HOST:PORT), or --ray alone "
                   "for the one RAY_ADDRESS names or a local one. The catalog must be on a filesystem every node "
                   "sees.")
@click.pass_context
def register(ctx: click.Context, name: str, paths: tuple[str, ...], replace: bool, append: bool, content: str | None,
             tokenizer: str | None, tokens: str | None, eos: str | None, images: str | None,
             ray: str | None) -> None:
    """Index JSONL (.jsonl, .gz, .zst), Parquet, flat token array (.npy) and WebDataset image-text
    (.tar) files as dataset NAME.

    PATHS are files, quoted globs, directories or fsspec URLs (file://..., s3://...). The catalog
    keeps pointers and properties, never the content; a failed registration changes nothing.
    """
    con = _connect(ctx, create=True)
    fields = [c.strip() for c in content.split(",") if c.strip()] if content is not None else None
    image_columns = [c.strip() for c in images.split(",") if c.strip()] if images is not None else None
    before = con.dataset(name) if append else None
    existed = name in con.datasets()
    started = time.perf_counter()
    with _bar(ctx, f"{'adding to' if append else 'registering'} {name}") as progress:
        info = con.register(name, list(paths), replace=replace, content=fields, tokenizer=tokenizer, tokens=tokens,
                            eos=_token(eos), images=image_columns, progress=progress, append=append, ray=ray)
    seconds = time.perf_counter() - started
    import pyarrow.parquet as pq

    rows = pq.read_table(info.files_path, columns=["rows"]).column("rows").to_pylist()
    if before is not None:
        rows = rows[len(pq.read_table(before.files_path, columns=["rows"])):]
    empty = sum(1 for r in rows if r == 0)
    note = f", {empty} of them empty" if empty else ""
    scanned = sum(rows)
    click.echo(f"{'added to' if before is not None else 'registered'} {info.name}: {scanned:,} samples from "
               f"{len(rows)} file{'s' * (len(rows) != 1)}{note} in {seconds:.1f} s ({scanned / max(seconds, 1e-9):,.0f} "
               f"samples/s{' on Ray' if ray is not None else ''}){f', {info.samples:,} in all' if before is not None else ''} "
               f"(version {info.version}) "
               f"in {con.path}")
    if existed:
        click.echo("  the earlier version stays on disk for the plans and processes using it: `mixsql gc` removes it "
                   "once none does")
    if info.tokenizer:
        total = con.sql(f"SELECT sum(n_tokens)::BIGINT AS n FROM {ident(name)}").column("n")[0].as_py() or 0
        click.echo(f"  {total:,} tokens ({info.tokenizer['source']}, fingerprint {info.tokenizer['fingerprint']})")


@main.command()
@click.argument("name")
@click.pass_context
def drop(ctx: click.Context, name: str) -> None:
    """Remove dataset NAME from the catalog (its files are untouched)."""
    _connect(ctx).drop(name)
    click.echo(f"dropped {name} (its catalog tables stay until `mixsql gc` finds nothing using them)")


@main.command()
@click.option("--all", "all_unused", is_flag=True, help="Also remove current plans and caches no process uses.")
@click.option("--max-bytes", default=None, metavar="SIZE",
              help="Then remove the least recently used unused plans and caches until they fit (e.g. 20GB).")
@click.option("--grace", default=DEFAULT_GRACE_SECONDS, show_default=True, type=click.FloatRange(min=0), metavar="SECONDS",
              help="Keep a superseded dataset version this long after its replacement.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--keep-under", "keep_under", default=None, metavar="SIZE|off",
              help="From now on keep plans and caches under SIZE: every process that compiles a plan or builds a "
                   "cache removes the least recently used unused ones until they fit ('off': no limit).")
@click.pass_context
def gc(ctx: click.Context, all_unused: bool, max_bytes: str | None, grace: float, dry_run: bool,
       keep_under: str | None) -> None:
    """Remove what the catalog no longer needs: plans and caches of superseded dataset versions,
    superseded versions no plan was compiled from, stale binding counts, what killed processes left.
    Never anything a process uses (a plan or cache it reads, a version it binds against)."""
    con = _connect(ctx)
    if keep_under is not None:
        limit = None if keep_under.strip().lower() == "off" else _parse_size(keep_under)
        con.set_cache_limit(limit)
        click.echo("no size limit for plans and caches" if limit is None else
                   f"plans and caches are kept under {human_bytes(limit)} from now on")
        if max_bytes is None and limit is not None:
            max_bytes = keep_under
    elif con.cache_limit is not None:
        click.echo(f"plans and caches are kept under {human_bytes(con.cache_limit)} (--keep-under off to lift it)")
    collected = con.gc(all_unused=all_unused, max_bytes=None if max_bytes is None else _parse_size(max_bytes),
                                 grace_seconds=grace, dry_run=dry_run)
    words = {"removed": "would remove" if dry_run else "removed", "in use": "kept, in use:",
             "recent": f"kept, superseded less than {grace:g} s ago:"}
    lines = [f"{words[what]} {n} {kind}{'s' * (n != 1)} ({human_bytes(size)})"
             for what, kind, n, size in collected.kinds()]
    click.echo("\n".join(lines) if lines else "nothing to remove")
    if collected.removed and not dry_run:
        click.echo(f"freed {human_bytes(collected.freed_bytes)}")


def _parse_size(text: str) -> int:
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
             "GIB": 2**30, "TIB": 2**40}
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in units:
        raise click.BadParameter(f"{text!r} is not a size: a number with an optional unit (B, KB, MB, GB, TB, "
                                 f"KiB, MiB, GiB, TiB)", param_hint="--max-bytes")
    return int(float(match.group(1)) * units[match.group(2).upper()])


@main.command()
@click.pass_context
def datasets(ctx: click.Context) -> None:
    """List registered datasets."""
    con = _connect(ctx)
    click.echo(_format(con.sql("SELECT name, samples, bytes, version, registered_at FROM mixsql_datasets "
                               "ORDER BY name"), "table", None))


@main.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--max-rows", type=int, default=100, show_default=True, help="Rows shown in table format (0: all).")
@click.option("--plan", "plan_dir", type=click.Path(file_okay=False, exists=True),
              help="Also query an exported plan (`mixsql plan -o DIR`) as the views manifest and lineage.")
@click.pass_context
def sql(ctx: click.Context, query: str, fmt: str, max_rows: int, plan_dir: str | None) -> None:
    """Run read-only SQL over the catalog (one view per dataset; statements that write are refused)."""
    click.echo(_format(_connect(ctx).sql(query, plan=plan_dir), fmt, max_rows or None), nl=False)


@main.command()
@click.argument("dataset")
@click.option("--tokenizer", "tokenizer", metavar="PATH", required=True, help="A Hugging Face tokenizer.json.")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Directory for the token shards (one Parquet file per source file).")
@click.option("--column", default="token_ids", show_default=True, help="Name of the column of token ids.")
@click.option("--ray", "ray", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Write the shards (and register them) as tasks on a Ray cluster: --ray=HOST:PORT, or --ray alone "
                   "for the one RAY_ADDRESS names or a local one. OUTPUT and the catalog must be on a filesystem "
                   "every node sees.")
@click.pass_context
def tokenize(ctx: click.Context, dataset: str, tokenizer: str, output: str, column: str, ray: str | None) -> None:
    """Write DATASET's token ids once into OUTPUT and register it again from them.

    The shards hold the records and their ids, one row group per block of the source, so every
    statement gives the same stream as before; packed runs then read ids and never tokenize.
    """
    con = _connect(ctx)
    with _bar(ctx, f"tokenizing {dataset}") as progress:
        info = con.tokenize(dataset, tokenizer, output, column=column, progress=progress, ray=ray)
    total = con.sql(f"SELECT sum(n_tokens)::BIGINT AS n FROM {ident(dataset)}").column("n")[0].as_py() or 0
    click.echo(f"tokenized {dataset}: {total:,} tokens of {info.samples:,} samples in {output}; the dataset now reads "
               f"its token ids from column {column!r} (version {info.version})")


@main.group()
def optimize() -> None:
    """Offline mixture optimisers: weights from proxy runs, written as a .mixsql statement."""


def _dataset_version(ctx: click.Context) -> t.Callable[[str], str | None]:
    con = _connect(ctx)
    present = set(con.datasets())
    return lambda name: con.dataset(name).version if name in present else None


def _optimized(ctx: click.Context, statement: str, weights: dict[str, float], output: str, adapt: bool,
               note: str, unit: str | None = None) -> None:
    """Write STATEMENT with ``weights`` (shares of ``unit``) to OUTPUT, once the result binds in the catalog."""
    from mixsql.optimize import with_weights, write_statement

    text = with_weights(Path(statement).read_text(encoding="utf-8"), weights, adapt=adapt, note=note, unit=unit)
    _connect(ctx).mix(text, check=False)  # binds: a statement that does not is not written
    write_statement(output, text)
    click.echo(f"wrote {output}: " + ", ".join(f"{k} {v:.4f}" for k, v in weights.items())
               + ("; ADAPT USING ado() starts from them" if adapt else ""))


@optimize.command("mixmin")
@click.argument("statement", type=click.Path(dir_okay=False, exists=True))
@click.option("--predictions", required=True, type=click.Path(dir_okay=False),
              help="Per-example log-probabilities of each component's proxy on the target set (.npz, .parquet, .csv).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .mixsql to write.")
@click.option("--steps", type=int, default=100, show_default=True, help="Most exponentiated-gradient steps.")
@click.option("--eta", type=float, default=1.0, show_default=True, help="Step size.")
@click.option("--adapt", is_flag=True, help="Add ADAPT USING ado(): the weights become ADO's prior and start.")
@click.pass_context
def optimize_mixmin(ctx: click.Context, statement: str, predictions: str, output: str, steps: int, eta: float,
                    adapt: bool) -> None:
    """MixMin: the mixture of STATEMENT's components minimising the target set's loss (convex)."""
    from mixsql.mixing.mixmin import mixmin
    from mixsql.optimize import check_versions, read_predictions
    from mixsql.parse import parse

    components = [c.name for c in parse(Path(statement).read_text(encoding="utf-8")).components]
    listing = Path(predictions).with_name("runs.json")
    if listing.is_file():  # written by the sweep: its runs must be of the data in the catalog now
        check_versions(json.loads(listing.read_text(encoding="utf-8")), _dataset_version(ctx))
    logprobs, lengths = read_predictions(predictions, components)
    result = mixmin(logprobs, lengths, eta=eta, max_steps=steps)
    click.echo(f"MixMin: loss {result.loss_before:.6f} (uniform) -> {result.loss_after:.6f} in {result.steps} steps"
               + ("" if result.converged else " (stopped at --steps before the optimality test passed)"))
    _optimized(ctx, statement, dict(zip(components, result.weights)), output, adapt,
               f"weights from MixMin on {Path(predictions).name}: loss {result.loss_before:.6f} -> "
               f"{result.loss_after:.6f} (shares of documents, as the reference samples them)", unit="samples")


@optimize.command("plan-autoscale")
@click.argument("statement", type=click.Path(dir_okay=False, exists=True))
@click.option("--budgets", required=True, help="Comma-separated budgets of the proxy runs, e.g. 3000,12000.")
@click.option("--unit", type=click.Choice(["samples", "tokens"]), default="samples", show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Directory for the runs.")
def optimize_plan_autoscale(statement: str, budgets: str, unit: str, output: str) -> None:
    """Write AutoScale's 2K+1 proxy-run statements at each budget, and runs.json to fill with their metrics."""
    from mixsql.optimize import write_ddo_plan

    try:
        values = [int(b) for b in budgets.split(",")]
    except ValueError:
        raise click.BadParameter(f"{budgets!r} is not a comma-separated list of integers", param_hint="--budgets")
    listing = write_ddo_plan(Path(statement).read_text(encoding="utf-8"), values, output, unit.upper())
    click.echo(f"wrote {len(json.loads(listing.read_text()))} proxy-run statements and {listing}: train each, put its "
               "validation loss in 'metric', then run `mixsql optimize autoscale --results` on it")


@optimize.command("plan-mixmin")
@click.argument("statement", type=click.Path(dir_okay=False, exists=True))
@click.option("--budget", required=True, type=int, help="Each proxy run's budget.")
@click.option("--unit", type=click.Choice(["samples", "tokens"]), default="samples", show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Directory for the runs.")
def optimize_plan_mixmin(statement: str, budget: int, unit: str, output: str) -> None:
    """Write MixMin's proxy-run statements (each component alone) and runs.json for the sweep."""
    from mixsql.optimize import write_mixmin_plan

    listing = write_mixmin_plan(Path(statement).read_text(encoding="utf-8"), budget, output, unit.upper())
    click.echo(f"wrote {len(json.loads(listing.read_text()))} proxy-run statements and {listing}: the sweep "
               "(examples/sweep.py) writes predictions.npz for `mixsql optimize mixmin --predictions`")


@optimize.command("autoscale")
@click.argument("statement", type=click.Path(dir_okay=False, exists=True))
@click.option("--results", required=True, type=click.Path(dir_okay=False),
              help="The proxy runs: budget, metric and each component's relative quantity (.csv or .json).")
@click.option("--budget", required=True, type=float, help="The budget to find the composition for.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .mixsql to write.")
@click.option("--adapt", is_flag=True, help="Add ADAPT USING ado(): the weights become ADO's prior and start.")
@click.pass_context
def optimize_autoscale(ctx: click.Context, statement: str, results: str, budget: float, output: str,
                       adapt: bool) -> None:
    """AutoScale: DDO at each budget of the runs, projected to --budget."""
    from mixsql.optimize import autoscale_weights, check_versions, read_runs
    from mixsql.parse import parse

    components = [c.name for c in parse(Path(statement).read_text(encoding="utf-8")).components]
    runs = read_runs(results, components)
    check_versions(runs, _dataset_version(ctx))
    weights, report = autoscale_weights(runs, components, budget)
    for b, r in report["budgets"].items():
        worst = max(f["residual"] for f in r["fits"])
        click.echo(f"budget {b:g}: DDO quantities " + ", ".join(f"{c} {q:,.4g}" for c, q in zip(components,
                                                                                              r["quantities"]))
                   + f" (largest fit residual {worst:.2g})")
    if report["projection"]:
        click.echo(f"projected to {budget:g} (s = {report['projection']['s']:.4f})")
    unit = runs[0].get("unit", "samples")
    _optimized(ctx, statement, dict(zip(components, weights.tolist())), output, adapt,
               f"weights from AutoScale on {Path(results).name}, for a budget of {budget:g} {unit}", unit=unit)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Also draw the schedule and the realised shares into this PNG file.")
@_packing
@_overrides
@click.pass_context
def explain(ctx: click.Context, file: str, as_json: bool, plot_path: str | None, seq_len: int | None,
            eos: str | None, bos: str | None, pack: str, **opts: t.Any) -> None:
    """Show what the mixture in FILE will do: counts, shares, stream length, overlaps, compiled SQL.
    With --seq-len, also the packed stream: sequences, and the tokens dropped (compiles the plan)."""
    mix = _load(ctx, file, {**opts, "check": False})
    e = mix.explanation()
    if e.spec.error is not None:
        click.echo(json.dumps(e.to_dict(), indent=2) if as_json else str(e))
        raise e.spec.error
    summary = None if seq_len is None else _planned(ctx, mix).packed(
        seq_len, eos=_token(eos), bos=_token(bos), pack=pack).summary()
    if as_json:
        click.echo(json.dumps({**e.to_dict(), **({"packing": summary} if summary else {})}, indent=2))
    else:
        from mixsql.explain import render_packing

        click.echo(str(e) + (render_packing(summary, e.components) if summary else ""))
    if plot_path:
        from mixsql.plot import plot

        plot(mix, plot_path)
        click.echo(f"plotted the schedule and the realised shares into {plot_path}", err=True)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Directory for the compiled plan and manifest.parquet.")
@click.option("--tables/--no-tables", default=True,
              help="Also write manifest.parquet and lineage.parquet (a row per sample or row range of the "
                   "whole stream) [default: yes].")
@_overrides
@click.pass_context
def plan(ctx: click.Context, file: str, output: str, tables: bool, **opts: t.Any) -> None:
    """Compile FILE into a chunk manifest in OUTPUT (Parquet, one row per chunk-file-range).

    Hand OUTPUT to every rank: they memory-map it and never touch the catalog's lock-free tables
    again. Inspect it with SQL: mixsql sql --plan OUTPUT "SELECT * FROM manifest" (or lineage, one
    row per sample in plan order).
    """
    mix = _planned(ctx, _load(ctx, file, opts))
    manifest = mix.write_plan(output, tables=tables)
    where = f"{mix.partitions} partition{'s' * (mix.partitions != 1)} of {mix.chunk_size:,}-sample chunks"
    if manifest is None:
        click.echo(f"planned {len(mix):,} samples in {where}: the plan in {output} (no manifest or lineage tables)")
        return
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(manifest).metadata.num_rows
    click.echo(f"planned {len(mix):,} samples in {where}: {rows:,} manifest rows in {manifest}")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--columns", default=None, help="Comma-separated fields to copy [default: the datasets' content].")
@click.option("-o", "--output", "output", default=None, type=click.Path(file_okay=False),
              help="Directory for the cache [default: the catalog's caches/].")
@click.option("--compression", type=click.Choice(["none", "lz4", "zstd"]), default="none", show_default=True,
              help="Of the shards: none is read in place (memory-mapped, fastest); lz4 or zstd take less disk "
                   "and a decompression per block read.")
@_overrides
@click.pass_context
def cache(ctx: click.Context, file: str, columns: str | None, output: str | None, compression: str,
          **opts: t.Any) -> None:
    """Copy the samples FILE's components select (only COLUMNS) to local shards, once: a compacted
    cache that runs over the same components read instead of the sources, whatever their weights,
    schedule or seed (API: mix.cache())."""
    mix = _load(ctx, file, opts)
    fields = [c.strip() for c in columns.split(",") if c.strip()] if columns is not None else None
    started = time.perf_counter()
    with _bar(ctx, "caching") as progress:
        found = mix.cache(fields, directory=output, progress=progress,
                          compression=None if compression == "none" else compression)
    click.echo(f"cached {found.meta['samples']:,} samples ({', '.join(found.columns)}) of "
               f"{len(found.files)} file{'s' * (len(found.files) != 1)}: {found.bytes / 1e6:,.1f} MB in "
               f"{found.directory} ({time.perf_counter() - started:.1f} s)")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--step", type=int, required=True, help="The global batch (optimizer step), from 0.")
@click.option("--batch-size", type=int, required=True, help="The GLOBAL batch size (world size x per-rank batch).")
@click.option("--columns", help="Comma-separated properties to add from the catalog.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--log", "log_file", type=click.Path(dir_okay=False, exists=True),
              help="An adaptive run's state (a JSON of dataset.state_dict(), or a torch checkpoint holding it): "
                   "replay its weight log.")
@_packing
@_overrides
@click.pass_context
def lineage(ctx: click.Context, file: str, step: int, batch_size: int, columns: str | None, fmt: str,
            log_file: str | None, seq_len: int | None, eos: str | None, bos: str | None, pack: str,
            **opts: t.Any) -> None:
    """Which samples made up global batch STEP of the run: dataset, file, row, component (and properties).

    Computed directly from the plan, without streaming the run up to STEP. With --seq-len, the batch
    is of packed sequences: one row per piece of a document, with the token range it holds. For an
    adaptive mixture (ADAPT), --log replays the run's weight log: no optimiser runs.
    """
    mix = _planned(ctx, _load(ctx, file, opts))
    fields = [c.strip() for c in columns.split(",")] if columns else None
    log = _saved_state(log_file) if log_file else None
    if seq_len is not None:
        table = mix.lineage(step, batch_size, fields, seq_len=seq_len, eos=_token(eos), bos=_token(bos), pack=pack,
                            log=log)
    else:
        table = mix.lineage(step, batch_size, fields, log=log)
    click.echo(_format(table, fmt, None), nl=False)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-n", "limit", type=int, default=10, show_default=True, help="Number of samples.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--full", is_flag=True, help="Do not truncate long text.")
@click.option("--columns", help="Comma-separated fields to show (default: all).")
@_packing
@_overrides
@click.pass_context
def head(ctx: click.Context, file: str, limit: int, as_json: bool, full: bool, columns: str | None,
         seq_len: int | None, eos: str | None, bos: str | None, pack: str, **opts: t.Any) -> None:
    """Print the first samples of the mixture in FILE, in stream order (with --seq-len, the first
    packed sequences, decoded)."""
    mix = _planned(ctx, _load(ctx, file, opts))
    if seq_len is not None:
        _head_sequences(mix, limit, seq_len, _token(eos), _token(bos), pack, as_json, full)
        return
    fields = [c.strip() for c in columns.split(",")] if columns else None
    for i, sample in enumerate(mix.samples(limit=limit, columns=fields)):
        if not full:
            sample = {k: _short(v) for k, v in sample.items()}
        if as_json:
            click.echo(json.dumps(sample, ensure_ascii=False, default=json_value))
        else:
            component = sample.pop("component")
            text = sample.pop("text", None)
            props = "  ".join(f"{k}={cell(v)}" for k, v in sample.items())
            click.echo(f"[{i}] {component}  {props}")
            if text is not None:
                click.echo("    " + str(text).replace("\n", "\n    "))


def _head_sequences(mix: t.Any, limit: int, seq_len: int, eos: str | int | None, bos: str | int | None,
                    pack: str, as_json: bool, full: bool) -> None:
    packed = mix.packed(seq_len, eos=eos, bos=bos, pack=pack)
    decode = packed.tokenizer.tokenizer.decode
    for i, seq in enumerate(mix.sequences(seq_len, limit=limit, tokenizer=packed.tokenizer, eos=eos, bos=bos, pack=pack)):
        if as_json:
            click.echo(json.dumps({k: v.tolist() for k, v in seq.items()}))
            continue
        ids, comps = seq["component_ids"], mix.components
        share = "  ".join(f"{comps[c]}={int((ids == c).sum())}" for c in sorted(set(ids.tolist())))
        click.echo(f"[{i}] {int(seq['document_ids'][-1]) + 1} document(s)  tokens: {share}")
        text = decode(seq["input_ids"].tolist(), skip_special_tokens=False)
        click.echo("    " + str(text if full else _short(text)).replace("\n", "\n    "))


def _short(value: t.Any, limit: int = 200) -> t.Any:
    return shorten(value, limit, say_how_much=True)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
def fmt(file: str) -> None:
    """Print the statement in FILE in canonical form (parses back to the same tree)."""
    from mixsql.parse import parse, to_sql

    with open(file, encoding="utf-8") as fh:
        click.echo(to_sql(parse(fh.read(), path=file)))  # errors: rendered by the group, status 2


@main.command()
@click.argument("dataset")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def stats(ctx: click.Context, dataset: str, as_json: bool) -> None:
    """Per property of DATASET: counts, nulls, distinct values, quantiles or frequent values; and its
    samples, bytes (and tokens) broken down by each main categorical property."""
    from mixsql.stats import stats as compute

    result = compute(_connect(ctx), dataset)
    click.echo(json.dumps(result.to_dict(), indent=2, default=str) if as_json else str(result))


@main.command()
@click.option("-c", "command", help="Run these statements and meta-commands, then exit.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--history", type=click.Path(dir_okay=False), help="History file (default ~/.mixsql_history, "
              "or $MIXSQL_HISTORY).")
@click.pass_context
def shell(ctx: click.Context, command: str | None, fmt: str, history: str | None) -> None:
    """The interactive SQL shell: explore the catalog, try mixtures (.help inside).

    With -c, or with statements on standard input (mixsql shell < script.sql), it runs them
    without a terminal, prints plain output and exits with status 2 at the first error.
    """
    from pathlib import Path

    from mixsql import shell as _shell

    session = _shell.Session(_connect(ctx, create=True), fmt=fmt, quiet=ctx.obj["quiet"])
    if command is not None:
        ctx.exit(_shell.run_script(session, command))
    if not sys.stdin.isatty():
        ctx.exit(_shell.run_script(session, sys.stdin.read()))
    ctx.exit(_shell.interactive(session, Path(history) if history else _shell.default_history()))


if __name__ == "__main__":  # pragma: no cover
    main()
