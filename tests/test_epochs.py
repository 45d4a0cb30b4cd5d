"""Epochs derived on demand: the visiting order as math, plans bounded by the samples selected, not the budget."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mixsql
from mixsql import epochs, manifest, plan as _plan
from mixsql.planfile import CompiledPlan, lineage
from tests.conftest import JSONL_GLOB, PARQUET_GLOB, TOKENIZER

# Streams whose components repeat, each with the digest of its lineage (file name, row, component of
# every position) as format 11 stored every epoch: deriving the later epochs changes nothing.
STATEMENTS = {
    "shuffled": ("MIX 0.5 AS a WHERE domain = 'code', 0.5 AS b WHERE domain <> 'code' FROM corpus "
                 "LIMIT 20000 SAMPLES ON EXHAUSTION REPEAT SEED 3 CHUNK SIZE 16 PARTITIONS 4", 1, "afb8298a1a11e522"),
    "windows": ("MIX 0.7 AS a WHERE domain = 'code', 0.3 AS b WHERE domain = 'docs' MAX EPOCHS 5 FROM corpus "
                "LIMIT 5000 SAMPLES ON EXHAUSTION REPEAT SEED 5 CHUNK SIZE 8 PARTITIONS 3", 3, "b200d1158f9c22e2"),
    "buckets": ("MIX 0.6 AS a WHERE domain = 'code', 0.4 AS b WHERE domain <> 'code' FROM corpus "
                "ORDER BY CURRICULUM (a BY quality DESC BUCKETS 3) LIMIT 12000 SAMPLES ON EXHAUSTION REPEAT "
                "SEED 9 CHUNK SIZE 32 PARTITIONS 5", 2, "73cf1222b476f4ef"),
    "jsonl": ("MIX 0.6 AS a WHERE domain = 'code', 0.4 AS b WHERE domain <> 'code' FROM cj "
              "LIMIT 9000 SAMPLES ON EXHAUSTION REPEAT SEED 1 CHUNK SIZE 32 PARTITIONS 2", 2, "520caf1b34812e58"),
}
PACKED = {"mixed": "e436c47bc4b15849", "component": "6d039d30ec6c0421"}  # 2,000 sequences of 64 of "shuffled"


def _digest(values: object) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def tcon(tmp_path_factory: pytest.TempPathFactory) -> mixsql.Connection:
    con = mixsql.connect(tmp_path_factory.mktemp("epochs") / "cat")
    con.register("corpus", [PARQUET_GLOB], tokenizer=TOKENIZER)
    con.register("cj", [JSONL_GLOB])
    yield con
    con.close()


def _compiled(con: mixsql.Connection, sql: str, window: int = 1) -> CompiledPlan:
    return manifest.cached_plan(_plan.resolve(con.mix(sql).bound, window=window), con.catalog)


# -- the math ----------------------------------------------------------------------------------------


@st.composite
def _runs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    lengths = draw(st.lists(st.integers(1, 9), min_size=1, max_size=40))
    keys = draw(st.lists(st.integers(0, 2**40), min_size=len(lengths), max_size=len(lengths)))
    run = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
    return run, np.asarray(keys, dtype=np.int64)


def _whole_epoch(run: np.ndarray, keys: np.ndarray, buckets: int, partitions: int, salt: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The reference: each bucket's samples laid out run by run in the order of the runs' hashes
    (stable), the whole bucket at once, cut into pools, even pools backwards."""
    n = len(run)
    edges = epochs.bucket_bounds(n, buckets)
    pieces: list[list[np.ndarray]] = [[] for _ in range(partitions)]
    for b in range(buckets):
        positions = np.arange(edges[b], edges[b + 1])
        ids = run[positions]
        firsts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1]))) if len(ids) else np.zeros(0, int)
        groups = np.split(positions, firsts[1:])
        order = np.argsort(epochs.block_hash(keys[ids[firsts]], salt), kind="stable") if len(ids) else []
        laid = np.concatenate([groups[i] for i in order]) if len(ids) else positions
        bounds = epochs.pool_bounds(len(laid), partitions)
        for q in range(partitions):
            piece = laid[bounds[q]: bounds[q + 1]]
            pieces[q].append(piece[::-1] if q % 2 == 0 else piece)
    return [(np.concatenate(p), np.cumsum([len(x) for x in p[:-1]], dtype=np.int64)) for p in pieces]


