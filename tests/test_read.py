"""Readers: the records handed out equal the source files; each block is decoded once; bad data is named."""

from __future__ import annotations

import typing as t

import gzip
import os
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import mixsql
from mixsql.errors import DataError
from mixsql.read import Reader, _decode_pool, _id_views, _in_table_order
from mixsql import read as read_module
from tests.conftest import PARQUET_GLOB, SAMPLE

STATEMENT = "MIX 2 AS code WHERE domain = 'code', 1 AS rest FROM {dataset} CHUNK SIZE 30"


def _source() -> dict[str, dict]:
    rows = duckdb.sql(f"SELECT * FROM read_parquet('{PARQUET_GLOB}')").to_arrow_table().to_pylist()
    return {r["id"]: r for r in rows}


@pytest.mark.parametrize("dataset", ["corpus", "corpus_jsonl"])
def test_samples_equal_the_source_records(con: mixsql.Connection, dataset: str) -> None:
    source = _source()
    mix = con.mix(STATEMENT.format(dataset=dataset))
    samples = list(mix.samples())
    assert len(samples) == len(mix) > 1000
    for s in samples:
        component = s.pop("component")
        assert s == source[s["id"]]
        assert (component == "code") == (s["domain"] == "code")


def test_zstd_jsonl_and_columns(scratch: mixsql.Connection, tmp_path: Path) -> None:
    raw = gzip.open(SAMPLE / "jsonl" / "corpus-00002.jsonl.gz").read()
    target = tmp_path / "part.jsonl.zst"
    with pa.CompressedOutputStream(str(target), "zstd") as out:
        out.write(raw)
    scratch.register("z", [str(target)])
    mix = scratch.mix(STATEMENT.format(dataset="z"))
    source = _source()
    got = list(mix.samples(columns=["id", "text", "tags"], component="id"))
    assert got and all(set(s) == {"id", "text", "tags", "component"} for s in got)
    assert all(s["text"] == source[s["id"]]["text"] and s["tags"] == source[s["id"]]["tags"] for s in got)
    assert {s["component"] for s in got} == {0, 1}
    with pytest.raises(mixsql.MixSQLError, match="unknown column 'txt'"):
        next(mix.samples(columns=["txt"]))


@pytest.mark.parametrize("partitions", [1, 2, 4])
def test_each_row_group_is_decoded_once(con: mixsql.Connection, partitions: int) -> None:
    mix = con.mix(STATEMENT.format(dataset="corpus"), partitions=partitions)
    p = mix.plan()
    rows = p.positions_rows(0, len(p))
    touched = {(int(f), int(np.searchsorted(np.cumsum(p.files[f].row_groups), r, side="right")))
               for f, r in zip(p.file[rows], p.row[rows])}
    # With room for every row group, each is decoded once. With room for only a few per partition
    # (components move in lockstep), the extra decodes are the row groups on pool boundaries, which
    # the end of one partition and the start of the next read at opposite ends of the run.
    for cache, extra in ((1 << 30, 0), (100_000 * partitions, 2 * (partitions - 1))):
        reader = Reader(p, ["id"], cache_bytes=cache)
        for start in range(0, len(rows), 97):
            reader.read(rows[start:start + 97])
        assert reader.stats.samples == len(rows)
        assert len(touched) <= reader.stats.row_groups <= len(touched) + extra


def test_read_ahead_changes_nothing_but_when_row_groups_decode(con: mixsql.Connection) -> None:
    """``prefetch`` decodes the next read's row groups in a thread; the reads give the same records
    and decode each row group once, as without it."""
    p = con.mix(STATEMENT.format(dataset="corpus"), partitions=2).plan()
    rows = p.positions_rows(0, len(p))
    plain, ahead = Reader(p, ["id", "text"]), Reader(p, ["id", "text"])
    reads = [rows[a: a + 300] for a in range(0, len(rows), 300)]
    for k, part in enumerate(reads):
        if k + 1 < len(reads):
            ahead.prefetch(reads[k + 1])
        assert ahead.read(part).equals(plain.read(part))
    assert ahead.stats.row_groups == plain.stats.row_groups and not ahead._ahead
    ahead.prefetch(rows[:10])  # a read-ahead never used is harmless
    assert ahead.read(rows[:10]).equals(plain.read(rows[:10]))


