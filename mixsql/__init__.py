"""mixsql: declare pre-training data mixtures in SQL; get exact, reproducible streams.

Stages, each a module: ``parse`` → ``bind`` → ``plan`` → (``manifest`` → ``read`` → torch), with
``catalog`` for registration, ``state`` for resume, and ``shell``/``cli`` in front. ``connect`` is the
entry point.
"""

from mixsql.api import Connection, Mix, connect
from mixsql.manifest import CompiledPlan
from mixsql.catalog import Catalog, DatasetInfo
from mixsql.errors import BindError, CatalogError, DataError, MixParseError, MixSQLError, PlanError
from mixsql.parse import parse
from mixsql.state import StateError

__version__ = "0.1.0"

__all__ = [
    "BindError",
    "Catalog",
    "CatalogError",
    "CompiledPlan",
    "Connection",
    "DataError",
    "DatasetInfo",
    "Mix",
    "MixParseError",
    "MixSQLError",
    "PlanError",
    "StateError",
    "collate",
    "connect",
    "parse",
]


def collate(samples: list) -> dict:
    """A batch as a dict of lists (for ``DataLoader(collate_fn=mixsql.collate)``)."""
    from mixsql.dataset import collate as _collate

    return _collate(samples)
assert sorted(__all__) == __all__
