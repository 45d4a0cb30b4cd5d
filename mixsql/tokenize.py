"""``mixsql tokenize``: write a dataset's token ids once, so that training runs never tokenize again.

Every source file becomes one Parquet shard holding its records in their order plus a column of
token ids (``list<uint16>`` when the vocabulary fits, else ``list<uint32>``), with one row group per
block of the source (its row groups, or its JSONL byte ranges), so the plans of the tokenized
dataset read the same blocks in the same order: a statement gives the same stream, now read from
stored ids. The shards are written under a temporary name and renamed into place; the dataset is
then registered again from them (atomically: a failure leaves the catalog as it was, with the
text-only registration).
"""

from __future__ import annotations

import os
import shutil
import typing as t
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mixsql import atomic
from mixsql import tokens as _tokens
from mixsql.errors import CatalogError

if t.TYPE_CHECKING:
    from mixsql.api import Connection
    from mixsql.catalog import DatasetInfo

TOKEN_COLUMN = "token_ids"


def _shard(plan_dir: str, rows: np.ndarray, blocks: np.ndarray, path: str, tokenizer: tuple[str, str], field: str,
           column: str, wide: bool) -> str:
    """One source file's shard (its plan ``rows`` in row order, ``blocks`` of each): its records and
    their token ids, a row group per block, written under a temporary name and renamed to ``path``
    once complete (so a task run again never leaves half a shard). A thread or a Ray task."""
    from mixsql.planfile import CompiledPlan
    from mixsql.read import Reader

    tok = _tokens.from_json(*tokenizer)
    reader = Reader(CompiledPlan(plan_dir))
    kind = pa.list_(pa.uint32() if wide else pa.uint16())
    partial = Path(path).with_name(f".{Path(path).name}.{uuid.uuid4().hex[:8]}")
    writer = None
    try:
        cuts = np.flatnonzero(np.diff(blocks)) + 1
        for part in np.split(rows, cuts) if len(rows) else []:
            table = reader.read(part).drop_columns(["component_id"])
            ids = tok.encode(table.column(field).to_pylist())
            lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
            flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
            offsets = pa.array(np.concatenate(([0], np.cumsum(lengths))).astype(np.int32))
            values = pa.array(flat.astype(np.uint32 if wide else np.uint16))
            table = table.append_column(column, pa.ListArray.from_arrays(offsets, values, type=kind))
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(partial, schema, compression="zstd")
            writer.write_table(table.cast(schema), row_group_size=max(len(part), 1))
        if writer is None:  # an empty source file: an empty shard keeps the file list aligned
            empty = reader._empty().drop_columns(["component_id"])
            pq.write_table(empty.append_column(column, pa.array([], kind)), partial)
        else:
            writer.close()
            writer = None
        os.replace(partial, path)
    finally:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
    return path


def tokenize(con: "Connection", dataset: str, tokenizer: t.Any, output: str | os.PathLike[str], *,
             column: str = TOKEN_COLUMN, progress: t.Callable[[int, int, str], None] | None = None,
             ray: str | None = None) -> "DatasetInfo":
    """Write ``dataset``'s token ids as shards in ``output`` and register it again from them. With
    ``ray`` (an address, or "" for the cluster ``RAY_ADDRESS`` names or a local one) each source
    file's shard is a Ray task, and so is the registration's scan; ``output`` and the catalog must
    then be on a filesystem every node sees."""
    if ray is not None:
        from mixsql import cluster

        cluster.check_address(ray)
    info = con.catalog.dataset(dataset)
    tok = _tokens.load(tokenizer)
    content = tuple(info.content)
    if info.tokenizer and info.tokenizer.get("kind") == "ids":
        raise CatalogError(f"dataset {dataset!r} already reads its token ids from {info.tokenizer['field']!r}",
                           hint="there is nothing to tokenize")
    if len(content) != 1:
        raise CatalogError(f"dataset {dataset!r} has {len(content)} content fields ({', '.join(content)}); "
                           "tokenize reads one", hint="register it with one --content field")
    if column in info.record_schema.names:
        raise CatalogError(f"dataset {dataset!r} already has a field {column!r}",
                           hint="name another column for the ids (--column)")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    files = info.files()
    stems = [f"{i:05d}-{Path(f.url.split('?')[0]).name.split('.')[0] or 'part'}.parquet" for i, f in enumerate(files)]
    clash = [s for s in stems if (out / s).exists()]
    if clash:
        raise CatalogError(f"{out / clash[0]} exists", hint="tokenize into an empty directory")
    if ray is not None:  # all checked before a cluster is connected to; one connection for shards and registration
        with cluster.connected(ray):
            return _write(con, dataset, tok, content, column, out, files, stems, progress, ray)
    return _write(con, dataset, tok, content, column, out, files, stems, progress, None)


def _write(con: "Connection", dataset: str, tok: _tokens.Tokenizer, content: tuple[str, ...], column: str,
           out: Path, files: list[t.Any], stems: list[str], progress: t.Callable[[int, int, str], None] | None,
           ray: str | None) -> "DatasetInfo":
    """The shards, on this machine or as Ray tasks, then the dataset registered again from them."""
    from mixsql.catalog.duck import ident

    mix = con.mix(f"MIX 1 AS all_samples FROM {ident(dataset)} PARTITIONS 1")
    plan = mix.plan()
    blocks = con.catalog.engine().con.sql(
        f"SELECT _file_id, _row, _block FROM {ident(dataset)} ORDER BY _file_id, _row").to_arrow_table()
    block_file = blocks.column("_file_id").to_numpy()
    block_of = blocks.column("_block").to_numpy()
    order = np.lexsort((np.asarray(plan.row), np.asarray(plan.file)))  # plan rows in (file, row) order
    wide = tok.vocab_size > 1 << 16
    tmp = out / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        bounds = np.searchsorted(block_file, np.arange(len(stems) + 1))  # the rows come in file order
        calls = [(str(plan.directory), order[lo:hi], block_of[lo:hi], str(tmp / stem), (tok.json, tok.source),
                  content[0], column, wide) for stem, lo, hi in zip(stems, bounds[:-1].tolist(), bounds[1:].tolist())]
        if ray is not None:
            from mixsql import cluster

            finished = [0]

            def told(i: int) -> None:
                finished[0] += 1
                if progress is not None:
                    progress(finished[0], len(files), files[i].url)

            with atomic.writing(out, "token shards"):
                written = [Path(p) for p in cluster.run(_shard, calls, told, "tokenization")]
        else:
            written = []
            with atomic.writing(out, "token shards"):
                for file_id, call in enumerate(calls):
                    if progress is not None:
                        progress(file_id, len(files), files[file_id].url)
                    written.append(Path(_shard(*call)))
        if progress is not None:
            progress(len(files), len(files), "registering the tokenized shards")
        final = []
        for path in written:
            os.rename(path, out / path.name)
            final.append(out / path.name)
        try:
            return con.register(dataset, [str(p) for p in final], replace=True, content=list(content) + [column],
                                tokenizer=tok, tokens=column, ray=None if ray is None else "")  # this connection
        except BaseException:
            for p in final:
                p.unlink(missing_ok=True)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