def test_compressed_jsonl_is_decompressed_once(con: mixsql.Connection) -> None:
    mix = con.mix(STATEMENT.format(dataset="corpus_jsonl"), partitions=4)
    p = mix.plan()
    reader = Reader(p, ["id"])
    rows = p.positions_rows(0, len(p))
    for start in range(0, len(rows), 50):
        reader.read(rows[start:start + 50])
    compressed = {f for f in np.unique(p.file[rows]).tolist() if p.files[f].compression}
    assert compressed and reader.stats.decompressed_files == len(compressed)


def test_missing_and_changed_files_are_named(tmp_path: Path, data_copy: Path) -> None:
    con = mixsql.connect(tmp_path / "cat")
    con.register("p", [str(data_copy / "parquet")])
    con.register("j", [str(data_copy / "jsonl")])
    victim = data_copy / "parquet" / "corpus-00001.parquet"
    victim.unlink()
    with pytest.raises(DataError) as e:
        list(con.mix(STATEMENT.format(dataset="p")).samples())
    assert str(victim) in str(e.value) and "missing" in str(e.value)

    plain = data_copy / "jsonl" / "corpus-00000.jsonl"
    with open(plain, "ab") as fh:
        fh.write(b'{"text": "appended"}\n')
    with pytest.raises(DataError) as e:
        list(con.mix(STATEMENT.format(dataset="j")).samples())
    assert str(plain) in str(e.value) and "changed since it was registered" in str(e.value)


