"""Stage ``plan``: how many samples each component contributes to each chunk, and how long the stream is.

**Canonical partitions.** Each component's samples (in their shuffled order, see ``manifest``) are cut
into P contiguous pools, and each partition q runs its own chunk stream over its pools. The plan
order interleaves the partitions sample by sample: plan position p is sample p // P of partition
p mod P. P is fixed by the statement (``PARTITIONS n``) or by the data (``default_partitions``),
never by the world size, so the plan order does not depend on the topology. Chunk k of every
partition covers the same plan positions ``[k*C*P, (k+1)*C*P)``, and all partitions share one
table of chunk counts.

**Counts.** Chunk k's *target shares* ``a(k)`` are the schedule's shares averaged over the chunk's
plan positions (the declared shares when there is no schedule), as the schedule is known at the
chunk row's first position: a stage that starts inside a chunk row takes effect from the next row,
which catches up (its targets are the schedule's exact integral), so that appending a stage never
changes a position before it (prefix stability) and cumulative counts follow the integral from the
row after a change on. With
chunk size C, the cumulative targets are ``E(k+1) = E(k) + C*a(k)`` and the counts of chunk k are the
largest-remainder (Hamilton) apportionment of C among the components with ``a_i(k) > 0``, by the
targets ``max(0, E_i(k+1) - D_i(k))`` (ties: the earlier component), where ``D(k)`` is the counts
so far: the rounding is carried from chunk to chunk, so cumulative counts stay within about one
sample of ``E``, and a component whose share is 0 gets nothing.

When every ``C*a_i >= 1`` and the shares are constant, this equals the closed form
``D(k) = hamilton(k*C)`` (apportionment commutes with adding whole samples), which the walk uses
for static mixtures; otherwise it walks the chunks once, in integer arithmetic over one common
denominator while every component is in (fractions after one leaves). Either way the table is computed
when the plan is compiled and stored with it, so chunk k is read in O(1), without computing
chunks 0..k-1: the basis of seek and resume.

**The end of the stream.** A component's supply in partition q is its pool times the epochs it may
use (``MAX EPOCHS``, 1 by default, unlimited under ``ON EXHAUSTION REPEAT``). At the first chunk
where some component cannot cover its count in every partition:

- ``STOP`` (default): the stream ends in that chunk, just before the first position whose partition
  cannot supply its sample (``samples = min over q of P*L_q + q``);
- ``REDISTRIBUTE``: that component leaves from that chunk on, and the others share its weight in
  proportion (the last one left ends the stream as with STOP);
- ``REPEAT``: supplies are unlimited unless ``MAX EPOCHS`` bounds them.

``LIMIT n`` ends the stream at n samples; a stream that ends earlier is an error (the budget cannot
be met under the policy). Within a chunk the components are interleaved greatest-deficit-first
(``chunk_order``). Arithmetic is on integers and fractions, so the result is the same on every machine.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t
from fractions import Fraction

import numpy as np

from mixsql.bind import BoundMix, Schedule
from mixsql.chunks import apportion, chunk_order, partition_length, rotation  # noqa: F401 - the planner's rule
from mixsql.epochs import bucket_bounds, bucket_of, pool_bounds, pool_sizes  # noqa: F401 - the partitioning rule
from mixsql.errors import PlanError, position
from mixsql.parse import span


def _integer_shares(shares: t.Sequence[Fraction]) -> tuple[list[int], int]:
    denominator = math.lcm(*(s.denominator for s in shares))
    return [s.numerator * (denominator // s.denominator) for s in shares], denominator


def cumulative(shares: t.Sequence[Fraction], n: int) -> list[int]:
    """Largest-remainder apportionment of ``n`` samples among ``shares`` (which sum to 1)."""
    numerators, denominator = _integer_shares(shares)
    return apportion(n, [a * n for a in numerators], denominator)


def chunk_counts(shares: t.Sequence[Fraction], chunk_size: int, k: int) -> list[int]:
    """Samples of each component in chunk ``k`` (0-based), without computing earlier chunks."""
    before = cumulative(shares, k * chunk_size)
    after = cumulative(shares, (k + 1) * chunk_size)
    return [b - a for a, b in zip(before, after)]


def whole_chunks(shares: t.Sequence[Fraction], chunk_size: int, have: int, i: int) -> int:
    """How many whole chunks component ``i`` can fill with ``have`` samples."""
    share = shares[i]
    lo, hi = 0, int(have / (share * chunk_size)) + 2  # D_i(k) >= floor(p_i*k*C), so hi chunks cannot fit
    while lo < hi:  # largest k with D_i(k) <= have; D_i is monotone in k when p_i*C >= 1 (the caller's case)
        mid = (lo + hi + 1) // 2
        if cumulative(shares, mid * chunk_size)[i] <= have:
            lo = mid
        else:
            hi = mid - 1
    return lo


UNLIMITED = 1 << 62


def hamilton(total: int, targets: t.Sequence[Fraction]) -> list[int]:
    """``apportion`` for fractional quotas (put over one common denominator)."""
    unit = math.lcm(*(Fraction(x).denominator for x in targets)) if targets else 1
    return apportion(total, [int(x * unit) for x in targets], unit)


@dataclasses.dataclass(frozen=True)
class StreamShape:
    """How long the stream is, what ended it, and what each component gives it."""

    samples: int
    chunk_size: int
    partitions: int
    limiting: str  # the component that ran out, or "LIMIT"
    taken: tuple[int, ...]  # samples each component gives the stream
    left_at: tuple[int | None, ...]  # plan position where a component left (REDISTRIBUTE), None if it stayed
    table: np.ndarray  # cumulative counts: row k holds each component's samples in chunks 0..k-1
    tokens_taken: tuple[int, ...] | None = None  # n_tokens each component gives (planned from token counts)
    tokens: int | None = None  # n_tokens of the whole stream (planned from token counts)

    @property
    def chunks(self) -> int:
        """Whole chunks per partition (the last one may be cut short)."""
        return self.samples // (self.partitions * self.chunk_size)

    def partition_length(self, q: int) -> int:
        """Samples that partition q contributes to the stream."""
        return partition_length(self.samples, self.partitions, q)


def _closed_form(shares: t.Sequence[Fraction], chunk_size: int, chunks: int) -> np.ndarray:
    """Rows 0..chunks of the static table: row k is ``cumulative(shares, k*C)`` (vectorised)."""
    numerators, denominator = _integer_shares(shares)
    n_max = chunks * chunk_size
    if denominator * max(n_max, 1) >= 1 << 62:  # too large for int64: exact Python integers
        return np.asarray([cumulative(shares, k * chunk_size) for k in range(chunks + 1)], dtype=np.int64)
    n = np.arange(chunks + 1, dtype=np.int64)[:, None] * chunk_size
    a = np.asarray(numerators, dtype=np.int64)[None, :]
    product = a * n
    floors, remainders = product // denominator, product % denominator
    extra = n[:, 0] - floors.sum(axis=1)
    order = np.argsort(-remainders, axis=1, kind="stable")  # ties: the earlier component
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(len(shares))[None, :].repeat(len(n), axis=0), axis=1)
    return floors + (rank < extra[:, None])


def _walk(names: t.Sequence[str], schedule: Schedule, supplies: t.Sequence[t.Sequence[int]], chunk_size: int,
          partitions: int, limit: int | None, policy: str) -> StreamShape:
    """The chunk table and the stream's end (module docstring), chunk by chunk."""
    C, P = chunk_size, partitions
    n = len(names)
    floor_supply = [min(s) for s in supplies]
    cap = None if limit is None else -(-limit // (C * P))  # chunks needed to reach the budget
    rows: list[list[int]] = [[0] * n]
    start = 0
    if schedule.static and all(s * C >= 1 for s in schedule.shares):
        # Closed form up to the first chunk some component cannot fill in every partition.
        fill = min(whole_chunks(schedule.shares, C, floor_supply[i], i) if floor_supply[i] < UNLIMITED else UNLIMITED
                   for i in range(n))
        start = min(fill, cap) if cap is not None else fill
        if start >= UNLIMITED:  # pragma: no cover - bind rejects endless streams
            raise PlanError("the stream never ends", hint="add LIMIT <n> SAMPLES")
        rows = _closed_form(schedule.shares, C, start).tolist()
    active = [True] * n
    left_at: list[int | None] = [None] * n
    done = rows[-1]
    k = start
    limiting = "LIMIT"
    end: int | None = None
    # Integers while every component is in: D * P times the expected samples per partition. After one
    # leaves, fractions: the expected samples and the schedule's integral at the chunk row's start.
    D, scaled = schedule.integral_scaled(start * C * P)
    expected: list[Fraction] = []
    at: tuple[Fraction, ...] = ()
    while cap is None or k < cap:
        x0, x1 = k * C * P, (k + 1) * C * P
        if all(active):
            # Integer arithmetic, equal to the general rule below: targets in units of 1 / (D * P).
            _, scaled_after = schedule.integral_scaled(x1)
            unit = D * P
            if schedule.straddles(x0, x1):  # a segment starts inside the row: the row follows the one at x0
                seen, now = schedule.integral_seen_from(x0, x1), schedule.integral(x0)
                counts = hamilton(C, [max(Fraction(0), g / P - d) if g > g0 else Fraction(0)
                                      for g, g0, d in zip(seen, now, done)])
            else:
                owed = [max(g1 - d * unit, 0) if g1 > g0 else 0 for g1, g0, d in zip(scaled_after, scaled, done)]
                counts = apportion(C, owed, unit)
        else:
            after = schedule.integral_seen_from(x0, x1)
            a = [(b - c) / (C * P) if active[i] else Fraction(0) for i, (b, c) in enumerate(zip(after, at))]
            total = sum(a, Fraction(0))  # the ones left share the weight of those that ran out
            if total == 0:
                end, limiting = x0, next((names[i] for i in range(n) if not active[i]), names[0])
                break
            a = [s / total for s in a]
            target = [e + C * s for e, s in zip(expected, a)]
            counts = hamilton(C, [max(Fraction(0), tg - d) if s > 0 else Fraction(0)
                                  for tg, d, s in zip(target, done, a)])
        short = [i for i in range(n) if done[i] + counts[i] > floor_supply[i]]
        if short and policy == "REDISTRIBUTE" and sum(active) > len(short):
            if all(active):  # leave integer arithmetic: carry the expectation over as fractions
                expected = [Fraction(g, D * P) for g in scaled]
                at = schedule.integral(x0)
            for i in short:
                active[i] = False
                left_at[i] = x0
            continue  # the same chunk again, without them
        if short:
            rows.append([d + c for d, c in zip(done, counts)])  # the chunk's partitions stop inside it
            firsts = {i: _first_short(i, counts, done, supplies, C, P) for i in short}
            first = min(short, key=lambda i: (firsts[i], i))
            end, limiting = k * C * P + firsts[first], names[first]
            break
        if all(active):
            scaled = scaled_after
        else:
            expected, at = target, after
        done = [d + c for d, c in zip(done, counts)]
        rows.append(done)
        k += 1
    samples = end if end is not None else limit
    if limit is not None and samples is not None and samples < limit:
        raise _BudgetError(limiting, samples)
    if limit is not None and samples is not None and samples >= limit:
        limiting = "LIMIT"  # a shortage beyond the budget ends nothing
    assert samples is not None
    samples = min(samples, limit) if limit is not None else samples
    table = np.asarray(rows, dtype=np.int64)
    taken = [0] * n
    for q in range(P):
        for i, v in enumerate(consumed(table, C, partition_length(samples, P, q), rotation(q, P, C))):
            taken[i] += v
    return StreamShape(samples=samples, chunk_size=C, partitions=P, limiting=limiting, taken=tuple(taken),
                       left_at=tuple(left_at), table=table)


class _BudgetError(Exception):
    def __init__(self, component: str, samples: int) -> None:
        self.component, self.samples = component, samples


def _first_short(i: int, counts: list[int], done: list[int], supplies: t.Sequence[t.Sequence[int]], C: int,
                 P: int) -> int:
    """Offset, from the chunk row's first plan position, of the first position at which some partition
    cannot supply component i."""
    return min(P * _short_position(i, counts, done[i], supplies[i][q], C, rotation(q, P, C)) + q
               for q in range(P) if done[i] + counts[i] > supplies[i][q])


def _short_position(i: int, counts: list[int], done: int, supply: int, C: int, rot: int) -> int:
    """Position within the chunk of component i's first sample beyond ``supply``."""
    mine = np.flatnonzero(chunk_order(counts, rot) == i)
    return int(mine[supply - done])


def consumed(table: np.ndarray, chunk_size: int, length: int, rotation: int = 0) -> list[int]:
    """Samples of each component in the first ``length`` positions of one (rotated) partition stream."""
    k, r = divmod(length, chunk_size)
    counts = [int(v) for v in table[k]]
    if r:
        tail = chunk_order((table[k + 1] - table[k]).tolist(), rotation)[:r]
        counts = [c + int(np.count_nonzero(tail == i)) for i, c in enumerate(counts)]
    return counts


DEFAULT_MAX_PARTITIONS = 64
MIN_BLOCKS_PER_PARTITION = 32


def default_partitions(shares: t.Sequence[Fraction], supplies: t.Sequence[int], chunk_size: int,
                       blocks: t.Sequence[int], limit: int | None) -> int:
    """The largest power of two up to 64 that leaves every partition at least one whole chunk and, of
    every component, at least 32 blocks (row groups): a pool of few blocks would share blocks with its
    neighbours and decode them twice. The stream's length is estimated from the declared shares."""
    estimate = min((supply / share for supply, share in zip(supplies, shares) if share > 0), default=0)
    length = int(min(estimate, limit)) if limit is not None else int(estimate)
    partitions = 1
    while (partitions * 2 <= DEFAULT_MAX_PARTITIONS and length // (partitions * 2) >= chunk_size
           and min(blocks) // (partitions * 2) >= MIN_BLOCKS_PER_PARTITION):
        partitions *= 2
    return partitions


@dataclasses.dataclass(frozen=True, eq=False)
class PlanSpec:
    """The compiler's one input: the bound statement and what planning fixed on top of it (resolved
    partitions, buckets, shuffle window, the chunk table and the stream's shape). Everything else is
    read from ``bound``, never copied."""

    bound: BoundMix
    partitions: int  # resolved: the statement's PARTITIONS, or the planner's default
    buckets: tuple[int, ...]  # 1 for a shuffled component, the curriculum's buckets for an ordered one
    window: int  # blocks whose samples are shuffled together
    shape: StreamShape  # when the budget cannot be met (``error``): what meeting it would take
    error: PlanError | None = None
    layout: t.Any = None  # ``tokenplan.TokenLayout`` for a stream planned from token counts
    capacity: tuple[tuple[int, ...], ...] | None = None  # ADAPT: [component][partition] samples each pool holds

    @property
    def table(self) -> np.ndarray:
        return self.shape.table

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.bound.names)

    @property
    def shares(self) -> tuple[Fraction, ...]:
        """Declared shares."""
        return tuple(c.share for c in self.bound.components)

    @property
    def seed(self) -> int:
        return self.bound.seed

    @property
    def chunk_size(self) -> int:
        return self.bound.chunk_size


DEFAULT_WINDOW = 1


def resolve(bound: BoundMix, *, window: int = DEFAULT_WINDOW) -> PlanSpec:
    """Fix the plan's parameters and walk its chunks: the table of counts and the stream's length."""
    names = tuple(c.name for c in bound.components)
    shares = tuple(c.share for c in bound.components)
    counts = tuple(c.samples for c in bound.components)
    buckets = tuple(min(c.ordering.buckets, c.samples) if c.ordering else 1 for c in bound.components)
    epochs = tuple(c.max_epochs for c in bound.components)
    partitions = bound.requested_partitions or default_partitions(
        shares, [n * (e or UNLIMITED) for n, e in zip(counts, epochs)], bound.chunk_size,
        [c.blocks for c in bound.components], bound.limit)
    supplies = [[UNLIMITED if e is None else e * size for size in pool_sizes(n, b, partitions)]
                for n, b, e in zip(counts, buckets, epochs)]
    schedule = Schedule(shares, bound.schedule)
    error = None
    # an adaptive stream has the length of its LIMIT: a component that runs out leaves, whatever the weights
    policy = bound.policy if bound.adapt is None or bound.policy == "REPEAT" else "REDISTRIBUTE"
    try:
        shape = _walk(names, schedule, supplies, bound.chunk_size, partitions, bound.limit, policy)
    except _BudgetError as e:
        # an adaptive stream's supply is decided in the run (its packed sequences may need more or
        # fewer documents than LIMIT samples): running out is an error there, when it happens
        error = _budget_error(bound, e) if bound.adapt is None else None
        unlimited = [[UNLIMITED] * partitions for _ in names]
        shape = _walk(names, schedule, unlimited, bound.chunk_size, partitions, bound.limit, "REPEAT")
    component = next((c for c in bound.components if c.name == shape.limiting), None)
    if error is None and shape.samples == 0 and component is not None:
        error = PlanError(f"the stream is empty: component {component.name!r} ({component.samples:,} samples) cannot "
                          f"give each of the {partitions:,} partitions a sample of its first chunk",
                          hint="lower PARTITIONS (or CHUNK SIZE), or give the component more samples",
                          source=bound.text, path=bound.path)
    capacity = None
    if bound.adapt is not None:
        # every pool as large as any weights could ask of it: its whole supply (a packed stream may need
        # more documents than the LIMIT has samples), or for unlimited epochs what the sample stream could take
        C = bound.chunk_size
        rows = -(-partition_length(shape.samples, partitions, 0) // C)
        capacity = tuple(tuple(supply if supply < UNLIMITED else rows * C for supply in per) for per in supplies)
    return PlanSpec(bound=bound, partitions=partitions, buckets=buckets, window=window, shape=shape, error=error,
                    capacity=capacity)


def _budget_error(bound: BoundMix, e: _BudgetError) -> PlanError:
    return budget_error(bound, e.component, e.samples)


def budget_error(bound: BoundMix, component: str, samples: int, tokens: int | None = None) -> PlanError:
    """The error of a budget (LIMIT) that cannot be met: which component runs out, where, and what to do."""
    node = bound.tree.args.get("limit")
    where = span(node)
    line, col = position(bound.text, where[0]) if where else (None, None)
    c = next(c for c in bound.components if c.name == component)
    limit = "unlimited" if c.max_epochs is None else f"MAX EPOCHS {c.max_epochs}"
    hint = {"STOP": "raise its MAX EPOCHS, lower the LIMIT, or use ON EXHAUSTION REDISTRIBUTE or REPEAT",
            "REDISTRIBUTE": "the remaining components ran out too: lower the LIMIT or allow more epochs",
            "REPEAT": "raise its MAX EPOCHS or lower the LIMIT"}[bound.policy]
    if tokens is None:
        budget, size, at = f"{bound.limit:,} samples", f"{c.samples:,} samples", f"{samples:,}"
    else:
        budget = f"{bound.token_limit:,} tokens" if bound.token_limit is not None else f"{bound.limit:,} samples"
        size, at = f"{c.samples:,} samples, {c.tokens or 0:,} tokens", f"{samples:,} ({tokens:,} tokens)"
    return PlanError(f"the budget of {budget} cannot be met under ON EXHAUSTION {bound.policy}: component "
                     f"{component!r} ({size}, {limit}) runs out at sample {at}", hint=hint, line=line, col=col,
                     length=(where[1] - where[0]) if where else 1, source=bound.text, path=bound.path)
