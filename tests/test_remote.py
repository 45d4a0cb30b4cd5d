"""The remote layer on its own: retries (bounded, transient errors only), the disk block cache
(many processes, a killed writer, a damaged entry, eviction that never touches what is not its own)
and settings that never show a secret."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from mixsql import fs as mfs
from mixsql import remote
from mixsql.errors import DataError


@pytest.fixture(autouse=True)
def _restore() -> None:
    before = remote.settings()
    remote.reset_counters()
    yield
    remote.configure(before)


class FlakyFS(MemoryFileSystem):
    """An in-memory filesystem whose range reads fail (as a server error would) every other time."""

    protocol = "flaky"
    calls = 0

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return super()._strip_protocol(path.replace("flaky://", "memory://", 1))

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: object) -> bytes:
        FlakyFS.calls += 1
        if FlakyFS.calls % 2:
            raise ConnectionResetError("injected reset")
        return super().cat_file(path, start=start, end=end)


fsspec.register_implementation("flaky", FlakyFS, clobber=True)


def test_transient_errors_are_retried_then_named() -> None:
    fs = FlakyFS()
    fs.pipe_file("/data/a.jsonl", b"0123456789" * 100)
    remote.configure(cache_dir=None, retries=3)
    FlakyFS.calls = 0
    assert mfs.read_ranges("flaky:///data/a.jsonl", [0, 10], [5, 20]) == [b"01234", b"0123456789"]
    assert remote.counters.retries >= 1
    attempts = []

    def always() -> None:
        attempts.append(1)
        raise TimeoutError("injected timeout")

    remote.configure(retries=2)
    began = time.monotonic()
    with pytest.raises(DataError, match=r"cannot read flaky:///x after 3 attempt\(s\): TimeoutError"):
        remote.retried("read", "flaky:///x", always)
    assert len(attempts) == 3 and time.monotonic() - began < 3 * remote.BACKOFF_CAP
    missing = []

    def gone() -> None:
        missing.append(1)
        raise FileNotFoundError("x")

    with pytest.raises(FileNotFoundError):
        remote.retried("read", "flaky:///x", gone)
    assert len(missing) == 1  # a missing object is not retried


def test_settings_never_show_secrets() -> None:
    s = remote.configure(storage_options={"key": "AKIA", "secret": "hunter2-very-secret"})
    assert "hunter2" not in repr(s) and "hunter2" not in str(s) and "secret" in repr(s)
    with pytest.raises(DataError, match="read_ahead must be an integer of at least 1"):
        remote.configure(read_ahead=0)


def test_cache_entries_hits_and_damage(tmp_path: Path) -> None:
    cache = remote.BlockCache(tmp_path, 1 << 20)
    key = cache.key("s3://b/k", "etag1", 0, 5)
    assert key != cache.key("s3://b/k", "etag2", 0, 5)  # a new version of the file is a new entry
    assert cache.get(key, 5) is None
    cache.put(key, b"hello")
    assert cache.get(key, 5) == b"hello"
    path = tmp_path / f"{key}.blk"
    path.write_bytes(path.read_bytes()[:-2])  # torn: shorter than its length
    assert cache.get(key, 5) is None and not path.exists()
    cache.put(key, b"hello")
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1  # damaged: the digest no longer matches
    path.write_bytes(bytes(blob))
    assert cache.get(key, 5) is None and not path.exists()


def test_eviction_deletes_only_its_own_entries(tmp_path: Path) -> None:
    data = tmp_path / "shard-00000.parquet"
    data.write_bytes(b"x" * 5000)  # a data file where the cache happens to live
    foreign = tmp_path / ("a" * 64 + ".blk.txt")
    foreign.write_bytes(b"y" * 5000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ("b" * 64 + ".blk")).write_bytes(b"z" * 5000)
    cache = remote.BlockCache(tmp_path, 4000)
    keys = [cache.key("s3://b/k", "v", i, i + 1000) for i in range(10)]
    for i, key in enumerate(keys):
        cache.put(key, bytes([i]) * 1000)
        os.utime(tmp_path / f"{key}.blk", (1000 + i, 1000 + i))  # an order of use
    entries = [p for p, _, _ in cache.entries()]
    assert data.exists() and foreign.exists() and (tmp_path / "sub" / ("b" * 64 + ".blk")).exists()
    assert sum(p.stat().st_size for p in entries) <= 4000
    assert cache.get(keys[-1], 1000) == bytes([9]) * 1000  # the most recent stay
    assert cache.get(keys[0], 1000) is None


def _fill(root: str, n: int, fetched: "multiprocessing.Queue[int]") -> None:
    cache = remote.BlockCache(root, 1 << 30)
    count = 0
    for i in range(n):
        key = cache.key("s3://b/k", "v", i, i + 100)
        mine, theirs = cache.claim([key])
        if mine:
            if cache.get(key, 100) is None:
                time.sleep(0.01)  # a slow fetch
                cache.put(key, bytes([i % 256]) * 100)
                count += 1
            cache.release(mine)
        else:
            assert cache.wait(key, 100) == bytes([i % 256]) * 100
    fetched.put(count)


def test_processes_share_the_cache_and_fetch_each_block_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    fetched: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_fill, args=(str(tmp_path), 40, fetched)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sum(fetched.get() for _ in procs) == 40  # each block fetched by one process only


def _write_forever(root: str) -> None:
    cache = remote.BlockCache(root, 1 << 30)
    key = cache.key("s3://b/k", "v", 0, 50 << 20)
    payload = b"q" * (50 << 20)
    while True:
        cache.put(key, payload)
        (Path(root) / f"{key}.blk").unlink()


def test_a_writer_killed_mid_write_leaves_no_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_write_forever, args=(str(tmp_path),))
    proc.start()
    deadline = time.monotonic() + 20
    while not list(tmp_path.glob("*.part")) and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    cache = remote.BlockCache(tmp_path, 1 << 30)
    key = cache.key("s3://b/k", "v", 0, 50 << 20)
    assert cache.get(key, 50 << 20) in (None, b"q" * (50 << 20))  # never a torn entry
    for part in tmp_path.glob("*.part"):
        os.utime(part, (time.time() - 120, time.time() - 120))
    cache.evict()
    assert not list(tmp_path.glob("*.part"))  # partial writes of dead processes are swept


from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402


@hsettings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 3000)), min_size=1, max_size=30),
       st.integers(1000, 20000))
def test_cache_serves_exactly_what_was_put_within_its_limit(ops: list[tuple[int, int]], limit: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        cache = remote.BlockCache(root, limit)
        last: dict[tuple[int, int], bytes] = {}
        for key_no, size in ops:
            key = cache.key("s3://b/k", "v", key_no, key_no + size)
            got = cache.get(key, size)
            assert got is None or got == last.get((key_no, size))  # never another block's bytes, never torn
            payload = bytes([key_no]) * size
            cache.put(key, payload)
            last[(key_no, size)] = payload
        cache.evict()
        assert sum(size for _, size, _ in cache.entries()) <= max(limit, 0) or len(cache.entries()) <= 1


def test_storage_options_on_the_command_line() -> None:
    from mixsql.cli import _storage_option
    from mixsql.errors import MixSQLError

    assert _storage_option("endpoint_url=http://127.0.0.1:9000") == ("endpoint_url", "http://127.0.0.1:9000")
    assert _storage_option("anon=true") == ("anon", True)
    assert _storage_option("max_concurrency=20") == ("max_concurrency", 20)
    assert _storage_option('client_kwargs={"region_name": "eu-west-1"}') == ("client_kwargs",
                                                                            {"region_name": "eu-west-1"})
    assert _storage_option("secret=12345") == ("secret", "12345")  # a credential stays text
    assert _storage_option("key=a=b") == ("key", "a=b")
    with pytest.raises(MixSQLError, match="is not KEY=VALUE"):
        _storage_option("endpoint_url")
