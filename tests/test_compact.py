"""The compacted cache (``mixsql.compact``): the same stream read from fewer bytes; found again by any
statement over the same components; never serves data that no longer matches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch.utils.data

import mixsql
from mixsql import compact
from mixsql.compact import Compact
from mixsql.dataset import collate
from mixsql.errors import DataError, MixSQLError
from mixsql.read import Reader
from tests.conftest import PARQUET_GLOB, ROOT, SAMPLE

SELECTIVE = """MIX 0.5 AS code WHERE domain = 'code' AND quality > 0.4,
    0.3 AS docs WHERE domain = 'docs', 0.2 AS rest WHERE language = 'de'
FROM corpus CHUNK SIZE 64 LIMIT {limit} SAMPLES ON EXHAUSTION REPEAT"""


@pytest.fixture()
def own(tmp_path: Path) -> mixsql.Connection:
    data = tmp_path / "parquet"
    shutil.copytree(SAMPLE / "parquet", data)
    c = mixsql.connect(tmp_path / "cat")
    c.register("corpus", [str(data / "*.parquet")])
    yield c
    c.close()


def _texts(mix: mixsql.Mix, **kw: object) -> list[tuple[str, str]]:
    return [(s["component"], s["text"]) for s in mix.samples(columns=["text"], **kw)]


@pytest.mark.parametrize("compression", [None, "lz4", "zstd"])
def test_the_same_stream_from_the_cache_reading_only_selected_rows(own: mixsql.Connection,
                                                                    compression: str | None) -> None:
    mix = own.mix(SELECTIVE.format(limit=3000))
    plain = _texts(mix)
    cache = mix.cache(["text"], compression=compression)
    assert cache.columns == ["text"] and cache.meta["samples"] == sum(c.samples for c in mix.bound.components)
    assert cache.meta["compression"] == compression
    assert _texts(mix) == plain
    plan = mix.plan()
    rows = plan.positions_rows(0, len(plan))
    source, cached = Reader(plan, ["text"]), Reader(plan, ["text"], compact=cache)
    assert source.read(rows).column("text").to_pylist() == cached.read(rows).column("text").to_pylist()
    assert cached.stats.row_groups == source.stats.row_groups  # a source row group is one cache row group
    assert cached.stats.row_group_rows <= cache.meta["samples"] < source.stats.row_group_rows


def test_found_again_by_other_weights_seeds_and_limits(own: mixsql.Connection) -> None:
    first = own.mix(SELECTIVE.format(limit=3000)).cache(["text"])
    stamp = (first.directory / "cache.json").stat().st_mtime_ns
    other = own.mix(SELECTIVE.format(limit=900).replace("0.5 AS code", "0.6 AS code")
                    .replace("0.2 AS rest", "0.1 AS rest"), seed=99)
    again = other.cache(["text"])
    assert again.directory == first.directory and (again.directory / "cache.json").stat().st_mtime_ns == stamp
    fresh = own.mix(SELECTIVE.format(limit=900).replace("0.5 AS code", "0.6 AS code")
                    .replace("0.2 AS rest", "0.1 AS rest"), seed=99)
    assert _texts(other) == _texts(fresh)
    assert own.mix(SELECTIVE.format(limit=100).replace("quality > 0.4", "quality > 0.5")).cache(["text"]).directory \
        != first.directory  # other components, another cache


def test_torch_workers_read_the_cache_and_give_the_same_batches(own: mixsql.Connection) -> None:
    mix = own.mix(SELECTIVE.format(limit=2048))

    def batches(workers: int) -> list[list[str]]:
        ds = mix.torch_dataset(batch_size=16, rank=1, world_size=2, columns=["text"])
        loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=workers, collate_fn=mixsql.collate)
        return [b["text"] for b in loader]

    plain = batches(0)
    mix.cache(["text"])
    assert batches(0) == plain and batches(2) == plain


def test_what_the_cache_cannot_serve_is_an_error(own: mixsql.Connection, tmp_path: Path) -> None:
    mix = own.mix(SELECTIVE.format(limit=500))
    cache = mix.cache(["text"])
    with pytest.raises(MixSQLError, match="holds columns text, not 'domain'"):
        list(mix.samples(columns=["text", "domain"]))
    wider = own.mix(SELECTIVE.format(limit=3000).replace("quality > 0.4", "quality > 0.1"))
    wider._compact = cache  # a cache of narrower components forced on: a row it lacks is named, never guessed
    with pytest.raises(DataError, match="does not hold row"):
        list(wider.samples(columns=["text"]))
    shard = next(iter(cache.files.values())).path
    os.utime(shard, (1, 1))
    with pytest.raises(DataError, match="changed since the cache was built"):
        list(_reopened(own, cache).samples(columns=["text"]))


def _reopened(con: mixsql.Connection, cache: Compact) -> mixsql.Mix:
    mix = con.mix(SELECTIVE.format(limit=500))
    mix._compact = Compact(cache.directory)
    return mix


def test_a_source_changed_after_building_is_an_error(own: mixsql.Connection) -> None:
    mix = own.mix(SELECTIVE.format(limit=500))
    mix.cache(["text"])
    from mixsql.fs import local_path

    os.utime(local_path(mix.plan().files[0].url), (1, 1))
    with pytest.raises(DataError, match="changed since"):
        list(mix.samples(columns=["text"]))


def test_an_interrupted_build_leaves_nothing(own: mixsql.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    from mixsql import compact

    calls = []

    def broken(table: object) -> None:  # interrupted as it writes a shard's record batch
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(compact, "_one_batch", broken)
    with pytest.raises(KeyboardInterrupt):
        own.mix(SELECTIVE.format(limit=500)).cache(["text"])
    assert calls and [p.name for p in (own.path / "caches").iterdir()] == [next((own.path / "caches").iterdir()).name]
    assert next((own.path / "caches").iterdir()).name.endswith(".lock")  # only the (empty) lock file stays


JSONL_MIX = """MIX 0.6 AS code WHERE domain = 'code', 0.4 AS rest WHERE language = 'de'
FROM corpus_jsonl CHUNK SIZE 64 LIMIT 900 SAMPLES ON EXHAUSTION REPEAT"""


@pytest.fixture()
def jsonl(tmp_path: Path) -> mixsql.Connection:
    data = tmp_path / "jsonl"
    shutil.copytree(SAMPLE / "jsonl", data)  # plain and gzip files
    c = mixsql.connect(tmp_path / "cat")
    c.register("corpus_jsonl", [str(data / "*.jsonl*")])
    yield c
    c.close()


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_jsonl_is_compacted_to_the_same_stream_without_parsing_json(jsonl: mixsql.Connection) -> None:
    plain_mix, mix = jsonl.mix(JSONL_MIX), jsonl.mix(JSONL_MIX)
    plain = list(plain_mix.samples(columns=["id", "text"]))
    cache = mix.cache(["id", "text"])
    assert cache.meta["samples"] == sum(c.samples for c in mix.bound.components)
    assert {e["url"].rsplit(".", 1)[-1] for e in cache.meta["files"]} == {"jsonl", "gz"}
    assert list(mix.samples(columns=["id", "text"])) == plain
    plan = mix.plan()
    rows = plan.positions_rows(0, len(plan))
    source, cached = Reader(plan, ["id", "text"]), Reader(plan, ["id", "text"], compact=cache)
    assert source.read(rows).equals(cached.read(rows))
    assert source.stats.jsonl_ranges + source.stats.decompressed_files > 0
    assert cached.stats.jsonl_ranges == cached.stats.decompressed_files == 0  # no JSON parsed: the cache decoded
    assert 0 < cached.stats.row_group_rows <= cache.meta["samples"]
    batches = {}
    for name, m, workers in (("plain", plain_mix, 0), ("cached", mix, 2)):
        ds = m.torch_dataset(batch_size=8, columns=["id"])
        batches[name] = [b["id"] for b in torch.utils.data.DataLoader(ds, batch_size=8, num_workers=workers,
                                                                      collate_fn=collate)]
    assert batches["cached"] == batches["plain"] and len(batches["plain"]) == len(plan) // 8


def test_a_jsonl_source_changed_after_building_is_an_error(jsonl: mixsql.Connection, tmp_path: Path) -> None:
    mix = jsonl.mix(JSONL_MIX)
    cache = mix.cache(["text"])
    target = tmp_path / "jsonl" / "corpus-00000.jsonl"
    target.write_bytes(target.read_bytes().replace(b'"text": "', b'"text": "!', 1))
    with pytest.raises(DataError, match="corpus-00000.jsonl"):
        list(mix.samples(columns=["text"]))


def test_what_is_neither_parquet_nor_jsonl_is_refused(scratch: mixsql.Connection) -> None:
    scratch.register("shards", [str(SAMPLE / "images" / "webdataset")])
    with pytest.raises(MixSQLError, match="copies Parquet and JSONL files"):
        scratch.mix("MIX 1.0 AS all FROM shards LIMIT 10 SAMPLES").cache()


def test_the_cli_builds_it(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "mixsql", "--catalog", str(cat)]
    subprocess.run(run + ["register", "corpus", PARQUET_GLOB], check=True, capture_output=True, env=env)
    statement = tmp_path / "m.mixsql"
    statement.write_text(SELECTIVE.format(limit=100))
    out = subprocess.run(run + ["cache", str(statement), "--columns", "text"], check=True, capture_output=True,
                         text=True, env=env).stdout
    assert out.startswith("cached ") and "(text)" in out and str(cat / "caches") in out
    subprocess.run(run + ["cache", str(statement), "--columns", "text", "--compression", "lz4"], check=True,
                   capture_output=True, env=env)
    assert sorted(json.loads(p.read_text())["compression"] or "none" for p in (cat / "caches").glob("*/cache.json")) \
        == ["lz4", "none"]


def test_packed_sequences_read_the_cache_too(tmp_path: Path) -> None:
    from tests.conftest import TOKENIZER

    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", [PARQUET_GLOB], tokenizer=str(TOKENIZER))
    mix = con.mix(SELECTIVE.format(limit=400))
    plain = [s["input_ids"].tolist() for s in mix.sequences(64, limit=30)]
    mix.cache(["text"])
    assert [s["input_ids"].tolist() for s in mix.sequences(64, limit=30)] == plain
    ds = mix.torch_dataset(batch_size=4, rank=0, world_size=1, seq_len=64)
    assert ds.compact is not None and len(next(iter(ds))["input_ids"]) == 64


def test_of_processes_asking_at_once_one_builds_and_the_others_wait(own: mixsql.Connection,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl
    import threading

    import mixsql.compact as compact
    from mixsql.bind import matches

    statement = SELECTIVE.format(limit=100)
    mixes = [mixsql.connect(own.path).mix(statement) for _ in range(3)]  # as many ranks
    scans = []
    original = matches.scan
    monkeypatch.setattr(matches, "scan", lambda *a, **k: scans.append(1) or original(*a, **k))
    got, errors = [], []

    def ask(mix: mixsql.api.Mix) -> None:
        try:
            got.append(mix.cache(["text"]).directory)
        except Exception as e:  # pragma: no cover - what the assertion reports
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(m,)) for m in mixes]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors and len(got) == 3 and len(set(got)) == 1 and len(scans) == 1  # built once
    # a rank that only finds waits for a build in progress, and is told when there is none
    fresh = own.mix(statement.replace("'code'", "'manual'"))
    locks_taken = []
    real_locked = compact.atomic.locked
    monkeypatch.setattr(compact.atomic, "locked", lambda path, **kw: locks_taken.append(path) or real_locked(path, **kw))
    with pytest.raises(MixSQLError, match="none being built"):
        fresh.cache(["text"], build=False)
    told = []
    with open(locks_taken[-1], "a+") as held:  # another process is building it
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        finder = threading.Thread(target=lambda: told.append(pytest.raises(MixSQLError, fresh.cache, ["text"],
                                                                           build=False)))
        finder.start()
        finder.join(0.5)
        assert finder.is_alive()  # it waits for the builder
    finder.join(30)
    assert not finder.is_alive() and told  # the builder went away without building: told so


@pytest.mark.parametrize("parse_bytes", [1, 1 << 30])
def test_a_jsonl_file_of_many_blocks_is_cached_block_by_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              parse_bytes: int) -> None:
    """Records of several 1 MiB blocks, parsed a block at a time or all together: a cache row group
    per block either way, and the stream of the source."""
    import json

    from mixsql import compact

    monkeypatch.setattr(compact, "PARSE_BYTES", parse_bytes)
    lines = [json.dumps({"id": i, "domain": ("code", "web", "docs")[i % 3], "text": f"{i} " + "x" * (700 + i % 500)})
             for i in range(5000)]  # about 5.5 MB: six blocks
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    con = mixsql.connect(tmp_path / "cat")
    con.register("big", [str(tmp_path / "big.jsonl")])
    statement = "MIX 0.7 AS code WHERE domain = 'code', 0.3 AS web WHERE domain = 'web' FROM big CHUNK SIZE 64 " \
                "LIMIT 2000 SAMPLES"
    plain = list(con.mix(statement).samples(columns=["id", "text"]))
    mix = con.mix(statement)
    cache = mix.cache(["id", "text"])
    (entry,) = cache.meta["files"]
    assert len(entry["cache_rows"]) >= 5 and sum(entry["cache_rows"]) == cache.meta["samples"] == 3334
    assert list(mix.samples(columns=["id", "text"])) == plain


@pytest.mark.parametrize("damage", ["lost shard", "changed shard", "lost rows"])
def test_a_damaged_cache_is_never_served_and_built_again(own: mixsql.Connection, damage: str) -> None:
    """A shard lost or changed since the cache was built (or its rows file lost) is an error for a
    reader that opened the cache before, with the hint to build it again; building it again
    replaces it (nothing of the damaged copy left behind) and serves the stream of the sources."""
    expected = _texts(own.mix(SELECTIVE.format(limit=500)))
    mix = own.mix(SELECTIVE.format(limit=500))
    first = mix.cache(["text"])
    shard = sorted(first.directory.glob("shard-*.arrow"))[0]
    if damage == "lost shard":
        shard.unlink()
    elif damage == "changed shard":
        os.utime(shard, (1, 1))
    else:
        shard.with_suffix(".rows.npy").unlink()
    assert first.damage() is not None
    with pytest.raises(DataError, match="build the cache again|lost|changed since"):
        for m in [mix, own.mix(SELECTIVE.format(limit=3000))]:
            m._compact = first
            list(m.samples(columns=["text"]))
    with pytest.raises(mixsql.MixSQLError, match="damaged"):
        own.mix(SELECTIVE.format(limit=500)).cache(["text"], build=False)
    again = own.mix(SELECTIVE.format(limit=500))
    built = again.cache(["text"])
    assert built.directory == first.directory and built.damage() is None
    assert _texts(again) == expected
    assert not [p.name for p in first.directory.parent.iterdir() if p.name.startswith((".damaged-", ".tmp-"))]


def test_a_cache_of_an_earlier_format_is_built_again_in_its_place(own: mixsql.Connection, tmp_path: Path) -> None:
    """A cache this mixsql cannot read (an earlier format, in a directory the user named) is built
    again there, not refused as another cache's."""
    import json

    mix = own.mix(SELECTIVE.format(limit=300))
    where = tmp_path / "mine"
    first = mix.cache(["text"], directory=where)
    expected = [s["text"] for s in mix.samples(columns=["text"])]
    first.close()
    meta = json.loads((where / "cache.json").read_text())
    (where / "cache.json").write_text(json.dumps({**meta, "format": 1, "key": "an earlier one"}))
    again = own.mix(SELECTIVE.format(limit=300))
    built = again.cache(["text"], directory=where)
    assert built.meta["format"] == compact.FORMAT and json.loads((where / "cache.json").read_text())["format"] == compact.FORMAT
    assert [s["text"] for s in again.samples(columns=["text"])] == expected


def test_compressed_and_plain_caches_are_distinct_and_a_bad_compression_is_said(own: mixsql.Connection) -> None:
    """A cache's compression is part of what it is: asking for another builds another (the same
    stream either way), and the plain one is larger; an unknown compression is an error naming the choices."""
    plain = own.mix(SELECTIVE.format(limit=500)).cache(["text"])
    small = own.mix(SELECTIVE.format(limit=500)).cache(["text"], compression="zstd")
    assert small.directory != plain.directory and small.bytes < plain.bytes
    with pytest.raises(MixSQLError, match="no compression 'gzip'") as e:
        own.mix(SELECTIVE.format(limit=500)).cache(["text"], compression="gzip")
    assert "lz4, zstd, or none" in (e.value.hint or "")
