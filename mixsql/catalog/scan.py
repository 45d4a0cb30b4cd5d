"""Index one data file: a row per sample with its pointer and properties, never its content.

Output columns: ``_file_id`` (INT32), ``_row`` (record index in the file), ``_block`` (the unit a
reader decodes: the Parquet row group, the 1 MiB range of a plain JSONL file, 0 for compressed
JSONL, which is read whole), ``_offset`` and
``_length`` (byte range of the record in the decompressed JSONL stream; NULL for Parquet),
``_bytes`` (UTF-8 bytes of the content columns), then every other field with its Arrow type.
Parquet is read with pyarrow column by column; JSONL with pyarrow.json in large blocks whose
record boundaries come from a vectorised newline scan, so there is no per-line Python loop.
"""

from __future__ import annotations

import json
import re
import typing as t

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from mixsql import fs as mfs
from mixsql.errors import CatalogError, DataError
from mixsql.planfile import JSONL_BLOCK_SHIFT, NPY_BLOCK_SHIFT

RESERVED = ("_file_id", "_row", "_block", "_offset", "_length", "_bytes")
OUTPUT_NAMES = ("component", "component_id")  # what the stream adds to every record
N_TOKENS = "n_tokens"  # the property registration with a tokenizer adds
INT64 = (-(1 << 63), (1 << 63) - 1)
BLOCK_BYTES = 32 << 20
BATCH_ROWS = 65536
_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 13, 32]] = True


def _pointer_columns(file_id: int, rows: int, start_row: int, block: np.ndarray) -> dict[str, pa.Array]:
    return {
        "_file_id": pa.array(np.full(rows, file_id, dtype=np.int32)),
        "_row": pa.array(np.arange(start_row, start_row + rows, dtype=np.int64)),
        "_block": pa.array(block.astype(np.int32)),
    }


def check_names(names: t.Sequence[str], url: str, where: t.Callable[[str], str] = lambda name: "") -> None:
    """Field names SQL and the stream can hold faithfully: non-empty, not mixsql's own, and distinct
    regardless of case (SQL identifiers are case-insensitive, so ``Domain`` and ``domain`` would be
    one column). ``where(name)`` says where in the file a name first occurs (", line N")."""
    seen: dict[str, str] = {}
    for name in names:
        if name == "":
            raise DataError(f"{url}{where(name)}: a field has an empty name, which no SQL column can hold",
                            file=url, hint="give the field a name, then register again")
        if name in RESERVED or name in OUTPUT_NAMES:
            what = "a column mixsql reserves for pointers" if name in RESERVED else \
                "the field mixsql gives every sample of the stream (its component)"
            raise DataError(f"{url}{where(name)}: field {name!r} collides with {what}", file=url,
                            hint=f"rename the field in the data; reserved names are "
                                 f"{', '.join(RESERVED + OUTPUT_NAMES)}")
        other = seen.get(name.lower())
        if other is not None and other != name:
            raise DataError(f"{url}{where(name)}: fields {other!r} and {name!r} differ only in case, and SQL "
                            "cannot tell them apart", file=url,
                            hint="rename one of them in the data (or register the files as separate datasets)")
        seen[name.lower()] = name


def _check_fields(names: t.Sequence[str], content: t.Sequence[str], url: str,
                  where: t.Callable[[str], str] = lambda name: "") -> None:
    check_names(names, url, where)
    missing = [c for c in content if c not in names]
    if missing:
        raise CatalogError(
            f"{url} has no field {missing[0]!r} to use as content",
            hint=f"its fields are {', '.join(names)}; name the content fields with --content (API: content=[...])",
        )


def _content_bytes(table_or_batch: t.Any, content: t.Sequence[str]) -> pa.Array:
    total = None
    for name in content:
        col = table_or_batch.column(name)
        if image_struct(col.type):
            col = pc.struct_field(col, "bytes")
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_binary(col.type) \
                or pa.types.is_large_binary(col.type):
            n = pc.fill_null(pc.binary_length(col), 0).cast(pa.int64())
        elif _is_id_list(col.type):  # token ids: their real size, not the size of their JSON
            width = col.type.value_type.bit_width // 8
            n = pc.multiply(pc.fill_null(pc.list_value_length(col), 0).cast(pa.int64()), width)
        else:  # other non-string content (e.g. a list of strings): its JSON size is a fair measure
            n = pa.array([len(json.dumps(v, ensure_ascii=False).encode()) for v in col.to_pylist()], pa.int64())
        total = n if total is None else pc.add(total, n)
    if total is None:
        return pa.array(np.zeros(table_or_batch.num_rows, dtype=np.int64))
    return total.combine_chunks() if isinstance(total, pa.ChunkedArray) else total


