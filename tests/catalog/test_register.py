"""Registration against plain DuckDB/pyarrow reads of the same files; all-or-nothing failures."""

from __future__ import annotations

import gzip
import json
import os
import typing as t
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mixsql
from mixsql.errors import CatalogError, DataError
from tests.conftest import PARQUET_GLOB, SAMPLE

PROPS = ["id", "source", "domain", "language", "origin", "quality", "n_bytes", "n_lines", "has_example", "tags"]
TYPES = {"id": "VARCHAR", "source": "VARCHAR", "domain": "VARCHAR", "language": "VARCHAR", "quality": "DOUBLE",
         "n_bytes": "BIGINT", "n_lines": "BIGINT", "has_example": "BOOLEAN", "tags": "VARCHAR[]",
         "_file_id": "INTEGER", "_row": "BIGINT", "_block": "INTEGER", "_offset": "BIGINT", "_length": "BIGINT", "_bytes": "BIGINT"}


def _catalog_rows(con: mixsql.Connection, dataset: str) -> list[dict]:
    q = (f"SELECT f.url, s._row, s._offset, s._length, s._bytes, {', '.join('s.' + p for p in PROPS)} "
         f"FROM {dataset} s JOIN mixsql_files f ON f.dataset = '{dataset}' AND f.file_id = s._file_id "
         f"ORDER BY f.url, s._row")
    return con.sql(q).to_pylist()


def test_parquet_matches_plain_duckdb(con: mixsql.Connection) -> None:
    ours = _catalog_rows(con, "corpus")
    plain = duckdb.sql(
        f"SELECT 'file://' || filename AS url, file_row_number AS _row, strlen(text) AS _bytes, "
        f"{', '.join(PROPS)} FROM read_parquet('{PARQUET_GLOB}', filename=true, file_row_number=true) "
        f"ORDER BY url, _row").to_arrow_table().to_pylist()
    assert len(ours) == len(plain) == 4200
    for a, b in zip(ours, plain):
        assert a["_offset"] is None and a["_length"] is None
        assert {k: a[k] for k in b} == b


def test_jsonl_matches_plain_duckdb_and_offsets_point_at_records(con: mixsql.Connection) -> None:
    ours = _catalog_rows(con, "corpus_jsonl")
    assert len(ours) == 4200
    by_file: dict[str, list[dict]] = {}
    for r in ours:
        by_file.setdefault(r["url"], []).append(r)
    assert len(by_file) == 3
    for url, rows in by_file.items():
        path = url.removeprefix("file://")
        plain = duckdb.sql(f"SELECT {', '.join(PROPS)}, strlen(text) AS _bytes FROM "
                           f"read_json('{path}', format='newline_delimited')").to_arrow_table().to_pylist()
        assert [{k: r[k] for k in PROPS + ['_bytes']} for r in rows] == plain
        raw = gzip.open(path).read() if path.endswith(".gz") else Path(path).read_bytes()
        for r in rows:
            record = json.loads(raw[r["_offset"]: r["_offset"] + r["_length"]])
            assert record["id"] == r["id"] and record["n_bytes"] == r["n_bytes"]


def test_types_are_preserved(con: mixsql.Connection) -> None:
    for ds in ("corpus", "corpus_jsonl"):
        described = {r["column_name"]: r["column_type"] for r in con.sql(f"DESCRIBE {ds}").to_pylist()}
        assert {k: described[k] for k in TYPES} == TYPES
        assert "text" not in described  # content stays in the files


def test_zstd_jsonl_file_url_and_directory(scratch: mixsql.Connection, tmp_path: Path) -> None:
    src = (SAMPLE / "jsonl" / "corpus-00000.jsonl").read_bytes()
    target = tmp_path / "z" / "part.jsonl.zst"
    target.parent.mkdir()
    with pa.CompressedOutputStream(str(target), "zstd") as out:
        out.write(src)
    info = scratch.register("z", [f"file://{target}"])
    assert info.samples == src.count(b"\n") == 1400
    plain = duckdb.sql(f"SELECT id FROM read_json('{SAMPLE}/jsonl/corpus-00000.jsonl')").fetchall()
    assert scratch.sql("SELECT id FROM z ORDER BY _row").to_pylist() == [{"id": i} for (i,) in plain]
    files = scratch.sql("SELECT compression, url FROM mixsql_files WHERE dataset = 'z'").to_pylist()
    assert files == [{"compression": "zstd", "url": f"file://{target}"}]
    d = scratch.register("d", [str(SAMPLE / "parquet")])
    assert d.samples == 4200 and len(d.files()) == 4


