"""The config-driven example trainer: 2 ranks on gloo, ADO adapting the mixture, a checkpoint and a
resume on the same stream bit for bit; and the data config's checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mixsql
from mixsql.config import ConfigError, parse_config
from tests.conftest import PARQUET_GLOB, ROOT, TOKENIZER

STEPS = 24


def _config(tmp_path: Path, catalog: Path) -> Path:
    cfg = {"data": {"catalog": str(catalog), "mixture": str(ROOT / "examples/mixtures/pretrain_ado.mixsql"),
                    "params": {"steps": STEPS, "start": 8, "every": 8}, "seq_len": 32, "batch_size": 8,
                    "num_workers": 1,
                    "datasets": {"corpus": {"paths": [PARQUET_GLOB], "tokenizer": str(TOKENIZER)}}},
           "model": {"d_model": 32, "layers": 1, "heads": 2},
           "train": {"lr": 0.003, "seed": 0, "checkpoint_every": 12, "log_every": 6}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _torchrun(config: Path, out: Path, *extra: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          str(ROOT / "examples/train.py"), "--config", str(config), "--out", str(out), *extra],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def _records(out: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (out / f"metrics.rank{rank}.jsonl").read_text().splitlines()]


def test_two_ranks_adapt_checkpoint_and_resume_on_the_same_stream(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path / "cat")
    full, part = tmp_path / "full", tmp_path / "part"
    stdout = _torchrun(config, full, "--plot")
    assert "tokens/s" in stdout and (full / "training.png").exists()
    summary = json.loads((full / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["weight_log"]  # ADO changed the weights
    _torchrun(config, part, "--max-steps", "12")
    _torchrun(config, part, "--resume")
    for rank in range(2):
        a, b = _records(full, rank), _records(part, rank)
        assert [r["step"] for r in b] == list(range(STEPS))
        assert [r["data"] for r in a] == [r["data"] for r in b]  # the same batches, before and after the resume
        assert [r["weights"] for r in a] == [r["weights"] for r in b]
    assert _records(full, 0)[5]["data"] != _records(full, 1)[5]["data"]  # ranks read different halves


def test_the_data_config_is_checked(tmp_path: Path) -> None:
    good = {"catalog": str(tmp_path / "cat"), "mixture": str(ROOT / "sample_data/pretrain.mixsql"), "batch_size": 4}
    assert parse_config(good).batch_size == 4
    for bad, message in [({"batch_sise": 4}, "data.batch_sise is not a data option.*did you mean batch_size"),
                         ({"batch_size": "4"}, "data.batch_size must be int"),
                         ({"batch_size": 0}, "at least 1"),
                         ({"mixture": str(tmp_path / "none.mixsql")}, "data.mixture: no file"),
                         ({"seq_len": 1}, "data.seq_len must be at least 2"),
                         ({"pack": "domain"}, "data.pack must be"),
                         ({"memory_bytes": 0}, "data.memory_bytes must be positive"),
                         ({"memory_bytes": "1G"}, "data.memory_bytes must be int")]:
        with pytest.raises(ConfigError, match=message):
            parse_config({**good, **bad})
    with pytest.raises(ConfigError, match="data.catalog is missing"):
        parse_config({"mixture": good["mixture"], "batch_size": 4})
    relative = parse_config({**good, "mixture": "pretrain.mixsql"}, base=ROOT / "sample_data")
    assert relative.mixture == ROOT / "sample_data" / "pretrain.mixsql"
    con = mixsql.connect(tmp_path / "cat")
    con.register("corpus", [PARQUET_GLOB])
    data = mixsql.from_config({**good, "params": {}}, base=ROOT)
    with pytest.raises(ConfigError, match="not registered"):
        mixsql.from_config({**good, "datasets": {"other": {"paths": [PARQUET_GLOB]}}}, register=False)
    statement = con.mix("MIX 1 AS all_docs FROM corpus LIMIT 10 STEPS BATCH SIZE 8")
    path = tmp_path / "b.mixsql"
    path.write_text(statement.bound.text)
    data = mixsql.from_config({**good, "mixture": str(path), "batch_size": 3})
    with pytest.raises(ConfigError, match="data.batch_size 3 x world size 2 = 6, but b.mixsql says BATCH SIZE 8"):
        data.dataset(rank=0, world_size=2)
    assert len(data.components) == 1
    bounded = mixsql.from_config({**good, "mixture": str(path), "batch_size": 4, "memory_bytes": 1 << 20})
    assert bounded.dataset(rank=0, world_size=2).memory_bytes == 1 << 20
    for bad in ([], ["text", 3], "text"):
        with pytest.raises(ConfigError, match="data.compact must"):
            parse_config({**good, "compact": bad})
    compact = {**good, "mixture": str(path), "batch_size": 4, "compact": ["text"]}
    # any rank builds it (of ranks asking at once, one builds and the others wait: tests/test_compact.py)
    built = mixsql.from_config(compact, register=False).dataset(rank=0, world_size=2)
    found = mixsql.from_config(compact).dataset(rank=0, world_size=2)
    assert built.compact is not None and found.compact == built.compact
    plain = bounded.dataset(rank=0, world_size=2)
    texts = [[s["text"] for s in batch] if isinstance(batch, list) else batch["text"] for batch in found]
    assert texts == [[s["text"] for s in batch] if isinstance(batch, list) else batch["text"] for batch in plain]


BASE = str(ROOT / "examples/mixtures/autoscale_base.mixsql")
HELDOUT = str(ROOT / "examples/mixtures/heldout.mixsql")


def _proxies(tmp_path: Path) -> tuple[Path, Path]:
    """(catalog, config) of tiny proxy runs over sample_data, the catalog registered once."""
    catalog = tmp_path / "cat"
    cfg = {"data": {"catalog": str(catalog), "mixture": BASE, "seq_len": 32, "batch_size": 8,
                    "datasets": {"corpus": {"paths": [PARQUET_GLOB], "tokenizer": str(TOKENIZER)}}},
           "model": {"d_model": 16, "layers": 1, "heads": 2}, "train": {"lr": 0.01, "seed": 0}}
    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump(cfg))
    mixsql.from_config(cfg["data"])
    return catalog, config


def _cli(catalog: Path, *args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "mixsql", "--catalog", str(catalog), *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _sweep(runs: Path, config: Path, *extra: str) -> str:
    run = subprocess.run([sys.executable, str(ROOT / "examples/sweep.py"), "--runs", str(runs), "--config",
                          str(config), "--eval", HELDOUT, *extra], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def test_the_autoscale_loop_generates_runs_trains_them_fits_and_resumes(tmp_path: Path) -> None:
    """plan-autoscale -> sweep (each proxy trained and evaluated on the held-out set) -> autoscale ->
    a .mixsql; the runs are a table; a sweep that stopped goes on where it stopped."""
    catalog, config = _proxies(tmp_path)
    _cli(catalog, "optimize", "plan-autoscale", BASE, "--budgets", "20,80", "-o", str(tmp_path / "runs"))
    runs = tmp_path / "runs" / "runs.json"
    _sweep(runs, config, "--eval-batches", "2")
    listing = json.loads(runs.read_text())
    assert len(listing) == 14 and all(isinstance(r["metric"], float) and r["plan"] for r in listing)
    listing[5]["metric"] = None  # as if interrupted before the sixth run's result
    runs.write_text(json.dumps(listing))
    assert "13 of 14 runs done; 1 to go" in _sweep(runs, config, "--eval-batches", "2")
    out = _cli(catalog, "optimize", "autoscale", BASE, "--results", str(runs), "--budget", "480", "-o",
               str(tmp_path / "best.mixsql"))
    assert "projected to 480" in out
    best = mixsql.connect(catalog).load(tmp_path / "best.mixsql")
    assert abs(sum(float(c.share) for c in best.bound.components) - 1) < 1e-3
    _cli(catalog, "register", "proxy_runs", str(runs.with_suffix(".jsonl")), "--content", "plan")
    assert "14 rows" in _cli(catalog, "sql", "SELECT run, budget, metric FROM proxy_runs")


def test_the_mixmin_loop_scores_the_target_set_with_each_proxy(tmp_path: Path) -> None:
    import numpy as np

    catalog, config = _proxies(tmp_path)
    _cli(catalog, "optimize", "plan-mixmin", BASE, "--budget", "60", "-o", str(tmp_path / "runs"))
    _sweep(tmp_path / "runs/runs.json", config, "--eval-docs", "20")
    with np.load(tmp_path / "runs" / "predictions.npz") as p:
        assert p["logprobs"].shape == (20, 3) and (p["logprobs"] < 0).all() and (p["lengths"] > 0).all()
        assert [str(s) for s in p["sources"]] == ["code", "docs", "manuals"]
    out = _cli(catalog, "optimize", "mixmin", BASE, "--predictions", str(tmp_path / "runs/predictions.npz"),
               "-o", str(tmp_path / "best.mixsql"), "--adapt")
    assert "MixMin: loss" in out
    best = mixsql.connect(catalog).load(tmp_path / "best.mixsql")
    assert best.bound.adapt is not None and abs(sum(float(c.share) for c in best.bound.components) - 1) < 1e-3