@given(runs=_runs(), buckets=st.integers(1, 4), partitions=st.integers(1, 7), seed=st.integers(0, 2**32 - 1),
       epoch=st.integers(0, 3), window=st.integers(1, 4))
@settings(max_examples=80, deadline=None)
def test_one_partition_pool_is_its_piece_of_the_whole_epoch(runs: tuple[np.ndarray, np.ndarray], buckets: int,
                                                            partitions: int, seed: int, epoch: int,
                                                            window: int) -> None:
    """``epochs.pool`` (one partition, O(runs + pool)) is the whole epoch laid out as the definition
    says (``_whole_epoch``: every bucket's runs in block order, cut into pools), the compile's
    ``manifest.epoch_pools`` is too, and ``visiting_order`` adds the same window shuffle."""
    run, keys = runs
    n = len(run)
    buckets = min(buckets, n)
    whole = _whole_epoch(run, keys, buckets, partitions, epochs.epoch_salt(seed, 2, epoch))
    compiled = manifest.epoch_pools({"_run": run, "_row": run}, keys, buckets, partitions, seed, 2, epoch)
    assert [(p.tolist(), c.tolist()) for p, c in compiled] == [(p.tolist(), c.tolist()) for p, c in whole]
    starts = epochs.run_starts(run)
    for q in range(partitions):
        laid, cuts = epochs.pool(starts, keys, n, buckets, partitions, q, epochs.epoch_salt(seed, 2, epoch))
        assert laid.tolist() == whole[q][0].tolist()
        assert cuts.tolist() == whole[q][1].tolist()
        order = epochs.window_shuffle(run[whole[q][0]], keys, window, seed, (1, q, epoch), whole[q][1])[0]
        derived = epochs.visiting_order(starts, keys, n, buckets, partitions, seed, window, 2, 1, q, epoch)
        assert derived.tolist() == whole[q][0][order].tolist()


@given(lengths=st.lists(st.integers(1, 9), min_size=1, max_size=30), a=st.integers(0, 300), b=st.integers(0, 300))
def test_cut_runs_is_a_slice_of_the_runs_laid_out(lengths: list[int], a: int, b: int) -> None:
    firsts = np.cumsum([0] + lengths[:-1])[::-1].copy()  # any order of the runs
    laid = np.concatenate([np.arange(f, f + n) for f, n in zip(firsts, lengths[::-1])])
    a, b = min(a, len(laid)), min(b, len(laid))
    assert epochs.cut_runs(firsts, np.asarray(lengths[::-1]), a, b).tolist() == laid[a:b].tolist()


@given(windows=st.lists(st.integers(1, 40), min_size=1, max_size=30), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=50, deadline=None)
def test_window_shuffle_order_is_its_definition(windows: list[int], seed: int) -> None:
    """One sort of packed keys gives the order by (window, random bits, position), a permutation
    that keeps every window in place."""
    window_id = np.repeat(np.arange(len(windows), dtype=np.uint64), windows)
    random = np.random.default_rng(seed).integers(0, 2**64 - 1, len(window_id), dtype=np.uint64, endpoint=True)
    random[::3] = random[0]  # ties in the random bits are broken by position
    order = epochs.shuffle_order(window_id, random.copy())
    n = len(window_id)
    bits = 64 - max(1, (n - 1).bit_length()) - max(1, int(window_id[-1]).bit_length())
    assert order.tolist() == np.lexsort((np.arange(n), random >> np.uint64(64 - bits), window_id)).tolist()
    assert (window_id[order] == window_id).all()
    original = epochs.SORT_PIECE
    try:  # sorted in pieces of whole windows, the window starts found from the ids: the same order
        epochs.SORT_PIECE = 5
        assert epochs.shuffle_order(window_id, random.copy()).tolist() == order.tolist()
    finally:
        epochs.SORT_PIECE = original


