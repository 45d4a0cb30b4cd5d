"""The apportionment: exact, monotone, never one sample off, and seekable (chunk k alone)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mixsql import plan


@st.composite
def shares_and_chunk(draw: st.DrawFn) -> tuple[list[Fraction], int]:
    weights = draw(st.lists(st.integers(1, 10_000), min_size=1, max_size=8))
    total = sum(weights)
    shares = [Fraction(w, total) for w in weights]
    smallest = max(1, -(-total // min(weights)))  # every share gets at least one sample per chunk
    chunk = draw(st.integers(smallest, smallest + 4096))
    return shares, chunk


@settings(max_examples=200, deadline=None)
@given(shares_and_chunk(), st.integers(0, 10**9))
def test_chunks_are_exact_and_seekable(sc: tuple[list[Fraction], int], start: int) -> None:
    shares, chunk = sc
    before = plan.cumulative(shares, start * chunk)
    for k in range(start, start + 5):
        counts = plan.chunk_counts(shares, chunk, k)
        assert sum(counts) == chunk and min(counts) >= 0
        after = plan.cumulative(shares, (k + 1) * chunk)
        assert [b + c for b, c in zip(before, counts)] == after  # chunk k alone == difference of cumulatives
        for d, s in zip(after, shares):
            assert abs(d - s * (k + 1) * chunk) < 1  # never drifts by a whole sample
        before = after


@settings(max_examples=100, deadline=None)
@given(shares_and_chunk(), st.lists(st.integers(0, 50_000), min_size=8, max_size=8))
def test_exhaustion_matches_brute_force(sc: tuple[list[Fraction], int], have: list[int]) -> None:
    shares, chunk = sc
    have = have[: len(shares)]
    fits = [plan.whole_chunks(shares, chunk, n, i) for i, n in enumerate(have)]
    for i, k in enumerate(fits):
        assert plan.cumulative(shares, k * chunk)[i] <= have[i]
        assert plan.cumulative(shares, (k + 1) * chunk)[i] > have[i]


def test_largest_remainder_ties_go_to_the_earlier_component() -> None:
    thirds = [Fraction(1, 3)] * 3
    assert plan.cumulative(thirds, 1) == [1, 0, 0]
    assert plan.cumulative(thirds, 2) == [1, 1, 0]
    assert plan.chunk_counts([Fraction(1, 2), Fraction(3, 10), Fraction(1, 5)], 1024, 0) == [512, 307, 205]
    assert plan.chunk_counts([Fraction(1, 2), Fraction(3, 10), Fraction(1, 5)], 1024, 1) == [512, 307, 205]
    assert plan.chunk_counts([Fraction(1, 2), Fraction(3, 10), Fraction(1, 5)], 1024, 2) == [512, 308, 204]
    assert sum(plan.chunk_counts([Fraction(1, 2), Fraction(3, 10), Fraction(1, 5)], 1024, k)[1]
               for k in range(10)) == 3072  # 0.3 * 10240 exactly, carried across chunks


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=8))
@example([1, 4, 43, 43])  # greedy deficit-first goes a little past one sample here (1.01)
def test_chunk_order_interleaves_evenly(counts: list[int]) -> None:
    order = plan.chunk_order(counts)
    assert sorted(order.tolist()) == [i for i, n in enumerate(counts) for _ in range(n)]
    total = sum(counts)
    for i, n in enumerate(counts):  # every prefix holds each component within about one sample of its share
        seen = (order == i).cumsum()
        for p in range(total):
            assert abs(seen[p] - n * (p + 1) / total) <= (1.25 if len(counts) <= 4 else 1.5)


# -- schedules, policies and the chunk table ---------------------------------------------------------------

from mixsql.bind import Segment  # noqa: E402


def _midpoint_integrals(segments: list[Segment], xs: list[int]) -> list[list[Fraction]]:
    """Independent: sums over positions of the shares at each position's middle (exact for linear pieces)."""
    out, total, p = [], [Fraction(0)] * len(segments[0].begin), 0
    for x in xs:
        while p < x:
            mid = Fraction(2 * p + 1, 2)
            seg = [s for s in segments if s.start <= mid and (s.end is None or mid < s.end)][0]
            total = [a + b for a, b in zip(total, seg.at(mid))]
            p += 1
        out.append(total)
    return out


