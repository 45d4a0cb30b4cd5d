"""mixsql: declare pre-training data mixtures in SQL; get exact, reproducible streams.

Stages, each a module: ``parse`` → ``bind`` → ``plan`` → ``manifest`` (compile) → plan files
(``planfile``) → ``read`` → torch (``dataset``), with ``catalog`` for registration, ``state`` for
resume, and ``shell``/``cli`` in front. ``connect`` is the entry point.

Names resolve lazily, so a DataLoader worker that imports ``mixsql.dataset`` loads the runtime
only: never sqlglot, DuckDB or the compile stages.
"""

from __future__ import annotations

import importlib
import typing as t

__version__ = "0.1.0"

_WHERE = {
    "BindError": "mixsql.errors", "CatalogError": "mixsql.errors", "DataError": "mixsql.errors",
    "MixParseError": "mixsql.errors", "MixSQLError": "mixsql.errors", "PlanError": "mixsql.errors",
    "StateError": "mixsql.state", "Catalog": "mixsql.catalog", "DatasetInfo": "mixsql.catalog",
    "CompiledPlan": "mixsql.planfile", "Connection": "mixsql.api", "Mix": "mixsql.api", "connect": "mixsql.api",
    "parse": "mixsql.parse", "collate": "mixsql.read", "batch_as_is": "mixsql.dataset", "component_losses": "mixsql.losses",
    "from_config": "mixsql.config", "ConfigError": "mixsql.config",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> t.Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mixsql' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if t.TYPE_CHECKING:  # pragma: no cover
    from mixsql.api import Connection, Mix, connect
    from mixsql.catalog import Catalog, DatasetInfo
    from mixsql.dataset import batch_as_is
    from mixsql.errors import BindError, CatalogError, DataError, MixParseError, MixSQLError, PlanError
    from mixsql.config import ConfigError, from_config
    from mixsql.losses import component_losses
    from mixsql.parse import parse
    from mixsql.planfile import CompiledPlan
    from mixsql.read import collate
    from mixsql.state import StateError
