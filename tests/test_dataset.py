"""The torch dataset: disjoint and complete shares, batches independent of workers and world size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import torch.utils.data

import mixsql
from mixsql import world
from mixsql.dataset import MixDataset
from tests.conftest import ROOT

STATEMENT = "MIX 2 AS code WHERE domain = 'code', 1 AS rest FROM corpus CHUNK SIZE 30"


@pytest.fixture()
def mix(con: mixsql.Connection) -> mixsql.Mix:
    return con.mix(STATEMENT, partitions=8)


def _plan_ids(mix: mixsql.Mix, n: int) -> list[str]:
    return [s["id"] for s in mix.samples(limit=n, columns=["id"])]


def _run(ds: MixDataset, workers: int, batch_size: int | None = None) -> list[str]:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers,
                                         collate_fn=mixsql.collate if batch_size else None)
    if batch_size:
        return [i for batch in loader for i in batch["id"]]
    return [s["id"] for s in loader]


def _as_worker(ds: MixDataset, w: int, n: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(world, "worker", lambda: (w, n))
    return [s["id"] for s in ds]


@pytest.mark.parametrize("world_size, workers", [(1, 0), (1, 2), (8, 0), (8, 2), (256, 0), (256, 2)])
def test_shares_are_disjoint_and_complete(mix: mixsql.Mix, world_size: int, workers: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    for rank in range(world_size):
        ds = mix.torch_dataset(batch_size=1 if world_size == 256 else 8, rank=rank, world_size=world_size,
                               columns=["id"])
        if world_size == 256:  # simulated workers: 512 real worker processes would only test PyTorch
            parts = [_as_worker(ds, w, max(workers, 1), monkeypatch) for w in range(max(workers, 1))]
            ids = [i for p in parts for i in p]
        else:
            ids = _run(ds, workers)
        assert len(ids) == len(ds)
        seen += ids
    total = (len(mix) // ds.global_batch_size) * ds.global_batch_size
    assert len(seen) == len(set(seen)) == total
    assert set(seen) == set(_plan_ids(mix, total))


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_batches_are_the_same_for_any_num_workers(mix: mixsql.Mix) -> None:
    runs = []
    for workers in (0, 1, 2, 4):
        ds = mix.torch_dataset(batch_size=8, rank=1, world_size=2, columns=["id", "tags"])
        loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=workers, collate_fn=mixsql.collate)
        runs.append([(b["id"], b["component"]) for b in loader])
    assert all(r == runs[0] for r in runs) and len(runs[0]) == len(mix) // 16


def test_persistent_workers_give_the_same_batches_every_epoch(mix: mixsql.Mix) -> None:
    """Workers kept between epochs (``persistent_workers=True``, which keeps their warm memory)
    start each epoch from the dataset's start, as new workers would."""
    ds = mix.torch_dataset(batch_size=8, columns=["id"])
    kept = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, collate_fn=mixsql.collate,
                                       persistent_workers=True)
    fresh = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, collate_fn=mixsql.collate)
    epochs = [[b["id"] for b in kept] for _ in range(2)]
    # the kept workers go now: left to the garbage collector, torch's __del__ of their iterator ran
    # inside a later test once and hung there in Queue.put
    kept._iterator._shutdown_workers()  # type: ignore[union-attr]
    del kept
    assert epochs[0] == epochs[1] == [b["id"] for b in fresh] and len(epochs[0]) == len(mix) // 8


