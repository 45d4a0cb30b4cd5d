"""The terminal front end (prompt_toolkit and rich): multi-line input, history, completion,
highlighting, tables, Ctrl-C cancelling the running statement."""

from __future__ import annotations

import os
import signal
import typing as t
from pathlib import Path

import pyarrow as pa

from mixsql.errors import MixSQLError
from mixsql.output import cell
from mixsql.shell.session import MAX_ROWS, Cancelled, Result, Session, _Read, run_script
from mixsql.shell.split import split


def interactive(session: Session, history: Path) -> int:  # pragma: no cover - driven through a pty in tests
    """The terminal front end."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import Completer, Completion
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.lexers import PygmentsLexer
    from pygments.lexers.sql import SqlLexer
    from rich.console import Console

    console = Console(highlight=False)

    class Words(Completer):
        def get_completions(self, document: t.Any, complete_event: t.Any) -> t.Iterator[Completion]:
            word = document.get_word_before_cursor(WORD=True).lstrip("(,")
            if not word:
                return
            for candidate in session.words():
                if candidate.lower().startswith(word.lower()) and candidate != word:
                    yield Completion(candidate, start_position=-len(word))

    keys = KeyBindings()

    @keys.add("enter")
    def _(event: t.Any) -> None:
        buffer = event.current_buffer
        done, rest = split(buffer.text)
        if done and not rest.strip():
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n")

    history.parent.mkdir(parents=True, exist_ok=True)
    prompt = PromptSession(history=FileHistory(str(history)), completer=Words(), lexer=PygmentsLexer(SqlLexer),
                           key_bindings=keys, multiline=True, complete_while_typing=False,
                           prompt_continuation=lambda width, line, wrap: "   ...> ".rjust(width))
    console.print("mixsql shell: statements end with ';'. .help for commands, Ctrl-D to leave.")
    while True:
        try:
            text = prompt.prompt("mixsql> ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            return 0
        statements, _ = split(text)
        for statement in statements:
            try:
                result = _cancellable(session, statement)
            except _Read as r:
                try:
                    run_script(session, Path(r.path).read_text(encoding="utf-8"))
                except OSError as e:
                    console.print(f"[red]cannot read {r.path}: {e.strerror or e}[/red]")
                continue
            except EOFError:
                return 0
            except Cancelled:
                console.print("[yellow]cancelled[/yellow]")
                continue
            except MixSQLError as e:
                console.print(e.render(color=True), markup=False, highlight=False)
                continue
            _show(console, session, result)


def _cancellable(session: Session, statement: str) -> Result:  # pragma: no cover - see interactive
    """Run a statement; Ctrl-C interrupts DuckDB (or the Python loop) and raises ``Cancelled``."""
    catalog = session.con.catalog

    def interrupt(signum: int, frame: t.Any) -> None:
        catalog.interrupt()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        return session.run(statement)
    except KeyboardInterrupt:
        raise Cancelled from None
    except RuntimeError as e:  # DuckDB's "Query interrupted"
        if "interrupt" in str(e).lower():
            raise Cancelled from None
        raise
    except MixSQLError as e:
        if "INTERRUPT" in e.message.upper():
            raise Cancelled from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)


def _show(console: t.Any, session: Session, result: Result) -> None:  # pragma: no cover - see interactive
    from rich.table import Table

    if result.table is not None and session.fmt == "table":
        table = Table(show_lines=False, header_style="bold")
        for field in result.table.schema:
            kind = field.type
            numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
            table.add_column(field.name, justify="right" if numeric else "left", overflow="ellipsis", max_width=60)
        rows = result.table.to_pylist()
        for r in rows[:MAX_ROWS]:
            table.add_row(*[cell(v, 60) for v in r.values()])
        console.print(table)
        note = f"{len(rows):,} row{'s' * (len(rows) != 1)}"
        if len(rows) > MAX_ROWS:
            note += f", first {MAX_ROWS} shown (add LIMIT/OFFSET, or .format csv for all)"
    else:
        if result.table is not None:
            console.print(session.plain(result), end="", markup=False, highlight=False)
        elif result.text:
            console.print(result.text, markup=False, highlight=False)
        note = ""
    if session.timer:
        note = f"{note}, {result.seconds:.3f} s" if note else f"{result.seconds:.3f} s"
    if note:
        console.print(f"[dim]({note})[/dim]")


def default_history() -> Path:
    return Path(os.environ.get("MIXSQL_HISTORY", Path.home() / ".mixsql_history"))
