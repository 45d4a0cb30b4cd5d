"""Adaptive mixtures end to end: feedback from a (synthetic) trainer moves the weights; the stream is
the same for any DataLoader worker count, across a resume at another world size, replayable from the
log, prefix stable against the static statement, and bad feedback changes nothing."""

from __future__ import annotations

import typing as t

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import mixsql
from mixsql.errors import MixSQLError

ADAPT = ("ADAPT USING ado(start_step = 10, update_every = 10, ignore_steps = 2, window = 5, subsample = 1, "
         "count_unit = 1, starts = 16, "
         "fit_lag = 3) LAG {lag} STEPS")
BASE = ("MIX 0.5 AS code WHERE domain = 'code', 0.5 AS rest FROM corpus LIMIT 60 STEPS BATCH SIZE 16 "
        "PARTITIONS 2 CHUNK SIZE 8 SEED 4")


def _mix(con: mixsql.Connection, lag: int = 2) -> mixsql.api.Mix:
    return con.mix(BASE + " " + ADAPT.format(lag=lag))


def _losses(step: int, counts: torch.Tensor) -> list[float]:
    """code's loss still falls fast, the rest's has flattened: ADO should move weight to code."""
    per = torch.tensor([2.0 + 8 * (step + 1) ** -0.5, 1.9 + 0.2 * (step + 1) ** -0.1], dtype=torch.float64)
    return (per * counts).tolist()


def _train(mix: mixsql.api.Mix, *, workers: int = 0, stop: int | None = None, state: dict | None = None,
           rank: int = 0, world: int = 1) -> tuple[list[list[str]], dict, t.Any]:
    ds = mix.torch_dataset(batch_size=16 // world, rank=rank, world_size=world, columns=["id"], component="id",
                           batched=True)
    if state is not None:
        ds.load_state_dict(state)
    seen = []
    batches = iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers))
    try:
        for i, batch in enumerate(batches):
            step = ds.start + i
            seen.append(sorted(batch["id"]))
            counts = torch.bincount(torch.as_tensor(batch["component"]), minlength=2) * 100 * world  # as if all-reduced
            ds.feedback(step, _losses(step, counts), counts.tolist())
            if stop is not None and step + 1 == stop:
                break
    except RuntimeError as e:  # a worker that died: its exit code tells a kill (negative: the signal) from an exit
        codes = [w.exitcode for w in getattr(batches, "_workers", [])]
        raise RuntimeError(f"{e} (workers' exit codes: {codes})") from e
    return seen, ds.state_dict(), ds





def test_the_weights_learn_and_the_stream_is_the_same_for_any_worker_count(con: mixsql.Connection) -> None:
    mix = _mix(con)
    a, state, ds = _train(mix)
    log = ds.weight_log
    # the first fit is due after 10 steps and used 3 steps later; it governs from 2 steps (LAG) after that
    assert log and log[0]["step"] == 12 and log[0]["position"] >= (12 + 1 + 2) * 16
    assert log[-1]["weights"][0] > 0.55  # toward the component whose loss still falls
    assert all(abs(sum(r["weights"]) - 1) < 1e-9 for r in log)
    assert sum(sum(r["realised_tokens"]) for r in log) > 0
    served = [i for batch in a for i in batch]
    assert len(served) == 60 * 16 and len(set(served)) == len(served)  # one epoch: nothing repeated
    b, _, _ = _train(mix, workers=2)
    assert a == b  # workers ran ahead only as far as the log allowed


def test_resume_at_another_world_size_and_replay_from_the_log(con: mixsql.Connection) -> None:
    mix = _mix(con)
    full, state, _ = _train(mix)
    first, saved, _ = _train(mix, stop=25)
    # resume on 2 ranks (8 each): every global batch is the same 16 samples
    ranks = [_train(mix, state=saved, rank=r, world=2)[0] for r in range(2)]
    rest = [sorted(x + y) for x, y in zip(*ranks)]
    assert first + rest == full
    replayed = [sorted(mix.lineage(k, 16, ["id"], log=state).column("id").to_pylist()) for k in range(60)]
    assert replayed == full
    with pytest.raises(MixSQLError, match="no weight log"):
        mix.torch_dataset(batch_size=16).load_state_dict({k: v for k, v in saved.items() if k != "adapt"})


