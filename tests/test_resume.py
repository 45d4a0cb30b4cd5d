"""Resume: any step, any topology, bit for bit; safety checks; lineage; no global random state touched."""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
import typing as t
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.utils.data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixsql
from mixsql import world
from mixsql.dataset import MixDataset
from mixsql.errors import DataError
from mixsql.state import StateError
from tests.conftest import PARQUET_GLOB, ROOT

STATEMENT = "MIX 2 AS code WHERE domain = 'code', 1 AS rest FROM corpus CHUNK SIZE 30 PARTITIONS 8"
CURRICULUM = """MIX 0.5 AS code WHERE domain = 'code', 0.5 AS docs WHERE domain = 'docs', 0.2 AS rest FROM corpus
ORDER BY CURRICULUM (STAGE UNTIL 400 SAMPLES (docs = 0), RAMP UNTIL 900 SAMPLES (code = 0.2),
                     code BY quality DESC BUCKETS 3)
CHUNK SIZE 16 PARTITIONS 4"""


def _reference(mix: mixsql.Mix) -> list[str]:
    return [s["id"] for s in mix.samples(columns=["id"])]


def _run(ranks: list[MixDataset], workers: int, monkeypatch: pytest.MonkeyPatch, take: int | None = None,
         first_worker: int = 0) -> tuple[dict[int, list[str]], list[dict]]:
    """Every rank's DataLoader simulated in-process: worker copies of the dataset, batches taken
    round-robin starting at ``first_worker``. Stops after ``take`` batches per rank. Returns the ids
    of each global batch and each rank's loader state (its workers' states)."""
    delivered: dict[int, list[str]] = {}
    states = []
    for ds in ranks:
        copies, gens = [], []
        for w in range(workers):
            monkeypatch.setattr(world, "worker", lambda w=w: (w, workers))
            c = copy.deepcopy(ds)
            gens.append(iter(c))  # the worker's iterator reads its topology now
            copies.append(c)
        monkeypatch.undo()
        snapshots = [c.state_dict() for c in copies]  # what a StatefulDataLoader holds before any batch
        pending: dict[int, tuple[list, t.Any]] = {w: ([], gens[w]) for w in range(workers)}
        w = first_worker
        taken = 0
        done = set()
        while (take is None or taken < take) and len(done) < workers:
            buf, g = pending[w]
            while len(buf) < ds.batch_size:
                s = next(g, None)
                if s is None:
                    break
                buf.append(s)
            if len(buf) < ds.batch_size:
                done.add(w)
                w = (w + 1) % workers
                continue
            batch, pending[w] = buf[:ds.batch_size], ([], g)
            snapshots[w] = copies[w].state_dict()  # sent with the batch, as StatefulDataLoader does
            n = snapshots[w]["next"] - workers  # the global batch this worker just completed
            delivered.setdefault(n, []).extend(s["id"] for s in batch)
            taken += 1
            w = (w + 1) % workers
        states.append({"_snapshot": {"_worker_snapshots": {f"worker_{k}": {"dataset_state": s}
                                                           for k, s in enumerate(snapshots)}}})
    return delivered, states


@st.composite
def topologies(draw: st.DrawFn) -> tuple:
    G = draw(st.sampled_from([8, 12, 16]))
    divisors = [d for d in range(1, G + 1) if G % d == 0 and d <= 8]
    return (G, draw(st.sampled_from(divisors)), draw(st.integers(1, 3)), draw(st.sampled_from(divisors)),
            draw(st.integers(1, 3)), draw(st.floats(0, 1)), draw(st.sampled_from([STATEMENT, CURRICULUM])))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topologies())
