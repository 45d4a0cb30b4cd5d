"""mixsql: declare pre-training data mixtures in SQL; get exact, reproducible streams.

Stages, each a module: ``parse`` → ``bind`` → ``plan`` → (``manifest`` → ``read`` → torch), with
``catalog`` for registration. ``connect`` is the entry point.
"""

from mixsql.api import Connection, Mix, connect
from mixsql.catalog import Catalog, DatasetInfo
from mixsql.errors import BindError, CatalogError, DataError, MixParseError, MixSQLError, PlanError
from mixsql.parse import parse

__version__ = "0.1.0"

__all__ = [
    "BindError",
    "Catalog",
    "CatalogError",
    "Connection",
    "DataError",
    "DatasetInfo",
    "Mix",
    "MixParseError",
    "MixSQLError",
    "PlanError",
    "connect",
    "parse",
]
assert sorted(__all__) == __all__
