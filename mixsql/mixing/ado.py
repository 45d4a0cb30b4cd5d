"""ADO, Adaptive Data Optimization (Jiang, Zhou, Feng, Malladi, Kolter; ICLR 2025), as a
deterministic state machine: the same feedback gives bit-identical weights on every rank.

Faithful to the original (``yidingjiang/ado``, ``src/data_selectors/ado.py``; the formulas are in
``../shared/research/algorithms.md`` section 1); each symbol below is a field of ``AdoConfig``:

- **Feedback** per step: per-component loss sums and token counts (``losses.component_losses``).
  A component's loss is sum / count; a component absent from a step carries its last loss. All
  components share one count n, which grows by the whole step (``use_same_step_size``), in units
  of ``count_unit`` tokens (the sequence length: the original counts 1024-token samples).
- **Fit** (at ``start_step`` and every ``update_every`` steps after, per component): smooth the
  loss series (Savitzky-Golay, ``window``, ``order``), keep steps after ``ignore_steps``, every
  ``subsample``-th; fit L(n) = eps + beta * n^-alpha in log space (log L = logsumexp(log beta -
  alpha log n, log eps)) under a Huber loss (``huber_delta``) with alpha in [``alpha_min``,
  ``alpha_max``], log beta <= ``log_beta_max``, log eps >= ``log_eps_min``. L-BFGS-B starts from
  the reference's 512-point grid; ``starts`` of them (the best on the grid) are refined, and the
  lowest objective wins (``starts=512`` refines all, as the reference does). A fit that is not
  finite keeps the previous parameters.
- **Policy** each step after the first fit: slope_k = max(alpha_k, ``slope_alpha_min``) (L_k(n) -
  eps_k) / n = -dL/dn; preference rho ∝ mu * h^``s`` * slope, floored at ``min_weight`` and
  renormalised; weights pi = ``gamma2`` rho + (1 - gamma2) pi_bar; running mean pi_bar <- rho/(t+1)
  + (1 - 1/(t+1)) pi_bar over every step t (pi_bar_0 = mu; rho = mu before the first fit); credit
  h <- (1 - ``gamma1``) h + gamma1 * (the step's realised token shares), h_0 = mu. Before the first
  fit the weights are the prior mu (the statement's weights).

Deviation, stated: hard bounds instead of the reference's linear penalties (its penalty weight is 1,
Mixtera's 1e3). ``starts`` defaults to the reference's 512; ``starts = 16`` (the best grid points
of each alpha) reached the same optimum as 512 on every test curve, about 30 times faster. And
``fit_lag`` (ours): the reference applies a refit at once; here it is applied that many steps
after the refit was due, whatever the thread's timing.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t

import numpy as np

from mixsql.errors import MixSQLError


@dataclasses.dataclass(frozen=True)
class AdoConfig:
    """ADO's hyperparameters, with the original's defaults (module docstring)."""

    start_step: int = 1000
    update_every: int = 1000
    ignore_steps: int = 1000
    window: int = 101
    order: int = 3
    subsample: int = 10
    gamma1: float = 0.1
    gamma2: float = 0.1
    s: float = 0.5
    min_weight: float = 0.01
    slope_alpha_min: float = 0.05
    alpha_min: float = 0.001
    alpha_max: float = 0.8
    log_beta_max: float = 6.5
    log_eps_min: float = 0.5
    huber_delta: float = 1e-3
    starts: int = 512
    max_iter: int = 200
    tol: float = 1e-5
    count_unit: int = 1024
    fit_lag: int = 20  # a refit after step s runs in the background and is used from step s + fit_lag on

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = int if f.type in ("int", int) else float
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise MixSQLError(f"ado: {f.name} must be {'an integer' if kind is int else 'a number'}, "
                                  f"not {value!r}")
            if not math.isfinite(value):
                raise MixSQLError(f"ado: {f.name} must be finite, not {value!r}")
        positive = ("update_every", "window", "subsample", "starts", "max_iter", "count_unit", "huber_delta", "tol")
        for name in positive:
            if getattr(self, name) <= 0:
                raise MixSQLError(f"ado: {name} must be positive, not {getattr(self, name)!r}")
        for name in ("start_step", "ignore_steps", "order", "s", "slope_alpha_min", "fit_lag"):
            if getattr(self, name) < 0:
                raise MixSQLError(f"ado: {name} cannot be negative, not {getattr(self, name)!r}")
        for name in ("gamma1", "gamma2"):
            if not 0 <= getattr(self, name) <= 1:
                raise MixSQLError(f"ado: {name} must be in [0, 1], not {getattr(self, name)!r}")
        if not 0 <= self.min_weight < 1:
            raise MixSQLError(f"ado: min_weight must be in [0, 1), not {self.min_weight!r}")
        if not 0 < self.alpha_min < self.alpha_max:
            raise MixSQLError(f"ado: need 0 < alpha_min < alpha_max, not {self.alpha_min!r}, {self.alpha_max!r}")
        if self.starts > 512:
            raise MixSQLError(f"ado: starts is at most 512 (the grid), not {self.starts!r}")

    @classmethod
    def from_options(cls, options: t.Mapping[str, t.Any]) -> "AdoConfig":
        """From a statement's ``ado(name = value, ...)``: unknown names are an error naming the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise MixSQLError(f"ado has no option {unknown[0]!r}", hint=f"its options: {', '.join(sorted(known))}")
        return cls(**options)

    def fit_due(self, step: int) -> bool:
        """Whether the laws are (re)fitted after the feedback of ``step``."""
        return step >= self.start_step and (step - self.start_step) % self.update_every == 0