IMAGE_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp")


def image_struct(kind: pa.DataType) -> bool:
    """The Hugging Face image layout: a struct with the encoded bytes in a field ``bytes``."""
    return pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0 and \
        pa.types.is_binary(kind.field("bytes").type) or \
        pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0 and pa.types.is_large_binary(kind.field("bytes").type)


def blob_column(kind: pa.DataType) -> bool:
    """Raw bytes (an image, audio ...): content, never a property in the catalog."""
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or image_struct(kind)


def _is_id_list(kind: pa.DataType) -> bool:
    """A list of integers: a column of token ids."""
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_integer(kind.value_type)


class Counter(t.Protocol):
    """Tokens per record of the field ``field`` (content text to tokenize, or a column of token ids)."""

    field: str

    def __call__(self, column: pa.Array, url: str, start: int) -> np.ndarray: ...


def scan_parquet(src: mfs.SourceFile, file_id: int, content: t.Sequence[str],
                 count: Counter | None = None) -> tuple[t.Iterator[pa.Table], list[int], pa.Schema]:
    """Index a Parquet file: its catalog rows as they are scanned (a table per batch of rows, so a
    file of any size is held a batch at a time), the row counts of its row groups and the record
    schema. With ``count``, each record also gets ``n_tokens``: the tokens of its (one) content field."""
    fh = mfs.open_binary(src.url, src.size)
    try:
        pf = pq.ParquetFile(fh)
        names = pf.schema_arrow.names
        _check_fields(names, content, src.url)
    except (pa.ArrowInvalid, OSError) as e:
        fh.close()
        raise DataError(f"{src.url} is not a readable Parquet file: {e}", file=src.url) from None
    except BaseException:
        fh.close()
        raise
    utf8 = [n for n in props_of(names, content) if _has_text(pf.schema_arrow.field(n).type)] + \
        [n for n in content if _has_text(pf.schema_arrow.field(n).type)]
    props = [n for n in names if n not in content]
    row_groups = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]

    def tables() -> t.Iterator[pa.Table]:
        group_of_row = np.repeat(np.arange(len(row_groups), dtype=np.int32), row_groups)
        start = 0
        try:
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=props + list(content), use_threads=False):
                cols = _pointer_columns(file_id, batch.num_rows, start, group_of_row[start:start + batch.num_rows])
                cols["_offset"] = pa.nulls(batch.num_rows, pa.int64())
                cols["_length"] = pa.nulls(batch.num_rows, pa.int64())
                cols["_bytes"] = _content_bytes(batch, content)
                for name in props:
                    cols[name] = batch.column(name)
                if count is not None:
                    cols[N_TOKENS] = pa.array(count(batch.column(count.field), src.url, start))
                for name in utf8:
                    _valid_text(batch.column(name), name, src.url, start)
                yield pa.table(cols)
                start += batch.num_rows
            if start == 0:
                yield pa.schema([pa.field(n, pa.int32() if n in ("_file_id", "_block") else pa.int64())
                                 for n in RESERVED] + [pf.schema_arrow.field(n) for n in props]).empty_table()
        finally:
            fh.close()

    return tables(), row_groups, pf.schema_arrow


def props_of(names: t.Sequence[str], content: t.Sequence[str]) -> list[str]:
    return [n for n in names if n not in content]


def _has_text(kind: pa.DataType) -> bool:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return True
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _has_text(kind.value_type)
    if pa.types.is_struct(kind):
        return any(_has_text(kind.field(i).type) for i in range(kind.num_fields))
    return False


def _valid_text(col: pa.Array, name: str, url: str, start: int) -> None:
    try:
        col.validate(full=True)
    except pa.ArrowInvalid:
        for i, value in enumerate(col.cast(_as_binary(col.type)).to_pylist()):
            try:
                json.dumps(value, default=lambda b: b.decode("utf-8"))
            except UnicodeDecodeError:
                raise DataError(f"{url}, row {start + i}: field {name!r} holds text that is not valid UTF-8", file=url,
                                row=start + i, hint="fix the encoding of that value, then register again") from None
        raise DataError(f"{url}: field {name!r} holds text that is not valid UTF-8", file=url) from None


