"""Stage ``catalog``: register data files and query their per-sample properties with SQL."""

from mixsql.catalog.store import Catalog, DatasetInfo

__all__ = ["Catalog", "DatasetInfo"]
