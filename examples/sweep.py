"""Run a sweep of proxy runs with the example trainer, recording each one's result: resumable.

    mixsql optimize plan-autoscale examples/mixtures/autoscale_base.mixsql --budgets 150,600 -o runs/autoscale
    python examples/sweep.py --runs runs/autoscale/runs.json --config examples/configs/proxy.yaml \\
        --eval examples/mixtures/heldout.mixsql
    mixsql optimize autoscale examples/mixtures/autoscale_base.mixsql --results runs/autoscale/runs.json \\
        --budget 2400 -o runs/autoscale/best.mixsql

For MixMin (``mixsql optimize plan-mixmin``), each proxy's log-probabilities of the target set's
documents are recorded instead, and ``predictions.npz`` is written once all are in.

Each run of ``runs.json`` whose ``metric`` is empty is trained (``examples/train.py``, one process)
on its own statement with the config's model and data options, evaluated on the target set
(``--eval``, a .mixsql), and its held-out loss written back, with the plan's key (the statement,
data and seed it ran), after every run: an interrupted sweep goes on where it stopped. The same
records go to ``runs.jsonl``, which registers as a dataset, so the sweep is data:

    mixsql register proxy_runs runs/autoscale/runs.jsonl --content plan
    mixsql sql "SELECT run, budget, metric FROM proxy_runs ORDER BY budget, metric"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

import mixsql
from mixsql import atomic

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, type=Path, help="runs.json of `mixsql optimize plan-autoscale`")
    parser.add_argument("--config", required=True, type=Path, help="the trainer's config (model, train, data)")
    parser.add_argument("--eval", required=True, type=Path, help="the target set, a .mixsql")
    parser.add_argument("--eval-batches", type=int, default=20, help="AutoScale: target-set batches per run")
    parser.add_argument("--eval-docs", type=int, default=200, help="MixMin: target-set documents scored per run")
    args = parser.parse_args()
    runs = json.loads(args.runs.read_text())
    cfg = yaml.safe_load(args.config.read_text())
    base = args.config.resolve().parent
    data = mixsql.from_config(cfg["data"], base=base)  # registers the datasets once, before the runs
    key = "logprobs" if runs and runs[0].get("method") == "mixmin" else "metric"
    todo = [r for r in runs if r.get(key) is None]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs done; {len(todo)} to go", flush=True)
    for run in todo:
        statement = (args.runs.parent / run["file"]).resolve()
        mix = data.connection.load(statement)
        one = {**cfg, "data": {**cfg["data"], "mixture": str(statement),
                               "catalog": str(data.config.catalog)}}
        one["data"].pop("datasets", None)
        out = args.runs.parent / Path(run["file"]).stem
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=base, delete=False) as f:
            yaml.safe_dump(one, f)
        try:
            scoring = ["--logprobs", str(args.eval.resolve()), "--logprobs-docs", str(args.eval_docs)] \
                if key == "logprobs" else ["--eval", str(args.eval.resolve()), "--eval-batches", str(args.eval_batches)]
            result = subprocess.run([sys.executable, str(HERE / "train.py"), "--config", f.name, "--out", str(out),
                                     *scoring], capture_output=True, text=True, env={**os.environ, "WORLD_SIZE": "1"})
        finally:
            os.unlink(f.name)
        if result.returncode != 0:
            sys.exit(f"run {run['run']} at budget {run['budget']} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        summary = json.loads((out / "summary.json").read_text())
        if key == "logprobs":
            run.update(logprobs=str((out / summary["logprobs"]).relative_to(args.runs.parent)))
        else:
            run.update(metric=summary["eval_loss"])
        run.update(plan=mix.plan().key, seed=mix.bound.seed, steps=summary["steps"],
                   datasets=dict(mix.bound.dataset_versions))
        atomic.write_text(args.runs, json.dumps(runs, indent=1) + "\n")  # after every run: resumable
        atomic.write_text(args.runs.with_suffix(".jsonl"), "".join(json.dumps(r) + "\n" for r in runs
                                                                    if r.get(key) is not None))
        what = f"held-out loss {run['metric']:.4f}" if key == "metric" else "log-probabilities of the target set"
        print(f"{run['run']:>16} at budget {run['budget']}: {what} ({summary['steps']} steps)", flush=True)
    if key == "logprobs" and all(r.get("logprobs") for r in runs):  # MixMin's input, components in order
        parts = [np.load(args.runs.parent / r["logprobs"]) for r in runs]
        np.savez(args.runs.parent / "predictions.npz", logprobs=np.stack([p["logprobs"] for p in parts], axis=1),
                 lengths=parts[0]["lengths"], sources=np.array([r["component"] for r in runs]))
        print(f"wrote {args.runs.parent / 'predictions.npz'}", flush=True)


if __name__ == "__main__":
    main()
