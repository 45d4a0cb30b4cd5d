"""Topology: which (rank, DataLoader worker) reads which samples. All of it is arithmetic on positions.

Definitions (P canonical partitions, plan order as in ``plan``: position p is sample p // P of
partition p % P; G = world_size x batch_size is the global batch size):

- **Global batch N** is plan positions [N*G, (N+1)*G). It depends on the plan and G only, so it is
  the same set of samples for every world size W that divides G: a run saved at one W resumes at
  another with nothing repeated or skipped.
- **Rank r's share** of global batch N: list the batch's positions partition-major (partition 0's
  samples first, each partition's in stream order) and take the r-th of W equal slices, B = G/W
  samples. When P divides G and W divides P, rank r reads exactly partitions [r*P/W, (r+1)*P/W):
  its own contiguous pools of every component, each an exactly mixed stream. For other W it reads
  about P/W + 1 partitions; correctness never depends on it.
- **DataLoader worker** w of n yields whole rank batches w, w+n, w+2n, ...; PyTorch's DataLoader
  takes batches from its workers round-robin, so a rank sees batches 0, 1, 2, ... for any n.
- The stream for torch ends after the last *complete* global batch, so every rank yields the same
  number of batches (collectives never hang); ``Mix.samples()`` yields the rest too.
- Rank and world size are *data-parallel*: tensor- or pipeline-parallel peers that must see the
  same data pass the same (dp_rank, dp_size).

Without a batch size, G defaults to lcm(P, W) (B = G / W), which keeps the same locality.

**Resume guarantee** (``state``): a run that consumed N global batches of size G has consumed
exactly plan positions [0, N*G). Restarted at any world size W' with global batch size G' (W'
dividing G', G' dividing N*G), global batch N*G/G' onwards are exactly the positions it would
have consumed without the restart; nothing is repeated or skipped.
"""

from __future__ import annotations

import math
import numbers
import os
import typing as t

import numpy as np

from mixsql.errors import MixSQLError


