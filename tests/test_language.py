"""The language's semantics end to end: what the stream delivers for every construct of the grammar."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import duckdb
import numpy as np
import pytest

import mixsql
from mixsql import plan as _plan
from mixsql.errors import BindError, MixSQLError, PlanError
from tests.conftest import PARQUET_GLOB, ROOT

SOURCE = f"read_parquet('{PARQUET_GLOB}')"


def _count(where: str) -> int:
    return duckdb.sql(f"SELECT count(*) FROM {SOURCE} WHERE {where}").fetchall()[0][0]


def _stream(mix: mixsql.Mix, columns: list[str] | None = None) -> list[dict]:
    return list(mix.samples(columns=columns or ["id"]))


def _chunk_components(mix: mixsql.Mix) -> list[list[int]]:
    """Per partition-chunk row k: the components of the stream's positions [k*C*P, (k+1)*C*P)."""
    plan = mix.plan()
    C, P = plan.chunk_size, plan.partitions
    ids = plan.component[plan.positions_rows(0, len(plan))]
    return [ids[k * C * P:(k + 1) * C * P].tolist() for k in range(-(-len(plan) // (C * P)))]


# -- hierarchy and weights from data ---------------------------------------------------------------------


def test_hierarchy_multiplies_shares_and_names_leaves_by_path(con: mixsql.Connection) -> None:
    mix = con.mix("""MIX 0.6 AS docs WHERE domain = 'docs',
                         0.4 AS code WHERE domain = 'code' MIX (0.7 AS py WHERE language = 'python',
                                                                0.3 AS c WHERE language = 'c')
                     FROM corpus CHUNK SIZE 100""")
    assert mix.components == ["docs", "code.py", "code.c"]
    assert [c.share for c in mix.bound.components] == [Fraction(3, 5), Fraction(7, 25), Fraction(3, 25)]
    py = next(c for c in mix.bound.components if c.name == "code.py")
    assert py.samples == _count("domain = 'code' AND language = 'python'")
    realised = collections.Counter(s["component"] for s in _stream(mix))
    total = sum(realised.values())
    assert abs(realised["code.py"] - 0.28 * total) <= 1 and abs(realised["code.c"] - 0.12 * total) <= 1
    text = mix.explain()
    assert "tree" in text and "py" in text and "28.0%" in text


def test_natural_and_temperature_weights_follow_the_sizes(con: mixsql.Connection) -> None:
    sizes = {lang: _count(f"domain = 'manual' AND language = '{lang}'") for lang in ("en", "de", "it")}
    nbytes = {lang: duckdb.sql(f"SELECT sum(strlen(text)) FROM {SOURCE} WHERE domain = 'manual' AND language = "
                               f"'{lang}'").fetchall()[0][0] for lang in sizes}
    body = "en WHERE language = 'en', de WHERE language = 'de', it WHERE language = 'it' FROM corpus " \
           "WHERE domain = 'manual'"
    natural = con.mix(f"MIX NATURAL {body}")
    assert [c.share for c in natural.bound.components] == [Fraction(sizes[k], sum(sizes.values())) for k in sizes]
    by_bytes = con.mix(f"MIX NATURAL BY BYTES {body}")
    assert [float(c.share) for c in by_bytes.bound.components] == pytest.approx(
        [nbytes[k] / sum(nbytes.values()) for k in sizes])
    hot = con.mix(f"MIX TEMPERATURE 2 {body}")
    expected = [sizes[k] ** 0.5 for k in sizes]
    assert [float(c.share) for c in hot.bound.components] == pytest.approx([e / sum(expected) for e in expected])
    assert "TEMPERATURE 2 BY SAMPLES" in hot.explain()


def test_weighting_rejects_explicit_weights(con: mixsql.Connection) -> None:
    with pytest.raises(MixSQLError) as e:
        con.mix("MIX NATURAL 0.5 AS en WHERE language = 'en' FROM corpus")
    assert "takes its weights from the data" in e.value.message and e.value.col == 13


# -- curriculum: schedules ------------------------------------------------------------------------------


STAGES = """MIX 0.5 AS manuals WHERE domain = 'manual',
    0.3 AS code WHERE domain = 'code',
    0.2 AS docs WHERE domain = 'docs'
FROM corpus
ORDER BY CURRICULUM (
    STAGE UNTIL 800 SAMPLES (code = 0),
    RAMP UNTIL 1600 SAMPLES (manuals = 0.2, code = 0.6, docs = 0.2),
    STAGE (docs = 0)
)
CHUNK SIZE 50"""


@pytest.mark.parametrize("partitions", [1, 4])
def test_realised_chunks_follow_stages_ramps_entry_and_exit(con: mixsql.Connection, partitions: int) -> None:
    mix = con.mix(STAGES, partitions=partitions)
    C, P = 50, partitions
    rows = _chunk_components(mix)
    segments = mix.bound.schedule
    cumulative = np.zeros(3)
    expected = np.zeros(3)
    for k, row in enumerate(rows):
        x0, x1 = k * C * P, (k + 1) * C * P
        shares = np.zeros(3)
        for x in range(x0, x1):  # the schedule at every position of the chunk row
            seg = [s for s in segments if s.start <= x + 0.5 and (s.end is None or x + 0.5 < s.end)][0]
            shares += np.array([float(v) for v in seg.at(Fraction(2 * x + 1, 2))])
        counts = np.bincount(row, minlength=3)
        if len(row) == C * P:  # whole chunk rows: every partition's chunk follows the carried rounding
            cumulative += counts
            expected += shares
            assert np.all(np.abs(cumulative - expected) <= P), (k, cumulative, expected)
        if x1 <= 800:
            assert counts[1] == 0  # code has not entered yet
        if x0 >= 1600:
            assert counts[2] == 0  # docs have left
    assert "RAMP" in mix.explain() and "schedule" in mix.explain()


def test_schedule_in_steps_uses_the_batch_size(con: mixsql.Connection) -> None:
    mix = con.mix("""MIX 0.5 AS a WHERE domain = 'docs', 0.5 AS b WHERE domain = 'code' FROM corpus
                     ORDER BY CURRICULUM (STAGE UNTIL 5 STEPS (b = 0)) BATCH SIZE 64 CHUNK SIZE 32""")
    assert mix.bound.schedule[0].end == 320
    first = _stream(mix)[:320]
    assert {s["component"] for s in first} == {"a"}


# -- curriculum: order within a component ---------------------------------------------------------------


@pytest.mark.parametrize("partitions", [1, 4])
def test_ordered_component_walks_its_buckets_in_key_order(con: mixsql.Connection, partitions: int) -> None:
    mix = con.mix("""MIX 0.5 AS code WHERE domain = 'code', 0.5 AS docs WHERE domain = 'docs' FROM corpus
                     ORDER BY CURRICULUM (code BY quality DESC BUCKETS 4) CHUNK SIZE 64""", partitions=partitions)
    ranked = duckdb.sql(f"""SELECT id, row_number() OVER (ORDER BY quality DESC NULLS LAST, filename,
                                   file_row_number) - 1 AS r
                            FROM read_parquet('{PARQUET_GLOB}', filename=true, file_row_number=true)
                            WHERE domain = 'code'""").fetchall()
    n = len(ranked)
    bucket = {i: r * 4 // n for i, r in ranked}
    plan = mix.plan()
    P = plan.partitions
    stream = _stream(mix)
    for q in range(P):
        mine = [bucket[s["id"]] for k, s in enumerate(stream) if k % P == q and s["component"] == "code"]
        assert mine == sorted(mine)  # never back to an easier bucket
        assert len(set(mine)) >= 2
    codes = [s["id"] for s in stream if s["component"] == "code"]
    assert len(codes) == len(set(codes))
    # shuffled within buckets: not the key order itself
    order = {i: r for i, r in ranked}
    ranks = [order[i] for i in codes[:100]]
    assert ranks != sorted(ranks)


# -- budgets and repetition ----------------------------------------------------------------------------------


@pytest.mark.parametrize("partitions", [1, 3])
def test_repetition_reshuffles_each_epoch_and_never_repeats_within_one(con: mixsql.Connection,
                                                                       partitions: int) -> None:
    mix = con.mix("""MIX 0.4 AS msgs WHERE domain = 'messages' MAX EPOCHS 4, 0.6 AS code WHERE domain = 'code'
                     FROM corpus LIMIT 4000 SAMPLES ON EXHAUSTION REPEAT CHUNK SIZE 50""", partitions=partitions)
    stream = _stream(mix)
    assert len(stream) == len(mix) == 4000
    e = mix.explanation()
    msgs = [s["id"] for s in stream if s["component"] == "msgs"]
    n = next(c.samples for c in mix.bound.components if c.name == "msgs")
    rows = {r.name: r for r in e.components}
    assert len(msgs) == rows["msgs"].taken and rows["msgs"].epochs == pytest.approx(len(msgs) / n)
    seen = collections.Counter(msgs)
    epochs = len(msgs) // n
    assert set(seen.values()) <= {epochs, epochs + 1} and len(seen) == n  # evenly repeated
    if partitions == 1:  # one partition: epoch e is exactly the samples n*e .. n*(e+1)-1
        for k in range(epochs):
            assert len(set(msgs[k * n:(k + 1) * n])) == n
        assert msgs[:n] != msgs[n:2 * n]  # reshuffled
        assert sorted(msgs[:n]) == sorted(msgs[n:2 * n])


def test_budget_beyond_max_epochs_is_an_error_and_explain_flags_it(con: mixsql.Connection, tmp_path: Path,
                                                                    sample_catalog: Path) -> None:
    text = """MIX 0.5 AS msgs WHERE domain = 'messages' MAX EPOCHS 2, 0.5 AS code WHERE domain = 'code'
FROM corpus LIMIT 4000 SAMPLES ON EXHAUSTION REPEAT"""
    with pytest.raises(PlanError) as e:
        con.mix(text)
    assert "cannot be met" in e.value.message and "msgs" in e.value.message and (e.value.line, e.value.col) == (2, 19)
    f = tmp_path / "b.mixsql"
    f.write_text(text)
    out = subprocess.run([sys.executable, "-m", "mixsql", "--catalog", str(sample_catalog), "explain", str(f)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "EXCEEDS MAX EPOCHS 2" in out.stdout and "cannot be met" in out.stderr


def test_limit_shortens_the_stream(con: mixsql.Connection) -> None:
    mix = con.mix("MIX 0.5 AS a WHERE domain = 'docs', 0.5 AS b WHERE domain = 'code' FROM corpus LIMIT 123 SAMPLES")
    assert len(mix) == 123 and len(_stream(mix)) == 123
    assert mix.explanation().stream.limiting == "LIMIT"


def test_redistribute_keeps_streaming_after_a_component_runs_out(con: mixsql.Connection) -> None:
    text = """MIX 0.3 AS msgs WHERE domain = 'messages', 0.4 AS code WHERE domain = 'code',
              0.3 AS manuals WHERE domain = 'manual' FROM corpus CHUNK SIZE 100"""
    stop = con.mix(text)
    spread = con.mix(text + " ON EXHAUSTION REDISTRIBUTE")
    assert len(spread) > len(stop)
    stream = _stream(spread)
    ids = [s["id"] for s in stream]
    assert len(ids) == len(set(ids))
    left = spread.spec.shape.left_at
    msgs_left = left[0]
    assert msgs_left is not None
    end = left[1] if left[1] is not None else len(stream)
    assert end - msgs_left > 300
    after = collections.Counter(s["component"] for s in stream[msgs_left + 100: end - 100])
    assert after["msgs"] == 0 and abs(after["code"] / (after["code"] + after["manuals"]) - 4 / 7) < 0.02


# -- overlaps, named predicates, parameters --------------------------------------------------------------------


def test_overlap_error_names_the_components(con: mixsql.Connection) -> None:
    with pytest.raises(BindError) as e:
        con.mix("MIX 1 AS a WHERE domain = 'docs', 1 AS b WHERE domain IN ('docs', 'code') FROM corpus OVERLAP ERROR")
    assert "'a'" in e.value.message and "OVERLAP ERROR" in e.value.message and e.value.col == 48
    con.mix("MIX 1 AS a WHERE domain = 'docs', 1 AS b WHERE domain = 'code' FROM corpus OVERLAP ERROR")


def test_with_names_a_predicate_once(con: mixsql.Connection) -> None:
    named = con.mix("""WITH good AS (quality > 0.3), py AS (language = 'python')
                       MIX 1 AS a WHERE good AND py, 1 AS b WHERE NOT good FROM corpus""")
    plain = con.mix("MIX 1 AS a WHERE (quality > 0.3) AND (language = 'python'), 1 AS b WHERE NOT (quality > 0.3) "
                    "FROM corpus")
    assert [c.samples for c in named.bound.components] == [c.samples for c in plain.bound.components]


def test_parameters_from_the_api_and_the_cli(con: mixsql.Connection, tmp_path: Path, sample_catalog: Path) -> None:
    f = tmp_path / "p.mixsql"
    f.write_text("MIX :w AS code WHERE domain = 'code' AND quality > :q, 1 AS docs WHERE domain = 'docs' "
                 "FROM corpus SEED :seed")
    a = con.load(f, params={"w": 2, "q": 0.5, "seed": 3})
    b = con.load(f, params={"w": 2, "q": 0.1, "seed": 3})
    assert a.bound.components[0].samples == _count("domain = 'code' AND quality > 0.5")
    assert b.bound.components[0].samples == _count("domain = 'code' AND quality > 0.1")
    assert a.seed == 3 and a.bound.components[0].share == Fraction(2, 3)
    assert a.plan().key != b.plan().key
    with pytest.raises(BindError) as e:
        con.load(f, params={"w": 2, "q": 0.5})
    assert ":seed" in e.value.message and e.value.line == 1
    with pytest.raises(BindError) as e:
        con.load(f, params={"w": 2, "q": 0.5, "seed": 3, "typo": 1})
    assert "'typo' is not used" in e.value.message
    with pytest.raises(BindError) as e:
        con.load(f, params={"w": 2, "q": 0.5, "seed": 1.5})
    assert "must be a non-negative integer" in e.value.message
    run = [sys.executable, "-m", "mixsql", "--catalog", str(sample_catalog), "explain", str(f), "--json",
           "--param", "w=2", "--param", "q=0.5", "--param", "seed=3"]
    out = json.loads(subprocess.run(run, capture_output=True, text=True, check=True, cwd=ROOT).stdout)
    assert out["components"][0]["samples"] == a.bound.components[0].samples and out["seed"] == 3
    bad = subprocess.run(run[:-2], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "parameter :seed has no value" in bad.stderr


def test_string_and_list_parameters_are_values_never_sql(con: mixsql.Connection) -> None:
    mix = con.mix("MIX 1 AS a WHERE list_contains(:langs, language), 1 AS b WHERE domain = :d FROM corpus",
                  params={"langs": ["python", "c"], "d": "docs"})
    assert mix.bound.components[0].samples == _count("language IN ('python', 'c')")
    with pytest.raises(BindError):  # the quote is data: b matches nothing
        con.mix("MIX 1 AS a WHERE domain = 'code', 1 AS b WHERE domain = :d FROM corpus",
                params={"d": "docs' OR TRUE OR '"})


def test_formatting_keeps_every_new_construct(con: mixsql.Connection) -> None:
    from mixsql.parse import parse, to_sql

    for path in sorted((ROOT / "grammar" / "golden" / "compile").glob("*.mixsql")):
        tree = parse(path.read_text())
        assert parse(to_sql(tree)) == tree
        assert parse(to_sql(tree, pretty=False)) == tree


def test_plan_parameters_are_independent_of_the_topology(con: mixsql.Connection) -> None:
    mix = con.mix(STAGES, partitions=4)
    assert isinstance(mix.spec, _plan.PlanSpec) and mix.spec.table.shape[1] == 3


# -- random statements -------------------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DOMAINS = ["domain = 'code'", "domain = 'docs'", "domain = 'manual'", "domain = 'messages'"]


@st.composite
def statements(draw: st.DrawFn) -> str:
    n = draw(st.integers(2, 4))
    names = [f"c{i}" for i in range(n)]
    parts = [f"{draw(st.integers(1, 9)) / 10} AS {name} WHERE {DOMAINS[i]}" for i, name in enumerate(names)]
    text = "MIX " + ", ".join(parts) + " FROM corpus"
    items, at = [], 0
    for _ in range(draw(st.integers(0, 3))):
        at += draw(st.integers(1, 900))
        kind = draw(st.sampled_from(["STAGE", "RAMP"]))
        assigns = ", ".join(f"{name} = {draw(st.integers(0, 5))}" for name in names if draw(st.booleans()))
        items.append(f"{kind} UNTIL {at} SAMPLES ({assigns})")
    if items and draw(st.booleans()):
        items.append(f"c0 BY quality {draw(st.sampled_from(['ASC', 'DESC']))} BUCKETS {draw(st.integers(1, 5))}")
    if items:
        text += " ORDER BY CURRICULUM (" + ", ".join(items) + ")"
    policy = draw(st.sampled_from(['STOP', 'REDISTRIBUTE', 'REPEAT']))
    if policy == "REPEAT" or draw(st.booleans()):  # REPEAT needs a LIMIT, else the stream is endless
        text += f" LIMIT {draw(st.integers(50, 1500))} SAMPLES"
    text += f" SEED {draw(st.integers(0, 99))} CHUNK SIZE {draw(st.sampled_from([16, 50, 64, 100]))}"
    text += f" PARTITIONS {draw(st.sampled_from([1, 2, 3, 4]))}"
    text += f" ON EXHAUSTION {policy}"
    return text


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(statements())
def test_random_statements_are_exact_and_deterministic(con: mixsql.Connection, text: str) -> None:
    from mixsql.parse import parse, to_sql

    assert parse(to_sql(parse(text))) == parse(text)
    try:
        mix = con.mix(text)
    except PlanError as e:  # a budget the data cannot meet: it is one, and the shortfall is real
        limit = int(re.search(r"LIMIT (\d+) SAMPLES", text).group(1))
        short = re.search(r"the budget of ([\d,]+) samples cannot be met.* runs out at sample ([\d,]+)", e.message)
        assert short, e.render()
        assert int(short.group(1).replace(",", "")) == limit > int(short.group(2).replace(",", "")), e.render()
        return
    except BindError as e:  # a stage giving every component weight 0: it is in the statement
        assert "weight 0" in e.message, e.render()
        stages = re.findall(r"(?:STAGE|RAMP) UNTIL \d+ SAMPLES \(([^)]*)\)", text)
        zero = [dict(a.split(" = ") for a in body.split(", ")) if body else {} for body in stages]
        names = re.findall(r"AS (c\d)", text)
        assert any(set(z) == set(names) and all(v == "0" for v in z.values()) for z in zero), (text, e.render())
        return
    spec = mix.spec
    C, P = spec.chunk_size, spec.partitions
    counts = np.diff(spec.table, axis=0)
    assert (counts >= 0).all() and (counts.sum(axis=1) == C).all()
    if mix.bound.policy != "REDISTRIBUTE" or all(x is None for x in spec.shape.left_at):
        schedule = _plan.Schedule(spec.shares, mix.bound.schedule)
        for k in range(len(spec.table)):
            expected = [v / P for v in schedule.integral(k * C * P)]
            # a stage starting inside a chunk row takes effect from the next row, and the rows after
            # it catch up: then within one row's samples (C), and within one sample until the first
            straddled = any(schedule.straddles(j * C * P, (j + 1) * C * P) for j in range(k))
            assert all(abs(spec.table[k][i] - e) < (C if straddled else 1) for i, e in enumerate(expected))
    plan = mix.plan()
    again = con.mix(text)
    assert np.array_equal(again.spec.table, spec.table) and len(again) == len(mix)
    rows = plan.positions_rows(0, len(plan))
    # a stored row is one position of the stream, unless its component repeats: later epochs are
    # derived and map onto the stored first epoch (how often, the repetition check below says)
    assert len(rows) == len(mix) and (bool(plan.derived) or len(np.unique(rows)) == len(rows))
    taken = np.bincount(plan.component[rows], minlength=len(mix.components))
    assert taken.tolist() == list(spec.shape.taken)
    if mix.bound.limit is not None:
        assert len(mix) == mix.bound.limit
    for c in mix.bound.components:  # repetition: every sample of a component equally often, +-1
        mine = rows[plan.component[rows] == c.index]
        keys = plan.file[mine].astype(np.int64) << 32 | plan.row[mine]
        seen = np.unique(keys, return_counts=True)[1]
        if len(mine):
            assert seen.max() - (seen.min() if len(seen) == c.samples else 0) <= 1


def test_sample_curriculum_streams_its_budget(con: mixsql.Connection) -> None:
    mix = con.load(ROOT / "sample_data" / "curriculum.mixsql", params={"min_quality": 0.3})
    assert len(mix) == 80 * 32 and mix.bound.batch_size == 32
    stream = _stream(mix, ["id", "quality"])
    assert len(stream) == 2560
    assert not any(s["component"].startswith("code") for s in stream[:320])  # code enters at step 10


def test_after_a_final_stage_the_mix_weights_return_and_after_a_ramp_they_hold(con: mixsql.Connection) -> None:
    base = "MIX 0.5 AS code WHERE domain = 'code', 0.5 AS docs WHERE domain = 'docs' FROM corpus CHUNK SIZE 32 "
    stage = con.mix(base + "ORDER BY CURRICULUM (STAGE UNTIL 320 SAMPLES (docs = 0))")
    assert stage.bound.schedule[-1].kind == "MIX" and stage.bound.schedule[-1].begin == (Fraction(1, 2),) * 2
    after = collections.Counter(s["component"] for s in _stream(stage)[320:960])
    assert after["docs"] == after["code"] == 320
    ramp = con.mix(base + "ORDER BY CURRICULUM (RAMP UNTIL 320 SAMPLES (docs = 1, code = 3))")
    assert ramp.bound.schedule[-1].begin == (Fraction(3, 4), Fraction(1, 4))


# -- prefix stability: what a statement adds later never changes what came before -------------------


def _ids(mix: mixsql.api.Mix) -> list[tuple[str, str]]:
    return [(s["component"], s["id"]) for s in mix.samples(columns=["id"])]


@pytest.mark.parametrize("partitions", [1, 3])
def test_a_stage_appended_after_step_20_leaves_the_steps_before_it_unchanged(con: mixsql.Connection,
                                                                            partitions: int) -> None:
    """A training team's case: the first 20 steps of 16 trained, then a STAGE changing the weights
    from step 20 on. Every sample of steps 0-19 stays; after it, no sample of an epoch repeats."""
    base = ("MIX 0.5 AS docs WHERE domain = 'docs', 0.5 AS code WHERE domain = 'code' FROM corpus "
            "{order} LIMIT 40 STEPS BATCH SIZE 16 SEED 2 CHUNK SIZE 16")
    before = _ids(con.mix(base.format(order=""), partitions=partitions))
    later = _ids(con.mix(base.format(order="ORDER BY CURRICULUM (STAGE UNTIL 20 STEPS (docs = 0.5, code = 0.5), "
                                           "STAGE (docs = 0.9, code = 0.1))"), partitions=partitions))
    assert later[: 20 * 16] == before[: 20 * 16]
    assert later != before and len(later) == len(before) == 40 * 16
    assert len(set(later)) == len(later)  # one epoch each: nothing repeated, the new weights draw on what is left


@pytest.mark.parametrize("partitions", [1, 4])
def test_a_larger_budget_only_appends(con: mixsql.Connection, partitions: int) -> None:
    base = ("MIX 0.6 AS docs WHERE domain = 'docs', 0.4 AS rest FROM corpus LIMIT {n} SAMPLES "
            "ON EXHAUSTION REPEAT SEED 5 CHUNK SIZE 32")
    short = _ids(con.mix(base.format(n=700), partitions=partitions))
    long = _ids(con.mix(base.format(n=5000), partitions=partitions))  # several epochs of docs
    assert long[:700] == short  # each partition's stream is extended, so the plan order is too
