"""The error hierarchy: every user mistake is a ``MixSQLError`` that says what, where and what to do.

Statement errors carry ``line`` and ``col`` (1-based, pointing at the first character of the
offending token) and the ``source`` text so that the CLI can draw a caret; data errors carry the
file and row. ``render()`` gives the ``FILE:LINE:COL: error: message`` form used by the CLI.
"""

from __future__ import annotations

import typing as t


class MixSQLError(Exception):
    """Root of all mixsql errors.

    Attributes:
        message: what is wrong, in one sentence.
        hint: what to do about it, or None.
        line, col: 1-based position in ``source`` (None when the error has no position).
        length: how many characters the caret underlines.
        source: the statement text the position refers to.
        path: the file the statement came from, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        line: int | None = None,
        col: int | None = None,
        length: int = 1,
        source: str | None = None,
        path: str | None = None,
    ) -> None:
        self.message = message
        self.hint = hint
        self.line = line
        self.col = col
        self.length = max(1, length)
        self.source = source
        self.path = path
        super().__init__(self._plain())

    def _plain(self) -> str:
        where = f" (line {self.line}, col {self.col})" if self.line is not None else ""
        hint = f"; {self.hint}" if self.hint else ""
        return f"{self.message}{where}{hint}"

    def with_source(self, source: str | None, path: str | None = None) -> "MixSQLError":
        """Attach the statement text (and file) this error's position refers to."""
        if self.source is None:
            self.source = source
        if self.path is None:
            self.path = path
        return self

    def render(self, color: bool = False) -> str:
        """``FILE:LINE:COL: error: message``, the source line and a caret under the position."""
        red, bold, reset = ("\x1b[31m", "\x1b[1m", "\x1b[0m") if color else ("", "", "")
        where = self.path or ("<statement>" if self.line is not None else "")
        if self.line is not None:
            where += f":{self.line}:{self.col}"
        prefix = f"{where}: " if where else "mixsql: "  # not in a statement: no position to give
        out = [f"{bold}{prefix}{red}error:{reset}{bold} {self.message}{reset}"]
        if self.line is not None and self.source is not None:
            lines = self.source.splitlines() or [""]
            if 1 <= self.line <= len(lines):
                text = lines[self.line - 1].expandtabs(1)
                col = max(1, self.col or 1)
                length = max(1, min(self.length, len(text) - col + 1))
                out.append(f"  {text}")
                out.append(f"  {' ' * (col - 1)}{red}^{'~' * (length - 1)}{reset}")
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)


class MixParseError(MixSQLError, ValueError):
    """The statement is not valid MIX syntax (or holds something other than expressions)."""


class BindError(MixSQLError, ValueError):
    """The statement parses but does not fit the catalog: unknown dataset or column, bad type, ..."""


class CatalogError(MixSQLError):
    """Registration or catalog access failed; the catalog is left as it was."""


class DataError(MixSQLError):
    """A data file is missing, changed or holds a record that cannot be read (names file and row)."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None, **kw: t.Any) -> None:
        self.file = file
        self.row = row
        super().__init__(message, **kw)


class PlanError(MixSQLError):
    """The mixture cannot be planned as written (e.g. a weight too small for the chunk size)."""


def position(source: str, offset: int) -> tuple[int, int]:
    """1-based (line, col) of a 0-based character offset in ``source``."""
    offset = max(0, min(offset, len(source)))
    line = source.count("\n", 0, offset) + 1
    col = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, col
