"""Per-component losses: exact sums and counts, ignored labels, refusals, and one all-reduce under
torch.distributed (two processes on gloo hold the same numbers)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import mixsql
from mixsql.errors import MixSQLError


def test_sums_and_counts_per_component() -> None:
    g = torch.Generator().manual_seed(0)
    loss = torch.rand(4, 16, generator=g, dtype=torch.float32)
    comp = torch.randint(0, 3, (4, 16), generator=g)
    labels = torch.randint(0, 50, (4, 16), generator=g)
    labels[0, :5] = -100
    sums, counts = mixsql.component_losses(loss, comp, 3, labels=labels)
    keep = labels != -100
    for c in range(3):
        mine = keep & (comp == c)
        assert counts[c].item() == int(mine.sum())
        assert sums[c].item() == pytest.approx(loss[mine].double().sum().item(), rel=1e-12)
    assert sums.dtype == torch.float64 and counts.dtype == torch.int64
    all_sums, all_counts = mixsql.component_losses(loss, comp, 3)
    assert int(all_counts.sum()) == loss.numel() and all_sums.sum().item() == pytest.approx(loss.double().sum().item())
    loss.requires_grad_(True)
    assert not mixsql.component_losses(loss * 2, comp, 3)[0].requires_grad  # detached: no graph kept


def test_refusals() -> None:
    loss, comp = torch.ones(8), torch.zeros(8, dtype=torch.int64)
    with pytest.raises(MixSQLError, match="one loss per token"):
        mixsql.component_losses(torch.ones(7), comp, 2)
    with pytest.raises(MixSQLError, match=r"component id 5 is not in \[0, 2\)"):
        mixsql.component_losses(loss, comp + 5, 2)
    with pytest.raises(MixSQLError, match="num_components must be a positive integer"):
        mixsql.component_losses(loss, comp, 0)
    with pytest.raises(MixSQLError, match="floating point"):
        mixsql.component_losses(comp, comp, 2)


def _rank(rank: int, world: int, path: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    loss = torch.full((2, 4), float(rank + 1))
    comp = torch.tensor([[0, 1, 1, 0], [rank, rank, 0, 1]])
    sums, counts = mixsql.component_losses(loss, comp, 2)
    torch.save((sums, counts), f"{out}.{rank}")
    dist.destroy_process_group()


def test_all_ranks_hold_the_same_reduced_numbers(tmp_path) -> None:
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2, join=True)
    (s0, c0), (s1, c1) = (torch.load(tmp_path / f"out.{r}") for r in range(2))
    assert torch.equal(s0, s1) and torch.equal(c0, c1)
    # rank 0: loss 1 on comps [0,1,1,0,0,0,0,1]; rank 1: loss 2 on [0,1,1,0,1,1,0,1]
    assert c0.tolist() == [5 + 3, 3 + 5] and s0.tolist() == [5 * 1 + 3 * 2, 3 * 1 + 5 * 2]
