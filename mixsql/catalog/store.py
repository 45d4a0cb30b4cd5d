"""The catalog: a directory of immutable Parquet tables queried through an embedded DuckDB.

Layout of ``DIR`` (default ``./.mixsql``)::

    catalog.json                    the commit point: datasets, their versions and table paths
    datasets/<name>-<version>/      one immutable directory per registered dataset version
        samples-<file>.parquet      one row per sample: pointer columns (file, row, block, byte range) + properties;
                                    parts of consecutive files, in file order
        files.parquet               one row per source file: URL, format, size, mtime, row groups
    tokenizers/<fingerprint>.json   the tokenizers that datasets were counted with (``tokens``)
    counts/<key>.json               binding's counts per component (``bind``), keyed by versions and predicates
    plans/<key>/                    compiled plans (``manifest``), keyed by versions, statement and parameters
    caches/<key>/                   compacted caches (``compact``), keyed by versions, predicates and columns
    .lock                           held (flock) only by a process that registers (or collects: ``gc``)

A replaced, appended-to or dropped dataset's earlier version stays until ``mixsql gc`` (``gc``)
finds that no plan was compiled from it and no process binds against it.

Why not a ``.duckdb`` file: DuckDB lets one process write a database file and no process read it
meanwhile, so a notebook holding the catalog would block a registration, and a registration would
block 256 ranks starting together. Here readers never take a lock: they read ``catalog.json``
(replaced atomically, ``atomic.write_text``) and query the immutable Parquet tables through their
own in-memory DuckDBs (``session`` for user SQL, ``engine`` for mixsql's own work). A writer
builds the new version in a temporary directory and commits by replacing ``catalog.json``; any
failure or interruption before that leaves the catalog as it was.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import threading
import time
import typing as t
import uuid
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixsql import atomic
from mixsql import tokens as tokens_
from mixsql.catalog import gc as gc_
from mixsql import fs as mfs
from mixsql.catalog import scan
from mixsql.catalog.duck import ident
from mixsql.catalog.engine import Engine
from mixsql.catalog.info import DatasetInfo, FILES_SCHEMA, known
from mixsql.catalog.session import queries, query_error, user_session
from mixsql.errors import CatalogError, DataError, MixSQLError

FORMAT = 3
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_PREFIX = "mixsql_"
DEFAULT_CONTENT = ("text",)


class Catalog:
    """Open (and create if missing) the catalog in ``path``."""

    def __init__(self, path: str | os.PathLike[str] = ".mixsql", *, create: bool = True) -> None:
        if "://" in os.fspath(path) or "::" in os.fspath(path):
            raise CatalogError(f"the catalog must be a local directory, not {os.fspath(path)!r}",
                               hint="keep the catalog on a local (or shared POSIX) filesystem; the data files it "
                                    "indexes may be in object stores (register s3://... URLs)")
        self.path = Path(path).expanduser().absolute()
        self._index_path = self.path / "catalog.json"
        if not self._index_path.exists():
            if not create:
                raise CatalogError(f"no mixsql catalog at {self.path}",
                                   hint="register a dataset first: mixsql --catalog DIR register NAME PATH...")
            self.path.mkdir(parents=True, exist_ok=True)
            with self._write_lock():
                if not self._index_path.exists():
                    self._write_index({"format": FORMAT, "datasets": {}})
        self._stamp: tuple[int, int, int] | None = None
        self._index: dict[str, t.Any] = {}
        self._con: duckdb.DuckDBPyConnection | None = None
        self._engine: Engine | None = None
        self._load()

    # -- reading ---------------------------------------------------------------------------------

    def _load(self) -> bool:
        """Re-read catalog.json if another process committed since; True if it changed."""
        for attempt in range(50):
            try:
                st = os.stat(self._index_path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if stamp == self._stamp:
                    return False
                index = json.loads(self._index_path.read_text(encoding="utf-8"))
                break
            except FileNotFoundError:
                raise CatalogError(f"the catalog at {self.path} was removed") from None
            except json.JSONDecodeError:
                time.sleep(0.01 * (attempt + 1))  # not on POSIX (os.replace is atomic), but on odd filesystems
        else:
            raise CatalogError(f"{self._index_path} is not valid JSON", hint="restore it or remove the catalog directory")
        if index.get("format") != FORMAT:
            raise CatalogError(f"the catalog at {self.path} has format {index.get('format')}; this mixsql reads {FORMAT}",
                               hint="remove the directory and register the datasets again")
        self._index, self._stamp = index, stamp
        if self._con is not None:
            self._con.close()
            self._con = None
        self._engine = None  # not closed: a binding in flight keeps the state it started from
        return True

    def datasets(self) -> list[str]:
        """Names of the registered datasets, sorted."""
        self._load()
        return sorted(self._index["datasets"])

    def dataset(self, name: str) -> DatasetInfo:
        """The registered version of dataset ``name``."""
        self._load()
        try:
            entry = self._index["datasets"][name]
        except KeyError:
            raise CatalogError(f"unknown dataset {name!r}", hint=known(self._index["datasets"])) from None
        return DatasetInfo(
            name=name, version=entry["version"], samples=entry["samples"], bytes=entry["bytes"],
            content=tuple(entry["content"]), sources=tuple(entry["sources"]),
            registered_at=entry["registered_at"], directory=self.path / entry["directory"],
            record_schema_b64=entry.get("record_schema", ""), tokenizer=({**entry["tokenizer"], "path": str(self.path / entry["tokenizer"]["path"])}
                       if entry.get("tokenizer") else None),
            images=tuple(entry.get("images", ())),
            parts=tuple(entry.get("parts", ("samples.parquet",))),
            earlier=tuple(entry.get("earlier", ())),
        )

    @property
    def version(self) -> str:
        """Content version of the whole catalog: changes whenever any dataset's data changes."""
        self._load()
        parts = sorted(f"{n}={e['version']}" for n, e in self._index["datasets"].items())
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def session(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB that user SQL runs in: one view per dataset, rebuilt when the catalog changes.

        It cannot open a file at all (external access off, no allowed paths, no replacement scans
        of Python variables, configuration locked): its views scan Arrow datasets that this process
        opened read-only. Nothing run here can write a file, and mixsql's own binding and planning
        never run here (``engine``), so a session can change nothing that another one computes.
        """
        self._load()
        if self._con is None:
            self._con = user_session(self._infos(), None)
        return self._con

    def engine(self) -> "Engine":
        """mixsql's private DuckDB over the catalog as committed now (see ``Engine``)."""
        self._load()
        if self._engine is None:
            self._engine = Engine(self._infos(), self.version)
        return self._engine

    def interrupt(self) -> None:
        """Interrupt whatever this process runs in the catalog's DuckDBs (Ctrl-C in the shell)."""
        for con in (self._con, self._engine and self._engine.con):
            if con is not None:
                con.interrupt()

    def _infos(self) -> dict[str, DatasetInfo]:
        return {n: self.dataset(n) for n in sorted(self._index["datasets"])}

    def sql(self, query: str, *, plan: str | os.PathLike[str] | None = None) -> pa.Table:
        """Run read-only SQL (queries: SELECT, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, and EXPLAIN
        of a query) over the catalog; with ``plan`` (an exported plan's directory) also over its
        ``manifest`` and ``lineage`` tables."""
        con = self.session() if plan is None else user_session(self._infos(), Path(plan))
        statements = queries(con, query)
        try:
            result = None
            for st in statements:
                result = con.sql(st)
            assert result is not None
            return result.to_arrow_table()
        except duckdb.Error as e:
            raise query_error(e, query) from None

    # -- writing ---------------------------------------------------------------------------------

    def _write_lock(self, timeout: float = 600.0) -> t.ContextManager[bool]:
        return atomic.locked(self.path / ".lock", timeout=timeout, busy=lambda: CatalogError(
            f"another process is registering into {self.path}", hint="wait for it to finish and try again"))

    def _write_index(self, index: dict[str, t.Any]) -> None:
        atomic.write_text(self._index_path, json.dumps(index, indent=1, sort_keys=True), sync=True)

    def register(
        self,
        name: str,
        paths: t.Sequence[str],
        *,
        replace: bool = False,
        content: t.Sequence[str] | None = None,
        tokenizer: t.Any = None,
        tokens: str | None = None,
        eos: str | int | None = None,
        images: t.Sequence[str] | None = None,
        progress: t.Callable[[int, int, str], None] | None = None,
        append: bool = False,
        ray: str | None = None,
    ) -> DatasetInfo:
        """Index the samples of the files that ``paths`` name as dataset ``name`` (``progress`` is
        called with (files done, files, file) as the scan goes).

        ``append`` adds the files to a registered dataset as a new version without scanning its
        files again: they keep their ids and rows, the new ones follow, with the dataset's content,
        tokenizer and image columns. Plans and lineage of the earlier version stay valid.

        ``content`` names the fields that stay in the source files (default ``["text"]``); every
        other field becomes a property with its own type. With ``tokenizer`` (a tokenizer.json path
        or a ``tokenizers.Tokenizer``), every sample also gets ``n_tokens``, the tokens of its
        content field, and the dataset records the tokenizer (a copy is kept in ``tokenizers/``).
        With ``tokens`` (and the ``tokenizer`` the ids belong to), that field holds each sample's
        token ids (a list of integers), used as they are: ``n_tokens`` is its length, and it is a
        content field (the default content is then that field alone).
        Flat token arrays (``.npy`` of uint16/uint32, documents separated by the tokenizer's EOS or
        ``eos``) register as one sample per document, with the properties of a ``.parquet``/``.jsonl``
        file of the same stem beside each, if any; their content is the field ``token_ids``.
        WebDataset shards (``.tar``) register one sample per key (``images``): content ``image`` and
        ``caption``, properties ``key``, ``image_format``, ``image_bytes`` and the ``.json`` fields.
        In Parquet, columns of bytes (or the Hugging Face image struct) are content, never
        properties; ``images`` names the image columns (default: such columns named image, jpg, png ...).
        ``ray`` (an address, or "" for the cluster ``RAY_ADDRESS`` names or a local one) scans the
        files as Ray tasks, a range of files each, which write their parts of the new version into
        the catalog's directory (on a cluster of several machines it must be on a filesystem every
        node sees); the result is the same catalog as a scan on this machine's cores.
        All or nothing: on any error the catalog is exactly as it was.
        """
        if ray is not None:  # first: on the command line, a word after a bare --ray is taken for its address
            from mixsql import cluster

            cluster.check_address(ray)
        _check_name(name)
        urls = mfs.expand(paths)
        previous: DatasetInfo | None = None
        if append:
            previous = self.dataset(name)
            if replace:
                raise CatalogError("--append adds files to a dataset and --replace registers it anew: choose one")
            content, tokenizer, tokens, eos, images = self._appending(previous, content, tokenizer, tokens, eos, images)
        image_columns: list[str] = []
        shards = [u for u in urls if mfs.file_format(u)[0] == "tar"]
        if shards:
            if len(shards) != len(urls):
                other = next(u for u in urls if u not in shards)
                raise CatalogError(f"{other} is not a WebDataset shard, and a dataset of .tar shards holds nothing "
                                   "else", hint="register the other files as another dataset, and mix the two")
            if tokenizer is not None or tokens is not None or images is not None or content:
                raise CatalogError(f"{shards[0]}: WebDataset shards take no --content, --images, --tokenizer or "
                                   "--tokens", hint="their content is each sample's image and caption")
            content, image_columns = ("image", "caption"), ["image"]
        elif all(mfs.file_format(u)[0] == "parquet" for u in urls):
            content, image_columns = _parquet_content(urls[0], content, images)
        elif images is not None:
            raise CatalogError("images= names image columns of Parquet files", hint="JSONL holds no image bytes")
        arrays = [u for u in urls if mfs.file_format(u)[0] == "npy"]
        npy_eos = None
        if arrays:
            stems = {u[: -len(".npy")] for u in arrays}
            urls = [u for u in urls if u in arrays or u.rsplit(".", 1)[0] not in stems]  # sidecars are not data
            if len(urls) != len(arrays):
                other = next(u for u in urls if u not in arrays)
                raise CatalogError(f"{other} is not a flat token array, and a dataset of .npy token arrays holds "
                                   "nothing else", hint="register the other files as another dataset")
            if tokenizer is None:
                raise CatalogError(f"{arrays[0]} holds token ids, which need the tokenizer they belong to",
                                   hint="add --tokenizer PATH (API: tokenizer=...)")
            tokens, content = scan.NPY_FIELD, (scan.NPY_FIELD,)
        if tokens is not None:
            if tokenizer is None:
                raise CatalogError(f"--tokens {tokens} needs the tokenizer the ids belong to (its vocabulary and "
                                   "end-of-text token)", hint="add --tokenizer PATH (API: tokenizer=...)")
            content = tuple(content) if content else (tokens,)
            if tokens not in content:
                content = content + (tokens,)
        content = tuple(content) if content else DEFAULT_CONTENT
        tok = None
        if tokenizer is not None:
            tok = tokens_.load(tokenizer)
            if arrays:
                npy_eos = tok.eos_id(eos)
            if tokens is None and len(content) != 1:
                raise CatalogError(f"a tokenizer counts the tokens of one content field, and {name!r} has "
                                   f"{len(content)} ({', '.join(content)})",
                                   hint="register with one --content field, or name a column of token ids "
                                        "with --tokens")
        with self._write_lock():
            self._stamp = None
            self._load()
            old = self._index["datasets"].get(name)
            if previous is not None:
                if old is None or old["version"] != previous.version:
                    raise CatalogError(f"dataset {name!r} changed while files were being added to it",
                                       hint="add them again")
                known_urls = set(pq.read_table(previous.files_path, columns=["url"]).column("url").to_pylist())
                again = [u for u in urls if u in known_urls]
                if again:
                    raise CatalogError(f"{again[0]} is already a file of dataset {name!r}",
                                       hint="--append adds new files; to scan changed files again, use --replace")
            elif old is not None and not replace:
                raise CatalogError(f"dataset {name!r} is already registered",
                                   hint="use --replace (API: replace=True) to register it again, or --append "
                                        "(API: append=True) to add files to it")
            _sweep(self.path)
            tmp = self.path / f".tmp-{uuid.uuid4().hex}"
            tmp.mkdir(parents=True)
            try:
                field = tokens if tokens is not None else content[0]
                with atomic.writing(self.path, f"dataset {name!r}"):
                    entry = _build(tmp, urls, content, progress, tok, field, tokens is not None, npy_eos,
                                   image_columns, previous, ray)
                entry["sources"] = list(previous.sources if previous is not None else ()) + [str(p) for p in paths]
                if previous is not None:
                    entry["earlier"] = [previous.version, *previous.earlier]
                if image_columns:
                    entry["images"] = image_columns
                if tok is not None:
                    entry["tokenizer"] = self._keep_tokenizer(tok, field, "ids" if tokens is not None else "text")
                    if npy_eos is not None:
                        entry["tokenizer"]["separator"] = npy_eos
                    if previous is not None and previous.tokenizer is not None:  # loaded from the catalog's copy
                        entry["tokenizer"]["source"] = previous.tokenizer["source"]
                final = self.path / "datasets" / f"{name}-{entry['version']}-{uuid.uuid4().hex[:8]}"
                final.parent.mkdir(exist_ok=True)
                os.rename(tmp, final)
                entry["directory"] = str(final.relative_to(self.path))
                index = json.loads(json.dumps(self._index))
                index["datasets"][name] = entry
                try:
                    self._write_index(index)
                except BaseException:
                    shutil.rmtree(final, ignore_errors=True)
                    raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            # the earlier version (replaced or appended to) stays for the plans and processes that use
            # it, until ``mixsql gc`` finds neither
            self._load()
            return self.dataset(name)

    def _appending(self, previous: DatasetInfo, content: t.Sequence[str] | None, tokenizer: t.Any,
                   tokens: str | None, eos: str | int | None,
                   images: t.Sequence[str] | None) -> tuple[t.Any, t.Any, str | None, t.Any, t.Any]:
        """The options an append scans with: the dataset's own; any given must be the same."""
        kept = previous.tokenizer
        if content and tuple(content) != previous.content:
            raise CatalogError(f"dataset {previous.name!r} has content {', '.join(previous.content)}, not "
                               f"{', '.join(content)}", hint="--append scans new files as the dataset's files were: "
                                                             "leave out --content")
        if images is not None and tuple([images] if isinstance(images, str) else images) != previous.images:
            raise CatalogError(f"dataset {previous.name!r} has image columns {', '.join(previous.images) or '(none)'}",
                               hint="leave out --images when appending")
        if tokenizer is not None:
            given = tokens_.load(tokenizer)
            if kept is None or given.fingerprint != kept["fingerprint"]:
                raise CatalogError(f"dataset {previous.name!r} was counted with "
                                   f"{'no tokenizer' if kept is None else 'tokenizer ' + kept['fingerprint']}, not "
                                   f"{given.fingerprint}", hint="leave out --tokenizer when appending: the "
                                                                "dataset's own is used")
        ids = kept["field"] if kept is not None and kept.get("kind") == "ids" else None
        if tokens is not None and tokens != ids:
            raise CatalogError(f"dataset {previous.name!r} takes token ids from {ids or 'no column'}, not {tokens}",
                               hint="leave out --tokens when appending")
        formats = set(pq.read_table(previous.files_path, columns=["format"]).column("format").to_pylist())
        separator = kept.get("separator") if kept is not None else None
        given = None if "tar" in formats or separator is not None else previous.content  # those set their own
        return (given, kept["path"] if kept is not None else None, ids, separator if eos is None else eos,
                None if "tar" in formats else list(previous.images) or None)

    def _keep_tokenizer(self, tok: tokens_.Tokenizer, field: str, kind: str) -> dict[str, t.Any]:
        """Store the tokenizer's JSON under its fingerprint (immutable, shared by datasets) and
        return the dataset's record of it."""
        path = self.path / "tokenizers" / f"{tok.fingerprint}.json"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            atomic.write_text(path, tok.json)
        return {"fingerprint": tok.fingerprint, "path": str(path.relative_to(self.path)), "field": field,
                "kind": kind, "source": tok.source, "vocab_size": tok.vocab_size}

    def drop(self, name: str) -> None:
        """Remove dataset ``name`` from the catalog (its source files are untouched)."""
        with self._write_lock():
            self._stamp = None
            self._load()
            if name not in self._index["datasets"]:
                raise CatalogError(f"unknown dataset {name!r}", hint=known(self._index["datasets"]))
            index = json.loads(json.dumps(self._index))
            index["datasets"].pop(name)
            self._write_index(index)  # its directory stays for what uses it, until ``mixsql gc``
            self._load()

    @property
    def cache_limit(self) -> int | None:
        """Bytes this catalog keeps its plans and compacted caches under (``set_cache_limit``), or None."""
        self._load()
        return self._index.get("settings", {}).get("cache_max_bytes")

    def set_cache_limit(self, max_bytes: int | None) -> None:
        """Keep plans and compacted caches under ``max_bytes`` from now on (None: no limit): every
        process that compiles a plan or builds a cache then removes the least recently used ones no
        process uses until they fit (``gc.prune``). A setting of the catalog, not of one process."""
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
            raise CatalogError(f"a cache limit is a number of bytes >= 0, not {max_bytes!r}")
        with self._write_lock():
            self._stamp = None
            self._load()
            index = json.loads(json.dumps(self._index))
            settings = index.setdefault("settings", {})
            if max_bytes is None:
                settings.pop("cache_max_bytes", None)
            else:
                settings["cache_max_bytes"] = max_bytes
            self._write_index(index)
            self._load()

    def prune(self) -> gc_.Collected | None:
        """Down to the cache limit, if one is set, without waiting for another writer (``gc.prune``)."""
        return gc_.prune(self)

    def gc(self, *, all_unused: bool = False, max_bytes: int | None = None,
           grace_seconds: float = gc_.DEFAULT_GRACE_SECONDS, dry_run: bool = False) -> gc_.Collected:
        """Remove what this catalog no longer needs and no process uses (``catalog.gc``)."""
        return gc_.collect(self, all_unused=all_unused, max_bytes=max_bytes, grace_seconds=grace_seconds,
                           dry_run=dry_run)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        self._engine = None


class _TextCounter:
    """Tokens per record of a content column of text, tokenized."""

    def __init__(self, tok: tokens_.Tokenizer, field: str) -> None:
        self.tok, self.field = tok, field

    def __call__(self, column: pa.Array, url: str, start: int) -> t.Any:
        kind = column.type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
            raise DataError(f"{url}: content field {self.field!r} is {kind}, not text, so it cannot be tokenized",
                            file=url, hint="register text, or name a column of token ids with --tokens COLUMN")
        return self.tok.counts(column.to_pylist())


class _IdCounter:
    """Tokens per record of a column of token ids: its lengths, each id checked against the vocabulary."""

    def __init__(self, tok: tokens_.Tokenizer, field: str) -> None:
        self.vocab, self.field = tok.vocab_size, field

    def __call__(self, column: pa.Array, url: str, start: int) -> t.Any:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        kind = column.type
        if not scan._is_id_list(kind):
            raise DataError(f"{url}: --tokens column {self.field!r} is {kind}, not a list of integer token ids",
                            file=url, hint="name a column of type list<int32>, list<uint32>, list<int64> or "
                                           "list<uint16>, or register the text with --tokenizer alone")
        values = column.flatten()
        if len(values):
            bounds = pc.min_max(values).as_py()
            if bounds["min"] is not None and (bounds["min"] < 0 or bounds["max"] >= self.vocab):
                bad = bounds["min"] if bounds["min"] < 0 else bounds["max"]
                lengths = np.asarray(pc.fill_null(pc.list_value_length(column), 0))
                owner = np.searchsorted(np.cumsum(lengths), int(np.flatnonzero(
                    np.asarray(values.fill_null(0)) == bad)[0]), side="right")
                raise DataError(f"{url}, row {start + int(owner)}: token id {bad} in {self.field!r} is outside the "
                                f"tokenizer's vocabulary of {self.vocab:,}", file=url, row=start + int(owner),
                                hint="register with the tokenizer these ids come from")
        return np.asarray(pc.fill_null(pc.list_value_length(column), 0), dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class _ScanJob:
    """What scanning files of one registration needs, picklable: a thread, or a Ray task on another
    machine, scans a range of them with ``scan_range`` and writes its parts into ``tmp``."""

    tmp: str
    urls: tuple[str, ...]
    first: int  # the file id of urls[0] (an append's new files follow the dataset's)
    content: tuple[str, ...]
    tokenizer: tuple[str, str] | None  # (JSON, source)
    field: str
    ids: bool
    npy_eos: int | None
    image_columns: tuple[str, ...]

    def counter(self) -> scan.Counter | None:
        if self.tokenizer is None:
            return None
        tok = tokens_.from_json(*self.tokenizer)
        return _IdCounter(tok, self.field) if self.ids else _TextCounter(tok, self.field)


Scanned = list[tuple[pa.Schema, dict[str, t.Any], "_Part | None"]]  # per file: record schema, file row, new part


def _scan_file(job: _ScanJob, count: scan.Counter | None, file_id: int, url: str
               ) -> tuple[t.Iterator[pa.Table], pa.Schema, dict[str, t.Any], mfs.SourceFile]:
    """Index one file: its catalog rows (as they are scanned: a Parquet file a batch at a time), its
    record schema, its row of the file table, and what it was when scanned (``_unchanged``)."""
    src = mfs.describe(url)
    row_groups: list[int] | None = None
    if src.format == "parquet":
        tables, row_groups, record = scan.scan_parquet(src, file_id, job.content, count)
        rows = sum(row_groups)
    else:
        if src.format == "npy":
            assert job.tokenizer is not None and job.npy_eos is not None
            table, record = scan.scan_npy(src, file_id, job.npy_eos, tokens_.from_json(*job.tokenizer).vocab_size)
        elif src.format == "tar":
            table, record = scan.scan_tar(src, file_id)
        else:
            table, record = scan.scan_jsonl(src, file_id, job.content, count)
        tables, rows = iter([table]), table.num_rows
    if count is not None and scan.N_TOKENS in record.names and src.format != "npy":
        raise DataError(f"{url} has a field {scan.N_TOKENS!r}, which registering with a tokenizer adds",
                        file=url, hint="rename the field in the data, or register without --tokenizer")
    for column in job.image_columns:  # an image is its encoded bytes in every record, whatever the layout
        at = record.get_field_index(column)
        if at < 0 or not scan.blob_column(record.field(column).type):
            kind = "missing" if at < 0 else f"of type {record.field(column).type}"
            raise DataError(f"{url}: image column {column!r} is {kind}, not image bytes", file=url,
                            hint="an image column holds binary, or a struct with a binary field 'bytes' (the "
                                 "Hugging Face layout)")
        record = record.set(at, pa.field(column, pa.binary()))
    return tables, record, {"file_id": file_id, "url": url, "format": src.format, "compression": src.compression,
                            "size": src.size, "mtime": src.mtime, "rows": rows, "row_groups": row_groups,
                            "etag": src.etag}, src


def _unchanged(url: str, src: mfs.SourceFile) -> None:
    """The file is still what it was when its scan began."""
    if mfs.describe(url) != src:
        raise CatalogError(f"{url} changed while it was being registered", hint="register again once it is stable")


def scan_range(job: _ScanJob, start: int, stop: int, done: t.Callable[[str], None] | None = None) -> Scanned:
    """Files start..stop-1 of ``job`` in order, each run of them with one schema written to one part
    of the samples table (complete once renamed into place); ``done`` is told each file scanned."""
    count = job.counter()
    out: Scanned = []
    part: _Part | None = None
    try:
        for i in range(start, stop):
            tables, record, row, src = _scan_file(job, count, job.first + i, job.urls[i])
            for k, table in enumerate(tables):
                if k == 0:
                    if part is None or part.schema != table.schema:
                        if part is not None:
                            part.close()
                        part = _Part(Path(job.tmp) / f"samples-{job.first + i:06d}.parquet", table.schema,
                                     job.urls[i])
                        out.append((record, row, part))
                    else:
                        out.append((record, row, None))
                elif table.schema != part.schema:  # pragma: no cover - batches of one file share a schema
                    table = table.cast(part.schema)
                assert part is not None
                part.write(table)
            assert part is not None
            part.end_file()
            _unchanged(job.urls[i], src)
            if done is not None:
                done(job.urls[i])
        if part is not None:
            part.close()
            part = None
    finally:
        if part is not None:
            part.abandon()
    return out


def _build(tmp: Path, paths: t.Sequence[str], content: tuple[str, ...],
           progress: t.Callable[[int, int, str], None] | None = None,
           tok: tokens_.Tokenizer | None = None, field: str = "", ids: bool = False,
           npy_eos: int | None = None, image_columns: t.Sequence[str] = (),
           previous: DatasetInfo | None = None, ray: str | None = None) -> dict[str, t.Any]:
    """Scan every file (``paths``: expanded URLs) into parts, unify the schemas, and write the
    dataset's two tables. With ``previous`` (an append), its files come first, unchanged: their
    parts are linked into the new version (or written again where the union widened their schema)
    and the new files' ids follow theirs. With ``ray`` (an address; "" for the local or configured
    cluster), Ray tasks scan the files, a range each, instead of this machine's threads."""
    urls = list(paths)
    before = pq.read_table(previous.files_path).to_pylist() if previous is not None else []
    job = _ScanJob(str(tmp), tuple(urls), len(before), tuple(content),
                   None if tok is None else (tok.json, tok.source), field, ids, npy_eos, tuple(image_columns))
    if ray is not None:
        from mixsql import cluster

        with cluster.connected(ray) as cpus:
            ranges = _file_ranges(len(urls), cpus)
            finished = [0]

            def told(i: int) -> None:
                finished[0] += ranges[i][1] - ranges[i][0]
                if progress is not None:
                    progress(finished[0], len(urls), urls[ranges[i][1] - 1])

            scanned = cluster.run(scan_range, [(job, a, b) for a, b in ranges], told, "scanning files")
    else:
        scanned = _scan_threads(job, progress)
    records: list[tuple[str, pa.Schema]] = []
    file_rows: list[dict[str, t.Any]] = []
    parts: list[_Part] = []
    for result in scanned:
        for record, row, part in result:
            records.append((row["url"], record))
            file_rows.append(row)
            if part is not None:
                parts.append(part)
    if progress is not None:
        progress(len(urls), len(urls), "writing the catalog tables")
    kept: list[tuple[Path, pa.Schema]] = []
    if previous is not None:
        kept = [(path, pq.read_schema(path)) for path in previous.samples_paths]
        records.insert(0, (f"the files of {previous.name!r} registered before", previous.record_schema))
        file_rows[:0] = before
    schema = _as_stored(scan.unify([(f"the files of {previous.name!r} registered before", k[1]) for k in kept[:1]]
                                   + [(p.url, p.schema) for p in parts]))
    record_schema = scan.unify(records)
    spelled: dict[str, tuple[str, str]] = {}
    for url, record in records:  # one SQL column per name, across the files too
        for name in record.names:
            other = spelled.setdefault(name.lower(), (name, url))
            if other[0] != name:
                raise DataError(f"field {other[0]!r} in {other[1]} and field {name!r} in {url} differ only in case, "
                                "and SQL cannot tell them apart", file=url,
                                hint="rename one of them in the data (or register the files as separate datasets)")
    if sum(r["rows"] for r in file_rows) == 0:
        raise CatalogError(f"{', '.join(paths)}: no file holds a record", hint="register files that hold samples")
    for part in parts:
        if _as_stored(part.schema) != schema:  # a file whose schema the union widened: its part is written again
            table = _conform(pq.read_table(part.path), schema)
            part.path.unlink()
            pq.write_table(table, part.path, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    names = []
    for path, part_schema in kept:  # immutable files: the new version shares them
        if part_schema != schema:
            pq.write_table(_conform(pq.read_table(path), schema), tmp / path.name, compression="zstd",
                           row_group_size=ROW_GROUP_ROWS)
        else:
            try:
                os.link(path, tmp / path.name)
            except OSError:
                shutil.copy2(path, tmp / path.name)
        names.append(path.name)
    samples = sum(p.rows for p in parts) + (previous.samples if previous is not None else 0)
    total_bytes = sum(p.bytes for p in parts) + (previous.bytes if previous is not None else 0)
    pq.write_table(pa.Table.from_pylist(file_rows, schema=FILES_SCHEMA), tmp / "files.parquet")
    fingerprint = json.dumps({
        "format": FORMAT, "content": content, "schema": [f"{f.name}:{f.type}" for f in schema],
        "files": [[r["url"], r["size"], r["mtime"], r["format"], r["compression"]] + ([r["etag"]] if r["etag"] else [])
                  for r in file_rows],
        "tokenizer": tok.fingerprint if tok is not None else None, "token_ids": field if ids else None,
        "separator": npy_eos,
    }, sort_keys=True)
    return {
        "version": hashlib.sha256(fingerprint.encode()).hexdigest()[:16],
        "samples": samples,
        "bytes": total_bytes,
        "files": len(file_rows),
        "parts": names + [p.path.name for p in parts],
        "content": list(content),
        "record_schema": base64.b64encode(record_schema.serialize().to_pybytes()).decode("ascii"),
        "sources": list(previous.sources if previous is not None else ()) + [str(p) for p in paths],
        "registered_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _scan_threads(job: _ScanJob, progress: t.Callable[[int, int, str], None] | None) -> list[Scanned]:
    """``scan_range`` over consecutive file ranges on every core of this machine (threads: decoding
    releases the GIL); the first failure in file order is the one raised."""
    done = [0, ""]
    lock = threading.Lock()

    def told(url: str) -> None:
        with lock:
            done[0] += 1
            done[1] = url

    workers = max(1, min(len(job.urls), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="mixsql-register") as pool:
        pending = [pool.submit(scan_range, job, a, b, told) for a, b in _file_ranges(len(job.urls), workers)]
        try:
            while True:
                finished, waiting = concurrent.futures.wait(pending, timeout=0.2,
                                                            return_when=concurrent.futures.FIRST_EXCEPTION)
                if progress is not None:
                    with lock:
                        progress(done[0], len(job.urls), str(done[1]))
                failed = any(f.exception() is not None for f in finished)
                if not waiting or failed:
                    break
            if failed:
                for future in pending:
                    future.cancel()
                concurrent.futures.wait(pending)
                raise next(f.exception() for f in pending  # the first failure in file order is the one reported
                           if not f.cancelled() and f.exception() is not None)  # type: ignore[misc]
            return [future.result() for future in pending]
        except BaseException:
            for future in pending:
                future.cancel()
            raise


ROW_GROUP_ROWS = 1 << 17  # the catalog's row groups: DuckDB scans them in parallel


class _Part:
    """One Parquet file of a dataset's samples table, written as its files are scanned, under a
    name of its own until it is complete (a task killed and run again never leaves half a part)."""

    def __init__(self, path: Path, schema: pa.Schema, url: str) -> None:
        self.path, self.schema, self.url = path, schema, url
        self.rows = self.bytes = 0
        self._partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self._partial, schema, compression="zstd")
        self._pending: list[pa.Table] = []  # a file's rows not yet written: less than a row group
        self._pending_rows = self._file_rows = 0

    def write(self, table: pa.Table) -> None:
        """A file's rows, batch by batch: written in row groups of ROW_GROUP_ROWS from the file's
        first row (the rest at ``end_file``), as if the file's rows were written at once."""
        assert self._writer is not None
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._file_rows += table.num_rows
        self.rows += table.num_rows
        self.bytes += int(pc.sum(table.column("_bytes")).as_py() or 0)
        if self._pending_rows >= ROW_GROUP_ROWS:
            whole = pa.concat_tables(self._pending)
            cut = self._pending_rows // ROW_GROUP_ROWS * ROW_GROUP_ROWS
            self._writer.write_table(whole.slice(0, cut), row_group_size=ROW_GROUP_ROWS)
            self._pending, self._pending_rows = [whole.slice(cut)], self._pending_rows - cut

    def end_file(self) -> None:
        """The rest of a file's rows, as its last row group."""
        assert self._writer is not None
        if self._pending_rows or not self._file_rows:  # an empty file writes its empty table, as it always did
            self._writer.write_table(pa.concat_tables(self._pending) if self._pending else
                                     self.schema.empty_table(), row_group_size=ROW_GROUP_ROWS)
        self._pending, self._pending_rows, self._file_rows = [], 0, 0

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            os.replace(self._partial, self.path)

    def abandon(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        with contextlib.suppress(OSError):
            self._partial.unlink()


def _as_stored(schema: pa.Schema) -> pa.Schema:
    """``schema`` as Parquet stores and returns it (a list's item is named ``element`` there): the
    form parts are compared in and a version is computed from, whether they were just written or
    registered before."""
    out = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), out)
    return pq.read_schema(pa.BufferReader(out.getvalue())).remove_metadata()


def _file_ranges(files: int, workers: int) -> list[tuple[int, int]]:
    """Consecutive file ranges, a few per worker so that uneven files still keep every worker busy;
    each range is written to its own part (or a few, where schemas change)."""
    count = min(files, workers * 4)
    edges = [files * i // count for i in range(count + 1)] if count else [0]
    return [(edges[i], edges[i + 1]) for i in range(count)]


def _parquet_content(url: str, content: t.Sequence[str] | None,
                     images: t.Sequence[str] | None) -> tuple[tuple[str, ...], list[str]]:
    """Content and image columns of a Parquet dataset, from its first file's schema: columns of
    bytes are content; the image columns are ``images``, or the byte columns named like images."""
    with mfs.open_binary(url) as fh:
        try:
            schema = pq.read_schema(fh)
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{url} is not a readable Parquet file: {e}", file=url) from None
    blobs = [n for n in schema.names if scan.blob_column(schema.field(n).type)]
    if images is not None:
        if isinstance(images, str):
            images = [images]
        for column in images:
            if column not in schema.names:
                raise CatalogError(f"{url} has no column {column!r} to read images from",
                                   hint=f"its columns are {', '.join(schema.names)}")
            if column not in blobs:
                raise DataError(f"{url}: image column {column!r} is of type {schema.field(column).type}, not image "
                                "bytes", file=url, hint="an image column holds binary, or a struct with a binary "
                                                        "field 'bytes' (the Hugging Face layout)")
        image_columns = list(images)
    else:
        image_columns = [n for n in blobs if n.lower() in scan.IMAGE_NAMES]
    given = tuple(content) if content else tuple(c for c in DEFAULT_CONTENT if c in schema.names or not blobs)
    return given + tuple(b for b in blobs if b not in given), image_columns


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            columns.append(col if col.type == f.type else col.cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _sweep(root: Path) -> None:
    """Remove temporary directories left by registrations that were killed (we hold the lock)."""
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(".catalog.json.*"):  # atomic.replacing's temporary names
        with contextlib.suppress(OSError):
            stale.unlink()


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise CatalogError(f"invalid dataset name {name!r}",
                           hint="use letters, digits and underscores, starting with a letter or underscore")
    if name.lower().startswith(RESERVED_PREFIX):
        raise CatalogError(f"dataset names starting with {RESERVED_PREFIX!r} are reserved for mixsql's own tables")


__all__ = ["Catalog", "DatasetInfo", "Engine", "MixSQLError", "ident"]
