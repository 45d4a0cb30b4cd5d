"""Streams planned from token counts (``tokenplan``): the share bound, budgets, schedules, prefix stability."""

from __future__ import annotations

import types
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mixsql
from mixsql import tokenplan
from mixsql.errors import MixSQLError

THREE = ("MIX BY TOKENS {a} AS code WHERE domain = 'code', {b} AS manual WHERE domain = 'manual', "
         "{c} AS rest FROM corpus SEED 1 CHUNK SIZE {chunk} PARTITIONS {p}")


def _check_bound(components: np.ndarray, costs: np.ndarray, shares: list[Fraction], longest: list[int],
                 boundaries: np.ndarray) -> None:
    """At each boundary (a count of documents from the start): -w_i*sum_{j!=i} L_j <= t_i - w_i*T <= (1-w_i)*L_i."""
    n = len(shares)
    for i, w in enumerate(shares):
        mine = np.concatenate(([0], np.cumsum(np.where(components == i, costs, 0))))[boundaries]
        total = np.concatenate(([0], np.cumsum(costs)))[boundaries]
        # exact: scale by the share's denominator
        dev = mine * w.denominator - total * w.numerator
        over = (w.denominator - w.numerator) * longest[i]
        under = w.numerator * sum(longest[j] for j in range(n) if j != i)
        assert int(dev.max(initial=0)) <= over, (i, int(dev.max()), over)
        assert int(dev.min(initial=0)) >= -under, (i, int(dev.min()), -under)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=4), st.data())
def test_every_prefix_is_within_one_document_of_the_shares(weights: list[int], data: st.DataObject) -> None:
    """The merge's bound (tokenplan, 3), at every document boundary, for any weights and lengths."""
    total = sum(weights)
    shares = [Fraction(w, total) for w in weights]
    costs = [np.asarray(data.draw(st.lists(st.integers(0, 400) | st.integers(1000, 3000), min_size=1, max_size=60)),
                        dtype=np.int64) for _ in weights]
    bound = types.SimpleNamespace(components=[types.SimpleNamespace(share=s) for s in shares], schedule=())
    keys = tokenplan._Keys(bound, 1, sum(int(c.sum()) for c in costs))
    members = [types.SimpleNamespace(index=i, finite=True) for i in range(len(weights))]
    comp, idx, stop, ender, _ = tokenplan._merge(keys, members, costs, "STOP")
    # each component's documents come in order, once
    for i, c in enumerate(costs):
        assert idx[comp == i].tolist() == list(range(int((comp == i).sum())))
    comp, idx = comp[:stop], idx[:stop]
    per_doc = np.asarray([costs[c][j] for c, j in zip(comp, idx)], dtype=np.int64)
    _check_bound(comp, per_doc, shares, [int(c.max()) for c in costs], np.arange(stop + 1))
    # the stream ends where a component has no next document
    exhausted = [i for i, c in enumerate(costs) if int((comp == i).sum()) == len(c)]
    assert exhausted and ender in exhausted


@pytest.mark.parametrize("p,chunk", [(1, 64), (3, 50)])
def test_a_compiled_plan_keeps_the_bound_at_every_chunk_boundary_of_every_partition(
        tcon: mixsql.Connection, p: int, chunk: int) -> None:
    weights = (Fraction(5), Fraction(2), Fraction(3))
    mix = tcon.mix(THREE.format(a=5, b=2, c=3, chunk=chunk, p=p))
    plan = mix.plan()
    shares = [w / sum(weights) for w in weights]
    longest = [int(plan.tokens[plan.component == i].max()) for i in range(3)]
    for q in range(p):
        rows = plan.partition_rows(q, 0, plan.partition_length(q))
        length = len(rows)
        boundaries = np.append(np.arange(0, length, chunk), length)
        _check_bound(np.asarray(plan.component[rows]), np.asarray(plan.tokens[rows], dtype=np.int64), shares, longest,
                     boundaries)
    # the plan's samples are each taken once, and its token counts are the catalog's
    rows = plan.positions_rows(0, len(plan))
    assert len(np.unique(rows)) == len(rows) == len(plan)
    assert mix.explanation().stream.tokens == int(plan.tokens[rows].sum())