def test_a_corrupted_record_names_file_and_row(tmp_path: Path, data_copy: Path) -> None:
    con = mixsql.connect(tmp_path / "cat")
    plain = data_copy / "jsonl" / "corpus-00000.jsonl"
    con.register("j", [str(plain)])
    first = con.sql("SELECT _row, _offset, _length FROM j ORDER BY _row LIMIT 1 OFFSET 3").to_pylist()[0]
    data = bytearray(plain.read_bytes())
    data[first["_offset"]: first["_offset"] + 5] = b"#####"  # same size, broken JSON
    stat = plain.stat()
    plain.write_bytes(bytes(data))
    os.utime(plain, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the fingerprint unchanged
    with pytest.raises(DataError) as e:
        list(con.mix("MIX 1 AS a FROM j").samples())
    assert e.value.file == f"file://{plain}" and e.value.row == first["_row"]
    assert f"record {first['_row']}" in str(e.value)


def test_plan_order_mixes_consecutive_samples(con: mixsql.Connection) -> None:
    mix = con.mix(STATEMENT.format(dataset="corpus"))
    components = [s["component"] for s in mix.samples(limit=300, columns=["id"])]
    for start in range(0, 300, 30):
        window = components[start:start + 30]
        assert 14 <= window.count("code") <= 26  # 2/3 of 30 = 20, no long runs of one component


def test_parquet_and_jsonl_datasets_in_one_statement(con: mixsql.Connection) -> None:
    source = _source()
    mix = con.mix("MIX 1 AS p FROM corpus WHERE domain = 'code', 2 AS j FROM corpus_jsonl WHERE domain = 'docs' "
                  "CHUNK SIZE 30")
    samples = list(mix.samples())
    assert len(samples) == len(mix) > 100
    for s in samples:
        component = s.pop("component")
        assert s == source[s["id"]] and s["domain"] == {"p": "code", "j": "docs"}[component]


def test_tiny_and_empty_streams(con: mixsql.Connection) -> None:
    one = con.mix("MIX 1 AS rare WHERE domain = 'code' AND quality > 0.69, 1 AS rest FROM corpus CHUNK SIZE 2")
    rare = one.bound.components[0].samples
    assert 0 < rare < 20 and len(one) == len(list(one.samples())) >= rare
    with pytest.raises(mixsql.MixSQLError, match=f"the stream has {len(one)} samples, fewer than one global batch "
                       "of 64"):  # a run that would train on nothing says so
        one.torch_dataset(batch_size=64, rank=0, world_size=1)
    ds = one.torch_dataset(batch_size=2, rank=0, world_size=1, start_step=len(one) // 2)
    assert len(ds) == 0 and list(ds) == []  # resumed at its end: nothing left, and that is no mistake


def test_windows_of_several_blocks(con: mixsql.Connection) -> None:
    from mixsql import manifest, plan

    mix = con.mix(STATEMENT.format(dataset="corpus"), partitions=2)
    spec = plan.resolve(mix.bound, window=3)
    p = manifest.cached_plan(spec, con.catalog)
    assert p.meta["window"] == 3 and len(p.window_starts) < len(mix.plan().window_starts)
    reader = Reader(p, ["id", "domain"])
    rows = p.positions_rows(0, len(p))
    got = [r for start in range(0, len(rows), 100) for r in reader.samples(rows[start:start + 100])]
    source = _source()
    assert len({r["id"] for r in got}) == len(got) == len(mix)
    assert all(source[r["id"]]["domain"] == r["domain"] for r in got)
    touched = {(int(f), int(np.searchsorted(np.cumsum(p.files[f].row_groups), r, side="right")))
               for f, r in zip(p.file[rows], p.row[rows])}
    assert reader.stats.row_groups == len(touched)
    # every source's count of rows still to hand out ends at zero: windows mix their blocks' rows
    assert set(reader._pending.values()) == {0}


def _shards(directory: Path, files: int, groups: int, rows: int) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir()
    out = []
    for f in range(files):
        n = groups * rows
        table = pa.table({"text": [f"doc {f}-{i}" for i in range(n)], "id": list(range(f * n, (f + 1) * n)),
                          "domain": ["code" if i % 3 == 0 else "web" for i in range(n)]})
        path = directory / f"part-{f:03d}.parquet"
        pq.write_table(table, path, row_group_size=rows)
        out.append(path)
    return out


@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_a_shard_edited_during_a_stream_is_an_error(tmp_path: Path, kind: str) -> None:
    """Same size, new modification time, 5,000 samples into a 40,000-sample stream: the next block
    read from the edited file raises, naming it; no sample of the new bytes is served."""
    paths = _shards(tmp_path / "data", 4, 10, 1000)
    if kind == "jsonl":
        import json

        import pyarrow.parquet as pq

        for path in list(paths):
            jsonl = path.with_suffix(".jsonl")
            jsonl.write_text("".join(json.dumps(r) + "\n" for r in pq.read_table(path).to_pylist()))
            path.unlink()
            paths[paths.index(path)] = jsonl
    con = mixsql.connect(tmp_path / "cat")
    con.register("d", [str(tmp_path / "data")])
    mix = con.mix("MIX 0.5 AS code WHERE domain = 'code', 0.5 AS web FROM d ON EXHAUSTION REDISTRIBUTE")
    assert len(mix) > 39_000
    stream = mix.samples(columns=["id", "domain"])
    seen = [next(stream) for _ in range(5000)]
    assert all((s["domain"] == "code") == (s["component"] == "code") for s in seen)
    victim = paths[2]
    data = bytearray(victim.read_bytes())
    if kind == "jsonl":  # a record rewritten in place: same length, other content
        at = data.index(b'"domain": "web"', len(data) // 2)
        data[at: at + 15] = b'"domain": "wcb"'
    stat = victim.stat()
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000_000))
    assert victim.stat().st_size == stat.st_size
    with pytest.raises(DataError) as e:
        for s in stream:
            assert (s["domain"] == "code") == (s["component"] == "code")
    assert str(victim) in str(e.value) and "changed since it was registered" in str(e.value)


def _corrupt_row_group(path: Path, group: int, column: str) -> None:
    """Overwrite the middle of one row group's column chunk in place, keeping size and mtime."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata.row_group(group)
    chunk = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == column)
    start = chunk.data_page_offset + 16
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[start: start + 200] = os.urandom(200)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_corrupt_row_group_meets_the_sample_that_needs_it(tmp_path: Path, data_copy: Path) -> None:
    """Row groups decode ahead in batches; one that cannot be decoded fails its batch, and the error
    (file, row group) comes when the stream reaches a sample of it, not when it was read ahead."""
    victim = data_copy / "parquet" / "corpus-00002.parquet"
    con = mixsql.connect(tmp_path / "cat")
    con.register("p", [str(data_copy / "parquet")])
    mix = con.mix("MIX 1 AS a FROM p")
    plan = mix.plan()
    order = plan.positions_rows(0, len(plan))
    f = next(i.index for i in plan.files if i.url.endswith(victim.name))
    group = 3
    start = int(plan.files[f].row_group_starts[group])
    mine = (plan.file[order] == f) & (plan.row[order] >= start) & (plan.row[order] < start + 128)
    first = int(np.flatnonzero(mine)[0])
    _corrupt_row_group(victim, group, "text")
    delivered = []
    with pytest.raises(DataError) as e:
        for s in mix.samples(columns=["id", "text"]):
            delivered.append(s["id"])
    assert e.value.file == f"file://{victim}" and e.value.row == start
    assert f"row group {group}" in str(e.value)
    read_start = max(s for s, _ in mixsql.api._read_spans(len(plan)) if s <= first)
    assert 0 < read_start and len(delivered) == read_start  # every sample before the read that needs it


def test_components_moving_at_different_paces_decode_each_row_group_once(tmp_path: Path) -> None:
    """A component that takes little of its pool walks the shared block order slowly, one that takes
    most of it fast: the first reaches a block long after the second left it. Sources on probation
    are bounded by bytes, not by count, so the block is still held when the slow one comes."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    n = 8000
    (tmp_path / "d").mkdir()
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(n)], "text": ["t" * 50] * n,
                             "domain": rng.choice(["a", "b", "c"], n, p=[0.2, 0.4, 0.4])}),
                   tmp_path / "d" / "part.parquet", row_group_size=25)
    con = mixsql.connect(tmp_path / "cat")
    con.register("d", [str(tmp_path / "d")])
    mix = con.mix("MIX 0.6 AS a WHERE domain = 'a', 0.3 AS b WHERE domain = 'b', 0.1 AS c WHERE domain = 'c' "
                  "FROM d CHUNK SIZE 20", partitions=2)
    p = mix.plan()
    rows = p.positions_rows(0, len(p))
    touched = {(int(f), int(g)) for f, g in zip(p.file[rows], p.files[0].row_group_of(p.row[rows]))}
    reader = Reader(p, ["id", "text"])
    for start in range(0, len(rows), 256):
        reader.samples(rows[start:start + 256])
    assert len(touched) > 200 and reader.stats.row_groups == len(touched)


