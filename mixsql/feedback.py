"""The run side of an adaptive mixture (``ADAPT USING ...``): feedback in, weight log out, shared
with every DataLoader worker, checked across ranks.

The contract (``adaptive`` has the table's arithmetic):

- The trainer calls ``dataset.feedback(step, loss_sums, token_counts)`` after every optimizer step,
  on every rank, with the numbers all-reduced over data parallelism (``mixsql.component_losses``).
  Every rank runs the same deterministic algorithm (``mixing.online``) on the same numbers; a rank
  whose numbers differ is named (one all-gather of a hash per step).
- The weights that step s yields govern the stream from chunk row ``ceil((s + 1 + LAG) * G / (C * P))``
  on: the first chunk row after global batch s + LAG. Batch b is therefore final once the feedback
  of step b - LAG - 1 is in. A DataLoader worker waits for that (it runs ahead by its prefetch
  depth, so LAG should cover num_workers x prefetch_factor; then it never waits). In the training
  process, asking for a batch whose weights are not known yet is an error saying to call feedback.
- The log (step, first chunk row and position governed, quotas and weights, the realised token
  counts of the steps since the change before) lives in one shared-memory tensor, so workers see a
  change as soon as it is made; ``state_dict`` carries it with the algorithm's state, so a resume,
  at any world size, continues bit-exactly, and ``Mix.lineage(..., log=...)`` replays any step
  without running the optimiser.
"""

from __future__ import annotations

import hashlib
import time
import typing as t
import warnings
from fractions import Fraction

import numpy as np
import torch

from mixsql.adaptive import AdaptiveTable, first_row_after, quantize, weights_of
from mixsql.errors import MixSQLError
from mixsql.planfile import CompiledPlan

WORKER_WAIT_S = 600.0  # how long a DataLoader worker waits for the feedback its next batch needs


