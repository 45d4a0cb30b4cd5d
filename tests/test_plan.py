"""The apportionment: exact, monotone, never one sample off, and seekable (chunk k alone)."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
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
def test_chunk_order_interleaves_evenly(counts: list[int]) -> None:
    order = plan.chunk_order(counts)
    assert sorted(order.tolist()) == [i for i, n in enumerate(counts) for _ in range(n)]
    total = sum(counts)
    for i, n in enumerate(counts):  # every prefix holds each component within one sample of its share
        seen = (order == i).cumsum()
        for p in range(total):
            assert abs(seen[p] - n * (p + 1) / total) <= (1.0 if len(counts) <= 4 else 1.5)