def _stream(mix: mixsql.api.Mix) -> list[tuple[str, int]]:
    return [(r["file"], r["row"]) for r in mix.lineage(0, len(mix)).to_pylist()]


def test_a_token_budget_ends_at_the_sample_that_reaches_it_and_is_prefix_stable(tcon: mixsql.Connection) -> None:
    q = ("MIX BY TOKENS 0.6 AS code WHERE domain = 'code', 0.4 AS prose WHERE domain <> 'code' FROM corpus "
         "LIMIT {n} TOKENS ON EXHAUSTION REPEAT PARTITIONS 2 SEED 4")
    streams = {}
    for n in (50_000, 900_000, 2_000_000):
        mix = tcon.mix(q.format(n=n))
        plan = mix.plan()
        tokens = plan.tokens[plan.positions_rows(0, len(plan))].astype(np.int64)
        assert tokens.sum() >= n > tokens[:-1].sum()
        e = mix.explanation()
        assert e.stream.limiting == "LIMIT" and e.stream.tokens == int(tokens.sum())
        code = int(tokens[np.asarray(plan.component[plan.positions_rows(0, len(plan))]) == 0].sum())
        assert abs(code / tokens.sum() - 0.6) < 0.02
        streams[n] = _stream(mix)
    # a larger budget, even one needing more epochs, only appends
    assert streams[900_000][: len(streams[50_000])] == streams[50_000]
    assert streams[2_000_000][: len(streams[900_000])] == streams[900_000]
    # past one epoch, every document comes once per epoch at most
    counts: dict[tuple[str, int], int] = {}
    for key in streams[2_000_000]:
        counts[key] = counts.get(key, 0) + 1
    code_epochs = tcon.mix(q.format(n=2_000_000)).explanation().components[0].epochs
    assert max(counts.values()) <= int(np.ceil(code_epochs))


def test_a_sample_mixture_with_a_token_budget_keeps_sample_shares(tcon: mixsql.Connection) -> None:
    mix = tcon.mix("MIX 0.7 AS code WHERE domain = 'code', 0.3 AS prose WHERE domain <> 'code' FROM corpus "
                   "LIMIT 200000 TOKENS PARTITIONS 1 CHUNK SIZE 100")
    plan = mix.plan()
    rows = plan.positions_rows(0, len(plan))
    component = np.asarray(plan.component[rows])
    for k in range(0, len(rows), 100):  # within one sample of 70/30 at every chunk boundary
        assert abs(int((component[:k] == 0).sum()) - 0.7 * k) <= 1
    tokens = plan.tokens[rows].astype(np.int64)
    assert tokens.sum() >= 200_000 > tokens[:-1].sum()


def test_a_schedule_in_tokens_is_followed(tcon: mixsql.Connection) -> None:
    mix = tcon.mix("MIX BY TOKENS 0.5 AS code WHERE domain = 'code', 0.5 AS prose WHERE domain <> 'code' FROM corpus "
                   "ORDER BY CURRICULUM (STAGE UNTIL 100000 TOKENS (code = 0), STAGE UNTIL 200000 TOKENS (prose = 0)) "
                   "LIMIT 400000 TOKENS PARTITIONS 1")
    plan = mix.plan()
    rows = plan.positions_rows(0, len(plan))
    component = np.asarray(plan.component[rows])
    tokens = np.asarray(plan.tokens[rows], dtype=np.int64)
    before = np.concatenate(([0], np.cumsum(tokens)))[:-1]  # tokens before each document
    longest = int(tokens.max())
    assert not (component[before < 100_000 - longest] == 0).any()  # no code in the first stage
    second = (before > 100_000 + longest) & (before < 200_000 - longest)
    assert second.any() and (component[second] == 0).all()  # only code in the second
    after = before > 200_000 + longest
    share = tokens[after & (component == 0)].sum() / tokens[after].sum()
    assert abs(share - 0.5) < 0.05  # the MIX weights return