def test_elastic_resume_continues_exactly(con: mixsql.Connection, monkeypatch: pytest.MonkeyPatch, case: tuple) -> None:
    G, w_old, n_old, w_new, n_new, fraction, text = case
    mix = con.mix(text)
    reference = _reference(mix)
    batches = len(mix) // G
    save = int(fraction * batches)
    old = [mix.torch_dataset(batch_size=G // w_old, rank=r, world_size=w_old, columns=["id"]) for r in range(w_old)]
    before, states = _run(old, n_old, monkeypatch, take=save)
    assert sorted(before) == list(range(save))
    new = [mix.torch_dataset(batch_size=G // w_new, rank=r, world_size=w_new, columns=["id"]) for r in range(w_new)]
    for ds in new:
        ds.load_state_dict(states[-1])  # any rank's saved loader state: all say the same global step
        assert ds.start == save
    after, _ = _run(new, n_new, monkeypatch)
    assert sorted(after) == list(range(save, batches))
    for n, ids in {**before, **after}.items():  # global batch N: the same samples as without the restart
        assert sorted(ids) == sorted(reference[n * G:(n + 1) * G])


def test_start_step_is_o1_and_exact(con: mixsql.Connection) -> None:
    mix = con.mix(STATEMENT)
    reference = _reference(mix)
    ds = mix.torch_dataset(batch_size=8, rank=0, world_size=1, columns=["id"], start_step=57)
    got = [s["id"] for s in ds]
    assert got == reference[57 * 8: len(mix) // 8 * 8] and len(got) == len(ds)
    with pytest.raises(StateError, match="outside the stream"):
        mix.torch_dataset(batch_size=8, start_step=10**9)


def test_state_size_does_not_grow(con: mixsql.Connection) -> None:
    mix = con.mix(STATEMENT)
    ds = mix.torch_dataset(batch_size=4, rank=0, world_size=1, columns=["id"])
    states = []
    for k, _ in enumerate(ds):
        if k in (3, 400, 4 * (len(ds) // 4) - 1):
            states.append(ds.state_dict())
    assert states[0]["next"] < states[1]["next"] < states[2]["next"]
    assert len({tuple(sorted(s)) for s in states}) == 1  # the same few fields: only the numbers move
    assert max(len(json.dumps(s)) for s in states) - min(len(json.dumps(s)) for s in states) <= 4
    assert all(len(json.dumps(s)) < 1000 for s in states)


@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_dataloader_resumes_every_worker(con: mixsql.Connection, workers: int) -> None:
    from torchdata.stateful_dataloader import StatefulDataLoader

    mix = con.mix(STATEMENT)
    ds = mix.torch_dataset(batch_size=4, rank=0, world_size=1, columns=["id"])

    def loader(d: MixDataset) -> StatefulDataLoader:
        return StatefulDataLoader(d, batch_size=4, num_workers=workers, collate_fn=mixsql.collate)

    full = [b["id"] for b in loader(ds)]
    first = loader(mix.torch_dataset(batch_size=4, rank=0, world_size=1, columns=["id"]))
    it = iter(first)
    head = [next(it)["id"] for _ in range(13)]
    saved = first.state_dict()
    del it, first
    second = loader(mix.torch_dataset(batch_size=4, rank=0, world_size=1, columns=["id"]))
    second.load_state_dict(saved)
    tail = [b["id"] for b in second]
    assert head + tail == full
    # the same saved state, elastic: a fresh plain DataLoader with 3 workers on 2 ranks
    resumed = []
    for rank in range(2):
        d = mix.torch_dataset(batch_size=2, rank=rank, world_size=2, columns=["id"])
        d.load_state_dict(saved)
        resumed.append([i for b in torch.utils.data.DataLoader(d, batch_size=2, num_workers=3,
                                                               collate_fn=mixsql.collate) for i in b["id"]])
    flat = [i for b in full[13:] for i in b]
    assert sorted(resumed[0] + resumed[1]) == sorted(flat)
    for n in range(len(full) - 13):  # global batch by global batch
        assert sorted(resumed[0][2 * n: 2 * n + 2] + resumed[1][2 * n: 2 * n + 2]) == sorted(full[13 + n])


def test_state_for_another_stream_is_refused_with_the_difference(con: mixsql.Connection) -> None:
    text = "MIX 2 AS code WHERE domain = 'code' AND quality > :q, 1 AS rest FROM corpus CHUNK SIZE 30"
    a = con.mix(text, params={"q": 0.1}).torch_dataset(batch_size=4, columns=["id"], start_step=5)
    b = con.mix(text, params={"q": 0.3}).torch_dataset(batch_size=4, columns=["id"])
    with pytest.raises(StateError) as e:
        b.load_state_dict(a.state_dict())
    assert "parameter q: 0.1 -> 0.3" in e.value.message
    other = con.mix(STATEMENT).torch_dataset(batch_size=4, columns=["id"])
    with pytest.raises(StateError, match="the statement changed"):
        other.load_state_dict(a.state_dict())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b.load_state_dict(a.state_dict(), force=True)
    assert b.start == 5 and any("force=True" in str(w.message) for w in caught)
    with pytest.raises(StateError, match="not a whole number of global batches"):
        con.mix(text, params={"q": 0.1}).torch_dataset(batch_size=3, columns=["id"]).load_state_dict(a.state_dict())
    with pytest.raises(StateError, match="no mixsql state"):
        b.load_state_dict({"step": 3})


def test_state_for_another_catalog_version_says_which_dataset(tmp_path: Path, data_copy: Path) -> None:
    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", [str(data_copy / "parquet" / "*.parquet")])
    saved = con.mix(STATEMENT).torch_dataset(batch_size=4, columns=["id"], start_step=2).state_dict()
    victim = sorted((data_copy / "parquet").glob("*.parquet"))[-1]
    victim.unlink()  # the data changed: registering again makes a new version
    con.register("corpus", [str(data_copy / "parquet" / "*.parquet")], replace=True)
    with pytest.raises(StateError, match="dataset corpus: version"):
        con.mix(STATEMENT).torch_dataset(batch_size=4, columns=["id"]).load_state_dict(saved)


def test_changed_data_is_detected_at_start_up(tmp_path: Path, data_copy: Path) -> None:
    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", [str(data_copy / "parquet" / "*.parquet")])
    mix = con.mix(STATEMENT)
    mix.plan()
    victim = sorted((data_copy / "parquet").glob("*.parquet"))[-1]
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(DataError) as e:  # planning checks every file, once
        con.mix(STATEMENT).torch_dataset(batch_size=4, columns=["id"])
    assert victim.name in e.value.message and "changed since it was registered" in e.value.message
    dataset = mix.torch_dataset(batch_size=4, columns=["id"])  # planned before: each reader checks as it opens
    with pytest.raises(DataError) as e:
        list(dataset)
    assert victim.name in e.value.message and "changed since it was registered" in e.value.message


def test_no_global_random_state_is_read_or_changed(con: mixsql.Connection) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    mix = con.mix(CURRICULUM, seed=11)
    mix.plan()
    list(mix.samples(limit=300, columns=["id"]))
    ds = mix.torch_dataset(batch_size=4, columns=["id"], start_step=3)
    list(ds)  # (a DataLoader itself draws its base seed from torch's generator unless given one)
    list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0, collate_fn=mixsql.collate,
                                     generator=torch.Generator()))
    ds.load_state_dict(ds.state_dict())
    mix.lineage(2, 8, ["quality"])
    after = (random.getstate(), np.random.get_state()[1], torch.get_rng_state())
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and torch.equal(before[2], after[2])


def test_lineage_names_the_samples_of_a_global_batch(con: mixsql.Connection, tmp_path: Path,
                                                     sample_catalog: Path) -> None:
    mix = con.mix(CURRICULUM)
    G, step = 12, 40
    reference = list(mix.samples(columns=["id", "quality"]))[step * G:(step + 1) * G]
    table = mix.lineage(step, G, ["id", "quality"])
    assert table.column("id").to_pylist() == [s["id"] for s in reference]
    assert table.column("component").to_pylist() == [s["component"] for s in reference]
    assert table.column("quality").to_pylist() == [s["quality"] for s in reference]
    assert table.column("position").to_pylist() == list(range(step * G, (step + 1) * G))
    rows = table.to_pylist()
    import duckdb

    for r in rows[:3]:  # file and row point at the record
        found = duckdb.sql(f"SELECT id FROM read_parquet('{PARQUET_GLOB}', filename=true, file_row_number=true) "
                           f"WHERE filename = '{r['file'].removeprefix('file://')}' AND file_row_number = {r['row']}"
                           ).fetchall()
        assert found == [(r["id"],)]
    f = tmp_path / "c.mixsql"
    f.write_text(CURRICULUM)
    cli = [sys.executable, "-m", "mixsql", "--catalog", str(sample_catalog)]
    out = [json.loads(line) for line in subprocess.run(
        cli + ["lineage", str(f), "--step", str(step), "--batch-size", str(G), "--columns", "id", "--format", "json"],
        capture_output=True, text=True, check=True, cwd=ROOT).stdout.splitlines()]
    assert [r["id"] for r in out] == [s["id"] for s in reference]
    subprocess.run(cli + ["plan", str(f), "-o", str(tmp_path / "p")], check=True, capture_output=True, cwd=ROOT)
    sql = (f"SELECT component, row FROM lineage WHERE position // {G} = {step} ORDER BY position")
    via_sql = con.sql(sql, plan=tmp_path / "p").to_pylist()
    assert via_sql == [{"component": r["component"], "row": r["row"]} for r in rows]
    with pytest.raises(mixsql.MixSQLError, match="outside the stream"):
        mix.lineage(10**6, G)


RESUME_SCRIPT = r"""
import json, os, sys
import torch.distributed as dist
import torch.utils.data
import mixsql
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=int(os.environ["RANK"]),
                        world_size=int(os.environ["WORLD_SIZE"]))
con = mixsql.connect(sys.argv[2], create=False)
mix = con.mix(sys.argv[3])
W = dist.get_world_size()
ds = mix.torch_dataset(batch_size=int(sys.argv[5]) // W, columns=["id"])   # rank and world from torch.distributed
state_file = sys.argv[4]
steps = int(sys.argv[6])
if steps < 0:  # the resumed run reads the state; the first run only writes it (no race on the file)
    ds.load_state_dict(json.load(open(state_file)))
mine = []
for n, batch in enumerate(torch.utils.data.DataLoader(ds, batch_size=ds.batch_size, num_workers=0,
                                                      collate_fn=mixsql.collate)):
    mine.append(batch["id"])
    if n + 1 == steps:
        break
if dist.get_rank() == 0 and steps > 0:
    json.dump(ds.state_dict(), open(state_file, "w"))
everything = [None] * W
dist.all_gather_object(everything, mine)
if dist.get_rank() == 0:
    print(json.dumps(everything))
dist.destroy_process_group()
"""


def _gloo(world_size: int, args: list[str], tmp: Path) -> list[list[list[str]]]:
    procs = []
    for rank in range(world_size):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world_size)}
        procs.append(subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(tmp), *args], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    return json.loads(outs[0][0])


def test_gloo_four_ranks_save_two_ranks_resume(con: mixsql.Connection, sample_catalog: Path, tmp_path: Path) -> None:
    mix = con.mix(STATEMENT)
    mix.plan()
    G, steps = 16, 9
    state = tmp_path / "state.json"
    first = _gloo(4, [str(sample_catalog), STATEMENT, str(state), str(G), str(steps)], tmp_path / "r1")
    assert json.loads(state.read_text())["next"] == steps
    second = _gloo(2, [str(sample_catalog), STATEMENT, str(state), str(G), "-1"], tmp_path / "r2")
    reference = _reference(mix)
    total = len(mix) // G * G
    delivered = [i for rank in first + second for batch in rank for i in batch]
    assert len(delivered) == len(set(delivered)) == total
    assert set(delivered) == set(reference[:total])
    for n in range(steps, len(mix) // G):  # after the resume, global batch n is the same set
        got = second[0][n - steps] + second[1][n - steps]
        assert sorted(got) == sorted(reference[n * G:(n + 1) * G])


@pytest.mark.parametrize("new", [(4, 3), (16, 1), (256, 1)])
def test_saved_at_8_ranks_2_workers_resumes_elsewhere(con: mixsql.Connection, monkeypatch: pytest.MonkeyPatch,
                                                      new: tuple[int, int]) -> None:
    mix = con.mix(STATEMENT)
    reference = _reference(mix)
    G = 256
    batches = len(mix) // G
    save = batches // 2
    old = [mix.torch_dataset(batch_size=G // 8, rank=r, world_size=8, columns=["id"]) for r in range(8)]
    before, states = _run(old, 2, monkeypatch, take=save)
    W, n = new
    fresh = [mix.torch_dataset(batch_size=G // W, rank=r, world_size=W, columns=["id"]) for r in range(W)]
    for ds in fresh:
        ds.load_state_dict(states[3])
    after, _ = _run(fresh, n, monkeypatch)
    assert sorted(before) == list(range(save)) and sorted(after) == list(range(save, batches))
    for k, ids in {**before, **after}.items():
        assert sorted(ids) == sorted(reference[k * G:(k + 1) * G])


def test_one_workers_state_outside_that_worker_is_refused(con: mixsql.Connection,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    mix = con.mix(STATEMENT)
    ds = mix.torch_dataset(batch_size=4, columns=["id"])
    monkeypatch.setattr(world, "worker", lambda: (1, 2))
    it = iter(ds)
    for _ in range(8):
        next(it)
    state = ds.state_dict()
    monkeypatch.undo()
    fresh = mix.torch_dataset(batch_size=4, columns=["id"])
    fresh.load_state_dict(state)
    with pytest.raises(StateError, match="worker 1 of 2"):
        next(iter(fresh))


def test_lineage_after_replace_refuses_the_new_data(tmp_path: Path, data_copy: Path) -> None:
    """A plan compiled before ``register --replace`` never reports properties of the new version."""
    con = mixsql.connect(tmp_path / "cat")
    con.register("d", [str(data_copy / "parquet" / "corpus-00001.parquet")])
    mix = con.mix("MIX 1 AS all_ FROM d")
    before = mix.lineage(1, 8, ["id"]).column("id").to_pylist()
    assert before == [s["id"] for s in mix.samples(limit=16, columns=["id"])][8:]
    other = mixsql.connect(tmp_path / "cat")  # another process replaces the dataset
    other.register("d", [str(data_copy / "parquet" / "corpus-00002.parquet")], replace=True)
    with pytest.raises(mixsql.MixSQLError, match="'d' was replaced since this plan was compiled"):
        mix.lineage(1, 8, ["id"])
    assert mix.lineage(1, 8).num_rows == 8  # pointers alone come from the plan itself
    other.drop("d")
    with pytest.raises(mixsql.MixSQLError, match="'d' was dropped"):
        mix.lineage(1, 8, ["id"])
