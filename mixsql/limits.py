"""The bounds of a statement, checked before anything is allocated (one home for each).

Each exists because past it a statement would exhaust the machine, the stack or exact arithmetic
rather than fail; none is near what a real mixture needs. ``grammar/README.md`` lists them.
"""

from __future__ import annotations

import os
from fractions import Fraction

MAX_NESTING = 32  # parentheses, or prefix operators in a row (the parser recurses)
MAX_COMPONENTS = 1024  # components of one statement, leaves and inner nodes
MAX_INTEGER_DIGITS = 19  # an integer literal fits in 64 bits; each option has its own range
MAX_WEIGHT_DIGITS = 30  # significant digits of a weight: exact arithmetic stays small
WEIGHT_EXPONENTS = (-18, 18)  # a weight is 0 or between 1e-18 and 1e18
TEMPERATURES = (Fraction(1, 10), Fraction(1000))
MAX_PARTITIONS = 4096
MAX_CHUNK_SIZE = 1 << 20  # a chunk's interleaving is computed sample by sample
MAX_BATCH_SIZE = 1 << 30
MAX_BUCKETS = 1024
MAX_EXPANDED_NODES = 20_000  # a predicate with its WITH names expanded
MAX_WITH_CHAIN = 16  # WITH names defined through each other
PLAN_BYTES_PER_SAMPLE = 32  # what compiling costs per sample it stores, at its peak, with headroom
TABLE_BYTES_PER_ENTRY = 64  # the chunk table while it is computed, per chunk row and component


def _memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 16 << 30


def max_stream_samples() -> int:
    """The most samples a plan can store on this machine: compiling one needs about
    PLAN_BYTES_PER_SAMPLE bytes of memory per sample stored. A plan stores the samples its
    components select, at most once each (later epochs are derived), whatever its budget."""
    return max(1, _memory() // PLAN_BYTES_PER_SAMPLE)


def max_chunk_rows(components: int) -> int:
    """The most rows the chunk table of a stream of ``components`` components can have here."""
    return max(1, _memory() // (TABLE_BYTES_PER_ENTRY * max(1, components)))
