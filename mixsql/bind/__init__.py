"""Stage ``bind``: check a parsed MIX statement against the catalog and compile each component to SQL.

Binding resolves every dataset and column (with "did you mean" hints), requires predicates to be
BOOLEAN in DuckDB's own type system, and counts what each component matches. A sample that
matches several components belongs to the first of them in statement order, exactly as a SQL
``CASE WHEN`` would assign it; the compiled SQL says so explicitly (``(earlier) IS NOT TRUE``), and
the overlaps are counted so EXPLAIN can report them.
"""

from __future__ import annotations

from mixsql.bind.binder import bind
from mixsql.bind.matches import first_match
from mixsql.bind.model import DEFAULT_CHUNK_SIZE, DEFAULT_SEED, BoundComponent, BoundMix, Node, Ordering
from mixsql.bind.schedule import Schedule, Segment
from mixsql.errors import CatalogError

__all__ = ["BoundComponent", "BoundMix", "CatalogError", "DEFAULT_CHUNK_SIZE", "DEFAULT_SEED", "Node", "Ordering",
           "Schedule", "Segment", "bind", "first_match"]
