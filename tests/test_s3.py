"""The whole path on a real S3-compatible server (moto's, on loopback, started by the suite): the same
samples as from local files, storage options never written anywhere, changed objects detected,
transient failures retried, and clear errors for what cannot work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.utils.data

import mixsql
from mixsql import fs as mfs
from mixsql import remote
from mixsql.errors import CatalogError, DataError, MixSQLError
from tests.conftest import JSONL_GLOB, PARQUET_GLOB, ROOT, SAMPLE
from tests.s3 import SECRET, Proxy, S3Server, free_port

pytest.importorskip("s3fs")
pytest.importorskip("moto")

STATEMENT = (SAMPLE / "pretrain.mixsql").read_text()
JSONL_STATEMENT = STATEMENT.replace("FROM corpus", "FROM corpus_jsonl")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> S3Server:
    with S3Server() as s:
        s.upload(SAMPLE / "parquet", "bucket", "parquet")
        s.upload(SAMPLE / "jsonl", "bucket", "jsonl")
        yield s


@pytest.fixture()
def settings(tmp_path: Path) -> remote.Settings:
    """This test's remote settings (a cache of its own); the process's are restored after it."""
    before = remote.settings()
    yield remote.configure(cache_dir=str(tmp_path / "blocks"))
    remote.configure(before)


def _catalogs(tmp_path: Path, server: S3Server, **options: object) -> tuple[mixsql.Connection, mixsql.Connection]:
    s3 = mixsql.connect(tmp_path / "s3cat", storage_options=server.options(**options))
    s3.register("corpus", ["s3://bucket/parquet/*.parquet"])
    s3.register("corpus_jsonl", ["s3://bucket/jsonl/"])
    local = mixsql.connect(tmp_path / "localcat")
    local.register("corpus", [PARQUET_GLOB])
    local.register("corpus_jsonl", [JSONL_GLOB])
    return s3, local


def _strip(value: object) -> object:
    """A result with every file location removed, to compare S3 and local runs."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in ("url", "sources", "registered_at", "file",
                                                                     "directory", "version", "catalog_version")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def test_s3_stream_equals_local(tmp_path: Path, server: S3Server, settings: remote.Settings) -> None:
    s3, local = _catalogs(tmp_path, server)
    assert s3.dataset("corpus").samples == local.dataset("corpus").samples == 4200
    assert [f.url for f in s3.catalog.dataset("corpus").files()][0] == "s3://bucket/parquet/corpus-00000.parquet"
    assert s3.catalog.dataset("corpus").files()[0].etag  # the object's entity tag is its version
    for statement in (STATEMENT, JSONL_STATEMENT):
        a, b = s3.mix(statement), local.mix(statement)
        assert _strip(a.explanation().to_dict()) == _strip(b.explanation().to_dict())
        assert list(a.samples()) == list(b.samples())
        lineage = [a.lineage(3, 16, columns=["domain"]).to_pylist(), b.lineage(3, 16, columns=["domain"]).to_pylist()]
        for rows in lineage:
            for row in rows:
                row["file"] = row["file"].rsplit("/", 1)[-1]
        assert lineage[0] == lineage[1]
    remote.reset_counters()
    mix = s3.mix(STATEMENT)
    dataset = mix.torch_dataset(batch_size=8, rank=0, world_size=1, columns=["text"])
    assert remote.counters.metadata_requests <= 2  # one listing per directory, not a request per file
    before = remote.counters.metadata_requests
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=mixsql.collate)
    got = [row for batch in loader for row in zip(batch["component"], batch["text"])]
    want = [(r["component"], r["text"]) for r in local.mix(STATEMENT).samples(limit=len(got), columns=["text"])]
    assert got == want and remote.counters.metadata_requests == before


