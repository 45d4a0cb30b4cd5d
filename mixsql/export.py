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


def write_manifest(plan: CompiledPlan, directory: Path) -> Path:
    """Write ``manifest.parquet``: one row per (partition, chunk, component, file, contiguous row range)."""
    P, size = plan.partitions, plan.chunk_size
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("partition", "chunk", "rows")}
    for q in range(P):
        n = plan.partition_length(q)
        if n == 0:
            continue
        rows = plan.partition_rows(q, 0, n)
        index = np.arange(n, dtype=np.int64)
        parts["partition"].append(np.full(n, q, dtype=np.int32))
        parts["chunk"].append((index // size).astype(np.int64))
        parts["rows"].append(rows)
    partition = np.concatenate(parts["partition"]) if parts["partition"] else np.zeros(0, dtype=np.int32)
    chunk = np.concatenate(parts["chunk"]) if parts["chunk"] else np.zeros(0, dtype=np.int64)
    rows = np.concatenate(parts["rows"]) if parts["rows"] else np.zeros(0, dtype=np.int64)
    comp, file, row = plan.component[rows], plan.file[rows], plan.row[rows]
    if plan.byte_offset is not None and plan.byte_length is not None:
        offset, length = plan.byte_offset[rows], plan.byte_length[rows].astype(np.int64)
    else:
        offset = length = np.full(len(rows), -1, dtype=np.int64)
    # Group by (partition, chunk, component, file) in row order, then cut where rows stop being consecutive.
    order = np.lexsort((row, file, comp, chunk, partition))
    partition, chunk, comp, file, row = partition[order], chunk[order], comp[order], file[order], row[order]
    offset, length = offset[order], length[order]
    new = np.ones(len(row), dtype=bool)
    if len(row) > 1:
        same = (partition[1:] == partition[:-1]) & (chunk[1:] == chunk[:-1]) & (comp[1:] == comp[:-1]) \
            & (file[1:] == file[:-1]) & (row[1:] == row[:-1] + 1)
        new[1:] = ~same
    starts = np.flatnonzero(new)
    ends = np.concatenate((starts[1:], [len(row)])) if len(starts) else starts
    last = ends - 1
    has_bytes = offset[starts] >= 0
    table = pa.table({
        "partition": partition[starts],
        "chunk": chunk[starts],
        "component": pa.array([plan.names[i] for i in comp[starts]], pa.string()),
        "dataset": pa.array([plan.files[f].dataset for f in file[starts]], pa.string()),
        "file": pa.array([plan.files[f].url for f in file[starts]], pa.string()),
        "row_start": row[starts],
        "row_count": (ends - starts).astype(np.int64),
        "byte_offset": pa.array(np.where(has_bytes, offset[starts], 0), mask=~has_bytes),
        "byte_length": pa.array(np.where(has_bytes, offset[last] + length[last] - offset[starts], 0), mask=~has_bytes),
    })
    path = directory / "manifest.parquet"
    with atomic.replacing(path) as tmp:  # never a half-written manifest
        pq.write_table(table, tmp, compression="zstd")
    return path


LINEAGE_BLOCK = 1 << 20


def write_lineage(plan: CompiledPlan, directory: Path) -> Path:
    """Write ``lineage.parquet``: ``planfile.lineage`` of the whole stream, one row per sample in plan order."""
    path = directory / "lineage.parquet"
    with atomic.replacing(path) as tmp, pq.ParquetWriter(tmp, LINEAGE_SCHEMA, compression="zstd") as writer:
        for start in range(0, len(plan), LINEAGE_BLOCK):
            writer.write_table(lineage(plan, start, start + LINEAGE_BLOCK))
    return path


def export(plan: CompiledPlan, directory: str | os.PathLike[str]) -> Path:
    """Copy a compiled plan to ``directory`` and add its Parquet manifest and lineage (``mixsql plan -o DIR``)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    extra = [n for n in ("stream_rows.npy", "stream_tokens.npy", "row_tokens.npy", "row_index.npy", "canon.npy",
                         "run_starts.npy", "run_keys.npy", "tokenizer.json") if (plan.directory / n).exists()]
    for name in ["plan.json", "windows.npy", "window_blocks.npy", "chunks.npy"] + extra + \
            [f"{c}.npy" for c in plan.meta["columns"]]:
        with atomic.replacing(out / name) as tmp:
            shutil.copyfile(plan.directory / name, tmp)
    for name in ("manifest.parquet", "lineage.parquet"):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    copy = CompiledPlan(out)
    write_lineage(copy, out)
    return write_manifest(copy, out)