def test_blank_lines_and_crlf_are_handled(scratch: mixsql.Connection, tmp_path: Path) -> None:
    f = tmp_path / "x.jsonl"
    f.write_bytes(b'{"text": "a", "k": 1}\r\n\n   \n{"text": "bb", "k": 2}\n{"text": "ccc", "k": 3}')
    scratch.register("x", [str(f)])
    rows = scratch.sql("SELECT _row, _offset, _length, _bytes, k FROM x ORDER BY _row").to_pylist()
    assert [r["k"] for r in rows] == [1, 2, 3]
    data = f.read_bytes()
    assert [json.loads(data[r["_offset"]: r["_offset"] + r["_length"]])["k"] for r in rows] == [1, 2, 3]
    assert [r["_bytes"] for r in rows] == [1, 2, 3]


def test_types_unify_across_files(scratch: mixsql.Connection, tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "x", "score": 1, "lang": null}\n')
    (tmp_path / "b.jsonl").write_text('{"text": "y", "score": 2.5, "lang": "en", "extra": true}\n')
    scratch.register("u", [str(tmp_path / "*.jsonl")])
    types = {r["column_name"]: r["column_type"] for r in scratch.sql("DESCRIBE u").to_pylist()}
    assert types["score"] == "DOUBLE" and types["lang"] == "VARCHAR" and types["extra"] == "BOOLEAN"
    assert scratch.sql("SELECT score, extra FROM u ORDER BY _file_id").to_pylist() == [
        {"score": 1.0, "extra": None}, {"score": 2.5, "extra": True}]


def _snapshot(path: Path) -> tuple[bytes, list[str]]:
    return (path / "catalog.json").read_bytes(), sorted(str(p.relative_to(path)) for p in path.rglob("*")
                                                        if p.name != ".lock")


