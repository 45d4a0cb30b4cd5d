"""AutoScale (Kang et al., COLM 2025): optimal per-component data quantities at a small budget (DDO),
projected to larger budgets.

**DDO at budget N** (``../shared/research/algorithms.md`` 2.1). Proxy runs: a base run with every
component at relative quantity 1, and for each component j two runs with only j changed (x = 3 and
x = 0.2 by default): 2K + 1 runs. Their metric, divided by the base run's, is fitted per component
as y_j(x) = (x + a_j)^(-b_j) + c_j (three points, three parameters: an interpolation), and the
quantities minimise sum_j (n_j + a_j)^(-b_j) subject to sum_j n_j = K and n_j >= ``floor`` (0.2).
By the KKT conditions a free component has b_j (n_j + a_j)^(-b_j - 1) = λ, so n_j(λ) = (b_j/λ)^(1 /
(b_j + 1)) - a_j clipped at the floor, and one bisection on λ meets the total.

**Projection** (2.2). With the optimal absolute quantities N1* and N2* at two budgets, the optimum
at another budget is N*(s) = N1* (N2*/N1*)^s with s such that sum N*(s) is that budget (s = 2 is
the paper's next scale, N3* = N2*^2 / N1*; a 1-D root find otherwise). If the loss is
sum_i β_i N_i^-γ_i this is exact: every log N_i* is affine in the same variable.

Pure functions of their inputs; quantities are in the unit the runs were sized in (samples or
tokens), and so are the weights they imply.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t
import warnings

import numpy as np

from mixsql.errors import MixSQLError

MULTIPLIERS = (0.2, 1.0, 3.0)


@dataclasses.dataclass(frozen=True)
class DomainFit:
    """y(x) = (x + a)^-b + c for one component, and how well it reproduces its points."""

    a: float
    b: float
    c: float
    residual: float  # max |fit - y| over the points

    def __call__(self, x: t.Any) -> t.Any:
        return np.power(np.asarray(x, dtype=np.float64) + self.a, -self.b) + self.c


def fit_domain(x: t.Sequence[float], y: t.Sequence[float]) -> DomainFit:
    """Fit y = (x + a)^-b + c through (at least) three points (relative quantity, relative metric)."""
    from scipy.optimize import OptimizeWarning, curve_fit

    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or len(xs) < 3 or len(np.unique(xs)) < 3:
        raise MixSQLError(f"a component's fit needs three runs at different quantities, not x = {xs.tolist()}")
    if not np.all(np.isfinite(ys)) or not np.all(np.isfinite(xs)) or (xs <= 0).any():
        raise MixSQLError(f"a component's runs must have finite metrics and positive quantities: x = {xs.tolist()}, "
                          f"y = {ys.tolist()}")

    def model(v: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
        return np.power(v + a, -b) + c

    best: tuple[float, np.ndarray] | None = None
    for a0 in (0.5, 2.0, 5.0):  # a few starts: the interpolation has one solution in the region that matters
        for b0 in (0.5, 1.5):
            try:
                with warnings.catch_warnings():  # three points, three parameters: no covariance, by design
                    warnings.simplefilter("ignore", OptimizeWarning)
                    p, _ = curve_fit(model, xs, ys, p0=(a0, b0, float(ys.min()) * 0.9), maxfev=10_000,
                                     bounds=([1e-6, 1e-6, -np.inf], [1e6, 50.0, np.inf]))
            except (RuntimeError, ValueError):
                continue
            err = float(np.max(np.abs(model(xs, *p) - ys)))
            if best is None or err < best[0]:
                best = (err, p)
    if best is None:
        raise MixSQLError(f"no curve (x + a)^-b + c fits the runs x = {xs.tolist()}, y = {ys.tolist()}",
                          hint="the metric should fall as the component's quantity grows")
    a, b, c = (float(v) for v in best[1])
    return DomainFit(a=a, b=b, c=c, residual=best[0])


def ddo_quantities(fits: t.Sequence[DomainFit], total: float | None = None, floor: float = 0.2) -> np.ndarray:
    """Relative quantities n minimising sum_j (n_j + a_j)^-b_j with sum n = ``total`` (default K) and
    n_j >= ``floor``: KKT and a bisection on the multiplier (module docstring)."""
    k = len(fits)
    total = float(k if total is None else total)
    if k < 1 or floor * k > total:
        raise MixSQLError(f"{k} components cannot each have {floor} of a total of {total}")
    a = np.array([f.a for f in fits])
    b = np.array([f.b for f in fits])

    def quantities(lam: float) -> np.ndarray:
        return np.maximum(np.power(b / lam, 1.0 / (b + 1.0)) - a, floor)

    lo, hi = 1e-300, 1.0
    while quantities(hi).sum() > total:  # quantities fall as λ grows
        hi *= 2.0
    for _ in range(400):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
        if quantities(mid).sum() > total:
            lo = mid
        else:
            hi = mid
    n = quantities(hi)
    return n * (total / n.sum())  # the bisection's last relative error, removed


def project(first: t.Sequence[float], second: t.Sequence[float], budget: float) -> tuple[np.ndarray, float]:
    """(N*(s), s): the optimal quantities at ``budget`` from those at two smaller budgets, N1* and N2*
    (module docstring)."""
    from scipy.optimize import brentq

    n1, n2 = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if n1.shape != n2.shape or n1.ndim != 1 or (n1 <= 0).any() or (n2 <= 0).any():
        raise MixSQLError("the two budgets' optimal quantities must be positive, one per component, in the same order")
    if not n2.sum() > n1.sum():
        raise MixSQLError(f"the second budget ({n2.sum():g}) must be larger than the first ({n1.sum():g})")
    ratio = n2 / n1

    def excess(s: float) -> float:
        return float((n1 * np.power(ratio, s)).sum() - budget)

    hi = 1.0
    while excess(hi) < 0:
        hi *= 2.0
        if hi > 1e6:  # pragma: no cover - a budget beyond any double
            raise MixSQLError(f"budget {budget:g} is out of reach of the projection")
    lo = -1.0
    while excess(lo) > 0:
        lo *= 2.0
        if lo < -1e6:
            raise MixSQLError(f"budget {budget:g} is below what the projection can reach")
    s = float(brentq(excess, lo, hi, xtol=1e-14, rtol=1e-15, maxiter=500))
    return n1 * np.power(ratio, s), s


def weights(quantities: t.Sequence[float]) -> np.ndarray:
    """Quantities as weights (shares of their sum), in the quantities' unit."""
    q = np.asarray(quantities, dtype=np.float64)
    return q / q.sum()


def convert(weights_: t.Sequence[float], per_sample: t.Sequence[float], to: str) -> np.ndarray:
    """Weights from one unit to the other: ``to="tokens"`` from sample shares, ``to="samples"``
    from token shares, with each component's mean tokens per sample."""
    w, m = np.asarray(weights_, dtype=np.float64), np.asarray(per_sample, dtype=np.float64)
    if w.shape != m.shape or (m <= 0).any():
        raise MixSQLError("one positive tokens-per-sample value is needed per component")
    if to not in ("tokens", "samples"):
        raise MixSQLError(f"a weight's unit is samples or tokens, not {to!r}")
    out = w * m if to == "tokens" else w / m
    return out / out.sum()