def test_cli_on_s3_and_no_secret_in_any_artefact(tmp_path: Path, server: S3Server) -> None:
    env = {**os.environ, "MIXSQL_CACHE_DIR": str(tmp_path / "blocks"), "PYTHONPATH": str(ROOT)}
    opts = [f"--storage-option=key={server.options()['key']}", f"--storage-option=secret={SECRET}",
            f"--storage-option=endpoint_url={server.endpoint}"]

    def run(*args: str, catalog: Path, remote_: bool = True) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "mixsql", "--catalog", str(catalog), *(opts if remote_ else []), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        return r

    outputs = []
    for name, source, catalog, remote_ in (("s3", "s3://bucket/parquet/*.parquet", tmp_path / "s3cat", True),
                                           ("local", PARQUET_GLOB, tmp_path / "localcat", False)):
        out = [run("register", "corpus", source, catalog=catalog, remote_=remote_).stdout]
        out.append(run("explain", "sample_data/pretrain.mixsql", catalog=catalog, remote_=remote_).stdout)
        out.append(run("head", "sample_data/pretrain.mixsql", "-n", "12", "--json", "--columns",
                       "component,domain,text", catalog=catalog, remote_=remote_).stdout)
        out.append(run("plan", "sample_data/pretrain.mixsql", "-o", str(tmp_path / f"plan-{name}"), catalog=catalog,
                       remote_=remote_).stdout)
        out.append(run("sql", "SELECT count(*) AS n FROM corpus", catalog=catalog, remote_=remote_).stdout)
        outputs.append(out)
    s3_out, local_out = outputs
    assert s3_out[2] == local_out[2]  # the same samples
    assert s3_out[4] == local_out[4]
    everything = "\n".join(s3_out)
    for path in [*(tmp_path / "s3cat").rglob("*"), *(tmp_path / "plan-s3").rglob("*"), *(tmp_path / "blocks").rglob("*")]:
        if path.is_file():
            everything += path.read_bytes().decode("latin-1")
    assert "s3://bucket/parquet/corpus-00000.parquet" in everything  # the artefacts were searched
    assert SECRET not in everything


def test_object_changed_after_registration_is_named(tmp_path: Path, server: S3Server, settings: remote.Settings) -> None:
    server.upload(SAMPLE / "parquet" / "corpus-00001.parquet", "changing", "data/a.parquet")
    server.upload(SAMPLE / "parquet" / "corpus-00002.parquet", "changing", "data/b.parquet")
    con = mixsql.connect(tmp_path / "cat", storage_options=server.options())
    con.register("corpus", ["s3://changing/data/"])
    mix = con.mix(STATEMENT)
    assert len(list(mix.samples(limit=10)))
    server.upload(SAMPLE / "parquet" / "corpus-00003.parquet", "changing", "data/a.parquet")
    with pytest.raises(DataError, match="s3://changing/data/a.parquet changed since it was registered"):
        con.mix(STATEMENT).plan()
    with pytest.raises(DataError, match="changed since it was registered"):
        list(mix.samples())  # a stream planned before the change: caught when a reader first opens the file


def test_transient_failures_are_retried_and_the_stream_is_exact(tmp_path: Path, server: S3Server,
                                                                 settings: remote.Settings) -> None:
    local = mixsql.connect(tmp_path / "localcat")
    local.register("corpus", [PARQUET_GLOB])
    local.register("corpus_jsonl", [JSONL_GLOB])
    with Proxy(server.endpoint, fail=0.25, seed=3) as proxy:
        # botocore's own retries off, so that every failure reaches mixsql's
        options = server.options(proxy.endpoint, config_kwargs={"retries": {"max_attempts": 1}})
        remote.configure(retries=8, storage_options=options)
        con = mixsql.connect(tmp_path / "cat")
        con.register("corpus", ["s3://bucket/parquet/*.parquet"])
        con.register("corpus_jsonl", ["s3://bucket/jsonl/"])  # plain and gzip: every read retried
        remote.reset_counters()
        assert list(con.mix(STATEMENT).samples()) == list(local.mix(STATEMENT).samples())
        assert proxy.stats()["failed"] > 5  # failures happened (retried by s3fs, or by mixsql)
        assert list(con.mix(JSONL_STATEMENT).samples()) == list(local.mix(JSONL_STATEMENT).samples())