class Adaptive:
    """One dataset's adaptation: the algorithm (in the training process), the log and its table."""

    def __init__(self, plan: CompiledPlan, global_batch_size: int, batches: int, start: int) -> None:
        from mixsql.mixing.ado import AdoConfig
        from mixsql.mixing.online import Online

        spec = plan.adapt
        assert spec is not None
        self.lag = int(spec["lag"])
        self.global_batch_size = global_batch_size
        self.chunk_size, self.partitions = plan.chunk_size, plan.partitions
        self.components = len(plan.names)
        self.start = start
        self.prior = [float(Fraction(c["share"])) for c in plan.meta["components"]]
        self.config = AdoConfig(**spec["options"])
        self.online = Online(self.prior, self.config)
        self._prior = tuple(int(q) for q in spec["prior"])
        self.table = AdaptiveTable(self.chunk_size, spec["capacity"], self._prior)
        self.current = self._prior
        self.log: list[dict[str, t.Any]] = []
        self.fed = 0  # feedback calls since ``start``
        self._since = np.zeros(self.components, dtype=np.int64)
        # row 0: [log records, steps fed back]; row i >= 1: [chunk row, step, quotas...] of record i - 1
        self.shared = torch.zeros((batches + 2, 2 + self.components), dtype=torch.int64).share_memory_()
        self._applied = 0  # records of the shared log this process's table has
        self.packed: t.Any = None  # the PackedPlan, when the dataset serves packed sequences
        self._warned = False
        self.shared[0, 1] = start

    # -- the training process ----------------------------------------------------------------------

    def feedback(self, step: t.Any, sums: t.Any, counts: t.Any) -> list[float]:
        from mixsql.mixing.ado import check_feedback

        expected = self.start + self.fed
        sums_a, counts_a = check_feedback(step, expected, sums, counts, self.components)
        _same_on_every_rank(int(step), sums_a, counts_a)
        weights = self.online.observe(int(step), sums_a, counts_a)
        self._since += counts_a
        quotas = quantize(weights, self.chunk_size)
        if quotas != self.current:
            row = self.first_row_after_batch(int(step) + self.lag)
            self.table.append(row, quotas)
            if len(self.log) + 2 > len(self.shared):  # pragma: no cover - at most one change per step fits
                raise MixSQLError("internal: the weight log is full")
            self.shared[len(self.log) + 1, 0] = row
            self.shared[len(self.log) + 1, 1] = int(step)
            self.shared[len(self.log) + 1, 2:] = torch.as_tensor(quotas, dtype=torch.int64)
            self.log.append({"step": int(step), "row": row, "position": row * self.chunk_size * self.partitions,
                             "quotas": list(quotas), "weights": weights_of(quotas),
                             "realised_tokens": self._since.tolist()})
            self._since[:] = 0
            self.current = quotas
            self._applied = len(self.log)
        self.fed += 1
        self.shared[0, 0] = len(self.log)  # the count after the record: a reader never sees half of one
        self.shared[0, 1] = self.start + self.fed
        return [float(w) for w in weights]

    def first_row_after_batch(self, batch: int) -> int:
        """The first chunk row after every row that global batches 0..``batch`` read: samples, or
        for packed sequences the documents they are cut from (``PackedPlan.rows_after``)."""
        if self.packed is not None:
            return self.packed.rows_after(batch, self.global_batch_size)
        return first_row_after((batch + 1) * self.global_batch_size, self.chunk_size, self.partitions)

    def state_dict(self) -> dict[str, t.Any]:
        return {"fed_to": self.start + self.fed, "log": [dict(r) for r in self.log],
                "since": self._since.tolist(), "online": self.online.state_dict()}

    def load(self, states: t.Sequence[t.Mapping[str, t.Any]], step: int) -> None:
        """Resume from a saved dataset state (one of ``states`` carries the log), at global batch ``step``."""
        from mixsql.mixing.online import Online

        found = [s["adapt"] for s in states if isinstance(s.get("adapt"), dict)]
        if not found:
            raise MixSQLError("the saved state has no weight log, which an adaptive mixture resumes from",
                              hint="save dataset.state_dict() in the training process (it carries the log)")
        saved = found[0]
        if saved["fed_to"] != step:
            raise MixSQLError(f"the weight log was saved after the feedback of {saved['fed_to']} steps, but the run "
                              f"resumes at step {step}", hint="save the state right after the step's feedback")
        self.online = Online.from_state(saved["online"])
        self.table = AdaptiveTable(self.chunk_size, self.table.capacity, self._prior)
        self.shared.zero_()
        for i, record in enumerate(saved["log"]):
            self.table.append(int(record["row"]), record["quotas"])
            self.shared[i + 1, 0], self.shared[i + 1, 1] = int(record["row"]), int(record["step"])
            self.shared[i + 1, 2:] = torch.as_tensor(record["quotas"], dtype=torch.int64)
        self.log = [dict(r) for r in saved["log"]]
        self.current = tuple(self.log[-1]["quotas"]) if self.log else self._prior
        self._since = np.asarray(saved["since"], dtype=np.int64)
        self.start, self.fed, self._applied = step, 0, len(self.log)
        self.shared[0, 0], self.shared[0, 1] = len(self.log), step

    # -- any process: the table as far as the log goes ---------------------------------------------

    def synced(self) -> AdaptiveTable:
        """This process's table with every record of the shared log applied."""
        n = int(self.shared[0, 0])
        if n > self._applied:
            rows = self.shared[self._applied + 1: n + 1].tolist()
            for row, _, *quotas in rows:
                self.table.append(int(row), quotas)
            self._applied = n
        return self.table

    def wait_for(self, batch: int, in_worker: bool) -> AdaptiveTable:
        """The table once global batch ``batch`` is final (the feedback of step batch - LAG - 1 is in)."""
        deadline = None
        while int(self.shared[0, 1]) + self.lag < batch:
            if not in_worker:
                raise MixSQLError(f"global batch {batch} of an adaptive mixture needs the feedback of step "
                                  f"{batch - self.lag - 1} first (LAG {self.lag})",
                                  hint="call dataset.feedback(step, loss_sums, token_counts) after every step")
            if deadline is None and not self._warned:
                self._warned = True
                warnings.warn(f"a DataLoader worker waits for the feedback of step {batch - self.lag - 1} before "
                              f"batch {batch}: LAG {self.lag} does not cover the loader's prefetch (num_workers x "
                              "prefetch_factor batches); the stream is the same, the loader only slower: raise LAG",
                              stacklevel=2)
            deadline = deadline or time.monotonic() + WORKER_WAIT_S
            if time.monotonic() > deadline:
                raise MixSQLError(f"a DataLoader worker waited {WORKER_WAIT_S:.0f} s for the feedback of step "
                                  f"{batch - self.lag - 1}", hint="call dataset.feedback(...) after every step")
            time.sleep(0.002)
        return self.synced()


def _same_on_every_rank(step: int, sums: np.ndarray, counts: np.ndarray) -> None:
    """Under torch.distributed, every rank must report the same (all-reduced) numbers: one
    all-gather of a hash; a rank that differs is named."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    if world == 1:
        return
    digest = hashlib.blake2b(np.int64(step).tobytes() + sums.tobytes() + counts.tobytes(), digest_size=7).digest()
    device = torch.device("cuda", torch.cuda.current_device()) \
        if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    mine = torch.tensor([int.from_bytes(digest, "little")], dtype=torch.int64, device=device)
    every = [torch.zeros_like(mine) for _ in range(world)]
    torch.distributed.all_gather(every, mine)
    values = [int(v.item()) for v in every]
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if differ:
        raise MixSQLError(f"rank(s) {', '.join(map(str, differ))} reported other loss sums or token counts for step "
                          f"{step} than rank 0", hint="all-reduce them before feedback (mixsql.component_losses "
                          "does), and call feedback on every rank with the same step")
