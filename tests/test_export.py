"""Exporting a plan: the manifest's row ranges are exactly the stream, written a block at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import mixsql
from mixsql import export
from mixsql.planfile import CompiledPlan, lineage

STATEMENTS = [
    "MIX 0.6 AS code WHERE domain = 'code', 0.4 AS rest FROM corpus CHUNK SIZE 32 PARTITIONS 3",
    "MIX 0.5 AS code WHERE domain = 'code', 0.5 AS rest FROM corpus_jsonl LIMIT 5000 SAMPLES ON EXHAUSTION REPEAT "
    "CHUNK SIZE 16 PARTITIONS 2",
]


@pytest.mark.parametrize("sql", STATEMENTS)
def test_manifest_ranges_expand_to_the_stream_whatever_the_block(con: mixsql.Connection, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, sql: str) -> None:
    mix = con.mix(sql)
    whole = pq.read_table(mix.write_plan(tmp_path / "whole"))
    monkeypatch.setattr(export, "MANIFEST_BLOCK", 40)  # many blocks, each a few chunks
    blocks = pq.read_table(export.write_manifest(CompiledPlan(tmp_path / "whole"), tmp_path))
    assert blocks.equals(whole)
    plan = mix.plan()
    assert sum(whole.column("row_count").to_pylist()) == len(plan)
    expanded = sorted((p, c, comp, Path(f).name, r0 + i) for p, c, comp, f, r0, n in zip(
        *(whole.column(k).to_pylist() for k in ("partition", "chunk", "component", "file", "row_start", "row_count")))
        for i in range(n))
    lin = lineage(plan, 0, len(plan))
    assert expanded == sorted(zip(lin.column("partition").to_pylist(), lin.column("chunk").to_pylist(),
                                  lin.column("component").to_pylist(),
                                  [Path(f).name for f in lin.column("file").to_pylist()], lin.column("row").to_pylist()))
    keys = list(zip(*(whole.column(k).to_pylist() for k in ("partition", "chunk"))))
    assert keys == sorted(keys) and np.all(np.asarray(whole.column("row_count")) > 0)


def test_a_plan_without_its_tables(con: mixsql.Connection, sample_catalog: Path, tmp_path: Path) -> None:
    """A budget of billions makes the per-sample tables large: the plan alone is what ranks read."""
    from click.testing import CliRunner

    from mixsql.cli import main

    mix = con.mix(STATEMENTS[1])
    assert mix.write_plan(tmp_path / "bare", tables=False) is None
    assert not (tmp_path / "bare" / "manifest.parquet").exists() and not (tmp_path / "bare" / "lineage.parquet").exists()
    plan = mix.plan()
    assert lineage(CompiledPlan(tmp_path / "bare"), 0, len(plan)).equals(lineage(plan, 0, len(plan)))
    statement = tmp_path / "m.mixsql"
    statement.write_text(STATEMENTS[1])
    result = CliRunner().invoke(main, ["--catalog", str(sample_catalog), "plan", str(statement), "-o",
                                       str(tmp_path / "cli"), "--no-tables"])
    assert result.exit_code == 0, result.output
    assert "(no manifest or lineage tables)" in result.output and (tmp_path / "cli" / "plan.json").exists()
