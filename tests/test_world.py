"""Topology as arithmetic: positions, partitions, global batches and rank slices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixsql import world
from mixsql.chunks import partition_length
from mixsql.errors import MixSQLError


@given(start=st.integers(0, 500), size=st.integers(0, 500), partitions=st.integers(1, 17))
def test_partition_indices_cover_each_position_once(start: int, size: int, partitions: int) -> None:
    stop = start + size
    covered = sorted(m * partitions + q for q in range(partitions)
                     for m in range(*world.partition_indices(start, stop, q, partitions)))
    assert covered == list(range(start, stop))
    assert sum(partition_length(stop, partitions, q) for q in range(partitions)) == stop


@given(partitions=st.integers(1, 16), world_size=st.integers(1, 8), per_rank=st.integers(1, 9),
       batch=st.integers(0, 50))
def test_rank_slices_split_a_global_batch_exactly(partitions: int, world_size: int, per_rank: int, batch: int) -> None:
    g = world_size * per_rank
    first, last = world.batch_positions(batch, g)
    seen = []
    for rank in range(world_size):
        mine = [m * partitions + q for q, a, b in world.rank_slices(batch, g, partitions, world_size, rank)
                for m in range(a, b)]
        assert len(mine) == per_rank
        seen += mine
    assert sorted(seen) == list(range(first, last))


def test_topology_and_batch_sizes_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert world.topology(1, 4) == (1, 4)
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "3")
    assert world.topology() == (3, 8)
    monkeypatch.setenv("RANK", "three")
    with pytest.raises(MixSQLError, match="not integers"):
        world.topology()
    for rank, size in [(4, 4), (-1, 2), (0, 0), (0.0, 2), ("0", 2), (True, 2)]:
        with pytest.raises(MixSQLError):
            world.topology(rank, size)  # type: ignore[arg-type]
    assert world.global_batch(4, 2, None) == (4, 2) and world.global_batch(4, 3, 5) == (15, 5)
    for bad in (0, -3, 2.0, "4", True):
        with pytest.raises(MixSQLError, match="batch_size must be a positive integer"):
            world.global_batch(4, 2, bad)  # type: ignore[arg-type]


@given(st.lists(st.integers(0, 12), min_size=1, max_size=9))
def test_ragged_round_robin_visits_every_index_once_in_rounds(lengths: list[int]) -> None:
    total = sum(lengths)
    q, j = world.ragged_locate(np.arange(total), lengths)
    expected = [(p, r) for r in range(max(lengths)) for p in range(len(lengths)) if r < lengths[p]]
    assert list(zip(q.tolist(), j.tolist())) == expected


@given(st.integers(1, 200), st.integers(1, 9))
def test_ragged_round_robin_equals_the_plan_order_on_sample_partitions(samples: int, partitions: int) -> None:
    lengths = [partition_length(samples, partitions, q) for q in range(partitions)]
    q, j = world.ragged_locate(np.arange(samples), lengths)
    assert np.array_equal(q, np.arange(samples) % partitions) and np.array_equal(j, np.arange(samples) // partitions)


@given(st.lists(st.integers(0, 30), min_size=1, max_size=6), st.sampled_from([1, 2, 4]), st.integers(1, 4),
       st.integers(0, 5))
def test_ragged_slices_split_a_global_batch_partition_major(lengths: list[int], w: int, per_rank: int,
                                                            batch: int) -> None:
    g = w * per_rank
    if (batch + 1) * g > sum(lengths):
        return
    q, j = world.ragged_locate(np.arange(batch * g, (batch + 1) * g), lengths)
    listing = sorted(zip(q.tolist(), j.tolist()))
    got = [(p, i) for r in range(w) for p, a, b in world.ragged_slices(batch, g, lengths, w, r) for i in range(a, b)]
    assert got == listing
    with pytest.raises(MixSQLError, match="beyond the stream"):
        world.ragged_locate(np.asarray([sum(lengths)]), lengths)
