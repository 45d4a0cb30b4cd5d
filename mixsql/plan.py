"""Stage ``plan``: how many samples each component contributes to each chunk, and how long the stream is.

The counts follow the normalised weights exactly up to rounding. With shares ``p_i`` (exact
fractions) and chunk size ``C``, the cumulative count of component ``i`` after ``k`` chunks is the
largest-remainder (Hamilton) apportionment of ``k*C`` samples::

    D_i(k) = floor(p_i*k*C) + [i is among the r(k) largest remainders of p_i*k*C]
    r(k)   = k*C - sum_i floor(p_i*k*C)        (ties: the earlier component first)

and chunk ``k`` holds ``D_i(k+1) - D_i(k)`` samples of component ``i``. This is the same as
apportioning each chunk by largest remainder with the rounding carried from chunk to chunk
(apportionment commutes with adding whole samples), so cumulative counts never drift by one
sample or more from ``p_i * position``. Because ``D(k)`` is a closed form, chunk ``k`` is computed
without computing chunks ``0..k-1``: the basis of O(1) seek and resume.

Within a chunk the components are interleaved greatest-deficit-first (``chunk_order``), and a
chunk stream ends just before the first sample that a component cannot supply.

Canonical partitions. Each component's samples (in their shuffled order, see ``manifest``) are cut
into P contiguous pools, and each partition q runs its own chunk stream over its pools. The plan
order interleaves the partitions sample by sample: plan position p is sample p // P of partition
p mod P. P is fixed by the statement (``PARTITIONS n``) or by the data (``default_partitions``),
never by the world size, so the plan order does not depend on the topology.

A chunk count is never negative as long as every component gets at least one sample per chunk
(``p_i * C >= 1``); ``check`` enforces that. Arithmetic is on integers, so the result is the same
on every machine.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing as t
from fractions import Fraction

import numpy as np

from mixsql.bind import BoundMix
from mixsql.errors import PlanError, position
from mixsql.parse import span


def _integer_shares(shares: t.Sequence[Fraction]) -> tuple[list[int], int]:
    denominator = math.lcm(*(s.denominator for s in shares))
    return [s.numerator * (denominator // s.denominator) for s in shares], denominator


def cumulative(shares: t.Sequence[Fraction], n: int) -> list[int]:
    """Largest-remainder apportionment of ``n`` samples among ``shares`` (which sum to 1)."""
    numerators, denominator = _integer_shares(shares)
    floors = [(a * n) // denominator for a in numerators]
    remainders = [(a * n) % denominator for a in numerators]
    extra = n - sum(floors)
    order = sorted(range(len(shares)), key=lambda i: (-remainders[i], i))
    for i in order[:extra]:
        floors[i] += 1
    return floors


def chunk_counts(shares: t.Sequence[Fraction], chunk_size: int, k: int) -> list[int]:
    """Samples of each component in chunk ``k`` (0-based), without computing earlier chunks."""
    before = cumulative(shares, k * chunk_size)
    after = cumulative(shares, (k + 1) * chunk_size)
    return [b - a for a, b in zip(before, after)]


def whole_chunks(shares: t.Sequence[Fraction], chunk_size: int, have: int, i: int) -> int:
    """How many whole chunks component ``i`` can fill with ``have`` samples."""
    share = shares[i]
    lo, hi = 0, int(have / (share * chunk_size)) + 2  # D_i(k) >= floor(p_i*k*C), so hi chunks cannot fit
    while lo < hi:  # largest k with D_i(k) <= have; D_i is monotone in k (see check)
        mid = (lo + hi + 1) // 2
        if cumulative(shares, mid * chunk_size)[i] <= have:
            lo = mid
        else:
            hi = mid - 1
    return lo


def rotation(q: int, partitions: int, chunk_size: int) -> int:
    """Partition q starts its chunks this far into the chunk order, so partitions are out of phase."""
    return q * chunk_size // partitions


def chunk_order(counts: t.Sequence[int], rotation: int = 0) -> np.ndarray:
    """Component id of each position of a chunk holding ``counts`` samples per component.

    Greatest deficit first (Megatron's blending rule): position p goes to the component whose
    count so far lags its share ``n_i*(p+1)/C`` the most, ties to the earlier component. Every
    prefix of a chunk is mixed too: each component stays within one sample of its share for up to
    4 components (about 1.3 samples at 8). Integer arithmetic; cached per count vector, since a
    static mixture has only a few distinct vectors. The returned array is read-only.

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


@functools.lru_cache(maxsize=512)
def _chunk_order(counts: tuple[int, ...]) -> np.ndarray:
    size = sum(counts)
    n = np.asarray(counts, dtype=np.int64)
    seen = np.zeros(len(counts), dtype=np.int64)
    out = np.empty(size, dtype=np.int32)
    for p in range(size):
        i = int(np.argmax(n * (p + 1) - seen * size))  # deficit scaled by the chunk size: exact
        out[p] = i
        seen[i] += 1
    out.flags.writeable = False
    return out


def check(bound: BoundMix) -> None:
    """Reject a mixture the planner cannot honour exactly: a share below one sample per chunk."""
    for c in bound.components:
        if c.share * bound.chunk_size < 1:
            need = math.ceil(1 / c.share)
            node = bound.tree.components[c.index].args["weight"]
            where = span(node)
            line, col = position(bound.text, where[0]) if where else (None, None)
            raise PlanError(
                f"component {c.name!r} gets {float(c.share):.3g} of the stream, less than one sample per chunk of "
                f"{bound.chunk_size}",
                hint=f"use CHUNK SIZE {need} or more, or raise its weight",
                line=line, col=col, length=(where[1] - where[0]) if where else 1, source=bound.text, path=bound.path,
            )


def exhaustion_point(shares: t.Sequence[Fraction], chunk_size: int, have: int, i: int, rotation: int = 0) -> int:
    """Position in one chunk stream of the first sample of component ``i`` beyond its ``have`` samples."""
    chunks = whole_chunks(shares, chunk_size, have, i)
    used = cumulative(shares, chunks * chunk_size)[i]
    order = chunk_order(chunk_counts(shares, chunk_size, chunks), rotation)
    mine = np.flatnonzero(order == i)
    return chunks * chunk_size + int(mine[have - used])


def consumed(shares: t.Sequence[Fraction], chunk_size: int, length: int, rotation: int = 0) -> list[int]:
    """Samples of each component in the first ``length`` positions of one (rotated) chunk stream."""
    k, r = divmod(length, chunk_size)
    counts = cumulative(shares, k * chunk_size)
    if r:
        tail = chunk_order(chunk_counts(shares, chunk_size, k), rotation)[:r]
        counts = [c + int(np.count_nonzero(tail == i)) for i, c in enumerate(counts)]
    return counts


def partition_length(samples: int, partitions: int, q: int) -> int:
    """Samples partition q contributes to a plan-order stream of ``samples`` (positions q, q+P, ...)."""
    return max(0, -(-(samples - q) // partitions))


def pool_bounds(samples: int, partitions: int) -> list[int]:
    """Where each canonical partition's pool of a component starts: partition q gets [b[q], b[q+1])."""
    return [q * samples // partitions for q in range(partitions + 1)]


@dataclasses.dataclass(frozen=True)
class StreamShape:
    """How long the stream is before its first component runs out, and which component limits it.

    The stream interleaves the P partition streams sample by sample (plan position p belongs to
    partition p mod P, at index p // P), so it ends at the first position whose partition cannot
    supply its sample: ``samples = min over q of (P * L_q + q)``, with L_q the length of
    partition q's own stream (which ends just before the first sample a component cannot supply).
    """

    samples: int
    chunk_size: int
    partitions: int
    limiting: str
    per_component: tuple[int, ...]  # plan positions before each component alone would run out

    @property
    def chunks(self) -> int:
        """Whole chunks per partition (the last one may be cut short)."""
        return self.samples // (self.partitions * self.chunk_size)

    def partition_length(self, q: int) -> int:
        """Samples that partition q contributes to the stream."""
        return partition_length(self.samples, self.partitions, q)


def _shape(names: t.Sequence[str], shares: t.Sequence[Fraction], counts: t.Sequence[int], chunk_size: int,
           partitions: int) -> StreamShape:
    ends = []
    for i, n in enumerate(counts):
        bounds = pool_bounds(n, partitions)
        ends.append(min(partitions * exhaustion_point(shares, chunk_size, bounds[q + 1] - bounds[q], i,
                                                      rotation(q, partitions, chunk_size)) + q
                        for q in range(partitions)))
    limiting = min(range(len(ends)), key=lambda i: (ends[i], i))
    return StreamShape(samples=ends[limiting], chunk_size=chunk_size, partitions=partitions,
                       limiting=names[limiting], per_component=tuple(ends))


DEFAULT_MAX_PARTITIONS = 64
MIN_BLOCKS_PER_PARTITION = 32


def default_partitions(shares: t.Sequence[Fraction], counts: t.Sequence[int], chunk_size: int,
                       blocks: t.Sequence[int]) -> int:
    """The largest power of two up to 64 that leaves every partition at least one whole chunk and, of
    every component, at least 32 blocks (row groups): a pool of few blocks would share blocks with its
    neighbours and decode them twice."""
    single = _shape([str(i) for i in range(len(shares))], shares, counts, chunk_size, 1).samples
    partitions = 1
    while (partitions * 2 <= DEFAULT_MAX_PARTITIONS and single // (partitions * 2) >= chunk_size
           and min(blocks) // (partitions * 2) >= MIN_BLOCKS_PER_PARTITION):
        partitions *= 2
    return partitions


@dataclasses.dataclass(frozen=True)
class PlanSpec:
    """Everything that fixes the stream, besides the data: the pure-function inputs of the planner."""

    names: tuple[str, ...]
    shares: tuple[Fraction, ...]
    counts: tuple[int, ...]
    seed: int
    chunk_size: int
    partitions: int
    window: int  # blocks whose samples are shuffled together
    shape: StreamShape


DEFAULT_WINDOW = 1


def resolve(bound: BoundMix, *, window: int = DEFAULT_WINDOW) -> PlanSpec:
    """Check the mixture and fix its plan parameters (the default partition count depends on the data)."""
    check(bound)
    names = tuple(c.name for c in bound.components)
    shares = tuple(c.share for c in bound.components)
    counts = tuple(c.samples for c in bound.components)
    partitions = bound.partitions or default_partitions(shares, counts, bound.chunk_size,
                                                        [c.blocks for c in bound.components])
    return PlanSpec(names=names, shares=shares, counts=counts, seed=bound.seed, chunk_size=bound.chunk_size,
                    partitions=partitions, window=window,
                    shape=_shape(names, shares, counts, bound.chunk_size, partitions))