def test_redistribute_takes_every_document_once(tcon: mixsql.Connection) -> None:
    mix = tcon.mix("MIX BY TOKENS 0.8 AS code WHERE domain = 'code', 0.2 AS prose WHERE domain <> 'code' FROM corpus "
                   "ON EXHAUSTION REDISTRIBUTE PARTITIONS 2")
    e = mix.explanation()
    assert [c.taken for c in e.components] == [c.samples for c in e.components]
    assert e.components[0].left_at is not None
    assert len(set(_stream(mix))) == len(mix) == sum(c.samples for c in e.components)


def test_token_units_refused_without_counts_or_mixed(con: mixsql.Connection, tcon: mixsql.Connection) -> None:
    with pytest.raises(MixSQLError, match="register 'corpus' again with --tokenizer"):
        con.mix("MIX 0.5 AS a WHERE domain = 'code', 0.5 AS b FROM corpus LIMIT 1000 TOKENS")
    with pytest.raises(MixSQLError, match="NATURAL|token counts"):
        con.mix("MIX NATURAL BY TOKENS a WHERE domain = 'code', b FROM corpus")
    with pytest.raises(MixSQLError, match="points are in TOKENS"):
        tcon.mix("MIX BY TOKENS 1 AS a WHERE domain = 'code', 1 AS b FROM corpus "
                 "ORDER BY CURRICULUM (STAGE UNTIL 10 STEPS (a = 0)) BATCH SIZE 4")
    with pytest.raises(MixSQLError, match="in STEPS"):
        tcon.mix("MIX BY TOKENS 1 AS a WHERE domain = 'code', 1 AS b FROM corpus LIMIT 10 STEPS BATCH SIZE 4")
    with pytest.raises(MixSQLError, match="needs a mixture whose shares are shares of tokens"):
        tcon.mix("MIX 1 AS a WHERE domain = 'code', 1 AS b FROM corpus "
                 "ORDER BY CURRICULUM (STAGE UNTIL 1000 TOKENS (a = 0))")
    with pytest.raises(MixSQLError, match="LIMIT must be at least 1"):
        tcon.mix("MIX BY TOKENS 1 AS a WHERE domain = 'code', 1 AS b FROM corpus LIMIT 0 TOKENS")
    with pytest.raises(MixSQLError, match="more than this machine can plan"):
        tcon.mix("MIX BY TOKENS 1 AS a WHERE domain = 'code', 1 AS b FROM corpus LIMIT 9000000000000000000 TOKENS "
                 "ON EXHAUSTION REPEAT")


def test_natural_by_tokens_is_full_coverage_in_tokens(tcon: mixsql.Connection) -> None:
    mix = tcon.mix("MIX BY TOKENS NATURAL code WHERE domain = 'code', prose WHERE domain <> 'code' FROM corpus "
                   "PARTITIONS 1")
    e = mix.explanation()
    tokens = [c.tokens for c in e.components]
    assert [c.weight for c in e.components] == [str(t) for t in tokens]
    assert sum(c.exact_tokens for c in e.components) >= 0.99 * sum(tokens)
    assert "shares are shares of n_tokens" in str(e)


def test_the_sample_token_mixture_explains_exact_shares(tcon: mixsql.Connection) -> None:
    from tests.conftest import SAMPLE

    e = tcon.load(SAMPLE / "tokens.mixsql").explanation()
    assert e.stream.limiting == "LIMIT" and e.stream.tokens >= 400_000
    shares = [c.exact_tokens / e.stream.tokens for c in e.components]
    assert abs(shares[0] - 0.3) < 0.01 and abs(shares[1] - 0.7) < 0.01
