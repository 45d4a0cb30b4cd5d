"""File access: formats from names, fingerprints, expansion, byte ranges and streams."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from mixsql import fs
from mixsql.errors import CatalogError, DataError


def test_formats_from_names() -> None:
    assert fs.file_format("a/b.parquet") == ("parquet", None)
    assert fs.file_format("x.JSONL.GZ") == ("jsonl", "gzip")
    assert fs.file_format("x.ndjson.zst") == ("jsonl", "zstd")
    for bad in ("x.csv", "x.parquet.gz", "x"):
        with pytest.raises(CatalogError, match="cannot tell the format"):
            fs.file_format(bad)


def test_describe_expand_and_read(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    a = tmp_path / "d" / "a.jsonl"
    a.write_bytes(b'{"text": "one"}\n{"text": "two"}\n')
    (tmp_path / "d" / "notes.txt").write_text("skip me")
    with gzip.open(tmp_path / "d" / "b.jsonl.gz", "wb") as fh:
        fh.write(b'{"text": "three"}\n')
    urls = fs.expand([str(tmp_path / "d")])
    assert [u.rsplit("/", 1)[1] for u in urls] == ["a.jsonl", "b.jsonl.gz"]
    assert fs.expand([str(tmp_path / "d" / "*.jsonl"), str(a)]) == [urls[0]]  # duplicates removed
    with pytest.raises(CatalogError, match="no such file"):
        fs.expand([str(tmp_path / "nope.jsonl")])
    src = fs.describe(urls[0])
    assert (src.format, src.size, src.mtime) == ("jsonl", a.stat().st_size, a.stat().st_mtime)
    assert fs.fingerprint(urls[0]) == (src.size, src.mtime, None)  # the local fast path agrees with fsspec
    assert fs.read_range(urls[0], 10, 13) == b"one"
    assert fs.read_ranges(urls[0], [10, 26], [13, 29]) == [b"one", b"two"]
    with fs.open_stream(urls[1], "gzip") as stream:
        assert stream.read() == b'{"text": "three"}\n'
    a.unlink()
    for call in (lambda: fs.describe(urls[0]), lambda: fs.fingerprint(urls[0]), lambda: fs.read_range(urls[0], 0, 1)):
        with pytest.raises(DataError, match="is missing"):
            call()


def test_urls_of_missing_filesystems_and_unknown_protocols_are_clear() -> None:
    import importlib.util

    from mixsql.errors import CatalogError

    with pytest.raises(CatalogError, match="Protocol not known: nosuchproto"):
        fs.expand(["nosuchproto://x/y"])
    if importlib.util.find_spec("gcsfs") is None:
        with pytest.raises(CatalogError, match="needs a package") as e:
            fs.expand(["gs://bucket/x.parquet"])
        assert "mixsql[gcs]" in e.value.hint
    assert fs.is_remote("s3://b/k") and fs.is_remote("simplecache::file:///x") and not fs.is_remote("/x")
    assert not fs.is_remote("file:///x")


from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402

_PREFIXES = ["", "file://", "memory://", "simplecache::file://", "tar://x::file://", "zip://", "nosuch://",
             "s3://key:secret@", "file://user:pw@host", "::", "file:"]


@hsettings(max_examples=60, deadline=None)  # each example globs the filesystem: ~0.4 s
@given(st.sampled_from(_PREFIXES), st.text(st.sampled_from(list("ab/.*?[]:@~ \\x0é")), max_size=24))
def test_any_path_a_user_types_is_files_or_a_clear_error(prefix: str, rest: str) -> None:
    from hypothesis import assume

    from mixsql.errors import MixSQLError

    assume("**" not in rest)  # a recursive glob of / or ~ lists the whole disk: slow by nature, not a mistake
    try:
        urls = fs.expand([prefix + rest])
    except MixSQLError:
        return
    assert all(isinstance(u, str) for u in urls)