def test_the_stream_before_the_first_change_is_the_static_statements(con: mixsql.Connection) -> None:
    mix = _mix(con)
    served, state, ds = _train(mix)
    static = [s["id"] for s in con.mix(BASE).samples(columns=["id"])]
    batches = ds.weight_log[0]["position"] // 16
    assert served[:batches] == [sorted(static[k * 16:(k + 1) * 16]) for k in range(batches)]


def test_bad_feedback_is_refused_and_changes_nothing(con: mixsql.Connection) -> None:
    mix = _mix(con)
    ds = mix.torch_dataset(batch_size=16, batched=True)
    it = iter(ds)
    next(it)
    ds.feedback(0, [1.0, 2.0], [10, 20])
    before = ds.state_dict()
    for args, message in [((1, [1.0], [1]), "2 components"), ((1, [float("nan"), 1.0], [1, 1]), "is nan"),
                          ((1, [1.0, 1.0], [-1, 1]), "not a non-negative integer"),
                          ((3, [1.0, 1.0], [1, 1]), "the next step to report is 1"),
                          ((0, [1.0, 1.0], [1, 1]), "reported already")]:
        with pytest.raises(MixSQLError, match=message):
            ds.feedback(*args)
        assert ds.state_dict() == before
    ds.feedback(1, [1.0, 2.0], [10, 20])  # and the run goes on
    # the training process cannot run ahead of its feedback by more than LAG: with steps 0 and 1 fed
    # back, batches up to 1 + 1 + LAG = 4 are final, batch 5 is not
    for _ in range(4):
        next(it)
    with pytest.raises(MixSQLError, match="needs the feedback of step 2 first"):
        next(it)
    with pytest.raises(MixSQLError, match="does not adapt"):
        con.mix(BASE).torch_dataset(batch_size=16).feedback(0, [1.0, 1.0], [1, 1])
    with pytest.raises(MixSQLError, match="BATCH SIZE 16"):
        mix.torch_dataset(batch_size=8)
    with pytest.raises(MixSQLError, match="cannot start at step 5 from nothing"):
        mix.torch_dataset(batch_size=16, start_step=5)


