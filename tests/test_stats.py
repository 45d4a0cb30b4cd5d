"""mixsql stats: its numbers against independent DuckDB queries over the raw files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb

import mixsql
from mixsql.stats import stats
from tests.conftest import PARQUET_GLOB, ROOT


def test_stats_match_the_files(con: mixsql.Connection) -> None:
    s = stats(con, "corpus")
    src = f"read_parquet('{PARQUET_GLOB}')"
    props = {p.name: p for p in s.properties}
    assert s.samples == 4200 and "_row" not in props
    assert props["domain"].distinct == duckdb.sql(f"SELECT count(DISTINCT domain) FROM {src}").fetchall()[0][0]
    low, median, high, mean = duckdb.sql(f"SELECT min(quality), quantile_cont(quality, 0.5), max(quality), "
                                         f"avg(quality) FROM {src}").fetchall()[0]
    summary = props["quality"].summary
    assert f"min {low:.4g}" in summary and f"max {high:.4g}" in summary and f"mean {mean:.4g}" in summary
    shown = float(re.search(r"median (\S+)", summary).group(1))  # DuckDB's approximate quantile: not exact
    assert abs(shown - median) <= 0.002 * (high - low)
    by_domain = next(b for b in s.breakdowns if b.property == "domain")
    expected = dict(duckdb.sql(f"SELECT domain, sum(strlen(text)) FROM {src} GROUP BY 1").fetchall())
    assert {v: b for v, _, b, _ in by_domain.rows} == expected
    assert "origin" not in {b.property for b in s.breakdowns}  # too many values to be a category
    assert "by domain:" in str(s)


def test_nulls_and_tokens(scratch: mixsql.Connection, tmp_path: Path) -> None:
    rows = [{"text": "a b c", "lang": "en", "n_tokens": 3, "score": 0.5},
            {"text": "d e", "lang": "fr", "n_tokens": 2},
            {"text": "f", "lang": "en", "n_tokens": 1, "score": None}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scratch.register("tiny", [str(tmp_path / "d.jsonl")])
    s = stats(scratch, "tiny")
    props = {p.name: p for p in s.properties}
    assert props["score"].nulls == 2 and props["score"].count == 1 and props["lang"].distinct == 2
    assert s.tokens == "n_tokens"
    lang = next(b for b in s.breakdowns if b.property == "lang")
    assert {v: (n, b, t) for v, n, b, t in lang.rows} == {"en": (2, 6, 4), "fr": (1, 3, 2)}


def test_stats_cli(sample_catalog: Path) -> None:
    run = [sys.executable, "-m", "mixsql", "--catalog", str(sample_catalog), "stats"]
    out = subprocess.run(run + ["corpus", "--json"], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout)["samples"] == 4200
    bad = subprocess.run(run + ["corpsu"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "unknown dataset" in bad.stderr
