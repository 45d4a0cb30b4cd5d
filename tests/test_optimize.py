"""`mixsql optimize`: MixMin and AutoScale from files to a .mixsql statement (optionally handed to
ADO), with their input checked and nothing written on an error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mixsql
from mixsql.cli import main

BASE = ("MIX 1 AS code WHERE domain = 'code', 1 AS docs WHERE domain = 'docs', 1 AS manuals WHERE domain = 'manual' "
        "FROM corpus LIMIT 10 STEPS BATCH SIZE 16")
P = np.array([[.5, .2, .1, .1, .05, .05], [.05, .1, .5, .2, .1, .05], [.1, .1, .1, .1, .3, .3]])


def _run(con: mixsql.Connection, *args: str) -> tuple[int, str]:
    out = CliRunner().invoke(main, ["--catalog", str(con.catalog.path), "optimize", *args])
    return out.exit_code, out.output


def test_mixmin_writes_the_planted_mixture_and_hands_it_to_ado(con: mixsql.Connection, tmp_path: Path) -> None:
    statement = tmp_path / "base.mixsql"
    statement.write_text(BASE)
    # a target set drawn from .6 code + .3 docs + .1 manuals of three known "proxies" over 6 symbols
    rng = np.random.default_rng(0)
    target = .6 * P[0] + .3 * P[1] + .1 * P[2]
    symbols = rng.choice(6, size=20_000, p=target)
    np.savez(tmp_path / "pred.npz", logprobs=np.log(P.T)[symbols], sources=np.array(["code", "docs", "manuals"]))
    code, output = _run(con, "mixmin", str(statement), "--predictions", str(tmp_path / "pred.npz"),
                        "-o", str(tmp_path / "out.mixsql"), "--adapt", "--steps", "300")
    assert code == 0, output
    assert "MixMin: loss" in output and "ADAPT USING ado() starts from them" in output
    mix = con.load(tmp_path / "out.mixsql")
    shares = [float(c.share) for c in mix.bound.components]
    assert shares == pytest.approx([.6, .3, .1], abs=0.02) and mix.bound.adapt is not None
    adaptive = mix.torch_dataset(batch_size=16)._adaptive  # the hand-off: ADO's prior and first weights
    assert adaptive.prior == pytest.approx(shares) and list(adaptive.online.ado.pi) == pytest.approx(shares)
    # bad input: nothing written
    np.savez(tmp_path / "bad.npz", logprobs=np.log(P.T)[symbols][:, :2])
    code, output = _run(con, "mixmin", str(statement), "--predictions", str(tmp_path / "bad.npz"),
                        "-o", str(tmp_path / "none.mixsql"))
    assert code != 0 and "logprobs has shape" in output and not (tmp_path / "none.mixsql").exists()


def _runs(budgets: list[float], steep: int) -> list[dict]:
    """2K+1 runs per budget from a separable loss; component ``steep`` saturates fastest (exponent 0.7)."""
    gains = np.array([0.3, 0.3, 0.3])
    gains[steep] = 0.7
    out = []
    for b in budgets:
        base = np.full(3, b / 3)
        for j, x in [(None, 1.0)] + [(j, x) for j in range(3) for x in (0.2, 3.0)]:
            n = base.copy()
            if j is not None:
                n[j] *= x
            out.append({"budget": b, "metric": float((2.0 * n ** -gains).sum() + 1.0),
                        **{c: (x if j == k else 1.0) for k, c in enumerate(("code", "docs", "manuals"))}})
    return out


def test_autoscale_fits_projects_and_refuses_missing_runs(con: mixsql.Connection, tmp_path: Path) -> None:
    statement = tmp_path / "base.mixsql"
    statement.write_text(BASE)
    results = tmp_path / "runs.json"
    results.write_text(json.dumps(_runs([300.0, 1200.0], steep=1)))
    code, output = _run(con, "autoscale", str(statement), "--results", str(results), "--budget", "5000",
                        "-o", str(tmp_path / "out.mixsql"))
    assert code == 0, output
    assert "budget 300: DDO quantities" in output and "projected to 5000" in output
    shares = [float(c.share) for c in con.load(tmp_path / "out.mixsql").bound.components]
    code, output = _run(con, "autoscale", str(statement), "--results", str(results), "--budget", "300",
                        "-o", str(tmp_path / "small.mixsql"))
    small = [float(c.share) for c in con.load(tmp_path / "small.mixsql").bound.components]
    # the component whose loss saturates fastest (exponent 0.7) has the least, and less as the budget grows
    assert abs(sum(shares) - 1) < 1e-3 and int(np.argmin(shares)) == 1 and shares[1] < small[1]
    runs = _runs([300.0], steep=0)[:-1]  # one run missing
    results.write_text(json.dumps(runs))
    code, output = _run(con, "autoscale", str(statement), "--results", str(results), "--budget", "300",
                        "-o", str(tmp_path / "none.mixsql"))
    assert code != 0 and "'manuals' has 1 run(s) beside the base one" in output
    runs = _runs([300.0], steep=0)
    runs[3]["metric"] = float("nan")
    results.write_text(json.dumps(runs))
    code, output = _run(con, "autoscale", str(statement), "--results", str(results), "--budget", "300",
                        "-o", str(tmp_path / "none.mixsql"))
    assert code != 0 and "run 3: metric is nan" in output and not (tmp_path / "none.mixsql").exists()
    results.write_text(json.dumps(_runs([300.0], steep=0)))
    code, output = _run(con, "autoscale", str(statement), "--results", str(results), "--budget", "900",
                        "-o", str(tmp_path / "none.mixsql"))
    assert code != 0 and "needs DDO at two" in output


def test_the_proxy_runs_are_written_then_their_metrics_fitted(con: mixsql.Connection, tmp_path: Path) -> None:
    statement = tmp_path / "base.mixsql"
    statement.write_text(BASE)
    code, output = _run(con, "plan-autoscale", str(statement), "--budgets", "150,600", "-o", str(tmp_path / "runs"))
    assert code == 0, output
    listing = json.loads((tmp_path / "runs" / "runs.json").read_text())
    assert len(listing) == 2 * (2 * 3 + 1)
    for run in listing:  # each proxy statement binds, with its quantities as weights and its budget as LIMIT
        mix = con.load(tmp_path / "runs" / run["file"])
        x = np.array([run[c] for c in ("code", "docs", "manuals")])
        assert [float(c.share) for c in mix.bound.components] == pytest.approx(x / x.sum(), abs=1e-5)
        assert mix.bound.limit == round(run["budget"] / 3 * x.sum())
        n = run["budget"] / 3 * x
        run["metric"] = float((2.0 * n ** -np.array([0.3, 0.7, 0.3])).sum() + 1.0)  # "trained": its loss
    (tmp_path / "runs" / "runs.json").write_text(json.dumps(listing))
    code, output = _run(con, "autoscale", str(statement), "--results", str(tmp_path / "runs" / "runs.json"),
                        "--budget", "5000", "-o", str(tmp_path / "out.mixsql"))
    assert code == 0, output
    shares = [float(c.share) for c in con.load(tmp_path / "out.mixsql").bound.components]
    assert int(np.argmin(shares)) == 1


def test_runs_of_other_data_are_refused(con: mixsql.Connection, tmp_path: Path) -> None:
    statement = tmp_path / "base.mixsql"
    statement.write_text(BASE)
    runs = _runs([300.0], steep=0)
    version = con.dataset("corpus").version
    for run in runs:
        run["datasets"] = {"corpus": version}
    runs[2]["datasets"] = {"corpus": "0123456789abcdef"}
    runs[2]["run"] = "code_x3"
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    code, output = _run(con, "autoscale", str(statement), "--results", str(tmp_path / "runs.json"), "--budget", "300",
                        "-o", str(tmp_path / "none.mixsql"))
    assert code != 0 and "run 'code_x3' was trained on dataset 'corpus' version 0123456789abcdef" in output
    assert not (tmp_path / "none.mixsql").exists()


def test_token_budgets_make_the_weights_token_shares(tcon: mixsql.Connection, tmp_path: Path) -> None:
    statement = tmp_path / "base.mixsql"
    statement.write_text(BASE.replace("LIMIT 10 STEPS BATCH SIZE 16", ""))
    code, output = _run(tcon, "plan-autoscale", str(statement), "--budgets", "6000", "--unit", "tokens",
                        "-o", str(tmp_path / "runs"))
    assert code == 0, output
    listing = json.loads((tmp_path / "runs" / "runs.json").read_text())
    mix = tcon.load(tmp_path / "runs" / listing[1]["file"])
    x = sum(listing[1][c] for c in ("code", "docs", "manuals"))
    assert mix.bound.unit == "TOKENS" and mix.bound.token_limit == round(6000 / 3 * x)
    for run in listing:
        n = run["budget"] / 3 * np.array([run[c] for c in ("code", "docs", "manuals")])
        run["metric"] = float((2.0 * n ** -0.4).sum() + 1.0)
    (tmp_path / "runs" / "runs.json").write_text(json.dumps(listing))
    code, output = _run(tcon, "autoscale", str(statement), "--results", str(tmp_path / "runs" / "runs.json"),
                        "--budget", "6000", "-o", str(tmp_path / "out.mixsql"))
    assert code == 0, output
    assert tcon.load(tmp_path / "out.mixsql").bound.unit == "TOKENS"
