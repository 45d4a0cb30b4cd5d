"""Stage ``torch``: an ``IterableDataset`` over a compiled plan, for any rank and DataLoader worker.

The contract (see ``world`` for the arithmetic): every (rank, worker) gets a disjoint share; the
union over ranks and workers is the planned stream up to its last complete global batch; with
``batch_size`` given, a rank's DataLoader yields the same batches for any ``num_workers``; global
batch N is the same samples for every world size dividing the global batch size.

Resume (``state``): the dataset starts at any global batch in O(1) (``start_step``, or a saved
state): batch rows come from the chunk table, nothing before them is computed or read.
"""

from __future__ import annotations

import os
import stat
import typing as t
import warnings

import numpy as np
import pyarrow as pa
import torch.utils.data

from mixsql import epochs as _epochs
from mixsql import remote, shared
from mixsql import state as _state
from mixsql import world
from mixsql.compact import Compact
from mixsql.errors import MixSQLError
from mixsql.feedback import Adaptive
from mixsql.packing import READ_TOKENS, PackedPlan
from mixsql.planfile import CompiledPlan
from mixsql import read as _read
from mixsql.read import DEFAULT_CACHE_BYTES, READ_SAMPLES, Reader, collate


class MixDataset(torch.utils.data.IterableDataset):
    """Samples of one rank; pickles as the plan's directory, so workers memory-map the same plan.

    ``state_dict()``/``load_state_dict()`` follow torch's Stateful protocol, so torchdata's
    ``StatefulDataLoader`` saves and restores every worker; ``load_state_dict`` also takes a whole
    loader's state (from any rank, any topology) and resumes from its global position.
    """

    def __init__(self, plan_dir: str, *, batch_size: int | None = None, rank: int | None = None,
                 world_size: int | None = None, columns: t.Sequence[str] | None = None,
                 component: str = "name", start_step: int = 0, seq_len: int | None = None,
                 tokenizer: t.Any = None, eos: str | int | None = None, bos: str | int | None = None,
                 pack: str = "mixed", batched: bool = False, images: str = "bytes",
                 memory_bytes: int = DEFAULT_CACHE_BYTES, compact: str | None = None) -> None:
        super().__init__()
        self.compact = compact  # a compacted cache's directory, read instead of the sources
        self.images = images
        self.memory_bytes = memory_bytes
        if not isinstance(batched, bool):
            raise MixSQLError(f"batched must be True or False, not {batched!r}")
        self.batched = batched
        if component not in ("name", "id"):
            raise MixSQLError(f"component must be 'name' or 'id', not {component!r}")
        self.plan_dir = str(plan_dir)
        self.rank, self.world_size = world.topology(rank, world_size)
        self.columns = list(columns) if columns is not None else None
        self.component = component
        plan = self._plan()
        self.packing = None if seq_len is None else {"seq_len": seq_len, "tokenizer": tokenizer, "eos": eos, "bos": bos,
                                                    "pack": pack}
        packed = self._packed(plan)
        self.global_batch_size, self.batch_size = world.global_batch(plan.partitions, self.world_size, batch_size)
        steps = plan.meta.get("steps_batch_size")
        if packed is None and steps is not None:
            self._check_batch(steps, "counts STEPS of", ": its schedule and budget would be off by that factor")
        if plan.adapt is not None:
            self._check_batch(plan.adapt["batch_size"], "adapts its weights per step of", "")
            if start_step:
                raise MixSQLError(f"an adaptive mixture cannot start at step {start_step} from nothing: the weights "
                                  "before it come from the run", hint="resume with load_state_dict(state) from "
                                  "the dataset's state_dict(), which carries the weight log")
        length, unit = (len(plan), "samples") if packed is None else (len(packed), f"sequences of {packed.seq_len}")
        self.batches = length // self.global_batch_size
        if self.batches == 0:
            raise MixSQLError(f"the stream has {length:,} {unit}, fewer than one global batch of "
                              f"{self.global_batch_size:,} ({self.world_size} rank(s) x {self.batch_size})",
                              hint="lower the batch size, or give the stream more samples (LIMIT, MAX EPOCHS)")
        reader_columns = self.columns if packed is None else list(packed.fields)
        Reader(plan, reader_columns, images=images, cache_bytes=memory_bytes,
               compact=self._compact())  # the columns, now; files as opened
        self._remote = remote.settings()  # storage options and cache, for the DataLoader workers (in memory only)
        self._shared = shared.new_directory()  # where DataLoader workers share decoded row groups
        self._identity = _state.identity(plan)  # what a state must match; saved after every batch, so kept
        if packed is not None:
            self._identity.update(packed.identity())
        self.start = self._checked_step(start_step)
        self._adaptive: Adaptive | None = None if plan.adapt is None else \
            Adaptive(plan, self.global_batch_size, self.batches, self.start)
        if self._adaptive is not None and packed is not None:  # weight changes start after the rows batches read
            packed.plan.table = self._adaptive.table
            self._adaptive.packed = packed
        self._worker_resume: dict[str, t.Any] | None = None
        self._progress: tuple[int, int, int, int] = (self.start, 1, 0, self.start)  # origin, workers, worker, next

    def _plan(self) -> CompiledPlan:
        plan = CompiledPlan(self.plan_dir)
        if getattr(self, "_adaptive", None) is not None:
            plan.table = self._adaptive.synced()  # the weight log as far as it goes
        return plan

    def _check_batch(self, steps: int, what: str, consequence: str) -> None:
        """The statement's BATCH SIZE, which its steps count, must be this dataset's global batch."""
        if steps != self.global_batch_size:
            per_rank = steps // self.world_size if steps % self.world_size == 0 else "?"
            raise MixSQLError(f"the statement {what} BATCH SIZE {steps:,} samples, but this dataset's global batch is "
                              f"{self.global_batch_size:,} ({self.world_size} rank(s) x {self.batch_size}){consequence}",
                              hint=f"use batch_size={per_rank} per rank for world size {self.world_size}, or set "
                                   f"BATCH SIZE {self.global_batch_size} in the statement")

    # -- adaptive mixtures -------------------------------------------------------------------------

    def feedback(self, step: int, loss_sums: t.Any, token_counts: t.Any) -> list[float]:
        """Report optimizer step ``step``'s per-component loss sums and token counts (all-reduced:
        ``mixsql.component_losses``) to an adaptive mixture; returns the weights they give. Call it
        on every rank after every step, in order from the step the run started at. The weights
        govern the stream from the first chunk row after step ``step + LAG``, on every rank and
        DataLoader worker alike (``adaptive``)."""
        if self._adaptive is None:
            raise MixSQLError("this mixture does not adapt its weights: feedback needs ADAPT USING ... in the "
                              "statement")
        return self._adaptive.feedback(step, loss_sums, token_counts)

    @property
    def weight_log(self) -> list[dict[str, t.Any]]:
        """An adaptive mixture's weight changes so far: step, first chunk row and position governed,
        weights, and the realised token counts of the steps since the change before."""
        return [] if self._adaptive is None else [dict(r) for r in self._adaptive.log]

    def _packed(self, plan: CompiledPlan) -> PackedPlan | None:
        return None if self.packing is None else PackedPlan(plan, **self.packing)

    def _checked_step(self, step: int) -> int:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step <= self.batches:
            raise _state.StateError(f"start step {step!r} is outside the stream: it has {self.batches:,} global "
                                    f"batches of {self.global_batch_size:,} samples")
        return int(step)

    def __len__(self) -> int:
        """Items this rank yields from its start to the end (all its workers together): samples or
        sequences, or with ``batched`` whole batches."""
        return (self.batches - self.start) * (1 if self.batched else self.batch_size)

    @property
    def step(self) -> int:
        """The next global batch this (single-process) iterator yields."""
        return self._progress[3]

    def batch_rows(self, plan: CompiledPlan, batch: int) -> np.ndarray:
        """Plan rows of this rank's share of global batch ``batch``."""
        slices = world.rank_slices(batch, self.global_batch_size, plan.partitions, self.world_size, self.rank)
        parts = [plan.partition_rows(q, a, b) for q, a, b in slices]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _rows(self, plan: CompiledPlan, batches: t.Sequence[int]) -> np.ndarray:
        """Plan rows of this rank's share of ``batches``, one after another: the batches' slices in one
        vectorised locate, and each partition's rows for all of them in one lookup of its span."""
        lengths = [plan.partition_length(q) for q in range(plan.partitions)]
        slices = world.ragged_slices_many(batches, self.global_batch_size, lengths, self.world_size, self.rank)
        spans: dict[int, tuple[int, int]] = {}
        for share in slices:
            for q, a, b in share:
                lo, hi = spans.get(q, (a, b))
                spans[q] = (min(lo, a), max(hi, b))
        fetched = {q: (lo, plan.partition_rows(q, lo, hi)) for q, (lo, hi) in spans.items()}
        parts = [fetched[q][1][a - fetched[q][0]: b - fetched[q][0]] for share in slices for q, a, b in share]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _pieces(self, packed: PackedPlan, batches: t.Sequence[int]) -> list[tuple[int, int, int]]:
        return packed.slices_many(batches, self.global_batch_size, self.world_size, self.rank)

    def __iter__(self) -> t.Iterator[dict[str, t.Any]]:
        # Not a generator: the worker's position is set the moment its iterator exists, so a state
        # taken before its first batch (StatefulDataLoader's initial snapshot) already says which it is.
        worker_id, workers = world.worker()
        if torch.utils.data.get_worker_info() is not None:
            tune_worker(workers)
        if remote.settings() != self._remote:  # a spawned worker starts from the environment's
            remote.configure(self._remote)
        resume = self._worker_resume
        if resume is not None:  # a StatefulDataLoader restoring this very worker
            if (resume["workers"], resume["worker"]) != (workers, worker_id):
                raise _state.StateError(
                    f"this dataset holds the state of DataLoader worker {resume['worker']} of {resume['workers']}, "
                    f"but runs as worker {worker_id} of {workers}",
                    hint="resume from the whole StatefulDataLoader.state_dict() (any topology), or start_step")
            origin, first = resume["origin"], resume["next"]
        else:
            origin, first = self.start, self.start + worker_id
        self._progress = (origin, workers, worker_id, first)
        return self._samples(origin, workers, worker_id, range(first, self.batches, workers))

    def _compact(self) -> Compact | None:
        return None if self.compact is None else Compact(self.compact)

    def _samples(self, origin: int, workers: int, worker_id: int, mine: range) -> t.Iterator[dict[str, t.Any]]:
        plan = self._plan()
        packed = self._packed(plan)
        reader = Reader(plan, self.columns if packed is None else list(packed.fields), images=self.images,
                        cache_bytes=self.memory_bytes, compact=self._compact())
        if workers > 1 and self._shared is not None:  # each row group decoded by one worker, mapped by the others
            reader.shared = shared.SharedBlocks(self._shared)
        reader.objects = workers == 1
        # blocks held for the reads announced to the reader (``rows_of``), not for whole windows: a worker
        # reads every n-th batch, a rank may share partitions with others, and a resumed stream never
        # reads its windows' rows before the start, nor any stream those after its last whole batch
        reader.partial = True
        size = self.batch_size
        group = max(1, (READ_SAMPLES if packed is None else READ_TOKENS // packed.seq_len) // size)
        if self._adaptive is not None:  # one batch per read: each is read once the weights it needs are known
            group = 1
        reads, at, step = [], 0, 1  # the first read is one batch, then they double: a quick first batch
        while at < len(mine):
            reads.append(mine[at: at + step])
            at, step = at + step, min(step * 2, group)
        depth = remote.settings().depth if reader.remote else _read.LOCAL_DEPTH  # reads fetched ahead
        planned: dict[int, t.Any] = {}  # reads ahead: their rows (samples) or layouts (sequences)
        fetched: dict[int, int] = {}  # reads prefetched already, with the reader's drops then

        def rows_of(j: int) -> np.ndarray:  # read j's plan rows, announced to the reader once
            if j not in planned:
                planned[j] = self._rows(plan, reads[j])
                reader.expect(planned[j])
            return planned[j]

        def layout_of(j: int) -> t.Any:  # read j's packed layout, its rows announced to the reader once
            if j not in planned:
                planned[j] = packed.layout(self._pieces(packed, reads[j]))
                reader.expect(planned[j].rows)
            return planned[j]

        for k, batches in enumerate(reads):
            if self._adaptive is not None:
                plan.table = self._adaptive.wait_for(batches[-1], workers > 1 or torch.utils.data.get_worker_info()
                                                     is not None)
                planned.clear()  # an adaptive read is laid out once the weights it needs are known
            after = reads[k + 1] if k + 1 < len(reads) else None
            if packed is None:
                rows_now = rows_of(k)
                planned.pop(k)
                fetched.pop(k, None)
                if k == 0:  # the first read's blocks: decoded (fetched) side by side
                    reader.prefetch(rows_now)
                if after is not None and self._adaptive is None:  # an adaptive read waits for its weights
                    # further reads too: as many batches as ``depth`` full reads, however short the first
                    # reads are; those not asked for yet are asked at once, their blocks decoded in batches
                    asking, j, batches_ahead = [], k + 1, 0
                    while j < len(reads) and (j < k + 1 + depth or batches_ahead < depth * group):
                        if fetched.get(j) != reader.ahead_dropped:  # asked again only if some was dropped
                            asking.append(rows_of(j))
                            fetched[j] = reader.ahead_dropped
                        batches_ahead += len(reads[j])
                        j += 1
                    if asking:
                        reader.prefetch(np.concatenate(asking))
                if self.batched:  # whole batches of columns: no dict per sample
                    yield from self._batches(origin, workers, worker_id, batches, None,
                                             made=reader.batches(rows_now, size, component=self.component))
                    continue
                samples: t.Iterable[dict[str, t.Any]] = reader.samples(rows_now, component=self.component)
            else:
                layout = layout_of(k)
                planned.pop(k)
                if k == 0:
                    reader.prefetch(layout.rows)
                if after is not None:  # the next reads' row groups decode while this one is packed
                    if self._adaptive is None:
                        for j in range(k + 1, min(len(reads), k + 1 + depth)):
                            reader.prefetch(layout_of(j).rows)
                    else:  # an adaptive one is laid out again once its weights are known: fetched, not kept
                        reader.prefetch(packed.layout(self._pieces(packed, after)).rows)
                built = packed.build(layout, reader)
                if self.batched:
                    yield from self._batches(origin, workers, worker_id, batches, _tensors(built))
                    continue
                samples = _rows_of(built)
            if self.batched:
                rows = list(samples)
                yield from self._batches(origin, workers, worker_id, batches, None, rows)
                continue
            for i, sample in enumerate(samples):
                if i % size == size - 1:  # the batch is complete once this sample is taken
                    self._progress = (origin, workers, worker_id, batches[i // size] + workers)
                yield sample

    def _batches(self, origin: int, workers: int, worker_id: int, batches: range,
                 tensors: dict[str, torch.Tensor] | None, rows: list[dict[str, t.Any]] | None = None,
                 made: list[dict[str, list[t.Any]]] | None = None) -> t.Iterator[dict[str, t.Any]]:
        """Whole batches: (batch_size, seq_len) tensors of packed sequences, ``collate``'d samples,
        or batches ``made`` by the reader (``Reader.batches``)."""
        size = self.batch_size
        for k, b in enumerate(batches):
            self._progress = (origin, workers, worker_id, b + workers)
            if tensors is not None:
                if torch.utils.data.get_worker_info() is not None:
                    # to the main process: the batch in one shared-memory block, not a storage per field
                    yield dict(zip(tensors, _shared_stack([v[k * size: (k + 1) * size]
                                                           for v in tensors.values()]).unbind(0)))
                else:
                    yield {name: v[k * size: (k + 1) * size] for name, v in tensors.items()}
            elif made is not None:
                yield made[k]
            else:
                yield collate(rows[k * size: (k + 1) * size])  # type: ignore[index]

    # -- state -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, t.Any]:
        """Where this iterator stands: a few numbers and the stream's identity (constant size). An
        adaptive mixture's (in the process that gives feedback) stands at the steps fed back, and
        carries its weight log and the algorithm's state."""
        origin, workers, worker_id, next_batch = self._progress
        if self._adaptive is not None and self._adaptive.fed:
            origin, workers, worker_id, next_batch = self.start, 1, 0, self.start + self._adaptive.fed
        state = _state.make(self._identity, self.global_batch_size, origin, workers, worker_id, next_batch)
        if self._adaptive is not None and torch.utils.data.get_worker_info() is None:
            state["adapt"] = self._adaptive.state_dict()  # the training process's log and algorithm
        return state

    def load_state_dict(self, state: t.Mapping[str, t.Any], *, force: bool = False) -> None:
        """Resume from ``state``: this dataset's or a worker's state, or a whole (Stateful)DataLoader's
        state from any rank. A state of another statement, parameters or data is refused, saying what
        differs, unless ``force`` (then a warning)."""
        found = _state.states_in(state)
        if len(found) == 1 and found[0]["workers"] > 1:  # one worker's own state (StatefulDataLoader)
            first, position = found[0], None
        else:
            first, position = _state.global_position(found)
        differs = _state.differences(first, self._identity)
        if differs:
            message = "the saved state belongs to another stream: " + "; ".join(differs)
            if not force:
                raise _state.StateError(message, hint="resume with the same statement, parameters and data, or "
                                        "pass force=True to continue at the saved position anyway")
            warnings.warn(message + " (continuing: force=True)", stacklevel=2)
        if position is None:  # one worker's state: StatefulDataLoader restoring that worker, same topology
            if first["global_batch_size"] != self.global_batch_size:
                raise _state.StateError(f"the worker state was saved with global batch size "
                                        f"{first['global_batch_size']}, this dataset has {self.global_batch_size}")
            self._worker_resume = dict(first)
            self.start = self._checked_step(first["origin"])
            self._progress = (first["origin"], first["workers"], first["worker"], first["next"])
            return
        step, rest = divmod(position, self.global_batch_size)
        if rest:
            message = (f"the saved position ({position:,} samples) is not a whole number of global batches of "
                       f"{self.global_batch_size:,}")
            if not force:
                raise _state.StateError(message, hint="resume with a global batch size that divides the position "
                                        "(world_size x batch_size), or force=True to restart at the batch boundary "
                                        "before it (repeating a few samples)")
            warnings.warn(message + f"; restarting at step {step} (force=True)", stacklevel=2)
        self._worker_resume = None
        self.start = self._checked_step(min(step, self.batches) if force else step)
        self._progress = (self.start, 1, 0, self.start)
        if self._adaptive is not None:
            self._adaptive.load(found, self.start)


WORKER_PIPE_BYTES = 1 << 20  # a batch of text crosses to the main process in one write, not 64 KiB at a time
_tuned: tuple[int, int] | None = None  # (process, workers) a DataLoader worker was tuned for


def tune_worker(workers: int) -> None:
    """Once per DataLoader worker process: its decoder threads take their share of the cores (n workers
    decoding on every core each would oversubscribe them n-fold), and its outgoing pipes (the queue
    to the main process) hold 1 MiB, so a batch larger than Linux's default 64 KiB pipe is written
    in one go instead of in a ping-pong of wake-ups with the reader. Both only speed; on a system
    without ``F_SETPIPE_SZ``, or past the user's pipe quota, the pipes stay as they were."""
    global _tuned
    if _tuned == (os.getpid(), workers):
        return
    _tuned = (os.getpid(), workers)
    pa.set_cpu_count(max(1, _epochs.cores() // max(1, workers)))
    try:
        import fcntl

        names = os.listdir("/proc/self/fd")
    except (ImportError, OSError):  # not Linux
        return
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    for name in names if setsize is not None else ():
        try:
            fd = int(name)
            if stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                fcntl.fcntl(fd, setsize, WORKER_PIPE_BYTES)
        except (OSError, ValueError):
            continue


def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}


def _shared_stack(parts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(parts)`` into shared memory, as torch's default_collate does in a worker: the
    batch then crosses to the main process as one block, without another copy."""
    first = parts[0]
    storage = first._typed_storage()._new_shared(len(parts) * first.numel(), device=first.device)
    return torch.stack(parts, out=first.new(storage).resize_(len(parts), *first.shape))


def _rows_of(arrays: dict[str, np.ndarray]) -> t.Iterator[dict[str, torch.Tensor]]:
    """One dict of int64 tensors of length seq_len per sequence (rows of the built arrays)."""
    tensors = _tensors(arrays)
    n = len(next(iter(tensors.values())))
    for i in range(n):
        yield {name: v[i] for name, v in tensors.items()}


def batch_as_is(batch: t.Any) -> t.Any:
    """The DataLoader's ``collate_fn`` for a ``batched=True`` dataset (``batch_size=None``): the
    batch as the dataset made it. Torch's default instead walks every value of every batch (its
    ``default_convert``), which measured 1.5-2 x slower for batches of text."""
    return batch