# -- the fit ---------------------------------------------------------------------------------------

def _grid() -> np.ndarray:
    """The reference's starting points: (log beta, log eps, alpha)."""
    lb, le, al = np.meshgrid(np.arange(-2.0, 6.0), np.arange(-2.0, 2.0, 0.5), np.arange(0.0, 0.8, 0.1), indexing="ij")
    return np.stack([lb.ravel(), le.ravel(), al.ravel()], axis=1)


GRID = _grid()


def _objective(p: np.ndarray, x: np.ndarray, y: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Huber loss of log L(n) = logsumexp(log beta - alpha x, log eps) against y = log loss, x = log n."""
    log_beta, log_eps, alpha = p
    a = log_beta - alpha * x
    pred = np.logaddexp(a, log_eps)
    r = pred - y
    small = np.abs(r) <= delta
    value = float(np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)).sum())
    dr = np.where(small, r, delta * np.sign(r))
    wa = np.exp(a - pred)
    return value, np.array([(dr * wa).sum(), (dr * (1 - wa)).sum(), -(dr * wa * x).sum()])


def _values(points: np.ndarray, x: np.ndarray, y: np.ndarray, delta: float) -> np.ndarray:
    """The objective at many points at once (the grid)."""
    a = points[:, :1] - points[:, 2:3] * x[None, :]
    r = np.logaddexp(a, points[:, 1:2]) - y[None, :]
    return np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)).sum(axis=1)


def _spread_starts(values: np.ndarray, k: int) -> np.ndarray:
    """``k`` grid points to refine: the best ones of each alpha of the grid in turn (the basins of
    the law differ mostly in alpha, and the best points on the grid alone can all sit in one)."""
    alphas = GRID[:, 2]
    ranked = [np.flatnonzero(alphas == a)[np.argsort(values[alphas == a], kind="stable")] for a in np.unique(alphas)]
    picked = [int(r[i]) for i in range(max(len(r) for r in ranked)) for r in ranked if i < len(r)]
    return np.asarray(picked[:k], dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class Fit:
    """A fitted law L(n) = eps + beta * n^-alpha, with the objective reached and the points used."""

    eps: float
    beta: float
    alpha: float
    objective: float
    points: int

    def loss(self, n: float | np.ndarray) -> t.Any:
        return self.eps + self.beta * np.power(n, -self.alpha)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def fit_power_law(n: np.ndarray, loss: np.ndarray, config: AdoConfig = AdoConfig()) -> Fit | None:
    """Fit L(n) = eps + beta n^-alpha to (n, loss) (already smoothed and subsampled); None without
    two usable points. Deterministic: a fixed grid, a fixed number of refined starts, ties to the first."""
    from scipy.optimize import minimize

    n, loss = np.asarray(n, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    ok = np.isfinite(n) & np.isfinite(loss) & (n > 0) & (loss > 0)
    if ok.sum() < 2:
        return None
    x, y = np.log(n[ok]), np.log(loss[ok])
    bounds = [(None, config.log_beta_max), (config.log_eps_min, None), (config.alpha_min, config.alpha_max)]
    lo = np.array([-np.inf, config.log_eps_min, config.alpha_min])
    hi = np.array([config.log_beta_max, np.inf, config.alpha_max])
    starts = np.clip(GRID, lo, hi)
    order = _spread_starts(_values(starts, x, y, config.huber_delta), config.starts)
    best: tuple[float, np.ndarray] | None = None
    for i in order.tolist():
        result = minimize(_objective, starts[i], args=(x, y, config.huber_delta), jac=True, method="L-BFGS-B",
                          bounds=bounds, options={"maxiter": config.max_iter, "gtol": config.tol})
        if np.isfinite(result.fun) and np.all(np.isfinite(result.x)) and (best is None or result.fun < best[0]):
            best = (float(result.fun), np.asarray(result.x))
    if best is None:
        return None
    log_beta, log_eps, alpha = best[1].tolist()
    return Fit(eps=math.exp(log_eps), beta=math.exp(log_beta), alpha=alpha, objective=best[0], points=int(ok.sum()))


def fit_inputs(n: np.ndarray, loss: np.ndarray, config: AdoConfig) -> tuple[np.ndarray, np.ndarray]:
    """What a fit sees of one component's history (one value per step, from step 1): the loss
    smoothed (Savitzky-Golay), the steps after ``ignore_steps``, every ``subsample``-th."""
    from scipy.signal import savgol_filter

    loss = np.asarray(loss, dtype=np.float64)
    known = np.isfinite(loss)
    if not known.any():
        return np.zeros(0), np.zeros(0)
    first = int(np.argmax(known))  # before a component's first report there is nothing to smooth
    series = loss[first:]
    window = min(config.window, len(series) - (1 - len(series) % 2))
    if window > config.order:
        series = savgol_filter(series, window, config.order)
    steps = np.arange(first + 1, len(loss) + 1)
    keep = np.flatnonzero(steps > config.ignore_steps)[:: config.subsample]
    return np.asarray(n, dtype=np.float64)[first:][keep], series[keep]


def fit_all(losses: np.ndarray, n: np.ndarray, config: AdoConfig) -> list[Fit | None]:
    """Each component's law from its loss history (losses: [step, component]; n: the shared count)."""
    out: list[Fit | None] = []
    for k in range(losses.shape[1]):
        x, y = fit_inputs(n, losses[:, k], config)
        out.append(fit_power_law(x, y, config))
    return out


# -- the state machine -----------------------------------------------------------------------------

class Ado:
    """ADO over K components from prior weights ``mu``: ``observe`` each step's feedback, read
    ``weights``. ``state_dict``/``from_state`` give it back bit-exactly (a resume)."""

    def __init__(self, mu: t.Sequence[float], config: AdoConfig = AdoConfig()) -> None:
        mu = np.asarray(mu, dtype=np.float64)
        if mu.ndim != 1 or len(mu) < 1 or not np.all(np.isfinite(mu)) or (mu < 0).any() or mu.sum() <= 0:
            raise MixSQLError(f"ado: the prior weights must be non-negative with a positive sum, not {mu.tolist()}")
        self.config = config
        self.mu = mu / mu.sum()
        self.h = self.mu.copy()
        self.pi_bar = self.mu.copy()
        self.pi = self.mu.copy()
        self.rho = self.mu.copy()
        self.step = 0  # steps observed
        self.n: list[float] = []  # the shared count after each step
        self.losses: list[list[float]] = []  # mean loss per component after each step (NaN before its first)
        self.fits: list[Fit | None] = [None] * len(mu)
        self.fitted_at: int | None = None

    @property
    def components(self) -> int:
        return len(self.mu)

    def observe(self, step: int, sums: t.Sequence[float], counts: t.Sequence[int]) -> np.ndarray:
        """Take the feedback of ``step`` (0, 1, 2, ... in order) and return the weights it yields.
        Refits, when due, run here; a caller that fits elsewhere uses ``record``, ``fit``,
        ``apply_fit`` and ``update`` itself."""
        self.record(step, sums, counts)
        if self.config.fit_due(self.step):
            self.apply_fit(self.fit())
        return self.update()

    def record(self, step: int, sums: t.Sequence[float], counts: t.Sequence[int]) -> None:
        """Check and store one step's feedback (nothing else changes when it is refused)."""
        sums_a, counts_a = check_feedback(step, self.step, sums, counts, self.components)
        total = float(counts_a.sum())
        last = self.losses[-1] if self.losses else [math.nan] * self.components
        mean = [float(s / c) if c > 0 else last[k] for k, (s, c) in enumerate(zip(sums_a, counts_a))]
        self.losses.append(mean)
        self.n.append((self.n[-1] if self.n else 0.0) + total / self.config.count_unit)
        if total > 0:
            self.h = (1 - self.config.gamma1) * self.h + self.config.gamma1 * (counts_a / total)
        self.step += 1

    def fit(self) -> list[Fit | None]:
        """Fit every component's law on the history so far (pure: the state is unchanged)."""
        return fit_all(np.asarray(self.losses, dtype=np.float64), np.asarray(self.n, dtype=np.float64), self.config)

    def apply_fit(self, fits: t.Sequence[Fit | None]) -> None:
        """Use new fits (a component whose fit failed keeps its previous law)."""
        self.fits = [new if new is not None else old for new, old in zip(fits, self.fits)]
        self.fitted_at = self.step

    def slopes(self) -> np.ndarray | None:
        """-dL/dn of each component's law at the current n (None before every component has one)."""
        if any(f is None for f in self.fits) or not self.n or self.n[-1] <= 0:
            return None
        n = self.n[-1]
        return np.array([max(f.alpha, self.config.slope_alpha_min) * (f.loss(n) - f.eps) / n
                         for f in self.fits if f is not None])

    def update(self) -> np.ndarray:
        """This step's preference, weights and running mean (module docstring); returns the weights."""
        slope = self.slopes()
        t_ = self.step
        if slope is None:
            rho = self.mu.copy()
        else:
            raw = self.mu * np.power(self.h, self.config.s) * slope
            rho = raw / raw.sum() if raw.sum() > 0 and np.all(np.isfinite(raw)) else self.mu.copy()
            rho = np.maximum(rho, self.config.min_weight)
            rho = rho / rho.sum()
            self.pi = self.config.gamma2 * rho + (1 - self.config.gamma2) * self.pi_bar
        self.rho = rho
        self.pi_bar = rho / (t_ + 1) + (1 - 1 / (t_ + 1)) * self.pi_bar
        if slope is None:
            self.pi = self.mu.copy()
        return self.pi.copy()

    def state_dict(self) -> dict[str, t.Any]:
        """Everything needed to continue bit-exactly (floats round-trip through JSON exactly)."""
        return {"algorithm": "ado", "config": dataclasses.asdict(self.config), "mu": self.mu.tolist(),
                "h": self.h.tolist(), "pi_bar": self.pi_bar.tolist(), "pi": self.pi.tolist(),
                "rho": self.rho.tolist(), "step": self.step, "n": list(self.n), "losses": [list(r) for r in self.losses],
                "fits": [f.to_dict() if f is not None else None for f in self.fits], "fitted_at": self.fitted_at}

    @classmethod
    def from_state(cls, state: t.Mapping[str, t.Any]) -> "Ado":
        if state.get("algorithm") != "ado":
            raise MixSQLError(f"not an ADO state: algorithm {state.get('algorithm')!r}")
        self = cls(state["mu"], AdoConfig(**state["config"]))
        self.mu = np.asarray(state["mu"], dtype=np.float64)
        for name in ("h", "pi_bar", "pi", "rho"):
            setattr(self, name, np.asarray(state[name], dtype=np.float64))
        self.step, self.n = int(state["step"]), [float(v) for v in state["n"]]
        self.losses = [[float(v) for v in row] for row in state["losses"]]
        self.fits = [Fit(**f) if f is not None else None for f in state["fits"]]
        self.fitted_at = state["fitted_at"]
        return self


def check_feedback(step: t.Any, expected: int, sums: t.Sequence[float], counts: t.Sequence[int],
                   components: int) -> tuple[np.ndarray, np.ndarray]:
    """One step's feedback as float64 sums and int64 counts, or an error saying what is wrong."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise MixSQLError(f"feedback step must be an integer, not {step!r}")
    if step != expected:
        raise MixSQLError(f"feedback for step {step}, but the next step to report is {expected}",
                          hint="report every optimizer step once, in order, from the step the run started at"
                          if step > expected else "this step was reported already")
    sums_a = _vector(sums, "loss sums", components, np.float64)
    counts_raw = _vector(counts, "token counts", components, np.float64)
    if not np.all(np.isfinite(sums_a)):
        bad = int(np.flatnonzero(~np.isfinite(sums_a))[0])
        raise MixSQLError(f"feedback for step {step}: the loss sum of component {bad} is {sums_a[bad]}",
                          hint="a NaN or infinite loss would steer the mixture; skip the step's update, "
                               "or report it once the loss is finite")
    if (counts_raw < 0).any() or not np.all(counts_raw == np.round(counts_raw)):
        bad = int(np.flatnonzero((counts_raw < 0) | (counts_raw != np.round(counts_raw)))[0])
        raise MixSQLError(f"feedback for step {step}: the token count of component {bad} is {counts_raw[bad]}, "
                          "not a non-negative integer")
    if (sums_a < 0).any():
        bad = int(np.flatnonzero(sums_a < 0)[0])
        raise MixSQLError(f"feedback for step {step}: the loss sum of component {bad} is negative ({sums_a[bad]})")
    return sums_a, counts_raw.astype(np.int64)


def _vector(values: t.Any, what: str, components: int, dtype: t.Any) -> np.ndarray:
    try:
        import torch

        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    try:
        array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError):
        raise MixSQLError(f"feedback {what} must be numbers, not {values!r}") from None
    if array.shape != (components,):
        raise MixSQLError(f"feedback {what} have shape {array.shape}, but the mixture has {components} components",
                          hint="one value per component, in the order of mix.components")
    return array
