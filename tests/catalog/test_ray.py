"""Registration (and tokenization) on Ray: the same catalog as on this machine's cores; a failing
task named, nothing committed; an address that does not answer said at once. The tests start a
local Ray instance of their own (two CPUs) and stop it at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import mixsql
from mixsql import cluster
from mixsql.errors import DataError, MixSQLError
from tests.conftest import JSONL_GLOB, ROOT, SAMPLE, TOKENIZER

ray = pytest.importorskip("ray")

PARQUET = sorted(str(p) for p in (SAMPLE / "parquet").glob("*.parquet"))
STATEMENT = "MIX 0.5 AS code WHERE domain = 'code', 0.5 AS rest FROM {name} SEED 3 CHUNK SIZE 64 LIMIT 500 SAMPLES"


@pytest.fixture(scope="module")
def local_ray() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _catalog(con: mixsql.Connection, name: str) -> list[dict]:
    return con.sql(f"SELECT * FROM {name} ORDER BY _file_id, _row").to_pylist()


def test_the_same_catalog_and_stream_as_a_local_registration(local_ray: None, tmp_path: Path) -> None:
    here, there = mixsql.connect(tmp_path / "here"), mixsql.connect(tmp_path / "there")
    for name, paths, options in (("corpus", PARQUET, {"tokenizer": TOKENIZER}), ("lines", [JSONL_GLOB], {})):
        local = here.register(name, paths, **options)
        seen: list[tuple[int, int]] = []
        remote = there.register(name, paths, ray="", progress=lambda done, total, url: seen.append((done, total)),
                                **options)
        assert remote.version == local.version and remote.samples == local.samples
        assert _catalog(there, name) == _catalog(here, name)
        assert pq.read_table(remote.files_path).equals(pq.read_table(local.files_path))
        assert seen and seen[-1][0] == seen[-1][1]  # progress reached every file
        a, b = here.mix(STATEMENT.format(name=name)), there.mix(STATEMENT.format(name=name))
        assert list(a.samples(columns=["text"])) == list(b.samples(columns=["text"]))
    assert not [p for p in (tmp_path / "there").rglob(".*") if p.is_file() and not p.name.endswith(".lock")
                and p.name != ".catalog.lock"]  # no partial part left behind


def test_an_append_on_ray_is_an_append_on_this_machine(local_ray: None, tmp_path: Path) -> None:
    here, there = mixsql.connect(tmp_path / "here"), mixsql.connect(tmp_path / "there")
    for con, ray_address in ((here, None), (there, "")):
        con.register("corpus", PARQUET[:1], ray=ray_address)
        con.register("corpus", PARQUET[1:], append=True, ray=ray_address)
    assert here.dataset("corpus").version == there.dataset("corpus").version
    assert _catalog(there, "corpus") == _catalog(here, "corpus")


def test_a_task_failing_on_a_corrupt_file_names_it_and_commits_nothing(local_ray: None, tmp_path: Path) -> None:
    data = tmp_path / "jsonl"
    shutil.copytree(SAMPLE / "jsonl", data)
    bad = data / "corpus-00001.jsonl"
    lines = bad.read_bytes().splitlines(keepends=True)
    bad.write_bytes(b"".join(lines[:7] + [b'{"text": "cut short\n'] + lines[8:]))
    con = mixsql.connect(tmp_path / "cat")
    with pytest.raises(DataError, match=r"corpus-00001\.jsonl.*line 8") as error:
        con.register("lines", [str(data / "*.jsonl*")], ray="")
    assert error.value.file and error.value.file.endswith("corpus-00001.jsonl")
    assert con.datasets() == [] and not [p for p in (tmp_path / "cat").iterdir() if p.name.startswith(".tmp")]
    bad.write_bytes(b"".join(lines))  # fixed: a retry works
    assert con.register("lines", [str(data / "*.jsonl*")], ray="").samples == \
        mixsql.connect(tmp_path / "other").register("lines", [str(data / "*.jsonl*")]).samples


def test_addresses_are_checked_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(MixSQLError, match="not a Ray cluster address"):
        cluster.check_address("corpus")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    began = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "mixsql", "--catalog", str(tmp_path / "cat"), "register", "corpus",
                          PARQUET[0], f"--ray=127.0.0.1:{port}"], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and f"the Ray cluster at 127.0.0.1:{port} does not answer" in out.stderr
    assert time.monotonic() - began < 30 + cluster.CONNECT_SECONDS
    out = subprocess.run([sys.executable, "-m", "mixsql", "--catalog", str(tmp_path / "cat"), "register", "--ray",
                          "corpus", *PARQUET[:2]], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "'corpus' is not a Ray cluster address" in out.stderr
    assert not (tmp_path / "cat" / "datasets").exists()


def test_tokenize_on_ray_writes_the_same_shards_and_catalog(local_ray: None, tmp_path: Path) -> None:
    done = {}
    for where, ray_address in (("here", None), ("there", "")):
        con = mixsql.connect(tmp_path / where)
        con.register("lines", [JSONL_GLOB])
        info = con.tokenize("lines", TOKENIZER, tmp_path / f"{where}-ids", ray=ray_address)
        shards = sorted((tmp_path / f"{where}-ids").iterdir())
        assert [p.name for p in shards if p.name.startswith(".")] == []  # nothing partial left
        done[where] = (info, [pq.read_table(p) for p in shards], _catalog(con, "lines"))
    (a, shards_a, rows_a), (b, shards_b, rows_b) = done["here"], done["there"]
    assert len(shards_a) == len(shards_b) == 3 and all(x.equals(y) for x, y in zip(shards_a, shards_b))
    assert rows_a and a.samples == b.samples and a.tokenizer["kind"] == b.tokenizer["kind"] == "ids"
    assert [r["n_tokens"] for r in rows_a] == [r["n_tokens"] for r in rows_b]  # counted from the stored ids


def test_a_worker_killed_after_writing_its_parts_is_retried_to_the_same_catalog(
        local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task's process dies after it wrote its parts but before it returned (a node lost, an OOM
    kill): Ray runs the task again, which writes the same parts under the same names, and the
    catalog is the one a local registration makes."""
    from mixsql.catalog import store

    real, marker = store.scan_range, str(tmp_path / "killed")

    def dies_once(job, start, stop, done=None):  # noqa: ANN001, ANN202 - pickled by value into the task
        out = real(job, start, stop, done)
        if start == 0 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return out

    here, there = mixsql.connect(tmp_path / "here"), mixsql.connect(tmp_path / "there")
    local = here.register("corpus", PARQUET)  # on this machine's threads, before the patch
    monkeypatch.setattr(store, "scan_range", dies_once)
    remote = there.register("corpus", PARQUET, ray="")
    assert os.path.exists(marker), "the first attempt was killed"
    assert remote.version == local.version and _catalog(there, "corpus") == _catalog(here, "corpus")
    assert not [p for p in (tmp_path / "there").rglob(".*") if p.is_file() and not p.name.endswith(".lock")
                and p.name != ".catalog.lock"]