@given(runs=_runs(), window=st.integers(1, 3), seed=st.integers(0, 2**32 - 1), upto=st.integers(0, 400),
       split=st.integers(1, 64))
@settings(max_examples=60, deadline=None)
def test_a_prefix_of_the_window_shuffle_is_the_prefix_of_the_whole(runs: tuple[np.ndarray, np.ndarray], window: int,
                                                                   seed: int, upto: int, split: int) -> None:
    """Shuffling only the windows that hold the first ``upto`` samples gives the first samples of the
    whole pool's order, and at least ``upto`` of them; a sort split at window edges into pieces
    (``SORT_PIECE`` keys a piece) is the one sort."""
    run, keys = runs
    n = len(run)
    whole = epochs.window_shuffle(run, keys, window, seed, (1, 0, 0))[0]
    original = epochs.SORT_PIECE
    try:
        epochs.SORT_PIECE = split
        part, window_starts = epochs.window_shuffle(run, keys, window, seed, (1, 0, 0), upto=upto)[:2]
    finally:
        epochs.SORT_PIECE = original
    assert len(part) >= min(upto, n)
    assert part.tolist() == whole[: len(part)].tolist()
    assert len(part) == n or len(part) in window_starts.tolist()  # it ends where a window ends


# -- plans ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_derived_epochs_are_the_stream_that_stored_every_epoch(tcon: mixsql.Connection, name: str) -> None:
    sql, window, expected = STATEMENTS[name]
    plan = _compiled(tcon, sql, window)
    assert plan.derived, "the statement repeats its components"
    lin = lineage(plan, 0, len(plan))
    assert _digest([[os.path.basename(f) for f in lin.column("file").to_pylist()], lin.column("row").to_pylist(),
                    lin.column("component").to_pylist()]) == expected


@pytest.mark.parametrize("pack", sorted(PACKED))
def test_packed_sequences_over_derived_epochs_are_unchanged(tcon: mixsql.Connection, pack: str) -> None:
    mix = tcon.mix(STATEMENTS["shuffled"][0])
    got = [s["input_ids"].tolist() for s in mix.sequences(64, limit=2000, pack=pack)]
    assert _digest(got) == PACKED[pack]
    packed = mix.packed(64, pack=pack)
    assert packed.plan.derived and not (packed.plan.directory / "stream_tokens.npy").exists()
    # a sequence far into the stream is found without what comes before
    last = len(packed) - 1
    q, i = packed.locate(np.asarray([last]))
    rows, starts, first = packed.sequence_documents(int(q[0]), int(i[0]))
    assert len(rows) >= 1 and int(starts[0]) <= first


