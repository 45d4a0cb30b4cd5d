"""``mixsql gc``: what a catalog no longer needs goes; what a process uses never does."""

from __future__ import annotations

import gc as _pygc
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import mixsql
from mixsql.cli import main
from mixsql.planfile import CompiledPlan
from tests.conftest import ROOT, SAMPLE

FILES = sorted(str(p) for p in (SAMPLE / "parquet").glob("*.parquet"))
STATEMENT = "MIX 0.5 AS code WHERE domain = 'code', 0.5 AS rest FROM corpus SEED 1 CHUNK SIZE 64"


def _dirs(root: Path, folder: str) -> set[str]:
    base = root / folder
    return {p.name for p in base.iterdir() if not p.name.startswith(".")} if base.is_dir() else set()


@pytest.fixture()
def grown(tmp_path: Path) -> tuple[mixsql.Connection, Path, str]:
    """A catalog whose dataset grew after a plan was compiled: (connection, old plan dir, old version dir)."""
    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", FILES[:-1])
    old_plan = con.mix(STATEMENT).plan().directory
    old_dir = con.dataset("corpus").directory
    con.register("corpus", FILES[-1:], append=True)
    _pygc.collect()  # the old plan objects above are gone: nothing in this process uses them
    return con, old_plan, str(old_dir)


def test_superseded_plans_counts_and_versions_go_and_current_ones_stay(grown) -> None:
    con, old_plan, old_dir = grown
    root = con.path
    new_plan = con.mix(STATEMENT).plan().directory
    new_name = new_plan.name
    assert Path(old_dir).is_dir()  # an append (or replace) keeps the earlier version for gc
    _pygc.collect()
    dry = con.gc(grace_seconds=0, dry_run=True)
    assert {k for k, _, _ in dry.removed} >= {"plan", "dataset version", "binding count"}
    assert old_plan.is_dir() and Path(old_dir).is_dir()  # a dry run removes nothing
    done = con.gc(grace_seconds=0)
    assert not old_plan.exists() and not Path(old_dir).exists()
    assert _dirs(root, "plans") == {new_name}
    assert done.freed_bytes > 0 and not done.in_use
    assert len(list(con.mix(STATEMENT).samples(limit=3, columns=["id"]))) == 3  # the current plan still serves
    assert con.gc(grace_seconds=0).removed == []


def test_a_plan_in_use_and_its_dataset_version_are_kept(grown) -> None:
    con, old_plan, old_dir = grown
    held = CompiledPlan(old_plan)  # a process reading it (a training run on the old data)
    out = con.gc(grace_seconds=0)
    assert old_plan.is_dir() and Path(old_dir).is_dir()
    assert ("plan", f"plans/{old_plan.name}") in {(k, p) for k, p, _ in out.in_use}
    assert held.samples > 0 and len(held.partition_rows(0, 0, 5)) == 5  # still readable
    del held
    _pygc.collect()
    con.gc(grace_seconds=0)
    assert not old_plan.exists() and not Path(old_dir).exists()


def test_a_plan_held_by_another_process_is_kept(grown, tmp_path: Path) -> None:
    con, old_plan, _ = grown
    ready = tmp_path / "ready"
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from mixsql.planfile import CompiledPlan; "
            f"p = CompiledPlan({str(old_plan)!r}); open({str(ready)!r}, 'w').close(); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        con.gc(grace_seconds=0, all_unused=True)
        assert old_plan.is_dir()
    finally:
        proc.kill()
        proc.wait()
    con.gc(grace_seconds=0)  # the holder died: its lock went with it
    assert not old_plan.exists()


def test_a_version_an_open_engine_binds_against_is_kept(tmp_path: Path) -> None:
    first = mixsql.connect(tmp_path / "cat")
    first.register("corpus", FILES[:-1])
    first.catalog.engine()  # this process binds against the version it loaded
    old_dir = first.dataset("corpus").directory
    second = mixsql.connect(tmp_path / "cat")
    second.register("corpus", FILES[-1:], append=True)
    out = second.gc(grace_seconds=0)
    assert Path(old_dir).is_dir() and ("dataset version" in {k for k, _, _ in out.in_use})
    first.close()
    _pygc.collect()
    second.gc(grace_seconds=0)
    assert not Path(old_dir).exists()


def test_the_grace_period_keeps_a_version_superseded_just_now(grown) -> None:
    con, _, old_dir = grown
    out = con.gc()  # default grace: ten minutes
    assert Path(old_dir).is_dir() and {k for k, _, _ in out.recent} == {"dataset version"}


def test_all_and_max_bytes_remove_unused_current_plans_least_recently_used_first(tmp_path: Path) -> None:
    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", FILES)
    dirs = []
    for seed in (1, 2, 3):
        dirs.append(con.mix(STATEMENT.replace("SEED 1", f"SEED {seed}")).plan().directory)
        _pygc.collect()
    now = time.time()
    for age, d in zip((300, 100, 200), dirs):  # last used: the second most recently, then the third
        os.utime(d, (now - age, now - age))
    size = max(sum(f.stat().st_size for f in d.iterdir()) for d in dirs)
    out = con.gc(grace_seconds=0, max_bytes=size)
    assert [d.exists() for d in dirs] == [False, True, False]
    assert [kind for kind, _, _ in out.removed if kind != "compile lock"] == ["plan", "plan"]
    con.gc(grace_seconds=0, all_unused=True)
    assert not dirs[1].exists()
    again = con.mix(STATEMENT.replace("SEED 1", "SEED 2")).plan()  # compiled again when asked for
    assert again.directory == dirs[1] and again.samples > 0


