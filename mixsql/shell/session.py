"""The shell's session: statements and meta-commands, whatever the front end."""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
import time
import typing as t
from pathlib import Path

import pyarrow as pa

from mixsql.api import Connection, Mix, parse_param
from mixsql.catalog.duck import ident
from mixsql.errors import MixSQLError
from mixsql.parse import is_mix
from mixsql.output import cell, format_table, shorten
from mixsql.progress import bar
from mixsql.shell.split import split


HELP = """\
Statements end with ';' and may span lines.
  SELECT ... ;                    read-only SQL over the catalog (one view per dataset)
  MIX ... ;  EXPLAIN MIX ... ;    what a mixture does (its EXPLAIN)
  HEAD n MIX ... ;                its first n samples
Meta-commands (one line, no ';'):
  .datasets                       registered datasets
  .describe NAME                  a dataset's properties: types and example values
  .register NAME PATH...          index files as dataset NAME
  .load FILE [NAME=VALUE ...]     a .mixsql file's EXPLAIN; its components complete from then on
  .read FILE                      run a script of statements and meta-commands
  .format table|json|csv          how results print
  .timer on|off                   show how long each statement took
  .help                           this text
  .quit                           leave (or Ctrl-D); Ctrl-C cancels a running statement"""


META = (".datasets", ".describe", ".register", ".load", ".read", ".format", ".timer", ".help", ".quit", ".exit")


KEYWORDS = """SELECT FROM WHERE GROUP BY ORDER HAVING LIMIT JOIN LEFT RIGHT INNER OUTER ON AS AND OR NOT IN IS NULL
LIKE ILIKE BETWEEN CASE WHEN THEN ELSE END DISTINCT COUNT SUM AVG MIN MAX DESCRIBE SUMMARIZE EXPLAIN WITH UNION ALL
MIX HEAD SEED CHUNK SIZE PARTITIONS CURRICULUM STAGE RAMP UNTIL SAMPLES STEPS BUCKETS NATURAL TEMPERATURE BYTES
MAX EPOCHS BATCH EXHAUSTION STOP REDISTRIBUTE REPEAT OVERLAP FIRST ERROR ASC DESC TRUE FALSE""".split()


MAX_ROWS = 40


class Cancelled(Exception):
    """The user pressed Ctrl-C while a statement ran."""


@dataclasses.dataclass
class Result:
    """What a statement gives: a table, text, or nothing; and how long it took."""

    table: pa.Table | None = None
    text: str | None = None
    seconds: float = 0.0