def topology(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): the arguments, else torch.distributed if initialised, else RANK/WORLD_SIZE, else (0, 1)."""
    if rank is None or world_size is None:
        found: tuple[int, int] | None = None
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                found = (dist.get_rank(), dist.get_world_size())
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        if found is None and "WORLD_SIZE" in os.environ:
            try:
                found = (int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"]))
            except ValueError:
                raise MixSQLError(f"RANK={os.environ.get('RANK')!r} and WORLD_SIZE={os.environ['WORLD_SIZE']!r} "
                                  "are not integers") from None
        found = found or (0, 1)
        rank = found[0] if rank is None else rank
        world_size = found[1] if world_size is None else world_size
    for name, value in (("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise MixSQLError(f"{name} must be an integer, not {value!r} ({type(value).__name__})")
    rank, world_size = int(rank), int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise MixSQLError(f"rank {rank} is not in a world of size {world_size}",
                          hint="rank must be in [0, world_size)")
    return rank, world_size


def global_batch(partitions: int, world_size: int, batch_size: int | None) -> tuple[int, int]:
    """(G, B): the global and per-rank batch sizes."""
    if batch_size is None:
        g = math.lcm(partitions, world_size)
        return g, g // world_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise MixSQLError(f"batch_size must be a positive integer, not {batch_size!r}")
    batch_size = int(batch_size)
    return batch_size * world_size, batch_size


def partition_indices(start: int, stop: int, q: int, partitions: int) -> tuple[int, int]:
    """The samples [m0, m1) of partition q's stream that plan positions [start, stop) hold
    (position p is sample p // P of partition p % P)."""
    return max(0, -(-(start - q) // partitions)), max(0, -(-(stop - q) // partitions))


def batch_positions(batch: int, g: int) -> tuple[int, int]:
    """Plan positions [N*G, (N+1)*G) of global batch N."""
    return batch * g, (batch + 1) * g


def rank_slices(batch: int, g: int, partitions: int, world_size: int, rank: int) -> list[tuple[int, int, int]]:
    """Rank ``rank``'s share of global batch ``batch``: (partition, start, stop) in partition sample indices."""
    first, last = batch_positions(batch, g)
    runs = ((q, *partition_indices(first, last, q, partitions)) for q in range(partitions))
    return _share(((q, a, z - a) for q, a, z in runs), g, world_size, rank)


def _share(runs: t.Iterable[tuple[int, int, int]], g: int, world_size: int, rank: int) -> list[tuple[int, int, int]]:
    """The r-th of W equal slices of a global batch listed partition-major, from its runs (partition,
    first index, count) in partition order: (partition, start, stop) for each run the slice touches."""
    b = g // world_size
    lo, hi = rank * b, (rank + 1) * b
    out, seen = [], 0
    for q, a, n in runs:
        if n <= 0:
            continue
        s, e = max(lo - seen, 0), min(hi - seen, n)
        if s < e:
            out.append((q, a + s, a + e))
        seen += n
        if seen >= hi:
            break
    return out


def ragged_locate(positions: np.ndarray, lengths: t.Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(partition, index) of each position of a round-robin over partitions of unequal lengths:
    round j holds index j of every partition longer than j, in partition order. With the lengths of
    a plan's sample partitions (ceil((n - q) / P)) this is p -> (p % P, p // P); packed sequences,
    whose partitions differ in length, use it as is. Vectorised; no round before a position is walked."""
    positions = np.asarray(positions, dtype=np.int64)
    sizes = np.asarray(lengths, dtype=np.int64)
    if len(positions) and (positions.min() < 0 or positions.max() >= sizes.sum()):
        raise MixSQLError(f"position {int(positions.max())} is beyond the stream of {int(sizes.sum()):,}")
    levels = np.unique(np.concatenate(([0], sizes)))
    before = np.minimum(sizes[None, :], levels[:, None]).sum(axis=1)  # positions in rounds < level
    active = sizes[None, :] > levels[:, None]
    order = np.argsort(~active, axis=1, kind="stable")  # row k: the partitions longer than levels[k], in order
    k = np.searchsorted(before, positions, side="right") - 1
    offset = positions - before[k]
    width = active.sum(axis=1)[k]
    return order[k, offset % width].astype(np.int64), levels[k] + offset // width


def ragged_slices(batch: int, g: int, lengths: t.Sequence[int], world_size: int,
                  rank: int) -> list[tuple[int, int, int]]:
    """``rank_slices`` for partitions of unequal lengths (``ragged_locate``): rank ``rank``'s share of
    global batch ``batch`` as (partition, start, stop), the batch listed partition-major."""
    return ragged_slices_many([batch], g, lengths, world_size, rank)[0]


def ragged_slices_many(batches: t.Sequence[int], g: int, lengths: t.Sequence[int], world_size: int,
                       rank: int) -> list[list[tuple[int, int, int]]]:
    """``ragged_slices`` for several global batches at once (one vectorised locate for all)."""
    total = int(sum(lengths))
    starts = np.asarray(batches, dtype=np.int64) * g
    positions = (starts[:, None] + np.arange(g, dtype=np.int64)[None, :]).reshape(-1)
    keep = positions < total
    q, j = ragged_locate(positions[keep], lengths)
    which = np.repeat(np.arange(len(starts), dtype=np.int64), g)[keep]
    # a partition's indices in a run of positions are contiguous and increasing: (batch, partition)
    # groups, in partition order, start at their smallest index
    key = which * len(lengths) + q
    unique, first, counts = np.unique(key, return_index=True, return_counts=True)
    out: list[list[tuple[int, int, int]]] = [[] for _ in batches]
    runs: list[list[tuple[int, int, int]]] = [[] for _ in batches]
    for k, a, n in zip(unique.tolist(), j[first].tolist(), counts.tolist()):
        runs[k // len(lengths)].append((k % len(lengths), a, n))
    for b, mine in enumerate(runs):
        out[b] = _share(mine, g, world_size, rank)
    return out


def worker() -> tuple[int, int]:
    """(worker id, number of workers) of the current DataLoader worker; (0, 1) outside one."""
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


__all__: t.Sequence[str] = ["batch_positions", "global_batch", "partition_indices", "ragged_locate", "ragged_slices",
                            "ragged_slices_many",
                            "rank_slices", "topology", "worker"]
