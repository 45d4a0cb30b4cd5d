"""The runtime stands alone: what a DataLoader worker imports to stream a compiled plan loads no
compile-time module (sqlglot, DuckDB, parse, bind, plan, manifest, catalog, api)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import mixsql
from tests.conftest import ROOT

COMPILE_TIME = ["sqlglot", "duckdb", "mixsql.parse", "mixsql.bind", "mixsql.plan", "mixsql.manifest",
                "mixsql.catalog", "mixsql.api", "mixsql.explain"]

SCRIPT = """
import json, sys
import torch.utils.data
from mixsql.dataset import MixDataset, collate
ds = MixDataset(sys.argv[1], batch_size=4, columns=["id"])
loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
ids = [i for batch in loader for i in batch["id"]]
print(json.dumps({"ids": ids, "loaded": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


@pytest.mark.parametrize("budget", ["", " LIMIT 3000 SAMPLES ON EXHAUSTION REPEAT"])
def test_a_worker_streams_a_plan_without_the_compiler(con: mixsql.Connection, budget: str) -> None:
    """Also a plan whose later epochs the workers derive (``epochs``)."""
    mix = con.mix("MIX 0.6 AS code WHERE domain = 'code', 0.4 AS rest FROM corpus" + budget)
    plan = mix.plan()
    assert bool(plan.derived) == bool(budget)
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(plan.directory), json.dumps(COMPILE_TIME)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    expected = [s["id"] for s in mix.torch_dataset(batch_size=4, columns=["id"])]
    assert sorted(result["ids"]) == sorted(expected) and len(result["ids"]) == len(expected) > 0


def test_the_package_resolves_names_lazily() -> None:
    code = "import sys, mixsql; assert 'duckdb' not in sys.modules and 'sqlglot' not in sys.modules; " \
           "mixsql.MixSQLError; assert 'duckdb' not in sys.modules; mixsql.collate; assert 'torch' not in sys.modules; " \
           "mixsql.connect; assert 'duckdb' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert sorted(mixsql.__all__) == mixsql.__all__ and all(getattr(mixsql, n) for n in mixsql.__all__)


PACKED = """
import json, sys
import torch.utils.data
from mixsql.dataset import MixDataset
ds = MixDataset(sys.argv[1], batch_size=4, seq_len=64)
loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
sums = [int(x.sum()) for batch in loader for x in batch["input_ids"]]
print(json.dumps({"sums": sums, "loaded": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


def test_a_worker_packs_sequences_without_the_compiler(tcon: mixsql.Connection) -> None:
    mix = tcon.mix("MIX 0.6 AS code WHERE domain = 'code', 0.4 AS rest FROM corpus")
    plan = mix.plan()
    out = subprocess.run([sys.executable, "-c", PACKED, str(plan.directory), json.dumps(COMPILE_TIME)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    expected = [int(s["input_ids"].sum()) for s in mix.torch_dataset(batch_size=4, seq_len=64)]
    assert sorted(result["sums"]) == sorted(expected) and len(expected) > 0
