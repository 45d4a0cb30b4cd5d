"""ADO on oracles with known answers (``../shared/research/algorithms.md`` 1.4): fits recover the
laws of synthetic loss curves, the weights move toward the component still learning fastest, and
the same feedback gives the same weights, across a resume too."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixsql.errors import MixSQLError
from mixsql.mixing.ado import Ado, AdoConfig, Fit, fit_inputs, fit_power_law

TRUTH = {"A": (2.0, 8.0, 0.30), "B": (1.8, 20.0, 0.50), "C": (2.5, 3.0, 0.15)}  # (eps, beta, alpha)


def _curve(eps: float, beta: float, alpha: float, noise: float, seed: int, steps: int = 5000) -> tuple:
    n = 256.0 * np.arange(1, steps + 1)
    loss = eps + beta * n ** -alpha
    rng = np.random.default_rng(seed)
    return n, loss * (1 + noise * rng.standard_normal(steps))


# Noiseless, the laws come back to within 1 %; with 0.5 % multiplicative noise what is left is the
# estimate's own spread (over noise draws: alpha of B within 0.11, slope within 15 %; the fit reaches
# the same optimum as refining all 512 starts).
@pytest.mark.parametrize("noise,eps_tol,alpha_tol,slope_tol", [(0.0, 0.01, 0.01, 0.01), (0.005, 0.07, 0.11, 0.15)])
def test_fits_recover_the_laws_of_noisy_power_law_curves(noise: float, eps_tol: float, alpha_tol: float,
                                                         slope_tol: float) -> None:
    config = AdoConfig(ignore_steps=500, count_unit=1, starts=16)
    for seed, (eps, beta, alpha) in enumerate(TRUTH.values()):
        n, loss = _curve(eps, beta, alpha, noise, seed)
        x, y = fit_inputs(n, loss, config)
        assert len(x) == (5000 - 500 + 9) // 10  # steps after the warm-up, every 10th
        fit = fit_power_law(x, y, config)
        assert fit is not None
        assert fit.eps == pytest.approx(eps, rel=eps_tol) and fit.alpha == pytest.approx(alpha, abs=alpha_tol)
        true_slope = alpha * beta * n[-1] ** (-alpha - 1)
        got = fit.alpha * (fit.loss(n[-1]) - fit.eps) / n[-1]
        assert got == pytest.approx(true_slope, rel=slope_tol)


def test_one_step_moves_toward_the_largest_prior_credit_slope_product() -> None:
    """Oracle laws at n = 1.28M, uniform prior and credit: rho = (.358, .089, .553), and one step
    from pi_bar = mu gives pi = (.336, .309, .355) (algorithms.md 1.4 (b))."""
    ado = Ado([1, 1, 1], AdoConfig(count_unit=1))
    ado.fits = [Fit(eps=e, beta=b, alpha=a, objective=0.0, points=0) for e, b, a in TRUTH.values()]
    ado.n = [1.28e6]
    ado.step = 1
    pi = ado.update()
    assert ado.rho == pytest.approx([0.358, 0.0895, 0.553], abs=1e-3)
    assert pi == pytest.approx([0.336, 0.309, 0.355], abs=1e-3)
    assert pi.sum() == pytest.approx(1.0) and int(np.argmax(pi)) == 2


def _feedback(step: int, k: int = 3) -> tuple[list[float], list[int]]:
    """Synthetic feedback: component c's mean loss follows TRUTH at n = tokens so far; shares 1/3."""
    counts = [3000, 3000, 2192][:k]
    n = (step + 1) * sum(counts)
    sums = [(e + b * n ** -a) * c for (e, b, a), c in zip(list(TRUTH.values())[:k], counts)]
    return sums, counts


def test_the_online_run_adapts_after_the_warm_up_and_is_deterministic_and_resumable() -> None:
    config = AdoConfig(start_step=200, update_every=100, ignore_steps=50, window=21, count_unit=1,
                       starts=16)
    a, b = Ado([0.5, 0.3, 0.2], config), Ado([0.5, 0.3, 0.2], config)
    weights_a = [a.observe(s, *_feedback(s)) for s in range(350)]
    assert all(np.array_equal(w, [0.5, 0.3, 0.2]) for w in weights_a[:199])  # the prior until the first fit
    assert a.fitted_at == 300 and not np.allclose(weights_a[-1], [0.5, 0.3, 0.2])
    for w in weights_a:
        assert w.sum() == pytest.approx(1.0) and (w > 0).all()
    # stopped at step 120, saved through JSON, resumed: bit-identical weights
    for s in range(120):
        b.observe(s, *_feedback(s))
    b = Ado.from_state(json.loads(json.dumps(b.state_dict())))
    weights_b = [None] * 120 + [b.observe(s, *_feedback(s)) for s in range(120, 350)]
    assert all(np.array_equal(x, y) for x, y in zip(weights_a[120:], weights_b[120:]))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 50), st.integers(0, 5000)), min_size=3, max_size=3),
       st.floats(0.0, 0.2), st.floats(0.0, 1.0))
def test_weights_are_a_distribution_above_the_floor(pairs: list, min_weight: float, gamma2: float) -> None:
    ado = Ado([0.2, 0.3, 0.5], AdoConfig(min_weight=min_weight, gamma2=gamma2, count_unit=1))
    ado.fits = [Fit(eps=2.0, beta=8.0, alpha=0.3, objective=0, points=0)] * 3
    w = ado.observe(0, [p[0] for p in pairs], [p[1] for p in pairs])
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert (ado.rho >= min_weight / (1 + 3 * min_weight) - 1e-12).all()


def test_bad_feedback_is_refused_and_changes_nothing() -> None:
    ado = Ado([1, 1], AdoConfig())
    ado.observe(0, [1.0, 2.0], [10, 20])
    before = json.dumps(ado.state_dict())
    for args, message in [((0, [1.0, 2.0], [1, 1]), "was reported already"),
                          ((2, [1.0, 2.0], [1, 1]), "the next step to report is 1"),
                          ((1, [1.0], [1]), "the mixture has 2 components"),
                          ((1, [float("nan"), 1.0], [1, 1]), "component 0 is nan"),
                          ((1, [float("inf"), 1.0], [1, 1]), "component 0 is inf"),
                          ((1, [1.0, 1.0], [1, -3]), "component 1 is -3"),
                          ((1, [1.0, 1.0], [1, 0.5]), "not a non-negative integer"),
                          ((True, [1.0, 1.0], [1, 1]), "must be an integer")]:
        with pytest.raises(MixSQLError, match=message):
            ado.observe(*args)
        assert json.dumps(ado.state_dict()) == before


def test_options_are_checked() -> None:
    assert AdoConfig.from_options({"update_every": 100}).update_every == 100
    with pytest.raises(MixSQLError, match="ado has no option 'update_evry'"):
        AdoConfig.from_options({"update_evry": 100})
    for bad, message in [({"gamma1": 2.0}, "gamma1 must be in"), ({"update_every": 0}, "must be positive"),
                         ({"starts": 1000}, "at most 512"), ({"window": 1.5}, "must be an integer")]:
        with pytest.raises(MixSQLError, match=message):
            AdoConfig(**bad)
