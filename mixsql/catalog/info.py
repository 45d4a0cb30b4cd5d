"""A registered dataset version as the index describes it, and the schema of its file table."""

from __future__ import annotations

import base64
import dataclasses
import typing as t
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mixsql import fs as mfs


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset version."""

    name: str
    version: str
    samples: int
    bytes: int
    content: tuple[str, ...]
    sources: tuple[str, ...]
    registered_at: str
    directory: Path
    record_schema_b64: str = dataclasses.field(default="", repr=False)
    tokenizer: dict[str, t.Any] | None = None  # fingerprint, path (in the catalog), field, source, vocab_size
    images: tuple[str, ...] = ()  # the fields holding encoded images
    parts: tuple[str, ...] = ("samples.parquet",)  # the samples table's files, in file order
    earlier: tuple[str, ...] = ()  # versions this one extends by appending files: their rows are its rows

    @property
    def record_schema(self) -> pa.Schema:
        """Arrow schema of a whole record (content fields included), unified over the files."""
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.record_schema_b64)))

    @property
    def samples_paths(self) -> tuple[Path, ...]:
        """The samples table: Parquet files whose rows, one after another, are the dataset's samples
        file after file in row order (what compiling's layout relies on)."""
        return tuple(self.directory / p for p in self.parts)

    @property
    def files_path(self) -> Path:
        return self.directory / "files.parquet"

    def files(self) -> list[mfs.SourceFile]:
        """The source files as registered, indexed by ``_file_id``."""
        table = pq.read_table(self.files_path)
        return [
            mfs.SourceFile(url=r["url"], format=r["format"], compression=r["compression"], size=r["size"],
                           mtime=r["mtime"], etag=r.get("etag"))
            for r in table.to_pylist()
        ]


FILES_SCHEMA = pa.schema([("file_id", pa.int32()), ("url", pa.string()), ("format", pa.string()),
                          ("compression", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()),
                          ("rows", pa.int64()), ("row_groups", pa.list_(pa.int64())),
                          ("etag", pa.string())])


def known(datasets: t.Mapping[str, t.Any]) -> str:
    return f"registered datasets: {', '.join(sorted(datasets))}" if datasets else "the catalog has no datasets yet"