def test_memory_held_is_bounded_as_asked(con: mixsql.Connection) -> None:
    """``memory_bytes`` bounds what a stream holds decoded; the stream is the same; nonsense is refused."""
    mix = con.mix(STATEMENT.format(dataset="corpus"), partitions=2)
    small = [s["id"] for s in mix.samples(columns=["id", "text"], memory_bytes=200_000)]
    assert small == [s["id"] for s in mix.samples(columns=["id", "text"])]
    ds = mix.torch_dataset(batch_size=4, columns=["id"], memory_bytes=200_000)
    assert [s["id"] for s in ds] == [s["id"] for s in mix.torch_dataset(batch_size=4, columns=["id"])]
    for bad in (0, -5, 1.5, True, "1G"):
        with pytest.raises(mixsql.MixSQLError, match="memory_bytes must be a positive integer"):
            next(mix.samples(memory_bytes=bad))


def test_batched_decodes_give_each_row_group_in_the_order_asked(tmp_path: Path) -> None:
    """A batch of row groups from several files, in any order, decodes to each group's own rows; each
    file's footer is read once per reader, however many batches use it."""
    import pyarrow.parquet as pq

    from mixsql.read import Fragments, _decode_many

    (tmp_path / "d").mkdir()
    for k in range(2):
        pq.write_table(pa.table({"id": [f"f{k}-{i}" for i in range(100)], "text": ["t"] * 100}),
                       tmp_path / "d" / f"p{k}.parquet", row_group_size=10)
    con = mixsql.connect(tmp_path / "cat")
    con.register("d", [str(tmp_path / "d")])
    plan = con.mix("MIX 1 AS a FROM d").plan()
    by_name = {Path(i.url).name: i for i in plan.files}
    asked = [(by_name["p1.parquet"], 7), (by_name["p0.parquet"], 3), (by_name["p1.parquet"], 2),
             (by_name["p0.parquet"], 9), (by_name["p1.parquet"], 5)]
    fragments = Fragments()
    schema = pa.schema([("id", pa.string())])
    for _ in range(3):
        tables = _decode_many(asked, ["id"], schema, fragments)
        for (info, g), table in zip(asked, tables):
            k = 0 if info.url.endswith("p0.parquet") else 1
            assert table.column("id").to_pylist() == [f"f{k}-{i}" for i in range(10 * g, 10 * g + 10)]
    assert len(fragments._bases) == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), st.lists(st.integers(0, 2**16 - 1), max_size=5)), max_size=6),
                min_size=1, max_size=4), st.data())