def test_leftovers_of_killed_processes_go_but_a_compile_in_progress_stays(tmp_path: Path) -> None:
    import fcntl

    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", FILES)
    plans = con.path / "plans"
    plans.mkdir(exist_ok=True)
    trash = plans / ".trash-abc-12345678"
    stale = plans / ".tmp-deadbeef-12345678"
    running = plans / ".tmp-cafe-87654321"
    for d in (trash, stale, running):
        d.mkdir()
        (d / "x.npy").write_bytes(b"0" * 100)
    old = time.time() - 3600
    for d in (stale, running):
        os.utime(d, (old, old))
    with open(plans / ".cafe.lock", "a+") as lock:  # another process compiles plan "cafe"
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        con.gc(grace_seconds=60)
        assert not trash.exists() and not stale.exists() and running.exists()


def test_the_command_line(grown) -> None:
    con, old_plan, _ = grown
    runner = CliRunner()
    result = runner.invoke(main, ["--catalog", str(con.path), "gc", "--grace", "0", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would remove 1 plan" in result.output and old_plan.exists()
    result = runner.invoke(main, ["--catalog", str(con.path), "gc", "--grace", "0"])
    assert result.exit_code == 0 and "removed 1 plan" in result.output and "freed" in result.output
    assert not old_plan.exists()
    result = runner.invoke(main, ["--catalog", str(con.path), "gc", "--max-bytes", "lots"])
    assert result.exit_code != 0 and "is not a size" in result.output
    result = runner.invoke(main, ["--catalog", str(con.path), "gc", "--grace", "0", "--max-bytes", "0", "--all"])
    assert result.exit_code == 0, result.output
    with pytest.raises(ValueError, match="max_bytes"):
        con.gc(max_bytes=-1)


def test_a_cache_limit_keeps_plans_and_caches_under_it_as_they_are_made(tmp_path: Path) -> None:
    """With a limit set on the catalog, every compile prunes: least recently used first, never the
    plan just made or one a process holds; another process sees the setting too."""
    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", FILES)
    first = con.mix(STATEMENT).plan()
    size = sum(f.stat().st_size for f in first.directory.iterdir())
    con.set_cache_limit(int(size * 1.5))  # room for one plan, not two
    assert mixsql.connect(tmp_path / "cat").cache_limit == int(size * 1.5)
    held = first  # still open in this process: kept whatever the limit
    plans = []
    for seed in (2, 3, 4):
        plans.append(con.mix(STATEMENT.replace("SEED 1", f"SEED {seed}")).plan().directory)
        _pygc.collect()
        time.sleep(0.01)
    assert held.directory.is_dir() and plans[-1].is_dir()  # held, and just made
    assert not plans[0].exists() and not plans[1].exists()  # the least recently used unheld ones went
    cache = con.mix(STATEMENT).cache(["text"])  # a cache is pruned for too, and not itself removed
    assert cache.directory.is_dir() and held.directory.is_dir() and not plans[-1].exists()
    con.set_cache_limit(None)
    assert con.cache_limit is None
    before = _dirs(con.path, "plans")
    more = con.mix(STATEMENT.replace("SEED 1", "SEED 9")).plan().directory
    assert _dirs(con.path, "plans") == before | {more.name}  # no limit: nothing pruned
    with pytest.raises(mixsql.MixSQLError, match="bytes >= 0"):
        con.set_cache_limit(-1)


def test_keep_under_on_the_command_line(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    runner = CliRunner()
    assert runner.invoke(main, ["--catalog", str(cat), "register", "corpus", *FILES]).exit_code == 0
    out = runner.invoke(main, ["--catalog", str(cat), "gc", "--keep-under", "20MB"])
    assert out.exit_code == 0 and "kept under 20.0 MB from now on" in out.output, out.output
    assert mixsql.connect(cat).cache_limit == 20_000_000
    out = runner.invoke(main, ["--catalog", str(cat), "gc"])
    assert "kept under 20.0 MB (--keep-under off to lift it)" in out.output
    out = runner.invoke(main, ["--catalog", str(cat), "gc", "--keep-under", "off"])
    assert "no size limit" in out.output and mixsql.connect(cat).cache_limit is None


def test_compile_locks_no_one_holds_go(tmp_path: Path) -> None:
    import fcntl

    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", FILES)
    plan = con.mix(STATEMENT).plan().directory
    made = sorted(p.name for folder in ("plans", "counts") for p in (con.path / folder).glob(".*.lock"))
    assert len(made) == 2  # one plan, one count
    with open(con.path / "plans" / ".other.lock", "a+") as other:  # another process compiles "other"
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        done = con.gc(grace_seconds=0)
        assert sum(1 for kind, _, _ in done.removed if kind == "compile lock") == 2
        assert [p.name for folder in ("plans", "counts") for p in (con.path / folder).glob(".*.lock")] == [".other.lock"]
    assert (plan / "plan.json").exists()  # the plan itself stays, and serves
    assert len(list(con.mix(STATEMENT).samples(limit=3, columns=["id"]))) == 3


def test_a_plan_says_its_size_so_a_cache_limit_walks_no_plan(tmp_path: Path) -> None:
    from mixsql.catalog import gc

    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", FILES)
    plan = con.mix(STATEMENT).plan().directory
    files = sum(f.stat().st_size for f in plan.iterdir() if f.name != "size.txt")
    assert gc._bytes(plan) == files == int((plan / "size.txt").read_text())
