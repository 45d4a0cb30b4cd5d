"""Stage ``torch``: an ``IterableDataset`` over a compiled plan, for any rank and DataLoader worker.

The contract (see ``world`` for the arithmetic): every (rank, worker) gets a disjoint share; the
union over ranks and workers is the planned stream up to its last complete global batch; with
``batch_size`` given, a rank's DataLoader yields the same batches for any ``num_workers``; global
batch N is the same samples for every world size dividing the global batch size.
"""

from __future__ import annotations

import typing as t

import numpy as np
import torch.utils.data

from mixsql import world
from mixsql.manifest import CompiledPlan
from mixsql.read import READ_SAMPLES, Reader


class MixDataset(torch.utils.data.IterableDataset):
    """Samples of one rank; pickles as the plan's directory, so workers memory-map the same plan."""

    def __init__(self, plan_dir: str, *, batch_size: int | None = None, rank: int | None = None,
                 world_size: int | None = None, columns: t.Sequence[str] | None = None,
                 component: str = "name") -> None:
        super().__init__()
        if component not in ("name", "id"):
            raise ValueError("component must be 'name' or 'id'")
        self.plan_dir = str(plan_dir)
        self.rank, self.world_size = world.topology(rank, world_size)
        self.columns = list(columns) if columns is not None else None
        self.component = component
        plan = self._plan()
        self.global_batch_size, self.batch_size = world.global_batch(plan.partitions, self.world_size, batch_size)
        self.batches = len(plan) // self.global_batch_size
        Reader(plan, self.columns)  # validate the columns now, not in a worker

    def _plan(self) -> CompiledPlan:
        return CompiledPlan(self.plan_dir)

    def __len__(self) -> int:
        """Samples this rank yields (all its workers together)."""
        return self.batches * self.batch_size

    def batch_rows(self, plan: CompiledPlan, batch: int) -> np.ndarray:
        """Plan rows of this rank's share of global batch ``batch``."""
        slices = world.rank_slices(batch, self.global_batch_size, plan.partitions, self.world_size, self.rank)
        parts = [plan.partition_rows(q, a, b) for q, a, b in slices]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def __iter__(self) -> t.Iterator[dict[str, t.Any]]:
        worker_id, workers = world.worker()
        plan = self._plan()
        reader = Reader(plan, self.columns)
        mine = range(worker_id, self.batches, workers)
        group = max(1, READ_SAMPLES // self.batch_size)  # read several of this worker's batches at once
        for first in range(0, len(mine), group):
            batches = mine[first: first + group]
            yield from reader.samples(np.concatenate([self.batch_rows(plan, b) for b in batches]),
                                      component=self.component)


def collate(samples: t.Sequence[dict[str, t.Any]]) -> dict[str, list[t.Any]]:
    """A batch as a dict of lists (list-valued properties stay lists of lists)."""
    if not samples:
        return {}
    return {key: [s[key] for s in samples] for key in samples[0]}
