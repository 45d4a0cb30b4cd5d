"""Exporting a compiled plan (``mixsql plan -o DIR``): a copy of its files, and the Parquet tables
``manifest.parquet`` (one row per contiguous row range) and ``lineage.parquet`` (one row per sample)
for inspection with SQL (``mixsql sql --plan DIR``). Runtime only: no compile-time module."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mixsql import atomic
from mixsql.planfile import LINEAGE_SCHEMA, CompiledPlan, lineage


MANIFEST_SCHEMA = pa.schema([("partition", pa.int32()), ("chunk", pa.int64()), ("component", pa.string()),
                             ("dataset", pa.string()), ("file", pa.string()), ("row_start", pa.int32()),
                             ("row_count", pa.int64()), ("byte_offset", pa.int64()), ("byte_length", pa.int64())])
MANIFEST_BLOCK = 1 << 20  # samples of one partition turned into manifest rows at a time


def write_manifest(plan: CompiledPlan, directory: Path) -> Path:
    """Write ``manifest.parquet``: one row per (partition, chunk, component, file, contiguous row range),
    in that order. A row never spans two chunks, so the stream is written a block of chunks at a time:
    memory follows the block, not the stream."""
    size = plan.chunk_size
    step = max(size, MANIFEST_BLOCK // size * size)
    path = directory / "manifest.parquet"
    with atomic.replacing(path) as tmp, pq.ParquetWriter(tmp, MANIFEST_SCHEMA, compression="zstd") as writer:
        for q in range(plan.partitions):
            n = plan.partition_length(q)
            for start in range(0, n, step):
                writer.write_table(_manifest_rows(plan, q, start, min(start + step, n)))
    return path


def _manifest_rows(plan: CompiledPlan, q: int, start: int, stop: int) -> pa.Table:
    """The manifest rows of partition q's samples [start, stop) (whole chunks, but for the stream's end)."""
    rows = plan.partition_rows(q, start, stop)
    chunk = np.arange(start, stop, dtype=np.int64) // plan.chunk_size
    comp, file, row = plan.component[rows], plan.file[rows], plan.row[rows]
    if plan.byte_offset is not None and plan.byte_length is not None:
        offset, length = plan.byte_offset[rows], plan.byte_length[rows].astype(np.int64)
    else:
        offset = length = np.full(len(rows), -1, dtype=np.int64)
    # Group by (chunk, component, file) in row order, then cut where rows stop being consecutive.
    order = np.lexsort((row, file, comp, chunk))
    chunk, comp, file, row = chunk[order], comp[order], file[order], row[order]
    offset, length = offset[order], length[order]
    new = np.ones(len(row), dtype=bool)
    if len(row) > 1:
        same = (chunk[1:] == chunk[:-1]) & (comp[1:] == comp[:-1]) & (file[1:] == file[:-1]) & (row[1:] == row[:-1] + 1)
        new[1:] = ~same
    starts = np.flatnonzero(new)
    ends = np.concatenate((starts[1:], [len(row)])) if len(starts) else starts
    last = ends - 1
    has_bytes = offset[starts] >= 0
    return pa.table({
        "partition": np.full(len(starts), q, dtype=np.int32),
        "chunk": chunk[starts],
        "component": pa.array([plan.names[i] for i in comp[starts]], pa.string()),
        "dataset": pa.array([plan.files[f].dataset for f in file[starts]], pa.string()),
        "file": pa.array([plan.files[f].url for f in file[starts]], pa.string()),
        "row_start": row[starts].astype(np.int32),
        "row_count": (ends - starts).astype(np.int64),
        "byte_offset": pa.array(np.where(has_bytes, offset[starts], 0), mask=~has_bytes),
        "byte_length": pa.array(np.where(has_bytes, offset[last] + length[last] - offset[starts], 0), mask=~has_bytes),
    }, schema=MANIFEST_SCHEMA)


LINEAGE_BLOCK = 1 << 20


def write_lineage(plan: CompiledPlan, directory: Path) -> Path:
    """Write ``lineage.parquet``: ``planfile.lineage`` of the whole stream, one row per sample in plan order."""
    path = directory / "lineage.parquet"
    with atomic.replacing(path) as tmp, pq.ParquetWriter(tmp, LINEAGE_SCHEMA, compression="zstd") as writer:
        for start in range(0, len(plan), LINEAGE_BLOCK):
            writer.write_table(lineage(plan, start, start + LINEAGE_BLOCK))
    return path


def export(plan: CompiledPlan, directory: str | os.PathLike[str], tables: bool = True) -> Path | None:
    """Copy a compiled plan to ``directory`` and add its Parquet manifest and lineage (``mixsql plan -o DIR``);
    ``tables=False``: the plan only (the tables have a row per sample or range of the whole stream,
    which a budget of billions makes large). Returns the manifest's path (None without tables)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    extra = [n for n in ("stream_tokens.npy", "row_tokens.npy", "epoch_tokens.npy", "row_index.npy", "canon.npy",
                         "run_starts.npy", "run_keys.npy", "tokenizer.json") if (plan.directory / n).exists()]
    for name in ["plan.json", "windows.npy", "window_blocks.npy", "chunks.npy"] + extra + \
            [f"{c}.npy" for c in plan.meta["columns"]]:
        with atomic.replacing(out / name) as tmp:
            shutil.copyfile(plan.directory / name, tmp)
    for name in ("manifest.parquet", "lineage.parquet"):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    if not tables:
        return None
    copy = CompiledPlan(out)
    write_lineage(copy, out)
    return write_manifest(copy, out)
