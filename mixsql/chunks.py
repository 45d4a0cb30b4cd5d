"""The chunk arithmetic a running stream needs (no compile-time module): how a chunk interleaves its
components, how partitions are out of phase, and how many samples a partition gives the stream.
``plan`` defines the chunks themselves; this is the part every DataLoader worker uses too."""

from __future__ import annotations

import functools
import typing as t

import numpy as np

from mixsql.world import partition_indices


def rotation(q: int, partitions: int, chunk_size: int) -> int:
    """Partition q starts its chunks this far into the chunk order, so partitions are out of phase."""
    return q * chunk_size // partitions


def chunk_order(counts: t.Sequence[int], rotation: int = 0) -> np.ndarray:
    """Component id of each position of a chunk holding ``counts`` samples per component.

    Greatest deficit first (Megatron's blending rule): position p goes to the component whose
    count so far lags its share ``n_i*(p+1)/C`` the most, ties to the earlier component. Every
    prefix of a chunk is mixed too: each component stays within about one sample of its share (a
    little more for some count vectors: 1.04 samples at (1, 5, 53, 53); about 1.3 at 8 components).
    Integer arithmetic; cached per count vector, since a static mixture has only a few distinct
    vectors. The returned array is read-only.

    ``rotation`` starts the order that many positions in (cyclically): partition q uses
    ``rotation(q, P, C)``, so that the P partitions, which the plan order visits in lockstep, are
    at different phases of the mix and consecutive plan positions are mixed too.
    """
    base = _chunk_order(tuple(int(c) for c in counts))
    if rotation % max(len(base), 1) == 0:
        return base
    out = np.roll(base, -(rotation % len(base)))
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=4096)
def _chunk_order(counts: tuple[int, ...]) -> np.ndarray:
    size = sum(counts)
    deficit = [0] * len(counts)  # n_i*(p+1) - seen_i*size: the deficit scaled by the chunk size, exact
    members = [i for i, c in enumerate(counts) if c]
    out = []
    for _ in range(size):
        best = members[0]
        for i in members:
            deficit[i] += counts[i]
        for i in members[1:]:
            if deficit[i] > deficit[best]:
                best = i
        deficit[best] -= size
        out.append(best)
    array = np.asarray(out, dtype=np.int32)
    array.flags.writeable = False
    return array


def apportion(total: int, owed: t.Sequence[int], unit: int) -> list[int]:
    """Largest-remainder (Hamilton) apportionment of ``total`` by the non-negative quotas ``owed / unit``,
    normalised to ``total`` when they do not sum to it; ties go to the earlier component. Integers only."""
    weight = sum(owed)
    if weight == 0:
        return [0] * len(owed)
    if weight == total * unit:
        floors, remainders = [o // unit for o in owed], [o % unit for o in owed]
    else:
        floors, remainders = [o * total // weight for o in owed], [o * total % weight for o in owed]
    extra = total - sum(floors)
    for i in sorted(range(len(owed)), key=lambda i: (-remainders[i], i))[:extra]:
        floors[i] += 1
    return floors


def partition_length(samples: int, partitions: int, q: int) -> int:
    """Samples partition q contributes to a plan-order stream of ``samples`` (positions q, q+P, ...)."""
    return partition_indices(0, samples, q, partitions)[1]