def test_every_epoch_visits_each_selected_sample_once(tcon: mixsql.Connection) -> None:
    plan = _compiled(tcon, STATEMENTS["buckets"][0], 2)
    most = 0
    for c, d in plan.derived.items():
        stored = np.sort(plan.physical_start[c, 0] + np.arange(int(plan.epoch_lengths[c].sum())))
        assert len(stored) == d["samples"]
        full = min(int(u) // max(int(s), 1) for u, s in zip(plan.pool_used[c], plan.epoch_lengths[c]))
        most = max(most, full)
        for e in range(full):
            rows = np.concatenate([plan.pool_rows(c, q, e * int(plan.epoch_lengths[c, q]) +
                                                  np.arange(int(plan.epoch_lengths[c, q])))
                                   for q in range(plan.partitions)])
            assert np.sort(rows).tolist() == stored.tolist()
            assert (plan.component[rows] == c).all()
    assert most >= 2


def test_plan_size_follows_the_selection_not_the_budget(tcon: mixsql.Connection) -> None:
    """A budget 1,000 times the selection stores what a budget of one epoch stores, and the stream
    far into it is read without computing what comes before."""
    base = ("MIX 0.5 AS a WHERE domain = 'code', 0.5 AS b WHERE domain <> 'code' FROM corpus "
            "LIMIT {n} SAMPLES ON EXHAUSTION REPEAT SEED 4 CHUNK SIZE 64 PARTITIONS 2")
    mixes = {n: tcon.mix(base.format(n=n)) for n in (4000, 4_000_000)}
    selected = sum(c.samples for c in mixes[4000].bound.components)

    def size(p: CompiledPlan) -> int:
        return sum(f.stat().st_size for f in Path(p.directory).iterdir())

    small, large = mixes[4000].plan(), mixes[4_000_000].plan()
    assert len(large) == 4_000_000 and len(large.component) == selected
    assert size(large) < 1.5 * size(small) + (large.table.nbytes - small.table.nbytes)
    fresh = CompiledPlan(large.directory)
    rows = fresh.positions_rows(len(large) - 1000, len(large))
    assert len(rows) == 1000 and rows.max() < selected
    assert len(fresh._epochs) <= 2 * len(fresh.derived) * fresh.partitions  # only the epochs asked for
    assert lineage(fresh, len(large) - 1000, len(large)).equals(lineage(large, len(large) - 1000, len(large)))


def test_a_billion_sample_budget_over_a_small_selection(tcon: mixsql.Connection) -> None:
    mix = tcon.mix("MIX 0.5 AS a WHERE domain = 'code', 0.5 AS b WHERE domain <> 'code' FROM corpus "
                   "LIMIT 1000000000 SAMPLES ON EXHAUSTION REPEAT SEED 2")
    began = time.perf_counter()
    plan = mix.plan()
    assert time.perf_counter() - began < 60  # stores the selection once (a run stores every position in hours)
    assert len(plan) == 10 ** 9
    assert len(plan.component) == sum(c.samples for c in mix.bound.components)
    tail = lineage(plan, 10 ** 9 - 5, 10 ** 9)
    assert tail.num_rows == 5 and tail.column("position").to_pylist()[-1] == 10 ** 9 - 1


def test_batches_of_a_derived_plan_are_the_same_for_every_world_size(tcon: mixsql.Connection) -> None:
    mix = tcon.mix(STATEMENTS["shuffled"][0])
    G, start = 32, 500  # global batches well past the first epoch
    plan = mix.plan()
    want = [set(plan.positions_rows(n * G, (n + 1) * G).tolist()) for n in range(start, start + 3)]
    for W in (1, 2, 4):
        got = [set() for _ in range(3)]
        for rank in range(W):
            ds = mix.torch_dataset(batch_size=G // W, rank=rank, world_size=W)
            for k, n in enumerate(range(start, start + 3)):
                got[k] |= set(ds.batch_rows(plan, n).tolist())
        assert got == want, W
    loader = torch.utils.data.DataLoader(mix.torch_dataset(batch_size=8, rank=0, world_size=1, columns=["id"]),
                                         batch_size=8, collate_fn=mixsql.collate)
    assert len(next(iter(loader))["id"]) == 8


@given(runs=_runs(), buckets=st.integers(1, 4), partitions=st.integers(1, 7), salt=st.integers(0, 2**63 - 1),
       values=st.lists(st.integers(0, 1000), min_size=1, max_size=400))
@settings(max_examples=60, deadline=None)
def test_pool_totals_are_the_sums_over_the_pools(runs: tuple[np.ndarray, np.ndarray], buckets: int, partitions: int,
                                                 salt: int, values: list[int]) -> None:
    run, keys = runs
    n = len(run)
    value = np.resize(np.asarray(values, dtype=np.int64), n)
    starts = epochs.run_starts(run)
    laid = epochs.laid_buckets(starts, keys, n, min(buckets, n), salt)
    totals = epochs.pool_totals(laid, n, partitions, np.concatenate(([0], np.cumsum(value))))
    assert totals.tolist() == [int(value[epochs.pool_of(laid, n, partitions, q)[0]].sum()) for q in range(partitions)]
