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

from mixsql import tokens as _tokens
from mixsql.errors import CatalogError

if t.TYPE_CHECKING:
    from mixsql.api import Connection
    from mixsql.catalog import DatasetInfo

TOKEN_COLUMN = "token_ids"


def tokenize(con: "Connection", dataset: str, tokenizer: t.Any, output: str | os.PathLike[str], *,
             column: str = TOKEN_COLUMN, progress: t.Callable[[int, int, str], None] | None = None) -> "DatasetInfo":
    """Write ``dataset``'s token ids as shards in ``output`` and register it again from them."""
    from mixsql.catalog.duck import ident
    from mixsql.read import Reader

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
    mix = con.mix(f"MIX 1 AS all_samples FROM {ident(dataset)} PARTITIONS 1")
    plan = mix.plan()
    reader = Reader(plan)
    blocks = con.catalog.engine().con.sql(
        f"SELECT _file_id, _row, _block FROM {ident(dataset)} ORDER BY _file_id, _row").to_arrow_table()
    block_file = blocks.column("_file_id").to_numpy()
    block_of = blocks.column("_block").to_numpy()
    order = np.lexsort((np.asarray(plan.row), np.asarray(plan.file)))  # plan rows in (file, row) order
    kind = pa.list_(pa.uint16() if tok.vocab_size <= 1 << 16 else pa.uint32())
    tmp = out / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    written: list[Path] = []
    try:
        at = 0
        for file_id, (src, stem) in enumerate(zip(files, stems)):
            if progress is not None:
                progress(file_id, len(files), src.url)
            mine = np.flatnonzero(block_file == file_id)
            n = len(mine)
            rows = order[at: at + n]
            at += n
            groups = block_of[mine]
            cuts = np.flatnonzero(np.diff(groups)) + 1 if n else np.zeros(0, dtype=np.int64)
            schema = None
            writer = None
            path = tmp / stem
            for part in np.split(rows, cuts) if n else []:
                table = reader.read(part).drop_columns(["component_id"])
                ids = tok.encode(table.column(content[0]).to_pylist())
                lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
                flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
                offsets = pa.array(np.concatenate(([0], np.cumsum(lengths))).astype(np.int32))
                values = pa.array(flat.astype(np.uint16 if kind.value_type == pa.uint16() else np.uint32))
                table = table.append_column(column, pa.ListArray.from_arrays(offsets, values, type=kind))
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(path, schema, compression="zstd")
                writer.write_table(table.cast(schema), row_group_size=max(len(part), 1))
            if writer is None:  # an empty source file: an empty shard keeps the file list aligned
                empty = reader._empty().drop_columns(["component_id"])
                pq.write_table(empty.append_column(column, pa.array([], kind)), path)
            else:
                writer.close()
            written.append(path)
        if progress is not None:
            progress(len(files), len(files), "registering the tokenized shards")
        final = []
        for path in written:
            os.rename(path, out / path.name)
            final.append(out / path.name)
        try:
            return con.register(dataset, [str(p) for p in final], replace=True, content=list(content) + [column],
                                tokenizer=tok, tokens=column)
        except BaseException:
            for p in final:
                p.unlink(missing_ok=True)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