def test_id_views_of_a_chunked_column_are_its_rows_without_a_copy(chunks, data):
    column = pa.chunked_array([pa.array(c, pa.list_(pa.uint16())) for c in chunks], pa.list_(pa.uint16()))
    rows = np.asarray(data.draw(st.lists(st.integers(0, max(len(column) - 1, 0)), max_size=12)) if len(column) else [],
                      dtype=np.int64)
    views = _id_views(column, rows)
    assert [None if v is None else v.tolist() for v in views] == [column[int(r)].as_py() for r in rows]
    values = [np.asarray(c.values) for c in column.chunks]
    for v in views:  # views of the decoded values, not copies
        assert v is None or len(v) == 0 or any(np.shares_memory(v, x) for x in values)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=1, max_size=400), cuts=st.lists(st.integers(0, 400), max_size=30),
       chunk=st.integers(1, 64), compressed=st.booleans())
def test_record_ranges_are_the_bytes_of_each_range_read_in_one_pass(tmp_path_factory: pytest.TempPathFactory,
                                                                    data: bytes, cuts: list[int], chunk: int,
                                                                    compressed: bool) -> None:
    from mixsql import read
    from mixsql.planfile import PlanFile

    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0})
    starts = np.array(bounds[:-1][::2], dtype=np.int64)  # every other gap: records with space between
    ends = np.array(bounds[1:][::2], dtype=np.int64)
    path = tmp_path_factory.mktemp("ranges") / ("f.jsonl.gz" if compressed else "f.jsonl")
    path.write_bytes(gzip.compress(data) if compressed else data)
    info = PlanFile(index=0, dataset="d", file_id=0, url=str(path), format="jsonl",
                    compression="gzip" if compressed else None, size=path.stat().st_size, mtime=None, row_groups=None)
    sizes: list[int] = []
    old, read.RANGE_CHUNK = read.RANGE_CHUNK, chunk
    try:
        got = list(read.record_ranges(info, starts, ends, sizes.append))
    finally:
        read.RANGE_CHUNK = old
    assert got == [data[s:e] for s, e in zip(starts.tolist(), ends.tolist())]
    assert sum(sizes) <= (int(ends[-1]) if len(ends) else 0) + chunk  # stops after the last range


