"""Decoded row groups shared by DataLoader workers: each decoded once, the same tables, nothing left behind."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import mixsql
from mixsql import read, shared, world
from mixsql.shared import SharedBlocks


def _table(i: int) -> pa.Table:
    return pa.table({"id": [f"{i}-{k}" for k in range(100)], "text": ["x" * (i + 1)] * 100})


def _fill(root: str, keys: list[str], out: "multiprocessing.Queue[tuple[int, list[int], bool]]") -> None:
    blocks = SharedBlocks(root)
    decoded: list[int] = []

    def decode(todo: list[int]) -> list[pa.Table]:
        time.sleep(0.05)  # long enough for the other process to want the same entries
        decoded.extend(int(keys[i][:8], 16) for i in todo)
        return [_table(int(keys[i][:8], 16)) for i in todo]

    tables = blocks.fill(keys, decode)
    out.put((os.getpid(), decoded, all(tb.equals(_table(int(k[:8], 16))) for tb, k in zip(tables, keys))))


def test_two_processes_decode_each_entry_once(tmp_path: Path) -> None:
    keys = [f"{i:08x}" + "0" * 56 for i in range(12)]
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_fill, args=(str(tmp_path), keys[::step], out)) for step in (1, -1)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert all(ok for _, _, ok in results)
    decoded = sorted(k for _, d, _ in results for k in d)
    assert decoded == list(range(12))  # each entry decoded by exactly one of them


def _hold_and_die(root: str, key: str) -> None:
    blocks = SharedBlocks(root)
    blocks.fill([key], lambda todo: [time.sleep(60)])  # killed while decoding: the lock goes with it


def test_a_worker_killed_while_decoding_leaves_the_entry_to_the_others(tmp_path: Path) -> None:
    key = "ab" * 32
    ctx = multiprocessing.get_context("fork")
    holder = ctx.Process(target=_hold_and_die, args=(str(tmp_path), key))
    holder.start()
    time.sleep(0.5)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    blocks = SharedBlocks(str(tmp_path))
    got = blocks.fill([key], lambda todo: [_table(7)])
    assert got[0].equals(_table(7)) and blocks.decoded == 1
    assert not list(tmp_path.glob("*.part"))


def test_entries_are_bounded_and_only_entries_are_removed(tmp_path: Path) -> None:
    keep = tmp_path / "notes.txt"
    keep.write_text("not ours")
    size = _table(50).nbytes
    blocks = SharedBlocks(str(tmp_path), limit=5 * size)
    keys = [f"{i:064x}" for i in range(30)]
    for i, key in enumerate(keys):
        blocks.fill([key], lambda todo, i=i: [_table(50)])
    blocks.evict()
    entries = list(tmp_path.glob("*.arrow"))
    assert 0 < len(entries) <= 6 and keep.exists()
    assert blocks.get(keys[-1]) is not None  # the newest stay
    (tmp_path / f"{keys[-1]}.arrow").write_bytes(b"torn")
    assert blocks.get(keys[-1]) is None and not (tmp_path / f"{keys[-1]}.arrow").exists()


def test_directories_of_owners_that_died_are_swept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shared, "SHM", tmp_path)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=time.sleep, args=(0,))
    child.start()
    child.join()
    dead = tmp_path / f"mixsql-blocks-{child.pid}-{'0' * 16}"
    alive = tmp_path / f"mixsql-blocks-{os.getpid()}-{'1' * 16}"
    other = tmp_path / "someone-elses"
    for d in (dead, alive, other):
        d.mkdir()
    made = shared.new_directory()
    assert made is not None and made.startswith(str(tmp_path / f"mixsql-blocks-{os.getpid()}-"))
    assert not dead.exists() and alive.exists() and other.exists()
    assert shared.new_directory() == made  # one per process
    monkeypatch.setenv("MIXSQL_SHARED_BLOCKS", "0")
    assert shared.new_directory() is None


def test_workers_of_a_dataset_decode_each_row_group_once(con: mixsql.Connection,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker w of 2 (simulated one after the other): the second maps what the first decoded; the
    batches are those of the plain stream."""
    mix = con.mix("MIX 2 AS code WHERE domain = 'code', 1 AS rest FROM corpus CHUNK SIZE 30", partitions=4)
    decoded: list[int] = []
    real = read._decode_many

    def counting(groups, columns, schema, fragments):
        decoded.append(len(groups))
        return real(groups, columns, schema, fragments)

    monkeypatch.setattr(read, "_decode_many", counting)
    ds = mix.torch_dataset(batch_size=4, columns=["id", "text"])
    alone = [s["id"] for s in ds]
    once = sum(decoded)
    decoded.clear()
    parts = []
    for w in range(2):
        monkeypatch.setattr(world, "worker", lambda w=w: (w, 2))
        parts.append([s["id"] for s in ds])
    assert sum(decoded) == once  # not once per worker
    batches = [alone[i: i + 4] for i in range(0, len(alone), 4)]
    assert parts[0] == [i for b in batches[0::2] for i in b] and parts[1] == [i for b in batches[1::2] for i in b]


def test_workers_share_only_the_rows_a_selective_plan_takes(con: mixsql.Connection, monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    """A row group the plan takes little of is cut down to the plan's rows where it is decoded, so
    the shared entries hold those rows only; the workers' batches are still the plain stream's."""
    mix = con.mix("MIX 0.5 AS code WHERE domain = 'code', 0.5 AS rest FROM corpus CHUNK SIZE 30 LIMIT 64 SAMPLES",
                  partitions=4)
    plan = mix.plan()
    ds = mix.torch_dataset(batch_size=4, columns=["id", "text"])
    ds._shared = str(tmp_path / "blocks")  # this test's entries alone
    alone = [s["id"] for s in ds]
    parts = []
    for w in range(2):
        monkeypatch.setattr(world, "worker", lambda w=w: (w, 2))
        parts.append([s["id"] for s in ds])
    batches = [alone[i: i + 4] for i in range(0, len(alone), 4)]
    assert parts[0] == [i for b in batches[0::2] for i in b] and parts[1] == [i for b in batches[1::2] for i in b]
    entries = [pa.ipc.open_file(pa.memory_map(str(p))).read_all() for p in Path(ds._shared).glob("*.arrow")]
    groups = {(int(f), int(plan.files[f].row_group_of(np.array([r]))[0])) for f, r in zip(plan.file, plan.row)}
    whole = sum(plan.files[f].row_groups[g] for f, g in groups)
    assert entries and sum(e.num_rows for e in entries) == len(plan) < whole / 2
    assert sorted(i for e in entries for i in e.column("id").to_pylist()) == sorted(alone)
