"""The interactive shell (``mixsql shell``): SQL over the catalog and MIX statements, with meta-commands.

One ``Session`` runs statements whatever the front end: the prompt_toolkit terminal (multi-line
input ending with ``;``, history, completion, highlighting, rich tables, Ctrl-C cancelling the
running statement) or a script (``mixsql shell < file``, ``-c "..."``: plain output, the first
error ends it with a non-zero status).

Statements:  plain read-only SQL · ``MIX ...`` and ``EXPLAIN MIX ...`` (shown as EXPLAIN) ·
``HEAD n MIX ...`` (the first n samples). Meta-commands start with a dot (``.help``).
"""

from __future__ import annotations

from mixsql.shell.session import Cancelled, Result, Session, run_script
from mixsql.shell.split import split
from mixsql.shell.terminal import default_history, interactive

__all__ = ["Cancelled", "Result", "Session", "default_history", "interactive", "run_script", "split"]