@pytest.mark.parametrize("statement, columns", [
    ("MIX 0.6 AS code WHERE domain = 'code', 0.4 AS rest FROM corpus PARTITIONS 3 LIMIT 400 SAMPLES", ["text", "id"]),
    ("MIX 0.6 AS code WHERE domain = 'code', 0.4 AS rest FROM corpus PARTITIONS 3 LIMIT 400 SAMPLES", None),
    ("MIX 0.5 AS a FROM corpus WHERE domain = 'code', 0.5 AS b FROM corpus_jsonl LIMIT 300 SAMPLES", None),
    ("MIX 0.5 AS a FROM corpus WHERE domain = 'code', 0.5 AS b FROM corpus_jsonl LIMIT 300 SAMPLES", ["text"]),
    ("MIX 0.5 AS a FROM corpus WHERE domain = 'code', 0.5 AS b FROM corpus_jsonl LIMIT 300 SAMPLES", []),
    # a tiny component repeating: the same source row more than once in one read
    ("MIX 0.5 AS a WHERE domain = 'code' AND quality > 0.72, 0.5 AS b FROM corpus LIMIT 600 SAMPLES "
     "ON EXHAUSTION REPEAT", ["text", "id"]),
])
@pytest.mark.parametrize("size", [1, 7, 64])
@pytest.mark.parametrize("whole", [False, True])
def test_batches_are_what_collate_makes_of_the_samples(con: mixsql.Connection, statement: str,
                                                       columns: list[str] | None, size: int, whole: bool) -> None:
    """``Reader.batches`` (columns made at once, no dict per sample) gives each batch as ``collate``
    gives it of ``samples``: same keys in the same order, same values; sources whose fields differ
    (Parquet and JSONL) included. ``whole``: every row of the plan, so blocks are taken whole (a
    slice of the decoded table) as well as in part (a take)."""
    plan = con.mix(statement).plan()
    rows = plan.positions_rows(0, len(plan))  # the stream's plan rows (a repeating pool's, more than once)
    rows = rows if whole else rows[np.random.default_rng(size).permutation(len(rows))[:250]]
    made = Reader(plan, columns).batches(rows, size)
    reader = Reader(plan, columns)
    expected = [mixsql.collate(reader.samples(rows[k: k + size])) for k in range(0, len(rows), size)]
    assert [list(b) for b in made] == [list(b) for b in expected]
    assert made == expected
    assert Reader(plan, columns).batches(rows[:0], size) == []


