"""What every part of the binder shares: the statement, its text, the engine, and positioned errors."""

from __future__ import annotations

import typing as t

from sqlglot import expressions as exp

from mixsql.errors import BindError, position
from mixsql.parse import span

if t.TYPE_CHECKING:
    from mixsql.catalog import Catalog
    from mixsql.catalog.engine import Engine
    from mixsql.parse import MixStatement


class _Base:
    mix: "MixStatement"
    catalog: "Catalog"
    engine: "Engine"
    text: str
    path: str | None
    con: t.Any
    _schemas: dict[str, dict[str, str]]
    _wheres: list[tuple[exp.Expr, str, str]]

    def error(self, message: str, node: exp.Expr | None, hint: str | None = None) -> BindError:
        where = span(node)
        if where is None:
            return BindError(message, hint=hint, source=self.text, path=self.path)
        line, col = position(self.text, where[0])
        return BindError(message, hint=hint, line=line, col=col, length=where[1] - where[0], source=self.text,
                         path=self.path)
