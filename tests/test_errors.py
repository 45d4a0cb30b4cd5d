"""Every bad input of the hardening review is a MixSQLError with a position where there is one,
within a second, before anything big is allocated."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mixsql
from mixsql import limits
from mixsql.errors import MixSQLError
from mixsql.parse import parse
from tests.conftest import ROOT

CHAIN = "WITH " + ", ".join(["p0 AS (quality > 0.5)"] + [f"p{i} AS (p{i - 1} AND p{i - 1})" for i in range(1, 30)])


@pytest.mark.parametrize("text, params, message, positioned", [
    ("MIX 1 AS a FROM corpus CHUNK SIZE 100000000", {}, "CHUNK SIZE must be from 1 to", True),
    ("MIX 1 AS a FROM corpus LIMIT 9223372036854775807 SAMPLES", {}, "more than this machine can plan", True),
    ("MIX 1 AS a FROM corpus LIMIT 1000000000000 SAMPLES ON EXHAUSTION REPEAT", {}, "more than this machine", True),
    ("MIX 1 AS a FROM corpus LIMIT 10 STEPS BATCH SIZE 100000000000000", {}, "BATCH SIZE must be from 1", True),
    ("MIX 1 AS a FROM corpus ON EXHAUSTION REPEAT", {}, "endless stream", True),
    ("MIX 1e999999999 AS a, 1 AS b FROM corpus", {}, "out of range", True),
    ("MIX 0.1234567890123456789012345678901234 AS a FROM corpus", {}, "significant digits", True),
    ("MIX TEMPERATURE 0.000000001 a WHERE quality > 0.5, b FROM corpus", {}, "TEMPERATURE must be from", True),
    (CHAIN + " MIX 1 AS a WHERE p29 FROM corpus", {}, "expands to", True),
    ("MIX " + ", ".join(f"1 AS c{i} WHERE quality > {i / 2000}" for i in range(1100)) + " FROM corpus", {},
     "at most 1,024 components", True),
    ("MIX 1 AS a WHERE " + "(" * 43 + "quality > 0.5" + ")" * 43 + " FROM corpus", {}, "parentheses deep", True),
    ("MIX 1 AS a WHERE " + "NOT " * 300 + "quality > 0.5 FROM corpus", {}, "prefix operators", True),
    ("MIX 1 AS a WHERE " + "abs(" * 43 + "quality" + ")" * 43 + " > 0.5 FROM corpus", {}, "parentheses deep", True),
    ('MIX 1 AS "" FROM corpus', {}, "cannot be empty", True),
    ('MIX 1 AS "a.b" FROM corpus', {}, "contains '.'", True),
    (";", {}, "empty statement", True),
    (" ; ;", {}, "empty statement", True),
    ("MIX 1 AS a FROM corpus SEED :s", {"s": -1}, "non-negative integer", True),
    ("MIX 1 AS a FROM corpus SEED :s", {"s": 10 ** 400}, "at most 19 digits", True),
    ("MIX :w AS a FROM corpus", {"w": float("inf")}, "not a finite number", True),
    ("MIX 1 AS a WHERE quality > ? FROM corpus", {}, "parameters bind by name", True),
    ("MIX 1 AS a WHERE quality > $1 FROM corpus", {}, "parameters bind by name", True),
    ("MIX 1 AS a WHERE random() < 0.5, 1 AS b FROM corpus", {}, "random() gives a different result", True),
    ("MIX 1 AS a WHERE now() > DATE '2020-01-01', 1 AS b FROM corpus", {}, "now() gives", True),
    ("MIX 1 AS a WHERE quality > 0.5 AND CAST(random() * 2 AS INT) = 1, 1 AS b FROM corpus", {},
     "random() gives", True),
    ("MIX 1 AS a WHERE domain = 'code' OR uuid() IS NULL, 1 AS b FROM corpus", {}, "uuid() gives", True),
    ("MIX 1 AS a WHERE current_date > DATE '2020-01-01', 1 AS b FROM corpus", {}, "current_date() gives", True),
    ("MIX 1 AS a, 1 AS b WHERE quality > 0.5 FROM corpus ORDER BY CURRICULUM (a BY random())", {}, "random()", True),
    ("MIX 1 AS a FROM corpus ORDER BY CURRICULUM (a BY quality BUCKETS 5000)", {}, "BUCKETS must be from", True),
    ("MIX 1 AS a FROM corpus LIMIT 10 TOKENS", {}, "TOKENS needs token counts", True),
])
def test_bad_statements_fail_fast_with_a_position(con: mixsql.Connection, text: str, params: dict, message: str,
                                                  positioned: bool) -> None:
    began = time.perf_counter()
    with pytest.raises(MixSQLError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        len(con.mix(text, params=params))
    assert time.perf_counter() - began < 3  # 1 s on an idle machine; CI shares two cores
    assert (e.value.line is not None) == positioned, e.value.render()
    assert e.value.render()


def test_limits_are_where_the_grammar_says() -> None:
    readme = (ROOT / "grammar" / "README.md").read_text()
    for name in ("MAX_NESTING", "MAX_COMPONENTS", "MAX_CHUNK_SIZE", "MAX_BUCKETS", "MAX_EXPANDED_NODES"):
        assert f"{getattr(limits, name):,}" in readme or str(getattr(limits, name)) in readme, name
    assert limits.max_stream_samples() > 10 ** 6


def test_fmt_of_a_lone_semicolon_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "empty.mixsql"
    f.write_text(";\n")
    proc = subprocess.run([sys.executable, "-m", "mixsql", "fmt", str(f)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "empty statement" in proc.stderr and "Traceback" not in proc.stderr


def test_positional_parameters_never_reach_fmt() -> None:
    for text in ("MIX 1 AS a WHERE x > ? FROM c", "MIX 1 AS a WHERE x > $1 FROM c"):
        with pytest.raises(MixSQLError, match="bind by name"):
            parse(text)


def test_api_inputs(con: mixsql.Connection) -> None:
    mix = con.mix("MIX 0.5 AS a WHERE quality > 0.5, 0.5 AS b FROM corpus")
    assert [set(s) for s in mix.samples(limit=3, columns=["component"])] == [{"component"}] * 3
    assert [set(s) for s in mix.torch_dataset(batch_size=2, columns=[])][:2] == [{"component"}] * 2
    for bad in [dict(rank=0.5, world_size=2), dict(rank=0, world_size="2"), dict(batch_size=2.0),
                dict(batch_size=0), dict(rank=True, world_size=2), dict(component="label")]:
        with pytest.raises(MixSQLError):
            mix.torch_dataset(**bad)
    with pytest.raises(MixSQLError, match="fewer than one global batch"):
        mix.torch_dataset(batch_size=len(mix) + 1)
    for bad_limit in (-1, 2.5, "3"):
        with pytest.raises(MixSQLError, match="limit must be"):
            list(mix.samples(limit=bad_limit))
    with pytest.raises(MixSQLError, match="columns must be a list"):
        list(mix.samples(limit=1, columns="text"))


def test_bad_states_are_state_errors(con: mixsql.Connection) -> None:
    from mixsql.state import StateError

    ds = con.mix("MIX 0.5 AS a WHERE quality > 0.5, 0.5 AS b FROM corpus").torch_dataset(batch_size=4)
    good = ds.state_dict()
    cyclic: dict = {}
    cyclic["self"] = cyclic
    cases = [None, "state", [good], 7, {}, {"format": good["format"]}, {**good, "next": "3"}, {**good, "next": -1},
             {**good, "global_batch_size": 0}, {**good, "workers": 0}, {**good, "worker": 5},
             {**good, "params": None}, {**good, "seed": True}, cyclic, {"a": cyclic, "b": [cyclic]}]
    for state in cases:
        with pytest.raises(StateError):
            ds.load_state_dict(state)  # type: ignore[arg-type]
    ds.load_state_dict({"loader": {"nested": [good]}})
    assert ds.start == 0


def test_lineage_quotes_property_names(scratch: mixsql.Connection, tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", 'quo"te': i, "a b": -i}) + "\n" for i in range(20)))
    scratch.register("q", [str(path)])
    mix = scratch.mix("MIX 1 AS all_ FROM q")
    table = mix.lineage(0, 4, ['quo"te', "a b"])
    assert [-v for v in table.column("a b").to_pylist()] == table.column('quo"te').to_pylist()
    assert [s['quo"te'] for s in mix.samples(limit=4)] == table.column('quo"te').to_pylist()
    with pytest.raises(MixSQLError, match="has no property"):
        mix.lineage(0, 4, ["nope'); DROP VIEW q; --"])