def test_bad_locations_are_clear_errors(tmp_path: Path, server: S3Server, settings: remote.Settings) -> None:
    con = mixsql.connect(tmp_path / "cat", storage_options=server.options())
    with pytest.raises(CatalogError, match="no such file or directory: s3://no-such-bucket/x.parquet"):
        con.register("d", ["s3://no-such-bucket/x.parquet"])
    with pytest.raises(CatalogError, match="s3://bucket/nope/"):
        con.register("d", ["s3://bucket/nope/*.parquet"])
    with pytest.raises(CatalogError, match="carries credentials"):
        con.register("d", ["s3://AKIA:hunter2@bucket/parquet/corpus-00000.parquet"])
    refused = server.options(f"http://127.0.0.1:{free_port()}", config_kwargs={"retries": {"max_attempts": 1},
                                                                                "connect_timeout": 1})
    remote.configure(storage_options=refused, retries=1)
    with pytest.raises(MixSQLError, match="s3://bucket/parquet") as err:
        mixsql.connect(tmp_path / "cat2").register("d", ["s3://bucket/parquet/corpus-00000.parquet"])
    assert SECRET not in str(err.value) and SECRET not in (err.value.hint or "")
    assert not (tmp_path / "cat2" / "datasets").exists() or not any((tmp_path / "cat2" / "datasets").iterdir())


def test_catalog_urls_chains_and_archives(tmp_path: Path, server: S3Server, settings: remote.Settings) -> None:
    with pytest.raises(CatalogError, match="must be a local directory"):
        mixsql.connect("s3://bucket/cat")
    assert not Path("s3:").exists()
    con = mixsql.connect(tmp_path / "cat", storage_options=server.options())
    info = con.register("chained", ["simplecache::s3://bucket/parquet/corpus-00000.parquet"])
    url = con.catalog.dataset("chained").files()[0].url
    assert url == "simplecache::s3://bucket/parquet/corpus-00000.parquet" and info.samples > 0
    local = mixsql.connect(tmp_path / "local")
    local.register("chained", [str(SAMPLE / "parquet" / "corpus-00000.parquet")])
    statement = "MIX 1.0 AS all FROM chained SEED 1"
    assert list(con.mix(statement).samples()) == list(local.mix(statement).samples())
    with pytest.raises(CatalogError, match="inside a tar archive"):
        con.register("t", ["tar://a.jsonl::file:///tmp/x.tar"])


def test_remote_parquet_fetches_only_the_needed_chunks(tmp_path: Path, server: S3Server,
                                                        settings: remote.Settings) -> None:
    remote.configure(cache_dir=None)
    con = mixsql.connect(tmp_path / "cat", storage_options=server.options())
    con.register("corpus", ["s3://bucket/parquet/*.parquet"])
    mix = con.mix(STATEMENT)
    plan = mix.plan()
    from mixsql.read import Reader

    rows = plan.positions_rows(0, len(plan))
    minimum = groups = 0
    for f, info in enumerate(plan.files):  # the least a reader can fetch: the touched groups' text chunks
        pf = mfs.RemoteParquet(info.url, info.size, info.version)
        mine = plan.row[rows[plan.file[rows] == f]]
        for g in np.unique(info.row_group_of(mine)).tolist():
            minimum += sum(e - s for s, e in pf.chunk_ranges(g, ["text"]))
            groups += 1
    remote.reset_counters()
    reader = Reader(plan, ["text"])
    reader.samples(rows)
    footers = remote.counters.bytes_fetched - minimum
    assert reader.stats.row_groups == groups
    assert 0 <= footers <= len(plan.files) * mfs.FOOTER_READ
    assert remote.counters.requests <= groups + 2 * len(plan.files)
    assert remote.counters.metadata_requests <= len(plan.files)
    remote.reset_counters()
    again = Reader(plan, ["text"])
    again.samples(rows[:50])
    assert remote.counters.bytes_fetched == sum(  # footers once per process: only the chunks again
        e - s for f, info in enumerate(plan.files)
        for g in np.unique(info.row_group_of(plan.row[rows[:50][plan.file[rows[:50]] == f]])).tolist()
        for s, e in mfs.RemoteParquet.open(info.url, info.size, info.version).chunk_ranges(g, ["text"]))