@st.composite
def schedules(draw: st.DrawFn) -> tuple[list[Fraction], list[Segment]]:
    n = draw(st.integers(2, 4))

    def shares(allow_zero: bool) -> tuple[Fraction, ...]:
        w = draw(st.lists(st.integers(0 if allow_zero else 1, 9), min_size=n, max_size=n).filter(lambda v: sum(v) > 0))
        return tuple(Fraction(v, sum(w)) for v in w)

    declared = shares(False)
    segments, start, previous = [], 0, declared
    for _ in range(draw(st.integers(1, 4))):
        end = start + draw(st.integers(1, 700))
        kind = draw(st.sampled_from(["STAGE", "RAMP"]))
        target = shares(True)
        segments.append(Segment(start=start, end=end, begin=previous if kind == "RAMP" else target, finish=target,
                                kind=kind))
        start, previous = end, target
    segments.append(Segment(start=start, end=None, begin=previous, finish=previous, kind="HOLD"))
    return list(declared), segments


_F0, _F1 = Fraction(0), Fraction(1)
_FLIP = ([Fraction(1, 2), Fraction(1, 2)],  # a stage every sample, inside every chunk row: the lag is a whole row
         [Segment(start=x, end=x + 1, begin=(_F0, _F1) if x % 2 == 0 else (_F1, _F0),
                  finish=(_F0, _F1) if x % 2 == 0 else (_F1, _F0), kind="STAGE") for x in range(4)]
         + [Segment(start=4, end=None, begin=(_F1, _F0), finish=(_F1, _F0), kind="HOLD")])


@settings(max_examples=60, deadline=None)
@given(schedules(), st.integers(1, 64), st.integers(1, 4), st.integers(200, 3000))
@example(_FLIP, 1, 2, 200)
def test_scheduled_chunks_follow_the_integral_of_the_schedule(sched: tuple[list[Fraction], list[Segment]],
                                                              chunk: int, partitions: int, limit: int) -> None:
    declared, segments = sched
    names = [f"c{i}" for i in range(len(declared))]
    supplies = [[plan.UNLIMITED] * partitions for _ in names]
    shape = plan._walk(names, plan.Schedule(declared, segments), supplies, chunk, partitions, limit, "STOP")
    table = shape.table
    assert shape.samples == limit
    counts = np.diff(table, axis=0)
    assert (counts >= 0).all() and (counts.sum(axis=1) == chunk).all()
    integrals = _midpoint_integrals(segments, [k * chunk * partitions for k in range(len(table))])
    sched_obj = plan.Schedule(declared, segments)
    for k in range(len(table)):
        expected = [v / partitions for v in integrals[k]]
        # a segment starting inside a chunk row takes effect from the next row, which catches up: by
        # then the targets may lag the integral by a row's C samples, and the counts round within 1
        straddled = any(sched_obj.straddles(j * chunk * partitions, (j + 1) * chunk * partitions) for j in range(k))
        bound = chunk + 1 if straddled else 1
        assert all(abs(table[k][i] - e) < bound for i, e in enumerate(expected)), (k, table[k], expected)
    for k in range(len(counts)):  # a component whose share is 0 throughout a chunk gets nothing in it
        x0, x1 = k * chunk * partitions, (k + 1) * chunk * partitions
        a = [b - c for b, c in zip(sched_obj.integral(x1), sched_obj.integral(x0))]
        assert all(counts[k][i] == 0 for i in range(len(a)) if a[i] == 0)


