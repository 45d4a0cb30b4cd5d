"""MixMin on oracles (algorithms.md 3.2): a planted mixture of known sources is recovered, its
stopping rule fires, a vertex is found, and the conditional case works."""

from __future__ import annotations

import numpy as np
import pytest

from mixsql.errors import MixSQLError
from mixsql.mixing.mixmin import mixmin, objective

P = np.array([[.5, .2, .1, .1, .05, .05], [.05, .1, .5, .2, .1, .05], [.1, .1, .1, .1, .3, .3]])


def _symbols(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact expectations: one example per symbol, weighted by the target's probability."""
    return np.log(P.T), target


def test_a_planted_mixture_is_recovered_and_the_stop_fires() -> None:
    target = .6 * P[0] + .3 * P[1] + .1 * P[2]
    lp, w = _symbols(target)
    ten = mixmin(lp, example_weights=w, max_steps=10)
    assert ten.weights == pytest.approx((.5897, .2894, .1210), abs=1e-4)
    hundred = mixmin(lp, example_weights=w, max_steps=100)
    assert hundred.weights == pytest.approx((.6, .3, .1), abs=1e-3)
    entropy = -(target * np.log(target)).sum()
    assert hundred.loss_after == pytest.approx(entropy, abs=1e-5) and hundred.loss_before > hundred.loss_after
    long = mixmin(lp, example_weights=w, max_steps=10_000, tol=1e-8)
    assert long.converged and long.steps < 10_000  # the projected-gradient stop fires at an interior optimum
    assert long.weights == pytest.approx((.6, .3, .1), abs=1e-5)
    assert objective(long.weights, lp, example_weights=w) == pytest.approx(long.loss_after)


def test_a_vertex_and_the_conditional_case() -> None:
    lp, w = _symbols(P[1])
    assert mixmin(lp, example_weights=w, max_steps=3000).weights[1] > 0.99
    f = np.array([[.9, .8, .2, .1], [.1, .2, .8, .9], [.6, .3, .7, .4]])  # P(y = 1 | x) per source
    truth = .2 * f[0] + .5 * f[1] + .3 * f[2]
    rows, weights = [], []
    for x in range(4):
        for y in (0, 1):
            rows.append([np.log(fk[x] if y else 1 - fk[x]) for fk in f])
            weights.append(0.25 * (truth[x] if y else 1 - truth[x]))
    got = mixmin(np.asarray(rows), example_weights=np.asarray(weights), max_steps=1000)
    assert got.weights == pytest.approx((.2, .5, .3), abs=2e-3)


def test_sequences_use_lengths_and_bad_input_is_named() -> None:
    rng = np.random.default_rng(0)
    lp = np.log(rng.dirichlet(np.ones(3), size=50))
    lengths = rng.integers(1, 100, size=50)
    result = mixmin(lp * lengths[:, None], lengths)
    assert abs(sum(result.weights) - 1) < 1e-12 and result.loss_after <= result.loss_before
    for bad, message in [(np.ones((4, 2)), "at most 0"), (np.zeros((4, 1)), "at least 2 sources"),
                         (np.full((3, 2), -np.inf), "probability 0 under every source")]:
        with pytest.raises(MixSQLError, match=message):
            mixmin(bad)
    with pytest.raises(MixSQLError, match="lengths must be 4 positive"):
        mixmin(np.log(np.full((4, 2), .5)), [1, 2, 3])