def test_wrong_credentials_are_a_clear_error(tmp_path: Path, settings: remote.Settings) -> None:
    with S3Server(auth=True) as strict:
        con = mixsql.connect(tmp_path / "cat", storage_options=strict.options())
        with pytest.raises(CatalogError) as err:
            con.register("d", ["s3://bucket/parquet/*.parquet"])
        text = f"{err.value.message} {err.value.hint}"
        assert "s3://bucket/parquet/*.parquet" in text and "credentials" in text and SECRET not in text
    assert con.datasets() == []


def test_image_shards_from_s3_equal_local(tmp_path: Path, server: S3Server, settings: remote.Settings) -> None:
    pytest.importorskip("PIL")
    server.upload(SAMPLE / "images", "bucket", "images")
    s3 = mixsql.connect(tmp_path / "s3", storage_options=server.options())
    s3.register("images", ["s3://bucket/images/webdataset/"])
    s3.register("pairs", ["s3://bucket/images/parquet/"])
    s3.register("corpus", ["s3://bucket/parquet/*.parquet"])
    local = mixsql.connect(tmp_path / "local")
    local.register("images", [str(SAMPLE / "images" / "webdataset")])
    local.register("pairs", [str(SAMPLE / "images" / "parquet")])
    local.register("corpus", [PARQUET_GLOB])
    statement = (SAMPLE / "vlm.mixsql").read_text()
    remote.reset_counters()
    got = list(s3.mix(statement).samples())
    assert got == list(local.mix(statement).samples()) and any(s["image"] for s in got)
    shard_samples = sum(1 for s in got if s["component"] == "shards")
    assert remote.counters.requests <= shard_samples + 40  # a shard's samples: ranged reads, nothing whole


def test_a_training_config_reads_from_s3(tmp_path: Path, server: S3Server, settings: remote.Settings) -> None:
    mixture = tmp_path / "mix.mixsql"
    mixture.write_text(STATEMENT)
    data = mixsql.from_config({"catalog": "cat", "mixture": "mix.mixsql", "batch_size": 4,
                               "storage_options": server.options(), "cache_dir": "blocks",
                               "datasets": {"corpus": {"paths": ["s3://bucket/parquet/*.parquet"]}}}, base=tmp_path)
    assert remote.settings().cache_dir == str(tmp_path / "blocks") and SECRET not in repr(data.config)
    batches = list(data.loader(data.dataset(rank=0, world_size=1)))
    local = mixsql.connect(tmp_path / "local")
    local.register("corpus", [PARQUET_GLOB])
    want = [s["id"] for s in local.mix(STATEMENT).samples(limit=4 * len(batches), columns=["id"])]
    assert [i for b in batches for i in b["id"]] == want and any((tmp_path / "blocks").iterdir())


def test_four_workers_share_one_cache(tmp_path: Path, server: S3Server, settings: remote.Settings) -> None:
    s3, local = _catalogs(tmp_path, server)
    with Proxy(server.endpoint) as proxy:
        remote.configure(storage_options=server.options(proxy.endpoint))
        ds = s3.mix(STATEMENT).torch_dataset(batch_size=4, rank=0, world_size=1, columns=["text"])
        before = proxy.stats()["bytes"]
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=4, collate_fn=mixsql.collate)
        got = [row for batch in loader for row in zip(batch["component"], batch["text"])]
        fetched = proxy.stats()["bytes"] - before
    want = [(r["component"], r["text"]) for r in local.mix(STATEMENT).samples(limit=len(got), columns=["text"])]
    assert got == want
    sizes = sum(p.stat().st_size for p in (SAMPLE / "parquet").glob("*.parquet"))
    assert fetched <= 1.1 * sizes  # every block fetched about once, not once per worker