@settings(max_examples=100, deadline=None)
@given(shares_and_chunk(), st.integers(1, 8), st.lists(st.integers(1, 5000), min_size=8, max_size=8))
def test_walk_of_a_static_mixture_is_the_closed_form(sc: tuple[list[Fraction], int], partitions: int,
                                                     have: list[int]) -> None:
    """The chunk-by-chunk rule and the closed form agree whenever every share fills a sample per chunk."""
    shares, chunk = sc
    names = [str(i) for i in range(len(shares))]
    supplies = [[have[i] // partitions + (q < have[i] % partitions) for q in range(partitions)]
                for i in range(len(shares))]
    fast = plan._walk(names, plan.Schedule(shares, []), supplies, chunk, partitions, None, "STOP")
    rows = [plan.cumulative(shares, k * chunk) for k in range(len(fast.table))]
    assert fast.table.tolist() == rows
    # the same walk without the closed form (a schedule that never changes the shares)
    flat = [Segment(start=0, end=None, begin=tuple(shares), finish=tuple(shares), kind="STAGE")]
    slow = plan.Schedule(shares, flat)
    slow.static = False
    walked = plan._walk(names, slow, supplies, chunk, partitions, None, "STOP")
    assert walked.samples == fast.samples and walked.table.tolist() == fast.table.tolist()


def test_redistribute_gives_a_leavers_share_to_the_others_in_proportion() -> None:
    shares = [Fraction(1, 2), Fraction(3, 10), Fraction(1, 5)]
    supplies = [[10_000], [10_000], [150]]
    shape = plan._walk(["a", "b", "c"], plan.Schedule(shares, []), supplies, 100, 1, 5000, "REDISTRIBUTE")
    counts = np.diff(shape.table, axis=0)
    left = shape.left_at[2]
    assert left is not None and shape.taken[2] <= 150
    after = counts[left // 100 + 1:]
    assert (after[:, 2] == 0).all()
    assert abs(after[:, 0].sum() / after[:, :2].sum() - 5 / 8) < 0.01  # 0.5 : 0.3 of what remains
    assert shape.limiting == "LIMIT" and shape.samples == 5000


def test_a_shortage_beyond_the_budget_does_not_end_the_stream() -> None:
    shares = [Fraction(1, 2), Fraction(1, 2)]
    shape = plan._walk(["a", "b"], plan.Schedule(shares, []), [[90], [10_000]], 100, 1, 150, "STOP")
    assert shape.samples == 150 and shape.limiting == "LIMIT"


@settings(max_examples=100, deadline=None)
@given(schedules(), st.lists(st.integers(0, 5000), min_size=1, max_size=20))
def test_integer_integral_equals_the_exact_one(sched: tuple[list[Fraction], list[Segment]], xs: list[int]) -> None:
    declared, segments = sched
    for schedule in (plan.Schedule(declared, segments), plan.Schedule(declared, [])):
        for x in xs:
            D, scaled = schedule.integral_scaled(x)
            assert [Fraction(g, D) for g in scaled] == list(schedule.integral(x))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=6), st.integers(1, 10**4), st.integers(1, 2048))
def test_integer_apportionment_equals_the_exact_one(owed: list[int], unit: int, total: int) -> None:
    quotas = [Fraction(o, unit) for o in owed]
    expected = _fraction_hamilton(total, quotas)
    assert plan.apportion(total, owed, unit) == plan.hamilton(total, quotas) == expected
    exact = [o * unit for o in expected]
    assert plan.apportion(total, exact, unit) == _fraction_hamilton(total, [Fraction(o, unit) for o in exact])


def _fraction_hamilton(total: int, targets: list[Fraction]) -> list[int]:
    """Independent: the textbook largest-remainder method in fractions."""
    weight = sum(targets, Fraction(0))
    if weight == 0:
        return [0] * len(targets)
    quotas = [x * total / weight for x in targets]
    floors = [math.floor(q) for q in quotas]
    for i in sorted(range(len(targets)), key=lambda i: (-(quotas[i] - floors[i]), i))[:total - sum(floors)]:
        floors[i] += 1
    return floors


@settings(max_examples=60, deadline=None)
@given(schedules(), st.integers(1, 64), st.integers(1, 4), st.integers(1, 2500), st.data())
def test_a_segment_appended_at_p_changes_no_chunk_row_before_p(sched: tuple[list[Fraction], list[Segment]],
                                                               chunk: int, partitions: int, p: int,
                                                               data: st.DataObject) -> None:
    """Prefix stability of schedules: end the schedule at p (a statement appends after a ramp's end)
    and continue with other shares; every chunk row that starts before p keeps its counts, so every
    plan position before p keeps its sample."""
    declared, segments = sched
    names = [f"c{i}" for i in range(len(declared))]
    supplies = [[plan.UNLIMITED] * partitions for _ in names]
    last = [s for s in segments if s.start < p][-1]
    if last.begin != last.finish and last.end is not None:  # a statement appends after a ramp's end, not inside it
        p = last.end
    kept = [s for s in segments if s.start < p]
    last = kept[-1]
    cut = Segment(start=last.start, end=p, begin=last.begin, finish=last.finish, kind=last.kind) \
        if last.end is None or last.end > p else last
    shares = data.draw(st.lists(st.integers(1, 9), min_size=len(names), max_size=len(names)))
    new = tuple(Fraction(v, sum(shares)) for v in shares)
    changed = kept[:-1] + [cut] + ([Segment(start=cut.end, end=p, begin=cut.finish, finish=cut.finish, kind="HOLD")]
                                   if cut.end < p else []) + [Segment(start=p, end=None, begin=new, finish=new,
                                                                      kind="STAGE")]
    limit = 3000
    a = plan._walk(names, plan.Schedule(declared, segments), supplies, chunk, partitions, limit, "STOP").table
    b = plan._walk(names, plan.Schedule(declared, changed), supplies, chunk, partitions, limit, "STOP").table
    rows_before = -(-p // (chunk * partitions))  # chunk rows whose first position is before p
    assert np.array_equal(a[: rows_before + 1], b[: rows_before + 1])
