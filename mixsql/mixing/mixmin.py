"""MixMin (Thudi, Rovers, Ruan, Thrush, Maddison; ICML 2025): the mixture as a convex problem.

For cross-entropy, once the model class is rich enough, the model trained on mixture λ is the
mixture of the per-source optimal models, so the risk on a target set,

    R(λ) = - mean_i [ logsumexp_k(l_ik + log λ_k) / len_i ],

is convex in λ on the simplex (l_ik: example i's total log-probability under source k's proxy,
len_i its length in tokens). It is minimised by exponentiated gradient, λ <- λ * exp(-η ∇R),
renormalised, from the uniform mixture (η = 1, at most 100 steps: the reference's defaults).

The reference stops when max |∇R| < 1e-4, which never fires at an interior optimum (there ∇R is
-mean(1/len) * 1, not 0). Here the stop is the simplex's own optimality condition: the gradient
projected on the simplex, λ_k (g_k - λ·g), below ``tol`` in every component (at the optimum every
component in the support has the same partial derivative). The log-probabilities are combined with
logsumexp throughout (raw probabilities overflow).
"""

from __future__ import annotations

import dataclasses
import typing as t

import numpy as np

from mixsql.errors import MixSQLError


@dataclasses.dataclass(frozen=True)
class MixMinResult:
    """The weights found, the objective before (uniform) and after, and how the run ended."""

    weights: tuple[float, ...]
    loss_before: float
    loss_after: float
    steps: int
    converged: bool  # the projected-gradient stop fired (else max_steps ran out)
    trajectory: tuple[tuple[float, ...], ...]  # λ after each step

    def to_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)


def _check(logprobs: t.Any, lengths: t.Any, example_weights: t.Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[0] < 1 or lp.shape[1] < 2:
        raise MixSQLError(f"MixMin needs a matrix of log-probabilities [examples, sources] with at least 2 sources, "
                          f"not shape {lp.shape}")
    if np.isnan(lp).any() or (lp > 1e-9).any():
        bad = np.argwhere(np.isnan(lp) | (lp > 1e-9))[0]
        raise MixSQLError(f"log-probability of example {bad[0]} under source {bad[1]} is {lp[tuple(bad)]}: "
                          "log-probabilities are finite and at most 0 (or -inf)")
    m = lp.shape[0]
    ln = np.ones(m) if lengths is None else np.asarray(lengths, dtype=np.float64)
    if ln.shape != (m,) or not np.all(np.isfinite(ln)) or (ln <= 0).any():
        raise MixSQLError(f"lengths must be {m} positive numbers (one per example), not shape {ln.shape}")
    w = np.full(m, 1.0 / m) if example_weights is None else np.asarray(example_weights, dtype=np.float64)
    if w.shape != (m,) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise MixSQLError(f"example weights must be {m} non-negative numbers with a positive sum")
    if np.isneginf(lp).all(axis=1).any():
        raise MixSQLError(f"example {int(np.flatnonzero(np.isneginf(lp).all(axis=1))[0])} has probability 0 under "
                          "every source: no mixture can explain it")
    return lp, ln, w / w.sum()


def objective(weights: t.Sequence[float], logprobs: t.Any, lengths: t.Any = None,
              example_weights: t.Any = None) -> float:
    """R(λ): the mixture's mean per-token negative log-likelihood on the target set."""
    lp, ln, w = _check(logprobs, lengths, example_weights)
    return _value(np.asarray(weights, dtype=np.float64), lp, ln, w)[0]


def _value(lam: np.ndarray, lp: np.ndarray, ln: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """(R(λ), ∇R(λ))."""
    with np.errstate(divide="ignore"):
        z = lp + np.log(lam)[None, :]
    top = np.max(z, axis=1, keepdims=True)
    mix = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))  # logsumexp_k
    posterior = np.exp(z - mix[:, None])  # responsibility of source k for example i
    value = float(-(w * mix / ln).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        grad = -((w / ln)[:, None] * np.where(lam[None, :] > 0, posterior / lam[None, :], 0.0)).sum(axis=0)
    return value, grad


def mixmin(logprobs: t.Any, lengths: t.Any = None, *, example_weights: t.Any = None, eta: float = 1.0,
           max_steps: int = 100, tol: float = 1e-6, start: t.Sequence[float] | None = None) -> MixMinResult:
    """Minimise R(λ) over the simplex (module docstring). ``logprobs``: [examples, sources];
    ``lengths``: tokens per example (default 1); ``example_weights``: a weighted target set (exact
    expectations), default uniform. Deterministic."""
    lp, ln, w = _check(logprobs, lengths, example_weights)
    k = lp.shape[1]
    if not (isinstance(max_steps, int) and max_steps >= 0) or not eta > 0 or not tol > 0:
        raise MixSQLError("MixMin needs eta > 0, tol > 0 and a non-negative integer max_steps")
    lam = np.full(k, 1.0 / k) if start is None else np.asarray(start, dtype=np.float64) / np.sum(start)
    before, grad = _value(lam, lp, ln, w)
    trajectory, converged, steps = [], False, 0
    for steps in range(1, max_steps + 1):
        if np.max(np.abs(lam * (grad - lam @ grad))) < tol:
            converged, steps = True, steps - 1
            break
        lam = lam * np.exp(-eta * (grad - grad.min()))  # shifting g changes nothing after normalising
        lam = lam / lam.sum()
        trajectory.append(tuple(float(v) for v in lam))
        _, grad = _value(lam, lp, ln, w)
    else:
        converged = bool(np.max(np.abs(lam * (grad - lam @ grad))) < tol)
    after = _value(lam, lp, ln, w)[0]
    return MixMinResult(weights=tuple(float(v) for v in lam), loss_before=before, loss_after=after, steps=steps,
                        converged=converged, trajectory=tuple(trajectory))
