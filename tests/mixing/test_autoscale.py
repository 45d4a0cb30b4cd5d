"""AutoScale on oracles (algorithms.md 2.3): DDO recovers its own model and its KKT optimum; the
projection reproduces exact optima of a power-law loss at larger budgets."""

from __future__ import annotations

import numpy as np
import pytest

from mixsql.errors import MixSQLError
from mixsql.mixing.autoscale import MULTIPLIERS, convert, ddo_quantities, fit_domain, project, weights

TRUTH = [(2.5, 1.2, .8), (3, 1.9, .9), (2.7, 1.5, .85), (6, 1.4, .95)]  # (a, b, c)


def test_ddo_recovers_its_model_and_the_optimum() -> None:
    fits = []
    for a, b, c in TRUTH:
        x = np.asarray(MULTIPLIERS)
        fit = fit_domain(x, (x + a) ** -b + c)
        assert (fit.a, fit.b, fit.c) == pytest.approx((a, b, c), abs=1e-3) and fit.residual < 1e-9
        fits.append(fit)
    n = ddo_quantities(fits, total=4, floor=0.2)
    assert n == pytest.approx((1.8866, .5971, 1.3164, .2), abs=1e-3)
    free = n > 0.2 + 1e-9  # KKT: equal marginal gains among the free components
    grad = np.array([f.b * (v + f.a) ** (-f.b - 1) for f, v in zip(fits, n)])
    assert np.ptp(grad[free]) < 1e-9 and (grad[~free] <= grad[free].min() + 1e-12).all()


def _exact(beta: np.ndarray, gamma: np.ndarray, total: float) -> np.ndarray:
    """argmin sum beta N^-gamma subject to sum N = total: N_i = (gamma_i beta_i / lam)^(1 / (1 + gamma_i))."""
    lo, hi = 1e-30, 1e3
    for _ in range(300):
        lam = np.sqrt(lo * hi)
        n = (gamma * beta / lam) ** (1 / (1 + gamma))
        lo, hi = (lam, hi) if n.sum() > total else (lo, lam)
    return n * total / n.sum()


def test_the_projection_reproduces_exact_optima_at_larger_budgets() -> None:
    beta, gamma = np.array([3., 5., 2.]), np.array([.3, .5, .2])
    n1, n2 = _exact(beta, gamma, 1e3), _exact(beta, gamma, 4e3)
    assert weights(n1) == pytest.approx((.3661, .3293, .3046), abs=1e-4)
    three = n2 ** 2 / n1  # the paper's next scale, s = 2
    got, s = project(n1, n2, three.sum())
    assert s == pytest.approx(2) and weights(got) == pytest.approx(weights(_exact(beta, gamma, three.sum())), abs=1e-9)
    assert weights(got) == pytest.approx((.3745, .2316, .3938), abs=1e-4)
    big, s_big = project(n1, n2, 1e5)
    assert s_big == pytest.approx(3.284, abs=1e-3) and weights(big) == pytest.approx((.3692, .1795, .4513), abs=1e-4)
    assert weights(project(n1, n2, 1e7)[0]) == pytest.approx((.3285, .0878, .5837), abs=1e-4)
    shares = [weights(project(n1, n2, b)[0])[1] for b in (1e3, 1e4, 1e5, 1e6, 1e7)]
    assert all(x > y for x, y in zip(shares, shares[1:]))  # the fastest-saturating component loses share


def test_units_and_bad_input() -> None:
    w = convert([0.5, 0.5], [100, 300], to="tokens")
    assert w == pytest.approx((0.25, 0.75)) and convert(w, [100, 300], to="samples") == pytest.approx((0.5, 0.5))
    with pytest.raises(MixSQLError, match="three runs at different quantities"):
        fit_domain([1, 1, 3], [1, 1, 1])
    with pytest.raises(MixSQLError, match="finite metrics"):
        fit_domain([.2, 1, 3], [1, float("nan"), 1])
    with pytest.raises(MixSQLError, match="must be larger"):
        project([2, 2], [1, 1], 10)
    with pytest.raises(MixSQLError, match="unit is samples or tokens"):
        convert([1], [1], to="bytes")
