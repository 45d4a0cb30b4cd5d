"""An online mixture optimiser as a run uses it: feedback in, weights out, refits off the critical path.

``Online`` wraps ``ado.Ado`` so that a refit never stalls a training step and never makes the
stream depend on timing: the refit due after step s runs in a background thread on a snapshot of
the history, and its result is used at step s + ``fit_lag`` exactly, whenever it finished (the
feedback of that step waits for it if it has not: the trainer, never the DataLoader, waits). So the
weights are a pure function of the feedback, on every rank, across restarts.

A process never forks (a DataLoader starting its workers) while a refit runs (``forksafe``).
"""

from __future__ import annotations

import concurrent.futures
import typing as t

import numpy as np

from mixsql import forksafe
from mixsql.mixing.ado import Ado, AdoConfig, Fit, fit_all


def _refit(losses: np.ndarray, n: np.ndarray, config: AdoConfig) -> list[Fit | None]:
    with forksafe.task():  # a fork (a DataLoader starting its workers) waits for it
        return fit_all(losses, n, config)


class Online:
    """ADO fed step by step (``observe``), its refits in a background thread applied at fixed steps."""

    def __init__(self, mu: t.Sequence[float], config: AdoConfig) -> None:
        self.ado = Ado(mu, config)
        self.config = config
        self.pending: dict[int, concurrent.futures.Future[list[Fit | None]]] = {}  # step to apply -> fit
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def observe(self, step: int, sums: t.Sequence[float], counts: t.Sequence[int]) -> np.ndarray:
        """The weights after the feedback of ``step`` (checked first: a refused call changes nothing)."""
        self.ado.record(step, sums, counts)
        done = self.ado.step  # steps observed, this one included
        due = self.pending.pop(done, None)
        if due is not None:
            self.ado.apply_fit(due.result())
        if self.config.fit_due(done):
            snapshot = (np.asarray(self.ado.losses, dtype=np.float64), np.asarray(self.ado.n, dtype=np.float64))
            if self.config.fit_lag == 0:
                self.ado.apply_fit(fit_all(*snapshot, self.config))
            else:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mixsql-fit")
                self.pending[done + self.config.fit_lag] = self._pool.submit(_refit, *snapshot, self.config)
        return self.ado.update()

    def state_dict(self) -> dict[str, t.Any]:
        """ADO's state, and the refits in flight (their inputs: a resume refits them the same way)."""
        return {"ado": self.ado.state_dict(),
                "pending": sorted(self.pending)}

    @classmethod
    def from_state(cls, state: t.Mapping[str, t.Any]) -> "Online":
        ado = Ado.from_state(state["ado"])
        self = cls(ado.mu, ado.config)
        self.ado = ado
        for apply_at in state.get("pending", []):  # refit on the history as it was when the fit was due
            fitted = int(apply_at) - ado.config.fit_lag
            snapshot = (np.asarray(ado.losses[:fitted], dtype=np.float64), np.asarray(ado.n[:fitted], dtype=np.float64))
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mixsql-fit")
            self.pending[int(apply_at)] = self._pool.submit(_refit, *snapshot, ado.config)
        return self