def test_failed_registrations_leave_the_catalog_unchanged(scratch: mixsql.Connection, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    scratch.register("corpus", [PARQUET_GLOB])
    before = _snapshot(scratch.path)
    version = scratch.version

    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": "ok"}\n{"text": broken}\n')
    with pytest.raises(DataError) as e:
        scratch.register("bad", [str(tmp_path / "bad.jsonl")])
    assert "bad.jsonl" in str(e.value) and "line 3" in str(e.value) and e.value.row == 2
    assert _snapshot(scratch.path) == before

    (tmp_path / "m1.jsonl").write_text('{"text": "a", "k": "x"}\n')
    (tmp_path / "m2.jsonl").write_text('{"text": "b", "k": 5}\n')
    with pytest.raises(CatalogError, match="'k' is string in .*m1.jsonl but int64 in .*m2.jsonl"):
        scratch.register("mixed", [str(tmp_path / "m*.jsonl")])
    assert _snapshot(scratch.path) == before

    with pytest.raises(CatalogError, match="already registered"):
        scratch.register("corpus", [PARQUET_GLOB])
    with pytest.raises(CatalogError, match="no field 'body'"):
        scratch.register("c2", [PARQUET_GLOB], content=["body"])
    with pytest.raises(CatalogError, match="matches no data file"):
        scratch.register("none", [str(tmp_path / "*.parquet")])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CatalogError, match="cannot tell the format"):
        scratch.register("txt", [str(tmp_path / "notes.txt")])
    assert _snapshot(scratch.path) == before

    from mixsql.catalog import scan

    def interrupted(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(scan, "scan_jsonl", interrupted)
    with pytest.raises(KeyboardInterrupt):
        scratch.register("corpus", [str(SAMPLE / "jsonl")], replace=True)
    assert _snapshot(scratch.path) == before
    assert scratch.version == version
    assert scratch.sql("SELECT count(*) AS n FROM corpus").to_pylist() == [{"n": 4200}]


def test_replace_and_content_version(scratch: mixsql.Connection, data_copy: Path) -> None:
    glob = str(data_copy / "parquet" / "*.parquet")
    first = scratch.register("c", [glob])
    v1 = scratch.version
    again = scratch.register("c", [glob], replace=True)
    assert again.version == first.version and scratch.version == v1  # same data, same version
    part = data_copy / "parquet" / "corpus-00000.parquet"
    table = pq.read_table(part).slice(0, 10)
    pq.write_table(table, part)
    third = scratch.register("c", [glob], replace=True)
    assert third.version != first.version and scratch.version != v1
    assert third.samples == 3 * 1050 + 10
    assert first.directory.exists()  # superseded: kept for what may use it, until gc
    scratch.gc(grace_seconds=0)
    assert not first.directory.exists() and third.directory.exists()


def test_dataset_names_and_drop(scratch: mixsql.Connection) -> None:
    for bad in ("1abc", "a-b", "mixsql_files", ""):
        with pytest.raises(CatalogError):
            scratch.register(bad, [PARQUET_GLOB])
    scratch.register("keep", [PARQUET_GLOB])
    scratch.register("gone", [PARQUET_GLOB])
    scratch.drop("gone")
    assert scratch.datasets() == ["keep"]
    with pytest.raises(CatalogError, match="unknown dataset 'gone'"):
        scratch.drop("gone")


def test_reserved_field_names_are_refused(scratch: mixsql.Connection, tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"text": "a"}\n{"text": "a", "_row": 1}\n')
    with pytest.raises(DataError, match="r.jsonl, line 2: field '_row'.*reserves"):
        scratch.register("r", [str(tmp_path / "r.jsonl")])


def write_parquet(path: Path, columns: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize("lines, message", [
    (['{"text": "a", "component": "x"}'], r"line 1: field 'component' collides with the field mixsql gives"),
    (['{"text": "a"}', '{"text": "b", "component_id": 3}'], r"line 2: field 'component_id' collides"),
    (['{"text": "a", "Domain": "x", "domain": "y"}'], r"line 1: fields 'Domain' and 'domain' differ only in case"),
    (['{"text": "a", "": 1}'], r"line 1: a field has an empty name"),
    (['{"text": "a", "n": 1}', '{"text": "b", "n": 99999999999999999999}'],
     r"record 1 \(line 2\): field 'n' holds an integer beyond 64 bits"),
    (['{"text": "a", "n": [1, -99999999999999999999]}'], r"line 1\): field 'n' holds an integer beyond 64 bits"),
])
def test_fields_sql_cannot_hold_faithfully_are_refused(scratch: mixsql.Connection, tmp_path: Path,
                                                       lines: list[str], message: str) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message) as e:
        scratch.register("f", [str(path)])
    assert e.value.file == f"file://{path}"
    assert scratch.datasets() == []


def test_floats_beyond_int64_are_kept(scratch: mixsql.Connection, tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text('{"text": "a", "x": 1e20}\n{"text": "b", "x": 0.5}\n')
    scratch.register("f", [str(path)])
    assert scratch.sql("SELECT x FROM f ORDER BY x").column("x").to_pylist() == [0.5, 1e20]


def test_fields_that_differ_in_case_across_files_are_refused(scratch: mixsql.Connection, tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", {"text": ["a"], "Domain": ["x"]})
    write_parquet(tmp_path / "b.parquet", {"text": ["b"], "domain": ["y"]})
    with pytest.raises(DataError, match=r"'Domain' in .*a.parquet and field 'domain' in .*b.parquet differ only in case"):
        scratch.register("f", [str(tmp_path / "*.parquet")])
    write_parquet(tmp_path / "a.parquet", {"text": ["a"], "component": ["x"]})
    with pytest.raises(DataError, match=r"a.parquet: field 'component' collides"):
        scratch.register("f", [str(tmp_path / "a.parquet")])


@pytest.mark.parametrize("where", ["text", "property", "name"])
def test_invalid_utf8_is_refused_naming_file_and_line(scratch: mixsql.Connection, tmp_path: Path, where: str) -> None:
    bad = {"text": b'{"text": "caf\xe9", "lang": "fr"}', "property": b'{"text": "ok", "lang": "fr\xff"}',
           "name": b'{"text": "ok", "l\xffng": "fr"}'}[where]
    path = tmp_path / "u.jsonl"
    path.write_bytes(b'{"text": "fine", "lang": "en"}\n\n' + bad + b"\n")
    with pytest.raises(DataError, match=r"u.jsonl, record 1 \(line 3\): invalid UTF-8") as e:
        scratch.register("u", [str(path)])
    assert e.value.row == 1 and scratch.datasets() == []


def test_invalid_utf8_in_parquet_is_refused_naming_file_and_row(scratch: mixsql.Connection, tmp_path: Path) -> None:
    import pyarrow as pa

    texts = pa.array([b"fine", b"caf\xe9"], pa.binary()).cast(pa.string(), safe=False)
    path = write_parquet(tmp_path / "u.parquet", {"text": texts, "lang": ["en", "fr"]})
    with pytest.raises(DataError, match=r"u.parquet, row 1: field 'text' holds text that is not valid UTF-8"):
        scratch.register("u", [str(path)])


def test_empty_files_contribute_nothing_in_both_formats(scratch: mixsql.Connection, tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", {"text": ["a", "b"], "lang": ["en", "de"]})
    write_parquet(tmp_path / "b.parquet", {"text": pa_empty_strings(), "lang": pa_empty_strings()})
    (tmp_path / "c.jsonl").write_text("")
    (tmp_path / "d.jsonl").write_text("\n  \n")
    (tmp_path / "e.jsonl").write_text('{"text": "c", "lang": "fr"}\n')
    info = scratch.register("d", [str(tmp_path / "*.parquet"), str(tmp_path / "*.jsonl")])
    assert info.samples == 3 and len(info.files()) == 5
    assert scratch.sql("SELECT lang FROM d ORDER BY lang").column("lang").to_pylist() == ["de", "en", "fr"]
    assert sorted(s["lang"] for s in scratch.mix("MIX 1 AS all_ FROM d").samples()) == ["de", "en", "fr"]
    for empty in ("b.parquet", "c.jsonl"):
        with pytest.raises(CatalogError, match="no file holds a record"):
            scratch.register("e", [str(tmp_path / empty)])


def pa_empty_strings() -> t.Any:
    return pa.array([], pa.string())


def test_a_second_connection_sees_new_registrations(sample_catalog: Path, tmp_path: Path) -> None:
    import shutil
    path = tmp_path / "cat"
    shutil.copytree(sample_catalog, path)
    reader = mixsql.connect(path, create=False)
    writer = mixsql.connect(path, create=False)
    assert reader.sql("SELECT count(*) AS n FROM corpus").to_pylist() == [{"n": 4200}]
    writer.register("again", [PARQUET_GLOB])
    assert "again" in reader.datasets()
    assert reader.sql("SELECT count(*) AS n FROM again").to_pylist() == [{"n": 4200}]
    assert os.path.exists(path / "catalog.json")


def test_blocks_are_row_groups_and_byte_ranges(con: mixsql.Connection) -> None:
    import numpy as np

    for r in con.sql("SELECT f.row_groups, list(s._row ORDER BY s._row) AS rows, list(s._block ORDER BY s._row) AS "
                     "blocks FROM corpus s JOIN mixsql_files f ON f.dataset = 'corpus' AND f.file_id = s._file_id "
                     "GROUP BY ALL").to_pylist():
        starts = np.cumsum([0] + r["row_groups"])[:-1]
        assert r["blocks"] == (np.searchsorted(starts, r["rows"], side="right") - 1).tolist()
    rows = con.sql("SELECT _offset, _block, f.compression FROM corpus_jsonl s JOIN mixsql_files f "
                   "ON f.dataset = 'corpus_jsonl' AND f.file_id = s._file_id").to_pylist()
    assert all(r["_block"] == (0 if r["compression"] else r["_offset"] >> 20) for r in rows)


def test_files_scan_on_every_core_into_parts_kept_in_file_order(scratch: mixsql.Connection, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Files scan in parallel, consecutive ones into a part each; the parts, read one after another,
    hold the samples file after file in row order (what compiling's layout relies on), and a part
    whose schema the union widened is written again."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for i in range(9):
        rows = [{"text": f"{i}-{j}", "score": j + 0.5 if i == 4 else j} for j in range(i + 3)]
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"f{i}.parquet", row_group_size=2)
    seen: list[tuple[int, int]] = []
    info = scratch.register("p", [str(tmp_path / "*.parquet")], progress=lambda done, total, _: seen.append((done, total)))
    assert len(info.parts) > 1 and seen[-1] == (9, 9)
    rows = scratch.sql("SELECT _file_id, _row, score FROM p").to_pylist()  # no ORDER BY: the stored order
    assert [(r["_file_id"], r["_row"]) for r in rows] == [(i, j) for i in range(9) for j in range(i + 3)]
    assert [r["score"] for r in rows if r["_file_id"] == 4] == [j + 0.5 for j in range(7)]
    engine = scratch.catalog.engine()
    assert engine.con.sql("SELECT _file_id, _row FROM p").fetchall() == [(r["_file_id"], r["_row"]) for r in rows]
    mix = scratch.mix("MIX 0.5 AS low WHERE score < 2, 0.5 AS high FROM p")
    got = list(mix.samples(columns=["component", "score", "text"]))
    assert len(got) == len(mix.plan()) > 0
    for s in got:  # the plan's (file, row), from the parts' layout, point at the record that was matched
        i, j = map(int, s["text"].split("-"))
        assert s["score"] == (j + 0.5 if i == 4 else j) and (s["component"] == "low") == (s["score"] < 2)


def test_the_first_bad_file_in_file_order_is_named(scratch: mixsql.Connection, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for i in range(8):
        pq.write_table(pa.table({"text": [f"t{i}"] * 3}), tmp_path / f"f{i}.parquet")
    for bad in (3, 6):
        (tmp_path / f"f{bad}.parquet").write_bytes(b"PAR1 not really")
    before = _snapshot(scratch.path)
    with pytest.raises(DataError, match="f3.parquet is not a readable Parquet file"):
        scratch.register("bad", [str(tmp_path / "*.parquet")])
    assert _snapshot(scratch.path) == before


def _rows(con: mixsql.Connection, name: str) -> list[dict]:
    return con.sql(f"SELECT * FROM {name}").to_pylist()  # no ORDER BY: the stored order


@pytest.mark.parametrize("kind", ["parquet", "jsonl", "tokens"])
def test_append_scans_only_the_new_files_and_equals_registering_all(tmp_path: Path, kind: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An append gives the catalog rows, version and streams of registering every file at once;
    it scans only the new files; the earlier version's plan and lineage stay valid."""
    from tests.conftest import TOKENIZER

    files = sorted(str(p) for p in (SAMPLE / ("jsonl" if kind == "jsonl" else "parquet")).iterdir())
    options = {"tokenizer": str(TOKENIZER)} if kind == "tokens" else {}
    whole = mixsql.connect(tmp_path / "whole")
    whole.register("d", files, **options)
    grown = mixsql.connect(tmp_path / "grown")
    first = grown.register("d", files[:2], **options)
    statement = "MIX 0.6 AS code WHERE domain = 'code', 0.4 AS rest FROM d LIMIT 300 SAMPLES"
    old_mix = grown.mix(statement)
    old_plan = old_mix.plan()
    old_stream = [s["text"] for s in old_mix.samples(columns=["text"])]

    from mixsql.catalog import scan

    scanned: list[str] = []
    for name in ("scan_parquet", "scan_jsonl"):
        real = getattr(scan, name)

        def spy(src: t.Any, *a: t.Any, _real: t.Any = real, **k: t.Any) -> t.Any:
            scanned.append(src.url)
            return _real(src, *a, **k)

        monkeypatch.setattr(scan, name, spy)
    info = grown.register("d", files[2:], append=True)
    assert sorted(scanned) == sorted(mfs_urls(files[2:]))
    assert info.version == whole.dataset("d").version and info.earlier == (first.version,)
    assert info.samples == whole.dataset("d").samples and info.bytes == whole.dataset("d").bytes
    assert _rows(grown, "d") == _rows(whole, "d")
    if kind == "tokens":
        assert info.tokenizer is not None
        assert {k: v for k, v in info.tokenizer.items() if k != "path"} == \
            {k: v for k, v in (whole.dataset("d").tokenizer or {}).items() if k != "path"}
    ours = [s["text"] for s in grown.mix(statement).samples(columns=["text"])]
    assert ours == [s["text"] for s in whole.mix(statement).samples(columns=["text"])]
    assert [s["text"] for s in old_mix.samples(columns=["text"])] == old_stream  # the old plan reads as before
    assert len(old_plan) == 300
    lineage = old_mix.lineage(0, 100, columns=["domain"])  # the earlier version's rows are the new version's rows
    assert lineage.num_rows == 100 and all(d is not None for d in lineage.column("domain").to_pylist())


def mfs_urls(paths: list[str]) -> list[str]:
    from mixsql import fs as mfs

    return mfs.expand(paths)


def test_append_refuses_what_it_cannot_add(scratch: mixsql.Connection, tmp_path: Path) -> None:
    from tests.conftest import TOKENIZER

    files = sorted(str(p) for p in (SAMPLE / "parquet").iterdir())
    scratch.register("d", files[:2])
    before = _snapshot(scratch.path)
    with pytest.raises(CatalogError, match="unknown dataset 'e'"):
        scratch.register("e", files[2:], append=True)
    with pytest.raises(CatalogError, match="is already a file of dataset 'd'"):
        scratch.register("d", files[1:], append=True)
    with pytest.raises(CatalogError, match="choose one"):
        scratch.register("d", files[2:], append=True, replace=True)
    with pytest.raises(CatalogError, match="counted with no tokenizer"):
        scratch.register("d", files[2:], append=True, tokenizer=str(TOKENIZER))
    with pytest.raises(CatalogError, match="has content text, not id"):
        scratch.register("d", files[2:], append=True, content=["id"])
    assert _snapshot(scratch.path) == before
    info = scratch.register("d", [str(files[2])], append=True)
    info = scratch.register("d", [str(files[3])], append=True)
    assert len(info.earlier) == 2 and info.samples == 4200


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"{}", b" ", b"\t", b"\r", b"\n", b"\n", b"\xc3\xa9"]), max_size=80))
def test_line_bounds_are_the_non_blank_lines_of_a_block(parts: list[bytes]) -> None:
    """A JSONL block's records: every line holding a byte other than JSON white space, up to its last
    newline (what follows belongs to the next block)."""
    import numpy as np

    from mixsql.catalog.scan import _line_bounds

    data = b"".join(parts)
    expected, at = [], 0
    for line in data.split(b"\n")[:-1]:
        if line.strip(b" \t\r"):
            expected.append((at, len(line)))
        at += len(line) + 1
    starts, lengths = _line_bounds(np.frombuffer(data, dtype=np.uint8))
    assert list(zip(starts.tolist(), lengths.tolist())) == expected


def test_a_parquet_file_is_scanned_a_batch_at_a_time_into_the_same_catalog(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of any size is held a batch of rows at a time, not whole, and the catalog (its rows,
    their row groups, the version) is the one a scan of whole files writes."""
    from mixsql.catalog import scan, store

    def catalog(name: str) -> tuple[str, list[tuple[list[int], dict]]]:
        info = mixsql.connect(tmp_path / name).register("corpus", [PARQUET_GLOB])
        parts = []
        for path in sorted(info.samples_paths):
            f = pq.ParquetFile(path)
            parts.append(([f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)],
                          f.read().to_pydict()))
        return info.version, parts

    whole = catalog("whole")
    monkeypatch.setattr(scan, "BATCH_ROWS", 100)
    monkeypatch.setattr(store, "ROW_GROUP_ROWS", 256)  # several catalog row groups per file, cut across batches
    seen: list[int] = []
    real = scan.scan_parquet

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        tables, groups, record = real(*args, **kwargs)
        return (seen.append(t.num_rows) or t for t in tables), groups, record

    monkeypatch.setattr(scan, "scan_parquet", counting)
    batched = catalog("batched")
    assert max(seen) <= 100 and len(seen) > len(whole[1])
    assert batched[0] == whole[0]
    assert [p[1] for p in batched[1]] == [p[1] for p in whole[1]]
    assert all(max(groups) <= 256 for groups, _ in batched[1])