def _as_binary(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_string(kind):
        return pa.binary()
    if pa.types.is_large_string(kind):
        return pa.large_binary()
    if pa.types.is_list(kind):
        return pa.list_(_as_binary(kind.value_type))
    if pa.types.is_large_list(kind):
        return pa.large_list(_as_binary(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _as_binary(f.type)) for f in kind])
    return kind


def _line_bounds(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets and lengths (without the newline) of the non-blank lines of a block."""
    ends = np.flatnonzero(block == 10)
    if not len(ends):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts
    # whether each line holds a byte that is not white space: one pass over the block's bytes (each
    # line's span [start, next start) is never empty: it holds at least its newline)
    keep = np.logical_or.reduceat(~_WS[block[: int(ends[-1]) + 1]], starts)
    return starts[keep].astype(np.int64), lengths[keep].astype(np.int64)


def _first_bad_line(block: bytes, starts: np.ndarray, lengths: np.ndarray) -> tuple[int, str]:
    """Only on the error path: find which record pyarrow refused, with Python's json for the reason."""
    for i, (s, n) in enumerate(zip(starts.tolist(), lengths.tolist())):
        try:
            value = json.loads(block[s:s + n])
        except ValueError as e:
            return i, f"invalid JSON ({e})"
        if not isinstance(value, dict):
            return i, f"a record must be a JSON object, not {type(value).__name__}"
    return -1, ""


def scan_jsonl(src: mfs.SourceFile, file_id: int, content: t.Sequence[str],
               count: Counter | None = None) -> tuple[pa.Table, pa.Schema]:
    """Index a JSONL file (plain, gzip or zstd) in blocks; also return the record schema (and with
    ``count``, ``n_tokens`` per record as for Parquet)."""
    tables: list[pa.Table] = []
    records: list[pa.Schema] = []
    row = 0
    base = 0  # decompressed offset of the current block
    line_no = 0  # 1-based physical line numbers for error messages
    pending = b""
    with mfs.open_stream(src.url, src.compression, src.size) as stream:
        while True:
            try:
                chunk = stream.read(BLOCK_BYTES)
            except (OSError, pa.ArrowInvalid) as e:
                raise DataError(f"cannot read {src.url}: {e}", file=src.url) from None
            data = pending + chunk
            if not chunk:
                if not data:
                    break
                if not data.endswith(b"\n"):
                    data += b"\n"
                block, pending = data, b""
            else:
                cut = data.rfind(b"\n")
                if cut < 0:
                    pending = data
                    continue
                block, pending = data[: cut + 1], data[cut + 1:]
            arr = np.frombuffer(block, dtype=np.uint8)
            starts, lengths = _line_bounds(arr)
            if len(starts):
                table = _parse_block(block, starts, lengths, src, row, base, line_no, arr)
                if table.num_rows:
                    where = _locator(block, starts, lengths, line_no, arr)
                    _check_fields(table.column_names, content, src.url, where)
                    _check_values(table, src.url, row, where, block, starts, lengths, line_no, arr)
                    records.append(table.schema)
                    blocks = np.zeros(table.num_rows) if src.compression else (starts + base) >> JSONL_BLOCK_SHIFT
                    cols = _pointer_columns(file_id, table.num_rows, row, blocks)
                    cols["_offset"] = pa.array(starts + base)
                    cols["_length"] = pa.array(lengths)
                    cols["_bytes"] = _content_bytes(table, content)
                    for name in table.column_names:
                        if name not in content:
                            cols[name] = table.column(name)
                    if count is not None:
                        cols[N_TOKENS] = pa.array(count(table.column(count.field), src.url, row))
                    tables.append(pa.table(cols))
                    row += table.num_rows
            line_no += int(np.count_nonzero(arr == 10))
            base += len(block)
            if not chunk:
                break
    if not tables:  # an empty file contributes no samples (as an empty Parquet file does)
        schema = pa.schema([pa.field(n, pa.int32() if n in ("_file_id", "_block") else pa.int64()) for n in RESERVED])
        return schema.empty_table(), pa.schema([])
    record = unify([(src.url, r) for r in records])
    check_names(record.names, src.url)
    return _concat(tables, src.url), record


def _line_of(offset: int, line_no: int, arr: np.ndarray) -> int:
    return line_no + int(np.count_nonzero(arr[:offset] == 10)) + 1


def _locator(block: bytes, starts: np.ndarray, lengths: np.ndarray, line_no: int,
             arr: np.ndarray) -> t.Callable[[str], str]:
    """``where(field)``: ", line N" of the first record of the block holding the field (error path only)."""
    def where(name: str) -> str:
        for s, n in zip(starts.tolist(), lengths.tolist()):
            try:
                if name in json.loads(block[s:s + n]):
                    return f", line {_line_of(s, line_no, arr)}"
            except (ValueError, TypeError):
                continue
        return ""
    return where


def _check_values(table: pa.Table, url: str, row: int, where: t.Callable[[str], str], block: bytes,
                  starts: np.ndarray, lengths: np.ndarray, line_no: int, arr: np.ndarray) -> None:
    """Text that is valid UTF-8, and no integer beyond 64 bits (which would make its whole column
    floating point): else a DataError naming file, line and field."""
    try:
        table.validate(full=True)
    except pa.ArrowInvalid:
        raise _utf8_error(url, row, block, starts, lengths, line_no, arr) from None
    suspects = [f.name for f, col in zip(table.schema, table.columns) if _beyond_int64(col)]
    if not suspects:
        return
    for i, (s, n) in enumerate(zip(starts.tolist(), lengths.tolist())):
        record = json.loads(block[s:s + n])
        for name in suspects:
            if _has_big_integer(record.get(name)):
                raise DataError(
                    f"{url}, record {row + i} (line {_line_of(s, line_no, arr)}): field {name!r} holds an integer "
                    "beyond 64 bits, which would turn the whole column into floating point", file=url, row=row + i,
                    hint="store such values as strings (or as floats, if approximate values will do)")


def _utf8_error(url: str, row: int, block: bytes, starts: np.ndarray, lengths: np.ndarray, line_no: int,
                arr: np.ndarray) -> DataError:
    """The first record of the block that is not valid UTF-8 (error path only)."""
    for i, (s, n) in enumerate(zip(starts.tolist(), lengths.tolist())):
        try:
            block[s:s + n].decode("utf-8")
        except UnicodeDecodeError as e:
            return DataError(f"{url}, record {row + i} (line {_line_of(s, line_no, arr)}): invalid UTF-8 at byte "
                             f"{e.start} of the line", file=url, row=row + i,
                             hint="JSON text must be UTF-8: fix the encoding of the record, then register again")
    return DataError(f"{url}: a record holds text that is not valid UTF-8", file=url,
                     hint="JSON text must be UTF-8: fix the encoding, then register again")


def _beyond_int64(col: t.Any) -> bool:
    """A floating-point column (or a list or struct holding one) with an integral value beyond int64."""
    kind = col.type
    if pa.types.is_floating(kind):
        top = pc.max(pc.abs(col)).as_py()
        return top is not None and top >= 2.0 ** 63
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _beyond_int64(pc.list_flatten(col))
    if pa.types.is_struct(kind):
        chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
        return any(_beyond_int64(c.field(i)) for c in chunks for i in range(kind.num_fields))
    return False


def _has_big_integer(value: t.Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not INT64[0] <= value <= INT64[1]
    if isinstance(value, list):
        return any(_has_big_integer(v) for v in value)
    if isinstance(value, dict):
        return any(_has_big_integer(v) for v in value.values())
    return False


def _parse_block(block: bytes, starts: np.ndarray, lengths: np.ndarray, src: mfs.SourceFile, row: int,
                 base: int, line_no: int, arr: np.ndarray) -> pa.Table:
    try:
        table = pajson.read_json(pa.BufferReader(block), read_options=pajson.ReadOptions(use_threads=True,
                                 block_size=max(1 << 20, min(len(block), 1 << 30))),
                                 parse_options=pajson.ParseOptions(newlines_in_values=False))
        if table.num_rows == len(starts):
            try:
                table.schema.names  # a field name that is not UTF-8 fails here
            except UnicodeDecodeError:
                raise _utf8_error(src.url, row, block, starts, lengths, line_no, arr) from None
            return table
        reason = f"pyarrow read {table.num_rows} records where there are {len(starts)} non-blank lines"
        bad = -1
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        bad, reason = _first_bad_line(block, starts, lengths)
        if bad < 0:  # valid JSON but inconsistent types; pyarrow names the record within the block
            reason = str(e).split("\n")[0]
            found = re.search(r"in row (\d+)", reason)
            bad = int(found.group(1)) if found and int(found.group(1)) < len(starts) else -1
    if bad >= 0:
        physical = line_no + int(np.count_nonzero(arr[: starts[bad]] == 10)) + 1
        raise DataError(f"{src.url}, record {row + bad} (line {physical}): {reason}", file=src.url,
                        row=row + bad, hint="fix or remove the record, then register again")
    raise DataError(f"{src.url}: cannot parse records after byte {base}: {reason}", file=src.url)


def _concat(tables: list[pa.Table], url: str) -> pa.Table:
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise CatalogError(f"records in {url} disagree on a field's type: {e}",
                           hint="make the field's type consistent across records") from None


def unify(schemas: t.Sequence[tuple[str, pa.Schema]]) -> pa.Schema:
    """One schema for all files, promoting compatible types (int → double, null → any); else raise."""
    try:
        return pa.unify_schemas([s for _, s in schemas], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    seen: dict[str, tuple[pa.DataType, str]] = {}
    for url, schema in schemas:
        for f in schema:
            if f.name not in seen or pa.types.is_null(seen[f.name][0]):
                seen[f.name] = (f.type, url)
                continue
            other, other_url = seen[f.name]
            if pa.types.is_null(f.type):
                continue
            try:
                pa.unify_schemas([pa.schema([pa.field(f.name, other)]), pa.schema([f])], promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                raise CatalogError(
                    f"field {f.name!r} is {other} in {other_url} but {f.type} in {url}; the schemas cannot be unified",
                    hint="make the field's type consistent, or register the files as separate datasets",
                ) from None
    raise CatalogError("the files' schemas cannot be unified")


NPY_FIELD = mfs.NPY_FIELD
npy_header = mfs.npy_header


def _sidecar(url: str) -> pa.Table | None:
    """Per-document properties beside a token array: ``<stem>.parquet``, ``.jsonl`` or ``.json``, one row each."""
    stem = url[: -len(".npy")]
    for suffix in (".parquet", ".jsonl", ".json"):
        candidate = stem + suffix
        if mfs.exists(candidate):
            with mfs.open_binary(candidate) as fh:
                try:
                    return pq.read_table(fh) if suffix == ".parquet" else pajson.read_json(fh)
                except (pa.ArrowInvalid, OSError) as e:
                    raise DataError(f"{candidate} (the properties of {url}) cannot be read: {e}",
                                    file=candidate) from None
    return None


def scan_npy(src: mfs.SourceFile, file_id: int, eos: int, vocab: int) -> tuple[pa.Table, pa.Schema]:
    """Index a flat array of token ids: one sample per document (the ids between EOS separators, the
    EOS not included), with ``n_tokens``, its token range as ``_offset``/``_length``, and the sidecar's
    properties if one sits beside it (queryable in the catalog; a record is its ``token_ids``)."""
    with mfs.open_binary(src.url, src.size) as fh:
        _, dtype, n = npy_header(fh, src.url)
        data = np.frombuffer(fh.read(n * dtype.itemsize), dtype=dtype)
    if len(data) != n:
        raise DataError(f"{src.url} is cut short: its header says {n:,} ids, it holds {len(data):,}", file=src.url)
    if n and int(data.max()) >= vocab:
        at = int(np.flatnonzero(data >= vocab)[0])
        raise DataError(f"{src.url}: token id {int(data[at])} at position {at:,} is outside the tokenizer's "
                        f"vocabulary of {vocab:,}", file=src.url, hint="register with the tokenizer these ids come from")
    ends = np.flatnonzero(data == eos)
    starts = np.concatenate(([0], ends + 1))
    ends = np.append(ends, n)
    if starts[-1] == n:  # the array ends with an EOS: no document after it
        starts, ends = starts[:-1], ends[:-1]
    lengths = (ends - starts).astype(np.int64)
    docs = len(starts)
    cols = _pointer_columns(file_id, docs, 0, (starts >> NPY_BLOCK_SHIFT).astype(np.int32))
    cols["_offset"] = pa.array(starts.astype(np.int64))
    cols["_length"] = pa.array(lengths)
    cols["_bytes"] = pa.array(lengths * dtype.itemsize)
    table = pa.table(cols)
    record = pa.schema([(NPY_FIELD, pa.list_(pa.from_numpy_dtype(dtype)))])
    side = _sidecar(src.url)
    if side is not None:
        if side.num_rows != docs:
            raise DataError(f"the properties beside {src.url} have {side.num_rows:,} rows, but it holds {docs:,} "
                            "documents", file=src.url, hint="one row of properties per document, in order")
        check_names(side.column_names, src.url)
        for name in side.column_names:
            if name in RESERVED or name in (N_TOKENS, NPY_FIELD):
                raise DataError(f"the properties beside {src.url} have a field {name!r}, which mixsql adds",
                                file=src.url, hint="rename it")
            table = table.append_column(name, side.column(name))  # properties: in the catalog, not the record
    table = table.append_column(N_TOKENS, pa.array(lengths))
    return table, record


def scan_tar(src: mfs.SourceFile, file_id: int) -> tuple[pa.Table, pa.Schema]:
    """Index a WebDataset tar shard: one sample per key, its byte range (first member's header to
    last member's end) as ``_offset``/``_length``, and as properties ``key``, ``image_format``,
    ``image_bytes`` and the fields of its ``.json`` member. Images are not decoded here."""
    import tarfile

    from mixsql import images

    samples: list[dict[str, t.Any]] = []
    ranges: list[tuple[int, int]] = []
    seen: set[str] = set()
    current: str | None = None
    members: dict[str, bytes] = {}
    start = end = 0

    def close() -> None:
        if current is None:
            return
        record = images.sample_record(current, members, src.url)
        record.pop("image")
        samples.append(record)
        ranges.append((start, end))

    with mfs.open_binary(src.url, src.size) as fh:
        try:
            with tarfile.open(fileobj=fh, mode="r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, ext = images.split_name(member.name)
                    if key != current:
                        close()
                        if key in seen:
                            raise DataError(f"{src.url}: the members of sample {key!r} are not together (it "
                                            f"appears again at {member.name!r})", file=src.url,
                                            hint="write each key's members one after another, as WebDataset does")
                        seen.add(key)
                        current, members, start = key, {}, member.offset
                    if ext in images.IMAGE_EXTENSIONS:
                        members[ext] = b"\0" * member.size  # its bytes are not needed here, its size is
                    else:
                        handle = tar.extractfile(member)
                        members[ext] = handle.read() if handle is not None else b""
                    end = min(src.size, member.offset_data + -(-member.size // 512) * 512)  # with its padding
                close()
        except tarfile.TarError as e:
            raise DataError(f"{src.url} is not a readable tar shard: {e}", file=src.url) from None
    n = len(samples)
    if n == 0:
        schema = pa.schema([pa.field(c, pa.int32() if c in ("_file_id", "_block") else pa.int64()) for c in RESERVED])
        return schema.empty_table(), pa.schema([])
    extra = [{k: v for k, v in s.items() if k not in images.RECORD_FIELDS} for s in samples]
    names = list(dict.fromkeys(k for e in extra for k in e))
    check_names(list(images.RECORD_FIELDS) + names, src.url)
    if names:
        lines = b"\n".join(json.dumps(e, ensure_ascii=False).encode() for e in extra) + b"\n"
        try:
            fields = pajson.read_json(pa.py_buffer(lines), read_options=pajson.ReadOptions(
                use_threads=False, block_size=len(lines) + 1))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise DataError(f"{src.url}: the samples' .json members do not agree on their fields' types ({e})",
                            file=src.url, hint="give every sample's field one JSON type") from None
    offsets = np.array([r[0] for r in ranges], dtype=np.int64)
    lengths = np.array([r[1] - r[0] for r in ranges], dtype=np.int64)
    cols = _pointer_columns(file_id, n, 0, offsets >> JSONL_BLOCK_SHIFT)
    cols["_offset"] = pa.array(offsets)
    cols["_length"] = pa.array(lengths)
    cols["_bytes"] = pa.array([s["image_bytes"] + len(s["caption"].encode()) for s in samples], pa.int64())
    cols["key"] = pa.array([s["key"] for s in samples], pa.string())
    cols["image_format"] = pa.array([s["image_format"] for s in samples], pa.string())
    cols["image_bytes"] = pa.array([s["image_bytes"] for s in samples], pa.int64())
    if names:
        for name in fields.column_names:
            cols[name] = fields.column(name)
    table = pa.table(cols)
    record = pa.schema([("key", pa.string()), ("image", pa.binary()), ("image_format", pa.string()),
                        ("image_bytes", pa.int64()), ("caption", pa.string())]
                       + ([fields.schema.field(n) for n in fields.column_names] if names else []))
    return table, record
