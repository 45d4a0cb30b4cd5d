"""Progress bars for work that takes a while (registration, planning): on a terminal only, and only
once the work has run longer than a second (``MIXSQL_PROGRESS_AFTER`` seconds); never in a pipe.

The library reports progress through a plain callback ``(done, total, what)``; only the command
line and the shell turn it into a bar.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import typing as t

Callback = t.Callable[[int, int, str], None]


@contextlib.contextmanager
def bar(description: str, *, enabled: bool | None = None, stream: t.Any = None) -> t.Iterator[Callback]:
    """A progress callback drawing a rich bar on ``stream`` (stderr) once the work outlasts the delay."""
    stream = stream if stream is not None else sys.stderr
    if enabled is None:
        enabled = stream.isatty()
    delay = float(os.environ.get("MIXSQL_PROGRESS_AFTER", "1"))
    began = time.monotonic()
    state: dict[str, t.Any] = {}

    def update(done: int, total: int, what: str) -> None:
        if not enabled:
            return
        if "progress" not in state:
            if time.monotonic() - began < delay:
                return
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[what]}"),
                                console=Console(file=stream, force_terminal=True), transient=False)
            progress.start()
            state["progress"], state["task"] = progress, progress.add_task(description, total=total, what="")
        state["progress"].update(state["task"], completed=done, total=total, what=what[-60:])

    try:
        yield update
    finally:
        if "progress" in state:
            state["progress"].stop()
