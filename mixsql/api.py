"""The Python API: ``mixsql.connect(dir)`` → ``Connection`` → ``Mix``.

>>> import mixsql                                                   # doctest: +SKIP
>>> con = mixsql.connect(".mixsql")                                 # doctest: +SKIP
>>> con.register("corpus", ["sample_data/parquet/*.parquet"])       # doctest: +SKIP
>>> mix = con.mix("MIX 0.7 AS en WHERE language = 'en', 0.3 AS code WHERE domain = 'code' FROM corpus")  # doctest: +SKIP
>>> print(mix.explain())                                            # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import os
import typing as t
from pathlib import Path

import numpy as np
import pyarrow as pa

from mixsql import export as _export
from mixsql import manifest as _manifest
from mixsql import plan as _plan
from mixsql import state as _state
from mixsql.bind import BoundMix, bind
from mixsql.catalog import Catalog, DatasetInfo
from mixsql.catalog.gc import DEFAULT_GRACE_SECONDS
from mixsql.errors import MixSQLError
from mixsql.explain import Explanation, explain
from mixsql import planfile as _planfile
from mixsql.planfile import CompiledPlan
from mixsql.parse import parse, to_sql
from mixsql import read as _read
from mixsql import remote as _remote
from mixsql.read import DEFAULT_CACHE_BYTES, READ_SAMPLES, Reader, verify_files

if t.TYPE_CHECKING:
    from mixsql.packing import PackedPlan
    from mixsql.dataset import MixDataset
    from mixsql.compact import Compact


class Mix:
    """A MIX statement parsed and bound to one catalog version."""

    def __init__(self, bound: BoundMix, connection: "Connection") -> None:
        self._bound = bound
        self._connection = connection
        self._spec: _plan.PlanSpec | None = None
        self._compiled: CompiledPlan | None = None
        self._compact: t.Any = None  # the compacted cache ``samples`` and ``torch_dataset`` read through

    @property
    def bound(self) -> BoundMix:
        return self._bound

    @property
    def components(self) -> list[str]:
        """Component names, in statement order."""
        return self._bound.names

    @property
    def seed(self) -> int:
        return self._bound.seed

    @property
    def chunk_size(self) -> int:
        return self._bound.chunk_size

    @property
    def catalog_version(self) -> str:
        return self._bound.catalog_version

    def sql(self) -> dict[str, str]:
        """Each component's exact sample set as DuckDB SQL."""
        return {c.name: c.sql for c in self._bound.components}

    def explanation(self) -> Explanation:
        """EXPLAIN as data (``.to_dict()`` for JSON)."""
        return explain(self._bound, self._resolved())

    def explain(self, seq_len: int | None = None, *, pack: str = "mixed", eos: str | int | None = None,
                bos: str | int | None = None) -> str:
        """EXPLAIN as text: counts, weights, stream length, overlaps and compiled SQL per component;
        with ``seq_len``, also the packed stream (it compiles the plan): sequences and dropped tokens."""
        text = str(self.explanation())
        if seq_len is None:
            return text
        from mixsql.explain import render_packing

        e = self.explanation()
        summary = self.packed(seq_len, eos=eos, bos=bos, pack=pack).summary()
        return text + render_packing(summary, e.components)

    def __len__(self) -> int:
        """Samples in the stream (its LIMIT, or where it runs out under its exhaustion policy)."""
        return self.spec.shape.samples

    @property
    def spec(self) -> _plan.PlanSpec:
        """The plan's parameters (partitions resolved) and the stream's shape."""
        spec = self._resolved()
        if spec.error is not None:
            raise spec.error
        return spec

    def _resolved(self) -> _plan.PlanSpec:
        """The plan spec, with a budget error kept in it, not raised. A stream planned from token
        counts is merged here (``tokenplan``), which reads the catalog's selections."""
        if self._spec is None:
            if self._bound.in_tokens:
                from mixsql import tokenplan

                self._spec = tokenplan.resolve(self._bound, self._connection.catalog)
            else:
                self._spec = _plan.resolve(self._bound)
        return self._spec

    @property
    def partitions(self) -> int:
        return self.spec.partitions

    def plan(self, progress: t.Callable[[int, int, str], None] | None = None) -> CompiledPlan:
        """The compiled plan (cached in the catalog by dataset versions, statement and parameters);
        ``progress(done, total, component)`` is called as components are laid out."""
        if self._compiled is None:
            compiled = _manifest.cached_plan(self.spec, self._connection.catalog, progress=progress)
            verify_files(compiled)  # every file as registered: once here, then as each reader opens it
            self._compiled = compiled
        return self._compiled

    def write_plan(self, directory: str | os.PathLike[str], *, tables: bool = True) -> Path | None:
        """Write the compiled plan and its Parquet manifest and lineage to ``directory``; returns the
        manifest's path. ``tables=False`` writes the plan only (what ranks read), and returns None."""
        return _export.export(self.plan(), directory, tables)

    def samples(self, limit: int | None = None, columns: t.Sequence[str] | None = None, *,
                component: str = "name", log: t.Any = None, images: str = "bytes",
                memory_bytes: int = DEFAULT_CACHE_BYTES) -> t.Iterator[dict[str, t.Any]]:
        """The stream in plan order, in this process: dicts of the record's fields plus ``component``.

        ``columns`` restricts the fields; ``component="id"`` gives the component's index instead of its name.
        Image fields are their encoded bytes, or with ``images="pil"`` / ``"tensor"`` decoded (Pillow).
        An adaptive mixture follows the weight log ``log`` (see ``lineage``); without one, its prior weights.
        ``memory_bytes`` bounds the decoded blocks held in memory at once (default 1 GiB).
        """
        _check_limit(limit)
        if component not in ("name", "id"):
            raise MixSQLError(f"component must be 'name' or 'id', not {component!r}")
        plan = self.plan()
        if log is not None or plan.adapt is not None:
            plan = self._replayed(plan, log)
        reader = Reader(plan, columns, images=images, cache_bytes=memory_bytes, compact=self._compact)
        end = len(plan) if limit is None else min(limit, len(plan))
        ahead = _remote.settings().depth if reader.remote else _read.LOCAL_DEPTH  # full reads fetched ahead
        spans = _read_spans(end)
        reads = [plan.positions_rows(*span) for span in itertools.islice(spans, 1)]
        if reads:
            reader.prefetch(reads[0])
        # ahead of the read in use: as many samples as ``ahead`` full reads, however short the first reads
        # are, asked for at once at the start, so that their blocks decode in batches on every core
        ahead_samples = ahead * _read.READ_SAMPLES
        first = []
        for span in spans:
            first.append(plan.positions_rows(*span))
            if sum(len(r) for r in first) >= ahead_samples:
                break
        if first:
            reader.prefetch(np.concatenate(first))
        reads += first
        while reads:
            rows = reads.pop(0)
            while sum(len(r) for r in reads) < ahead_samples:  # more ahead, fetched and decoded meanwhile
                span = next(spans, None)
                if span is None:
                    break
                reads.append(plan.positions_rows(*span))
                reader.prefetch(reads[-1])
            yield from reader.samples(rows, component=component)

    def torch_dataset(self, batch_size: int | None = None, rank: int | None = None, world_size: int | None = None,
                      columns: t.Sequence[str] | None = None, *, component: str = "name",
                      start_step: int = 0, seq_len: int | None = None, tokenizer: t.Any = None,
                      eos: str | int | None = None, bos: str | int | None = None,
                      pack: str = "mixed", batched: bool = False, images: str = "bytes",
                      memory_bytes: int = DEFAULT_CACHE_BYTES) -> "MixDataset":
        """A ``torch.utils.data.IterableDataset`` of this rank's samples (see ``mixsql.world`` for the contract).

        Give the DataLoader the same ``batch_size`` and ``collate_fn=mixsql.collate``. Rank and world
        size default to torch.distributed, then RANK/WORLD_SIZE; they are data-parallel coordinates.
        ``start_step`` starts at that global batch, in O(1); ``load_state_dict`` resumes from a saved state.
        With ``seq_len``, the items are packed sequences (``sequences``) as int64 tensors, batched by
        torch's default collate; ``batch_size`` and steps then count sequences; ``pack="component"``
        fills every sequence from one component (``packing``). With ``batched=True``
        the dataset yields whole batches itself (pass ``batch_size=None`` to the DataLoader): no
        DataLoader batch size can then disagree with the dataset's, and a batch crosses the worker
        queue as one item. ``images="pil"``/``"tensor"`` decodes image fields in the workers.
        ``memory_bytes`` bounds the decoded blocks each worker holds in memory (default 1 GiB).
        """
        from mixsql.dataset import MixDataset

        return MixDataset(str(self.plan().directory), batch_size=batch_size, rank=rank, world_size=world_size,
                          columns=columns, component=component, start_step=start_step, seq_len=seq_len,
                          tokenizer=tokenizer, eos=eos, bos=bos, pack=pack, batched=batched, images=images,
                          memory_bytes=memory_bytes,
                          compact=None if self._compact is None else str(self._compact.directory))

    def cache(self, columns: t.Sequence[str] | None = None, *, directory: str | os.PathLike[str] | None = None,
              progress: t.Callable[[int, int, str], None] | None = None, build: bool = True,
              compression: str | None = None) -> "Compact":
        """The compacted cache of this mixture's components (``mixsql.compact``): the samples they
        select, with ``columns`` only (default: the content), copied once to local shards, found
        again by any statement over the same components (whatever its weights, schedule or seed).
        From then on this mixture's ``samples`` and ``torch_dataset`` read it instead of the
        sources, with the same stream; reading a column it lacks is an error. Of the processes asking
        at once (every rank of a run), one builds it and the others wait for it. ``build=False`` only
        finds one (waiting for one being built; an error if there is none). ``compression``
        (``"lz4"``, ``"zstd"``): smaller shards, each block read then decompressed; by default they
        are read in place, memory-mapped."""
        from mixsql.compact import build as build_cache

        self._compact = build_cache(self, columns, directory, progress, find_only=not build,
                                    compression=compression)
        return self._compact

    def packed(self, seq_len: int, *, tokenizer: t.Any = None, eos: str | int | None = None,
               bos: str | int | None = None, pack: str = "mixed") -> "PackedPlan":
        """The stream as packed sequences of ``seq_len`` tokens (``mixsql.packing``): how many there
        are, the tokens dropped at the end of each partition (``pack="component"``: of each
        component's stream in it), and where each one starts."""
        from mixsql.packing import PackedPlan

        return PackedPlan(self.plan(), seq_len, tokenizer=tokenizer, eos=eos, bos=bos, pack=pack)

    def sequences(self, seq_len: int, limit: int | None = None, *, tokenizer: t.Any = None,
                  eos: str | int | None = None, bos: str | int | None = None,
                  pack: str = "mixed", log: t.Any = None) -> t.Iterator[dict[str, np.ndarray]]:
        """The packed stream in this process, in order: one dict per sequence of int64 arrays of length
        ``seq_len``: ``input_ids``, ``labels`` (the next token of the packed stream), ``position_ids``
        (restarting at each document), ``document_ids`` and ``component_ids`` (``mixsql.packing``).
        Documents are joined by the tokenizer's end-of-text token (``eos``), after an optional ``bos``.
        ``pack="component"`` fills every sequence from one component's documents. An adaptive
        mixture follows the weight log ``log`` (see ``lineage``)."""
        from mixsql.packing import READ_TOKENS, PackedPlan, in_order

        _check_limit(limit)
        plan = self.plan()
        if log is not None or plan.adapt is not None:
            plan = self._replayed(plan, log)
        packed = PackedPlan(plan, seq_len, tokenizer=tokenizer, eos=eos, bos=bos, pack=pack)
        reader = Reader(packed.plan, list(packed.fields), compact=self._compact)
        end = len(packed) if limit is None else min(limit, len(packed))
        step = max(1, READ_TOKENS // packed.seq_len)
        for start in range(0, end, step):
            arrays = in_order(packed, reader, start, min(start + step, end))
            for i in range(len(arrays["input_ids"])):
                yield {name: values[i] for name, values in arrays.items()}

    def lineage(self, step: int, batch_size: int, columns: t.Sequence[str] | None = None, *,
                seq_len: int | None = None, tokenizer: t.Any = None, eos: str | int | None = None,
                bos: str | int | None = None, pack: str = "mixed", log: t.Any = None) -> pa.Table:
        """The samples of global batch ``step`` (``batch_size`` is the global batch size), in plan order:
        position, partition, component, dataset, file, row, and the requested properties from the
        catalog. Nothing before the batch is computed or read. With ``seq_len``, the batch is of
        packed sequences: one row per (sequence, document piece), with the token range it holds (and
        the requested properties of its document). For an adaptive mixture, ``log`` is the run's
        weight log (``dataset.weight_log``, or a saved ``state_dict()``): the batch is replayed from
        it without running the optimiser."""
        plan = self.plan()
        if log is not None or plan.adapt is not None:
            plan = self._replayed(plan, log)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise MixSQLError(f"batch_size must be a positive integer, not {batch_size!r}")
        if seq_len is None:
            packed = None
        else:
            from mixsql.packing import PackedPlan

            packed = PackedPlan(plan, seq_len, tokenizer=tokenizer, eos=eos, bos=bos, pack=pack)
        steps = (len(plan) if packed is None else len(packed)) // batch_size
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < steps:
            raise MixSQLError(f"step {step!r} is outside the stream: it has {steps:,} global batches of {batch_size:,}")
        start = step * batch_size
        if packed is not None:
            from mixsql.packing import lineage as packed_lineage

            table = packed_lineage(packed, start, start + batch_size)
            by_url = {(f.dataset, f.url): f.file_id for f in plan.files}
            file_ids = [by_url[(d, u)] for d, u in zip(table.column("dataset").to_pylist(),
                                                       table.column("file").to_pylist())]
        else:
            lineage = _planfile.lineage(plan, start, start + batch_size)
            files = lineage.column("file").combine_chunks().indices.to_pylist()  # plan file of each sample
            file_ids = [plan.files[f].file_id for f in files]
            table = lineage.select(["position", "partition", "component", "dataset", "file", "row"])
            table = pa.table({n: c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c
                              for n, c in zip(table.column_names, table.columns)})
        if not columns:
            return table
        return self._connection.catalog.engine().properties(table, file_ids, list(columns),
                                                             dict(plan.meta["datasets"]))

    @staticmethod
    def _replayed(plan: CompiledPlan, log: t.Any) -> CompiledPlan:
        """A private copy of an adaptive plan following the weight log ``log``."""
        if plan.adapt is None:
            raise MixSQLError("a weight log replays an adaptive mixture; this statement has no ADAPT clause")
        if isinstance(log, t.Mapping):
            found = [s.get("adapt") for s in _state.states_in(log) if isinstance(s.get("adapt"), dict)]
            if not found:
                raise MixSQLError("the state holds no weight log", hint="pass dataset.state_dict() of the run")
            log = found[0]["log"]
        copy = CompiledPlan(plan.directory)
        copy.follow([(r["row"], r["quotas"]) for r in (log or [])])
        return copy

    def __str__(self) -> str:
        return to_sql(self._bound.tree)

    def __repr__(self) -> str:
        return f"<mixsql.Mix components={self.components} seed={self.seed} chunk_size={self.chunk_size}>"


class Connection:
    """A handle on a catalog directory. Cheap to create; holds no lock."""

    def __init__(self, path: str | os.PathLike[str] = ".mixsql", *, create: bool = True,
                 storage_options: t.Mapping[str, t.Any] | None = None, cache_dir: t.Any = _remote.Settings,
                 cache_bytes: int | None = None) -> None:
        changes: dict[str, t.Any] = {}
        if storage_options is not None:
            changes["storage_options"] = storage_options
        if cache_dir is not _remote.Settings:
            changes["cache_dir"] = None if cache_dir is None else os.fspath(cache_dir)
        if cache_bytes is not None:
            changes["cache_bytes"] = cache_bytes
        if changes:
            _remote.configure(**changes)
        self.catalog = Catalog(path, create=create)

    @property
    def path(self) -> Path:
        return self.catalog.path

    @property
    def version(self) -> str:
        """The catalog's content version."""
        return self.catalog.version

    def register(self, name: str, paths: t.Sequence[str] | str, *, replace: bool = False,
                 content: t.Sequence[str] | None = None, tokenizer: t.Any = None, tokens: str | None = None,
                 eos: str | int | None = None, images: t.Sequence[str] | None = None,
                 progress: t.Callable[[int, int, str], None] | None = None, append: bool = False,
                 ray: str | None = None) -> DatasetInfo:
        """Index the samples of JSONL/Parquet files (paths, globs, directories or fsspec URLs) as ``name``;
        ``progress(done, total, file)`` is called as files are scanned. With ``tokenizer`` (a
        tokenizer.json path or a ``tokenizers.Tokenizer``) every sample gets ``n_tokens``; with
        ``tokens`` too, that field holds the samples' token ids, used without tokenizing. Flat token
        arrays (``.npy``) register one sample per document (split at the tokenizer's EOS, or ``eos``).
        WebDataset shards (``.tar``) register one image-text sample per key; in Parquet, ``images``
        names the columns of encoded images (default: byte columns named image, jpg, png ...).
        ``append`` adds new files to a registered dataset as a new version, scanning only them.
        ``ray`` scans the files as tasks on a Ray cluster: its address (``HOST:PORT``,
        ``ray://HOST:PORT``), or "" for the one ``RAY_ADDRESS`` names or a local one; the catalog
        directory must be one every node sees. Same catalog as a local scan."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [os.fspath(paths)]
        return self.catalog.register(name, [os.fspath(p) for p in paths], replace=replace, content=content,
                                     tokenizer=tokenizer, tokens=tokens, eos=eos, images=images, progress=progress,
                                     append=append, ray=ray)

    def tokenize(self, dataset: str, tokenizer: t.Any, output: str | os.PathLike[str], *, column: str = "token_ids",
                 progress: t.Callable[[int, int, str], None] | None = None, ray: str | None = None) -> DatasetInfo:
        """Write ``dataset``'s token ids once, as Parquet shards in ``output`` (row groups aligned to the
        source's blocks), and register the dataset again from them with the ids as its token source:
        the same statements give the same streams, and packing reads the ids instead of tokenizing.
        ``ray`` writes each file's shard as a task on a Ray cluster (as ``register``'s)."""
        from mixsql.tokenize import tokenize

        return tokenize(self, dataset, tokenizer, output, column=column, progress=progress, ray=ray)

    def drop(self, name: str) -> None:
        """Remove a dataset from the catalog (never its files)."""
        self.catalog.drop(name)

    def gc(self, *, all_unused: bool = False, max_bytes: int | None = None,
           grace_seconds: float = DEFAULT_GRACE_SECONDS,
           dry_run: bool = False) -> t.Any:
        """Remove what the catalog no longer needs and no process uses: plans and compacted caches of
        superseded dataset versions (``all_unused``: every unused one; ``max_bytes``: then the least
        recently used until they fit), superseded versions no remaining plan was compiled from (once
        replaced more than ``grace_seconds`` ago), stale binding counts, leftovers of killed processes.
        Returns what was removed and what was kept because in use (``dry_run``: removes nothing)."""
        return self.catalog.gc(all_unused=all_unused, max_bytes=max_bytes, grace_seconds=grace_seconds,
                               dry_run=dry_run)

    @property
    def cache_limit(self) -> int | None:
        """Bytes the catalog keeps its plans and compacted caches under (``set_cache_limit``), or None."""
        return self.catalog.cache_limit

    def set_cache_limit(self, max_bytes: int | None) -> None:
        """Keep the catalog's plans and compacted caches under ``max_bytes`` from now on (None: no
        limit): every process that compiles a plan or builds a cache then removes the least
        recently used ones that no process uses until they fit. A setting of the catalog."""
        self.catalog.set_cache_limit(max_bytes)

    def datasets(self) -> list[str]:
        """Registered dataset names."""
        return self.catalog.datasets()

    def dataset(self, name: str) -> DatasetInfo:
        return self.catalog.dataset(name)

    def sql(self, query: str, *, plan: str | os.PathLike[str] | None = None) -> pa.Table:
        """Read-only SQL over the catalog (one view per dataset, plus mixsql_files and mixsql_datasets);
        with ``plan``, an exported plan's directory, also over its ``manifest`` and ``lineage``."""
        return self.catalog.sql(query, plan=plan)

    def mix(self, text: str, *, params: t.Mapping[str, t.Any] | None = None, seed: int | None = None,
            chunk_size: int | None = None, partitions: int | None = None, path: str | None = None,
            check: bool = True) -> Mix:
        """Parse and bind a MIX statement. ``params`` binds its ``:name`` parameters; ``seed``,
        ``chunk_size`` and ``partitions`` override the statement's options. ``check=False`` defers the
        planner's checks (a budget that cannot be met) to the first use, so EXPLAIN can show them."""
        try:
            tree = parse(text, path=path)
            bound = bind(tree, self.catalog, text=text, path=path, seed=seed, chunk_size=chunk_size,
                         partitions=partitions, params=params)
            mix = Mix(bound, self)
            if check:
                mix.spec  # walks the chunks: a budget that cannot be met fails here
        except MixSQLError as e:
            raise e.with_source(text, path)
        return mix

    def load(self, path: str | os.PathLike[str], *, params: t.Mapping[str, t.Any] | None = None,
             seed: int | None = None, chunk_size: int | None = None, partitions: int | None = None,
             check: bool = True) -> Mix:
        """Read, parse and bind a ``.mixsql`` file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise MixSQLError(f"no such file: {p}") from None
        except UnicodeDecodeError as e:
            raise MixSQLError(f"{p} is not UTF-8 text: {e}") from None
        return self.mix(text, params=params, seed=seed, chunk_size=chunk_size, partitions=partitions, path=str(path),
                        check=check)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<mixsql.Connection {self.path} datasets={self.datasets()}>"


FIRST_READ = 64  # samples of a stream's first read: the first sample comes quickly; then reads double


def _read_spans(end: int) -> t.Iterator[tuple[int, int]]:
    """[start, stop) of each read of the stream's first ``end`` positions: 64, 128, ... READ_SAMPLES."""
    start, size = 0, FIRST_READ
    while start < end:
        yield start, min(start + size, end)
        start, size = start + size, min(2 * size, READ_SAMPLES)