class Session:
    """The shell's state and statement runner, independent of the terminal."""

    def __init__(self, con: Connection, *, fmt: str = "table", quiet: bool = False) -> None:
        self.con = con
        self.fmt = fmt
        self.quiet = quiet
        self.timer = True
        self.mix: Mix | None = None  # the last MIX statement: its component names complete
        self._catalog_words: tuple[str | None, list[str]] = (None, [])

    # -- statements ---------------------------------------------------------------------------------

    def run(self, statement: str) -> Result:
        """Run one statement or meta-command (without its final ';')."""
        began = time.perf_counter()
        text = statement.strip()
        if text.startswith("."):
            result = self._meta(text)
        else:
            result = self._statement(text)
        result.seconds = time.perf_counter() - began
        return result

    def _statement(self, text: str) -> Result:
        head = re.match(r"(?is)^\s*head\b\s*(\S*)\s*(.*)$", text)
        if head:
            if not head.group(1).isdigit():
                raise MixSQLError("HEAD takes a number of samples, then a MIX statement: HEAD 10 MIX ...;")
            return self._head(int(head.group(1)), head.group(2))
        explain = re.match(r"(?is)^\s*explain\s+((?:mix|with)\b.*)$", text)
        if explain and is_mix(explain.group(1)):
            return Result(text=self._mix(explain.group(1)).explain())
        if is_mix(text):
            return Result(text=self._mix(text).explain())
        return Result(table=self.con.sql(text))

    def _mix(self, text: str, params: dict[str, t.Any] | None = None, path: str | None = None) -> Mix:
        mix = self.con.mix(text, params=params, path=path, check=False)
        self.mix = mix
        return mix

    def _head(self, n: int, text: str) -> Result:
        if not is_mix(text):
            raise MixSQLError("HEAD takes a MIX statement: HEAD 10 MIX ...;")
        mix = self._mix(text)
        with bar("planning", enabled=False if self.quiet else None) as progress:
            mix.plan(progress)
        rows = list(mix.samples(limit=n))
        if not rows:
            return Result(table=pa.table({"component": pa.array([], pa.string())}))
        names = list(dict.fromkeys(["component"] + [k for r in rows for k in r]))
        return Result(table=pa.table({k: pa.array([_short(r.get(k)) for r in rows]) for k in names}))

    # -- meta-commands ---------------------------------------------------------------------------------

    def _meta(self, text: str) -> Result:
        try:
            words = shlex.split(text)
        except ValueError as e:
            raise MixSQLError(f"cannot read the command: {e}") from None
        command, args = words[0].lower(), words[1:]
        if command in (".quit", ".exit"):
            raise EOFError
        if command == ".help":
            return Result(text=HELP)
        if command == ".datasets":
            return Result(table=self.con.sql("SELECT name, samples, bytes, version, registered_at FROM mixsql_datasets "
                                             "ORDER BY name"))
        if command == ".describe":
            return Result(table=self._describe(_one(args, ".describe NAME")))
        if command == ".register":
            if len(args) < 2:
                raise MixSQLError("usage: .register NAME PATH...")
            with bar(f"registering {args[0]}", enabled=False if self.quiet else None) as progress:
                info = self.con.register(args[0], args[1:], progress=progress)
            return Result(text=f"registered {info.name}: {info.samples:,} samples from {len(info.files()):,} files "
                               f"(version {info.version})")
        if command == ".load":
            if not args:
                raise MixSQLError("usage: .load FILE [NAME=VALUE ...]")
            params = dict(parse_param(a) for a in args[1:])
            path = args[0]
            try:
                source = Path(path).read_text(encoding="utf-8")
            except OSError as e:
                raise MixSQLError(f"cannot read {path}: {e.strerror or e}") from None
            return Result(text=self._mix(source, params=params, path=path).explain())
        if command == ".read":
            raise _Read(_one(args, ".read FILE"))
        if command == ".format":
            choice = _one(args, ".format table|json|csv")
            if choice not in ("table", "json", "csv"):
                raise MixSQLError(f"unknown format {choice!r}", hint="table, json or csv")
            self.fmt = choice
            return Result(text=f"results print as {choice}")
        if command == ".timer":
            choice = _one(args, ".timer on|off")
            if choice not in ("on", "off"):
                raise MixSQLError("usage: .timer on|off")
            self.timer = choice == "on"
            return Result()
        raise MixSQLError(f"unknown command {command}", hint="type .help for the list")

    def _describe(self, name: str) -> pa.Table:
        known = self.con.datasets()
        if name not in known:
            raise MixSQLError(f"unknown dataset {name!r}", hint=f"datasets: {', '.join(known) or 'none yet'}")
        columns = self.con.sql(f"DESCRIBE {ident(name)}").to_pylist()
        out: dict[str, list[t.Any]] = {"property": [], "type": [], "examples": []}
        for c in columns:
            column = ident(c["column_name"])
            examples = self.con.sql(f"SELECT DISTINCT {column} AS v FROM (SELECT {column} FROM {ident(name)} "
                                    f"WHERE {column} IS NOT NULL LIMIT 1000) LIMIT 3").column("v").to_pylist()
            out["property"].append(c["column_name"])
            out["type"].append(c["column_type"])
            out["examples"].append(", ".join(cell(v, 40) for v in examples))
        return pa.table(out)

    # -- completion ----------------------------------------------------------------------------------------

    def words(self) -> list[str]:
        """What completion offers: datasets, their columns, the last mixture's components, keywords, meta-commands.
        Datasets and columns are looked up once per catalog version, not at every Tab."""
        version = self.con.catalog.version
        if self._catalog_words[0] != version:
            found = list(self.con.datasets())
            for name in found[:]:
                try:
                    found += [r["column_name"] for r in self.con.sql(f"DESCRIBE {ident(name)}").to_pylist()]
                except MixSQLError:
                    pass
            self._catalog_words = (version, found)
        out = list(self._catalog_words[1])
        if self.mix is not None:
            out += self.mix.components
        return list(dict.fromkeys(out + KEYWORDS + list(META)))

    # -- rendering -----------------------------------------------------------------------------------------

    def plain(self, result: Result) -> str:
        """A result as plain text (scripts and pipes)."""
        if result.table is not None:
            return format_table(result.table, self.fmt, None)
        return (result.text + "\n") if result.text else ""


class _Read(Exception):
    def __init__(self, path: str) -> None:
        self.path = path


def _one(args: list[str], usage: str) -> str:
    if len(args) != 1:
        raise MixSQLError(f"usage: {usage}")
    return args[0]


def _short(value: t.Any, limit: int = 120) -> t.Any:
    return shorten(value, limit)


def run_script(session: Session, text: str, out: t.TextIO = sys.stdout, err: t.TextIO = sys.stderr,
               depth: int = 0) -> int:
    """Run every statement of ``text``; plain output; stop at the first error (status 2)."""
    statements, rest = split(text)
    if rest.strip():
        statements.append(rest.strip())  # a last statement without ';' still runs
    for statement in statements:
        try:
            out.write(session.plain(session.run(statement)))
            out.flush()
        except _Read as r:
            try:
                nested = Path(r.path).read_text(encoding="utf-8")
            except OSError as e:
                err.write(f"error: cannot read {r.path}: {e.strerror or e}\n")
                return 2
            if depth > 16:
                err.write("error: .read nests too deeply\n")
                return 2
            status = run_script(session, nested, out, err, depth + 1)
            if status:
                return status
        except EOFError:
            return 0
        except MixSQLError as e:
            err.write(e.render() + "\n")
            return 2
    return 0