def test_global_batch_is_the_same_set_for_every_world_size(mix: mixsql.Mix, monkeypatch: pytest.MonkeyPatch) -> None:
    G = 32
    by_world: dict[int, list[set[str]]] = {}
    for W in (1, 2, 4, 8):
        batches: list[set[str]] = [set() for _ in range(len(mix) // G)]
        for rank in range(W):
            ids = _as_worker(mix.torch_dataset(batch_size=G // W, rank=rank, world_size=W, columns=["id"]), 0, 1,
                             monkeypatch)
            for n in range(len(batches)):
                batches[n] |= set(ids[n * (G // W):(n + 1) * (G // W)])
        by_world[W] = batches
    assert all(len(b) == G for b in by_world[1])
    for W in (2, 4, 8):
        assert by_world[W] == by_world[1]
    ids = _plan_ids(mix, G * 3)
    assert by_world[4][2] == set(ids[2 * G:3 * G])  # global batch N is plan positions [N*G, (N+1)*G)


def test_each_rank_reads_only_its_partitions_and_is_mixed(mix: mixsql.Mix) -> None:
    plan = mix.plan()
    P, W, G = plan.partitions, 4, 64
    for rank in range(W):
        ds = mix.torch_dataset(batch_size=G // W, rank=rank, world_size=W)
        rows = np.concatenate([ds.batch_rows(plan, n) for n in range(ds.batches)])
        partition = np.array([np.searchsorted(plan.pool_start[c], r, side="right") - 1
                              for c, r in zip(plan.component[rows], rows)])
        assert set(partition.tolist()) == set(range(rank * P // W, (rank + 1) * P // W))
        share = float(np.mean(plan.component[rows] == 0))
        assert abs(share - 2 / 3) < 0.02


def test_collate_component_ids_and_list_properties(mix: mixsql.Mix) -> None:
    ds = mix.torch_dataset(batch_size=4, rank=0, world_size=1, columns=["id", "tags", "quality"], component="id")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=mixsql.collate)))
    assert set(batch) == {"id", "tags", "quality", "component"}
    assert all(isinstance(t, list) for t in batch["tags"]) and len(batch["id"]) == 4
    assert set(batch["component"]) <= {0, 1}


def test_topology_comes_from_the_environment(mix: mixsql.Mix, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    ds = mix.torch_dataset(batch_size=2)
    assert (ds.rank, ds.world_size) == (3, 4)
    assert mix.torch_dataset(batch_size=2, rank=0, world_size=2).rank == 0
    with pytest.raises(mixsql.MixSQLError, match="rank 5 is not in a world of size 4"):
        mix.torch_dataset(rank=5)


SCRIPT = r"""
import json, os, sys
import torch.distributed as dist
import mixsql
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=int(os.environ["RANK"]),
                        world_size=int(os.environ["WORLD_SIZE"]))
con = mixsql.connect(sys.argv[2], create=False)
mix = con.mix(sys.argv[3], partitions=8)
ds = mix.torch_dataset(batch_size=4, columns=["id"])   # rank and world size from torch.distributed
import torch.utils.data
loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1, collate_fn=mixsql.collate)
mine = [i for b in loader for i in b["id"]]
everything = [None] * dist.get_world_size()
dist.all_gather_object(everything, mine)
if dist.get_rank() == 0:
    print(json.dumps({"ranks": everything, "global_batch": ds.global_batch_size}))
dist.destroy_process_group()
"""


def test_torch_distributed_gloo(mix: mixsql.Mix, sample_catalog: Path, tmp_path: Path) -> None:
    mix.plan()  # compiled once; the ranks find it in the cache
    W = 3
    procs = []
    for rank in range(W):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(W)}
        procs.append(subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "rendezvous"),
                                       str(sample_catalog), STATEMENT], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    result = json.loads(outs[0][0])
    ranks = result["ranks"]
    G = result["global_batch"]
    assert G == 12 and len({len(r) for r in ranks}) == 1
    union = [i for r in ranks for i in r]
    total = len(mix) // G * G
    assert len(union) == len(set(union)) == total
    assert set(union) == set(_plan_ids(mix, total))


def test_a_statement_counting_steps_needs_its_global_batch(con) -> None:
    import pytest

    from mixsql.errors import MixSQLError
    from tests.conftest import SAMPLE

    mix = con.load(SAMPLE / "curriculum.mixsql", params={"min_quality": 0.3})
    assert mix.bound.counts_steps and mix.bound.batch_size == 32
    with pytest.raises(MixSQLError, match="counts STEPS of BATCH SIZE 32 samples, but this dataset's global batch is 8"):
        mix.torch_dataset(batch_size=8, rank=0, world_size=1)
    with pytest.raises(MixSQLError, match=r"global batch is 128 \(4 rank\(s\) x 32\)"):
        mix.torch_dataset(batch_size=32, rank=0, world_size=4)
    assert len(mix.torch_dataset(batch_size=8, rank=1, world_size=4)) > 0  # 4 x 8 = 32
    plain = con.mix("MIX 1 AS a FROM corpus BATCH SIZE 32 LIMIT 64 SAMPLES")
    assert not plain.bound.counts_steps and len(plain.torch_dataset(batch_size=8, rank=0, world_size=1)) > 0


@pytest.mark.parametrize("workers", [0, 2])
def test_batched_datasets_yield_the_same_batches_as_a_dataloader_would(tcon, workers: int) -> None:
    """batched=True: the dataset batches itself (DataLoader batch_size=None), so no DataLoader batch
    size can reorder the stream; the batches are those of the unbatched dataset, packed or not."""
    import torch

    mix = tcon.mix("MIX BY TOKENS 0.6 AS code WHERE domain = 'code', 0.4 AS rest FROM corpus PARTITIONS 4 LIMIT 800 SAMPLES")
    for kwargs, key in (({"seq_len": 64}, "input_ids"), ({"columns": ["id"]}, "id")):
        plain = torch.utils.data.DataLoader(mix.torch_dataset(batch_size=4, **kwargs), batch_size=4,
                                            num_workers=workers, **({} if "seq_len" in kwargs else
                                                                    {"collate_fn": mixsql.collate}))
        ds = mix.torch_dataset(batch_size=4, batched=True, **kwargs)
        batched = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
        a = [b[key] for b in plain]
        b = [b[key] for b in batched]
        as_is = [b[key] for b in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers,
                                                               collate_fn=mixsql.batch_as_is)]
        assert len(a) == len(b) == len(as_is) == len(ds) > 0
        for x, y in zip(as_is, b):  # the batches as the dataset made them: the same
            assert (torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y)
        for x, y in zip(a, b):
            assert (torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y)
        resumed = mix.torch_dataset(batch_size=4, batched=True, start_step=3, **kwargs)
        first = next(iter(resumed))[key]
        assert torch.equal(first, b[3]) if isinstance(first, torch.Tensor) else first == b[3]



@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(world_size=st.sampled_from([1, 2, 3, 8]), batch_size=st.integers(1, 9), first=st.integers(0, 40),
       step=st.integers(1, 4), count=st.integers(1, 30), data=st.data())
def test_a_reads_rows_are_its_batches_rows_one_after_another(mix: mixsql.Mix, world_size: int, batch_size: int,
                                                             first: int, step: int, count: int,
                                                             data: st.DataObject) -> None:
    """A read's rows come from one vectorised locate and one lookup per partition; they are each
    batch's rows (``batch_rows``), in order, for any rank, batch size and worker stride."""
    rank = data.draw(st.integers(0, world_size - 1))
    ds = mix.torch_dataset(batch_size=batch_size, rank=rank, world_size=world_size, columns=["id"])
    plan = ds._plan()
    batches = range(min(first, ds.batches - 1), ds.batches, step)[:count]
    expected = np.concatenate([ds.batch_rows(plan, b) for b in batches])
    assert np.array_equal(ds._rows(plan, batches), expected)


class _Tuning(torch.utils.data.IterableDataset):
    """What a DataLoader worker's process looks like once a mixsql dataset started iterating in it."""

    def __init__(self, inner: MixDataset) -> None:
        self.inner = inner

    def __iter__(self):  # type: ignore[no-untyped-def]
        import fcntl

        import pyarrow as pa

        first = next(iter(self.inner))
        read, write = os.pipe()
        sizes = []
        for name in os.listdir("/proc/self/fd"):
            try:
                fd = int(name)
                if fd not in (read, write) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                    sizes.append(fcntl.fcntl(fd, 1032))  # F_GETPIPE_SZ; not a pipe: OSError
            except OSError:
                continue
        yield {"id": first["id"], "threads": pa.cpu_count(), "pipes": sizes}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipe sizes are Linux's")
def test_a_worker_takes_its_share_of_the_cores_and_writes_batches_in_one_go(mix: mixsql.Mix) -> None:
    ds = mix.torch_dataset(batch_size=4, columns=["id"])
    got = list(torch.utils.data.DataLoader(_Tuning(ds), batch_size=None, num_workers=2))
    cores = len(os.sched_getaffinity(0))
    assert len(got) == 2 and all(g["threads"] == max(1, cores // 2) for g in got)
    assert all(g["pipes"] and max(g["pipes"]) == 1 << 20 for g in got)  # the queue to the main process


@pytest.mark.parametrize("world_size, workers, start", [(1, 1, 0), (1, 2, 0), (3, 1, 0), (1, 1, 5)])
def test_a_dataset_holds_blocks_for_the_reads_it_was_given_and_lets_them_go(
        con: mixsql.Connection, world_size: int, workers: int, start: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataset's reader holds a block for the reads announced to it, so once they are read nothing
    is held for rows it will never read: those of other DataLoader workers (each takes every n-th
    batch), of other ranks sharing its partitions, before a resumed start, or after the last whole
    batch. Counting whole windows instead leaves such blocks held; the samples are the same."""
    from mixsql import dataset as _dataset

    made: list[_dataset.Reader] = []
    windows = {"on": False}

    class Kept(_dataset.Reader):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            made.append(self)

        def __setattr__(self, name: str, value: object) -> None:
            object.__setattr__(self, name, False if name == "partial" and windows["on"] else value)

    mix = con.mix(STATEMENT.replace("CHUNK SIZE 30", "CHUNK SIZE 7"), partitions=4)
    ds = mix.torch_dataset(batch_size=3, rank=0, world_size=world_size, columns=["id"], start_step=start)
    expected = _as_worker(ds, 0, workers, monkeypatch)
    monkeypatch.setattr(_dataset, "Reader", Kept)
    got = _as_worker(ds, 0, workers, monkeypatch)
    assert got == expected and len(got) > 0
    reader = made[-1]
    assert reader.partial and all(n == 0 for n in reader._pending.values())  # every announced row handed out
    if workers > 1:  # what the workers' shared blocks hold is mapped back from there if read again, not kept
        assert reader.shared is not None and reader.shared.decoded + reader.shared.mapped > 0
        assert not any(reader._through_shared(reader._keys[k]) for k in reader._probation)
        assert not any(reader._through_shared(k) for k in reader._sources)
    windows["on"] = True  # whole windows: the rows this reader never reads keep their blocks
    assert _as_worker(ds, 0, workers, monkeypatch) == expected
    assert not made[-1].partial and any(n > 0 for n in made[-1]._pending.values())
