"""Writers meeting a full, read-only or forbidden filesystem: an error saying where and what to do,
and nothing half-written left behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import mixsql
from mixsql import atomic, compact, manifest
from mixsql.catalog import store
from tests.conftest import SAMPLE

FILES = sorted(str(p) for p in (SAMPLE / "parquet").glob("*.parquet"))
STATEMENT = "MIX 0.5 AS code WHERE domain = 'code', 0.5 AS rest FROM corpus SEED 4 CHUNK SIZE 64 LIMIT 300 SAMPLES"


def _full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_writing_says_what_and_where_only_for_writes_there(tmp_path: Path) -> None:
    with pytest.raises(mixsql.MixSQLError, match=r"cannot write plans in .*: the filesystem is full") as e:
        with atomic.writing(tmp_path, "plans"):
            _full()
    assert "mixsql gc" in (e.value.hint or "")
    with pytest.raises(mixsql.MixSQLError, match="read-only"):
        with atomic.writing(tmp_path, "plans"):
            raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "x"))
    with pytest.raises(PermissionError):  # another file (a source that cannot be read) is not this directory's
        with atomic.writing(tmp_path, "plans"):
            raise PermissionError(errno.EACCES, "Permission denied", "/elsewhere/source.parquet")
    with pytest.raises(FileNotFoundError):  # not a write problem
        with atomic.writing(tmp_path, "plans"):
            raise FileNotFoundError(errno.ENOENT, "No such file", str(tmp_path / "y"))


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob(".tmp-*")]


def test_a_full_disk_during_registration_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    con = mixsql.connect(tmp_path / "cat")
    monkeypatch.setattr(store._Part, "write", _full)
    with pytest.raises(mixsql.MixSQLError, match=r"cannot write dataset 'corpus' in .*filesystem is full"):
        con.register("corpus", FILES)
    assert con.datasets() == [] and not _leftovers(tmp_path / "cat")
    assert not (tmp_path / "cat" / "datasets").exists() or not list((tmp_path / "cat" / "datasets").iterdir())


def test_a_full_disk_while_compiling_or_caching_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", FILES)
    with monkeypatch.context() as m:
        m.setattr(manifest, "save_windows", _full)
        with pytest.raises(mixsql.MixSQLError, match=r"cannot write a compiled plan in .*plans"):
            con.mix(STATEMENT).plan()
    assert not _leftovers(tmp_path / "cat") and not [p for p in (tmp_path / "cat" / "plans").iterdir()
                                                     if not p.name.endswith(".lock")]
    with monkeypatch.context() as m:
        m.setattr(compact, "_one_batch", _full)  # the disk fills as a shard's record batch is written
        with pytest.raises(mixsql.MixSQLError, match=r"cannot write a compacted cache in .*caches"):
            con.mix(STATEMENT).cache(["text"])
    assert not _leftovers(tmp_path / "cat") and not [p for p in (tmp_path / "cat" / "caches").iterdir()
                                                     if not p.name.endswith(".lock")]
    assert len(list(con.mix(STATEMENT).samples(columns=["id"]))) == 300  # room again: both work


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_cache_directory_is_said(tmp_path: Path) -> None:
    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", FILES)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(mixsql.MixSQLError, match="cannot write a compacted cache"):
            con.mix(STATEMENT).cache(["text"], directory=ro / "cache")
    finally:
        ro.chmod(0o755)


def test_a_lock_file_removed_between_opening_and_locking_is_not_the_lock(tmp_path: Path) -> None:
    """``remove_lock`` (gc) may unlink a lock file that a process has opened but not yet locked: that
    process then takes the file now at the path, so two processes never both hold "the" lock."""
    lock = tmp_path / ".key.lock"
    calls: list[int] = []

    def ready() -> bool:
        if not calls:  # gc runs just after this process opened the file
            assert atomic.remove_lock(lock) and not lock.exists()
        calls.append(1)
        return False

    with atomic.locked(lock, timeout=5, busy=lambda: RuntimeError("busy"), ready=ready) as held:
        assert held and lock.exists() and len(calls) == 2  # the second try, on the new file
        assert not atomic.remove_lock(lock)  # held: it stays
    assert atomic.remove_lock(lock) and not lock.exists()
    assert not atomic.remove_lock(lock)  # already gone