@pytest.mark.parametrize("statement", [
    "MIX 0.6 AS code WHERE domain = 'code', 0.4 AS rest FROM corpus PARTITIONS 3 LIMIT 400 SAMPLES",
    "MIX 0.5 AS a FROM corpus WHERE domain = 'code', 0.5 AS b FROM corpus_jsonl LIMIT 300 SAMPLES",
    "MIX 0.5 AS a WHERE domain = 'code' AND quality > 0.72, 0.5 AS b FROM corpus LIMIT 600 SAMPLES "
    "ON EXHAUSTION REPEAT",
])
@pytest.mark.parametrize("read", [5, 37])
@pytest.mark.parametrize("bound", [None, 1])
def test_batches_read_by_read_are_the_samples_in_stream_order(con: mixsql.Connection, statement: str,
                                                              read: int, bound: int | None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """One reader, the stream read a few rows at a time, as a DataLoader reads it: a block that
    several reads take from is made Python objects once, by the first, and the others pick their
    rows from those; every batch is still what ``collate`` makes of the samples, also where the
    bound on the objects held (``bound`` bytes) drops them before their last rows are taken."""
    if bound is not None:
        monkeypatch.setattr(read_module, "OBJECT_BYTES", bound)
    plan = con.mix(statement).plan()
    rows = plan.positions_rows(0, len(plan))
    reader = Reader(plan, ["text", "id"])
    picked = []
    made_objects = reader._objects_of

    def spy(*args: t.Any) -> t.Any:
        found = made_objects(*args)
        picked.append(found is not None)
        return found

    reader._objects_of = spy  # type: ignore[method-assign]
    made = [b for k in range(0, len(rows), read) for b in reader.batches(rows[k: k + read], read)]
    expected = [mixsql.collate(Reader(plan, ["text", "id"]).samples(rows[k: k + read]))
                for k in range(0, len(rows), read)]
    assert made == expected
    assert any(picked)  # some block was taken from by several reads
    assert not reader._objects  # each block's objects go once its last held row is handed out


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(1, 120), min_size=1, max_size=12), size=st.integers(1, 9))
def test_batches_in_reads_of_any_lengths_are_the_samples(sample_catalog: Path, cuts: list[int], size: int) -> None:
    """Reads of any lengths, one after another on one reader (blocks made objects by one read and
    picked from by the next, or taken in part), give the batches ``collate`` makes of the samples."""
    plan = _objects_plan(sample_catalog)
    rows = plan.positions_rows(0, len(plan))
    reader, at, made, expected = Reader(plan, ["text", "id"]), 0, [], []
    for n in cuts * (1 + len(rows) // sum(cuts)):
        if at >= len(rows):
            break
        piece = rows[at: at + n]
        made += reader.batches(piece, size)
        expected += [mixsql.collate(Reader(plan, ["text", "id"]).samples(piece[k: k + size]))
                     for k in range(0, len(piece), size)]
        at += n
    assert made == expected


_OBJECTS_PLAN: dict[str, t.Any] = {}


def _objects_plan(catalog: Path) -> t.Any:
    if str(catalog) not in _OBJECTS_PLAN:
        _OBJECTS_PLAN[str(catalog)] = mixsql.connect(catalog, create=False).mix(
            "MIX 0.5 AS a WHERE domain = 'code', 0.5 AS b FROM corpus LIMIT 400 SAMPLES").plan()
    return _OBJECTS_PLAN[str(catalog)]


@given(st.lists(st.integers(0, 39), max_size=40), st.booleans())
@example([5, 5, 7], False)
def test_in_table_order_gives_the_rows_in_the_tables_order(at: list[int], run: bool) -> None:
    """The rows ``at`` of a table, in the table's order, with the order that sorts ``at`` so: a
    run of rows comes as a slice, any other set (a row twice included) as a take; either way the
    same values."""
    table = pa.table({"x": [f"v{k}" for k in range(40)]})
    rows = np.arange(min(at[0], 40 - len(at)), min(at[0], 40 - len(at)) + len(at)) if run and at else np.asarray(at, dtype=np.int64)
    np.random.default_rng(len(at)).shuffle(rows)
    piece, order = _in_table_order(table, rows)
    assert piece.column("x").to_pylist() == [f"v{k}" for k in sorted(rows.tolist())]
    assert rows[order].tolist() == sorted(rows.tolist())


@pytest.mark.parametrize("how", ["samples", "torch"])
def test_an_interrupted_stream_leaves_no_thread_or_memory_behind(con: mixsql.Connection, how: str) -> None:
    """A stream left after a few samples, with its read-ahead decoding in flight, ends its threads
    and frees its decoded row groups once dropped: nothing waits for the rest of the stream."""
    import gc
    import threading
    import time

    def ours() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("mixsql-read")]

    def held() -> int:  # bytes of Arrow memory: decoded row groups (their pool) and the rest
        return _decode_pool().bytes_allocated() + pa.total_allocated_bytes()

    mix = con.mix("MIX 0.5 AS a WHERE domain = 'code', 0.5 AS b FROM corpus LIMIT 2000 SAMPLES")
    mix.plan()
    gc.collect()
    before = held()
    stream = iter(mix.samples(columns=["text"]) if how == "samples"
                  else mix.torch_dataset(batch_size=8, columns=["text"]))
    for _ in range(3):
        next(stream)
    assert ours() and held() > before
    del stream
    deadline = time.monotonic() + 10
    while (ours() or held() > before) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    assert ours() == [] and held() <= before