def _check_limit(limit: t.Any) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise MixSQLError(f"limit must be a non-negative integer or None, not {limit!r}")


def parse_param(item: str) -> tuple[str, t.Any]:
    """``NAME=VALUE`` as the command line (``--param``) and the shell (``.load``) take it: VALUE is read
    as JSON (numbers, true, [lists]) or else taken as text."""
    name, eq, value = item.partition("=")
    if not eq or not name.strip():
        raise MixSQLError(f"parameter {item!r}: expected NAME=VALUE", hint="e.g. min_quality=0.5")
    try:
        return name.strip(), json.loads(value)
    except ValueError:
        return name.strip(), value


def connect(path: str | os.PathLike[str] = ".mixsql", *, create: bool = True,
            storage_options: t.Mapping[str, t.Any] | None = None, cache_dir: t.Any = _remote.Settings,
            cache_bytes: int | None = None) -> Connection:
    """Open the catalog in directory ``path`` (created if missing unless ``create=False``).

    Data files may live in object stores (fsspec URLs such as ``s3://bucket/shards/*.parquet``):
    ``storage_options`` (credentials, ``endpoint_url`` ...) are given to their filesystem, in this
    process and the DataLoader workers of its torch datasets, and are never written anywhere; the
    usual environment variables work too. Remote blocks are cached on local disk in ``cache_dir``
    (default ``$MIXSQL_CACHE_DIR``, else ``~/.cache/mixsql/blocks``; None: no cache) under
    ``cache_bytes`` (default 16 GiB), shared by every process on the machine.
    """
    return Connection(path, create=create, storage_options=storage_options, cache_dir=cache_dir,
                      cache_bytes=cache_bytes)