def _rank(rank: int, path: str, catalog: str, same: bool, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    mix = mixsql.connect(catalog).mix(BASE + " " + ADAPT.format(lag=2))
    ds = mix.torch_dataset(batch_size=8, rank=rank, world_size=2)
    try:
        ds.feedback(0, [1.0, 2.0 + (0 if same or rank == 0 else 1)], [10, 20])
        result = "ok"
    except MixSQLError as e:
        result = e.message
    with open(f"{out}.{rank}", "w") as f:
        f.write(result)
    dist.destroy_process_group()


@pytest.mark.parametrize("same", [True, False])
def test_a_rank_with_other_numbers_is_named(con: mixsql.Connection, tmp_path, same: bool) -> None:
    _mix(con).plan()  # compiled once, then read by both ranks
    mp.spawn(_rank, args=(str(tmp_path / "init"), str(con.catalog.path), same, str(tmp_path / "out")), nprocs=2)
    results = [(tmp_path / f"out.{r}").read_text() for r in range(2)]
    if same:
        assert results == ["ok", "ok"]
    else:
        assert all("rank(s) 1 reported other loss sums" in r for r in results)


# -- packed sequences of an adaptive mixture ------------------------------------------------------

PACKED = ("MIX 0.5 AS code WHERE domain = 'code', 0.5 AS rest FROM corpus LIMIT 30 STEPS BATCH SIZE 8 "
          "PARTITIONS 2 CHUNK SIZE 8 SEED 4 " + ADAPT.format(lag=2))
L = 64


def _train_packed(mix: mixsql.api.Mix, *, workers: int = 0, stop: int | None = None, state: dict | None = None,
                  rank: int = 0, world: int = 1) -> tuple[list[torch.Tensor], dict, t.Any]:
    ds = mix.torch_dataset(batch_size=8 // world, rank=rank, world_size=world, seq_len=L, batched=True)
    if state is not None:
        ds.load_state_dict(state)
    seen = []
    for i, batch in enumerate(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)):
        step = ds.start + i
        seen.append(batch["input_ids"].clone())
        comp = batch["component_ids"].reshape(-1)
        per = torch.tensor([2.0 + 8 * (step + 1) ** -0.5, 1.9 + 0.2 * (step + 1) ** -0.1])
        sums, counts = mixsql.component_losses(per[comp], comp, 2, all_reduce=False)
        ds.feedback(step, sums * world, counts * world)  # as if all-reduced over the ranks
        if stop is not None and step + 1 == stop:
            break
    return seen, ds.state_dict(), ds


def _rows(batches: list[torch.Tensor]) -> list[list[tuple]]:
    return [sorted(tuple(x) for x in b.tolist()) for b in batches]


def test_packed_sequences_adapt_too(tcon: mixsql.Connection) -> None:
    mix = tcon.mix(PACKED)
    a, state, ds = _train_packed(mix)
    assert len(a) == 30 and ds.weight_log and ds.weight_log[-1]["weights"][0] > 0.55
    assert _rows(a) == _rows(_train_packed(mix, workers=2)[0])
    first, saved, _ = _train_packed(mix, stop=13)
    ranks = [_train_packed(mix, state=saved, rank=r, world=2)[0] for r in range(2)]
    assert _rows(first) + [sorted(x + y) for x, y in zip(_rows(ranks[0]), _rows(ranks[1]))] == _rows(a)
    # replayed from the log: each partition's sequences are its documents, in the replayed order, with EOS
    from mixsql.read import Reader
    from tests.test_packing import _encode

    replayed = np.stack([s["input_ids"] for s in mix.sequences(L, log=state)])
    assert _rows([torch.as_tensor(replayed[k * 8:(k + 1) * 8]) for k in range(30)]) == _rows(a)
    plan = mix._replayed(mix.plan(), state)
    reader = Reader(plan, ["text"])
    for q in range(2):
        mine = replayed[q::2].reshape(-1).tolist()
        texts = reader.read(plan.partition_rows(q, 0, 120)).column("text").to_pylist()
        stream = [i for ids in _encode(texts) for i in ids + [0]]
        assert stream[: len(mine)] == mine


def test_replay_from_the_command_line_and_another_statements_log(con: mixsql.Connection, tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from mixsql.cli import main
    from mixsql.state import StateError

    mix = _mix(con)
    served, state, _ = _train(mix, stop=20)
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    statement = tmp_path / "adapt.mixsql"
    statement.write_text(BASE + " " + ADAPT.format(lag=2))
    out = CliRunner().invoke(main, ["--catalog", str(con.catalog.path), "lineage", str(statement), "--step", "17",
                                    "--batch-size", "16", "--columns", "id", "--format", "json", "--log", str(path)])
    assert out.exit_code == 0, out.output
    assert sorted(json.loads(line)["id"] for line in out.output.splitlines()) == served[17]
    other = con.mix(BASE.replace("SEED 4", "SEED 5") + " " + ADAPT.format(lag=2))
    with pytest.raises(StateError, match="another stream"):
        other.torch_dataset(batch_size=16).load_state_dict(state)


def test_an_adaptive_mixture_that_repeats_derives_its_later_epochs(con: mixsql.Connection) -> None:
    """ON EXHAUSTION REPEAT: every pool holds what any weights could ask (several epochs), stored once
    and derived; the stream still does not depend on the worker count."""
    mix = con.mix(BASE.replace("LIMIT 60 STEPS", "LIMIT 150 STEPS") + " ON EXHAUSTION REPEAT "
                  + ADAPT.format(lag=2).replace("update_every = 10", "update_every = 60"))
    plan = mix.plan()
    assert plan.derived and len(plan.component) <= sum(c.samples for c in mix.bound.components)
    a, _, ds = _train(mix)
    served = [i for batch in a for i in batch]
    assert len(served) == 150 * 16 and len(set(served)) < len(served)  # past an epoch of some component
    assert ds.weight_log
    assert a == _train(mix, workers=2)[0]
