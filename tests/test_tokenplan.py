"""Streams planned from token counts (``tokenplan``): the share bound, budgets, schedules, prefix stability."""

from __future__ import annotations

import hashlib
import json
import os
import types
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mixsql
from mixsql import manifest, tokenplan
from mixsql.errors import MixSQLError
from mixsql.fairmerge import Merge, Tags
from mixsql.planfile import CompiledPlan, lineage

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


class _FixedCosts:
    """``fairmerge.Costs`` over given epochs (``epochs[c][e]``: component c's costs in epoch e, the
    last repeated; ``allowed[c]``: its epochs, None for unlimited), one partition."""

    def __init__(self, epochs: list[list[np.ndarray]], allowed: list[int | None], by_tokens: bool) -> None:
        self.epochs, self.allowed, self.by_tokens = epochs, allowed, by_tokens

    def _costs(self, c: int, e: int, what: str) -> np.ndarray:
        costs = self.epochs[c][min(e, len(self.epochs[c]) - 1)].astype(np.int64)
        return costs if what == "tokens" or self.by_tokens else np.ones(len(costs), dtype=np.int64)

    def size(self, c: int, q: int) -> int:
        return len(self.epochs[c][0])

    def known(self, c: int, q: int) -> int | None:
        return None if self.allowed[c] is None else self.size(c, q) * self.allowed[c]

    def starts(self, c: int, q: int, epochs: int, what: str = "cost") -> np.ndarray:
        totals = [int(self._costs(c, e, what).sum()) for e in range(max(epochs - 1, 0))]
        return np.concatenate(([0], np.cumsum(totals, dtype=np.int64))).astype(np.int64)[:epochs]

    def epoch(self, c: int, q: int, e: int, what: str = "cost") -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self._costs(c, e, what))))


def _reference(rule: dict, epochs: list[list[np.ndarray]], allowed: list[int | None], policy: str = "STOP",
               by_tokens: bool = True, laid: int = 12) -> tuple[list[tuple[int, int]], int | None, int]:
    """The definition over whole sequences (module docstring, 2-4): every document's tag from the
    costs before it, one sort by (tag, component, index), cut at the first phantom (STOP). An
    unlimited supply is laid out ``laid`` epochs: (the order as far as it is exact, where the stream
    ends if that is known, how far the order is exact)."""
    tags = Tags(rule)
    keys, phantoms, bound = [], [], None
    for i, (epoch_list, k) in enumerate(zip(epochs, allowed)):
        costs = np.concatenate([epoch_list[min(e, len(epoch_list) - 1)] for e in range(k or laid)]).astype(np.int64)
        costs = costs if by_tokens else np.ones(len(costs), dtype=np.int64)
        tag = tags.of(i, np.concatenate(([0], np.cumsum(costs))))
        keys += [(tag[j], i, j) for j in range(len(costs)) if np.isfinite(tag[j])]
        if k is None:
            bound = tag[-1] if bound is None else min(bound, tag[-1])
        elif np.isfinite(tag[-1]) and policy != "REDISTRIBUTE":
            phantoms.append((tag[-1], i))
    keys.sort()
    stop = len(keys)
    if phantoms:
        first = min(phantoms)
        stop = sum(1 for tg, c, _ in keys if tg < first[0] or (tg == first[0] and c <= first[1]))
        if bound is not None and not first[0] < bound:
            stop = None  # past what was laid out
    exact = len(keys) if bound is None else sum(1 for tg, _, _ in keys if tg < bound)
    if stop is not None:
        exact = min(exact, stop)
    return [(c, j) for _, c, j in keys[:exact]], stop, exact


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=4), st.data())
def test_every_prefix_is_within_one_document_of_the_shares(weights: list[int], data: st.DataObject) -> None:
    """The merge's bound (tokenplan, 3), at every document boundary, for any weights and lengths."""
    total = sum(weights)
    shares = [Fraction(w, total) for w in weights]
    costs = [np.asarray(data.draw(st.lists(st.integers(0, 400) | st.integers(1000, 3000), min_size=1, max_size=60)),
                        dtype=np.int64) for _ in weights]
    bound = types.SimpleNamespace(components=[types.SimpleNamespace(share=s) for s in shares], schedule=())
    tags = Tags(tokenplan.tag_rule(bound, 1))
    merge = Merge(tags, _FixedCosts([[c] for c in costs], [1] * len(costs), True), 0, len(costs))
    stop, ender = min((merge.below(merge.end_tag(c), c), c) for c in range(len(costs)))
    comp, index = merge.following(np.zeros(len(costs), dtype=np.int64), stop)
    # each component's documents come in order, once
    for i in range(len(costs)):
        assert index[comp == i].tolist() == list(range(int((comp == i).sum())))
    per_doc = np.asarray([costs[c][j] for c, j in zip(comp.tolist(), index.tolist())], dtype=np.int64)
    _check_bound(comp, per_doc, shares, [int(c.max()) for c in costs], np.arange(stop + 1))
    # the stream ends where a component has no next document
    assert int((comp == ender).sum()) == len(costs[ender])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=4), st.data())
def test_the_merge_at_any_position_is_the_sort_of_the_whole_sequences(weights: list[int],
                                                                      data: st.DataObject) -> None:
    """Counts at any position (a search over tags), the documents that follow, a document's place
    and where the supply ends are the definition: one sort of every document's tag, cut at the
    first phantom (none under REDISTRIBUTE); supplies finite or unlimited, tags exact or float."""
    total = sum(weights)
    shares = [Fraction(w, total) for w in weights]
    sizes = [data.draw(st.integers(0, 12)) for _ in weights]  # a pool is as large in every epoch
    epochs = [[np.asarray(data.draw(st.lists(st.integers(0, 50) | st.integers(200, 400), min_size=n, max_size=n)),
                          dtype=np.int64) for _ in range(data.draw(st.integers(1, 3)))] for n in sizes]
    policy = data.draw(st.sampled_from(["STOP", "REDISTRIBUTE"]))
    allowed = [data.draw(st.integers(1, 4) | st.none()) if policy == "STOP" else data.draw(st.integers(1, 4))
               for _ in weights]
    by_tokens = data.draw(st.booleans())
    for c, (k, n) in enumerate(zip(allowed, sizes)):
        if k is None and (n == 0 or (by_tokens and not any(int(e.sum()) for e in epochs[c]))):
            allowed[c] = 1  # a repeated supply that costs nothing never ends (refused when planning)
    bound = types.SimpleNamespace(components=[types.SimpleNamespace(share=s) for s in shares], schedule=())
    rule = tokenplan.tag_rule(bound, 1)
    if data.draw(st.booleans()):  # float shares, as for weights too fine for exact tags
        rule = {"kind": "shares", "shares": [float(x) for x in shares]}
    expected, stop, exact = _reference(rule, epochs, allowed, policy, by_tokens)
    merge = Merge(Tags(rule), _FixedCosts(epochs, allowed, by_tokens), 0, len(weights))
    if policy == "STOP" and any(k is not None for k in allowed):
        phantoms = [(merge.below(merge.end_tag(c), c), c) for c, k in enumerate(allowed) if k is not None
                    and merge.tags.finite(merge.end_tag(c))]
        assert stop is None or min(phantoms)[0] == stop
    elif all(k is not None for k in allowed):
        assert sum(merge.finite_docs(c) for c in range(len(weights))) == stop
    counts = np.zeros(len(weights), dtype=np.int64)
    for m in range(exact + 1):
        assert merge.counts_at(m).tolist() == counts.tolist(), m
        if m < exact:
            c, j = expected[m]
            assert merge.position(c, np.asarray([j])).tolist() == [m]
            counts[c] += 1
    step = data.draw(st.integers(1, 9))
    for m in range(0, exact, step):  # reading on from any position
        comp, index = merge.following(merge.counts_at(m), min(step, exact - m))
        assert list(zip(comp.tolist(), index.tolist())) == expected[m: min(m + step, exact)]


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
    with pytest.raises(MixSQLError, match="too few for 3,000 partitions"):
        tcon.mix("MIX BY TOKENS 1 AS a WHERE domain = 'code', 1 AS b FROM corpus LIMIT 100000 TOKENS "
                 "ON EXHAUSTION REPEAT PARTITIONS 3000")


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


# Streams planned from token counts, each with the digest of its lineage (file name, row, component of
# every position), its samples and tokens, as format 12 stored every position (``stream_rows.npy``):
# counts found by searches over the tags and chunks sorted by tag at run time give the same stream.
MERGED = {
    "exact": ("MIX BY TOKENS 5 AS a WHERE domain = 'code', 2 AS b WHERE domain = 'manual', 3 AS c FROM corpus "
              "SEED 1 CHUNK SIZE 50 PARTITIONS 3",
              1, "ac96f13fae87d4b1", 2141, 272651),
    "repeat": ("MIX BY TOKENS 0.6 AS code WHERE domain = 'code', 0.4 AS prose WHERE domain <> 'code' FROM corpus "
               "LIMIT 2000000 TOKENS ON EXHAUSTION REPEAT PARTITIONS 2 SEED 4",
               1, "62be9b13663b77b1", 11899, 2000158),
    "samples_tok": ("MIX 0.7 AS code WHERE domain = 'code', 0.3 AS prose WHERE domain <> 'code' FROM corpus LIMIT "
                    "900000 TOKENS ON EXHAUSTION REPEAT PARTITIONS 3 CHUNK SIZE 100 SEED 2",
                    1, "55eaf102f1529658", 4202, 901038),
    "schedule": ("MIX BY TOKENS 0.5 AS code WHERE domain = 'code', 0.5 AS prose WHERE domain <> 'code' FROM corpus "
                 "ORDER BY CURRICULUM (STAGE UNTIL 100000 TOKENS (code = 0), STAGE UNTIL 200000 TOKENS (prose = "
                 "0)) LIMIT 1500000 TOKENS ON EXHAUSTION REPEAT PARTITIONS 2",
                 1, "c3960d7ba04dbbd3", 9849, 1502443),
    "redistribute": ("MIX BY TOKENS 0.8 AS code WHERE domain = 'code', 0.2 AS prose WHERE domain <> 'code' FROM corpus "
                     "ON EXHAUSTION REDISTRIBUTE PARTITIONS 2",
                     1, "3ede14a8de620a89", 4200, 627400),
    "maxepochs": ("MIX BY TOKENS 0.7 AS a WHERE domain = 'code' MAX EPOCHS 3, 0.3 AS b WHERE domain <> 'code' MAX "
                  "EPOCHS 2 FROM corpus LIMIT 1000000 TOKENS ON EXHAUSTION REPEAT SEED 5 CHUNK SIZE 8 PARTITIONS 3",
                  3, "f69a267eefd185ba", 5409, 1000054),
    "buckets": ("MIX BY TOKENS 0.6 AS a WHERE domain = 'code', 0.4 AS b WHERE domain <> 'code' FROM corpus ORDER "
                "BY CURRICULUM (a BY quality DESC BUCKETS 3) LIMIT 1200000 TOKENS ON EXHAUSTION REPEAT SEED 9 "
                "CHUNK SIZE 32 PARTITIONS 5",
                2, "48ac86dba8e88af9", 6798, 1200019),
    "jsonl": ("MIX BY TOKENS 0.6 AS a WHERE domain = 'code', 0.4 AS b WHERE domain <> 'code' FROM corpus_jsonl "
              "LIMIT 900000 TOKENS ON EXHAUSTION REPEAT SEED 1 CHUNK SIZE 32 PARTITIONS 2",
              2, "9695361f295aa743", 5332, 900031),
    "stop": ("MIX BY TOKENS 0.5 AS a WHERE domain = 'code', 0.5 AS b WHERE domain <> 'code' FROM corpus SEED 7 "
             "CHUNK SIZE 64 PARTITIONS 4",
             1, "1cc4b0cf4f79930d", 3437, 538082),
}
MERGED_PACKED = {"mixed": "509f1fede21a915a", "component": "0a8e9f734651bda7"}  # 1,500 sequences of 64 of "repeat"


def _digest(values: object) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(MERGED))
def test_a_merged_stream_is_the_one_that_stored_every_position(tcon: mixsql.Connection, name: str) -> None:
    sql, window, expected, samples, tokens = MERGED[name]
    mix = tcon.mix(sql)
    plan = manifest.cached_plan(tokenplan.resolve(mix.bound, tcon.catalog, window=window), tcon.catalog)
    assert plan.merge is not None and not (plan.directory / "stream_rows.npy").exists()
    lin = lineage(plan, 0, len(plan))
    digest = _digest([[os.path.basename(f) for f in lin.column("file").to_pylist()], lin.column("row").to_pylist(),
                      lin.column("component").to_pylist()])
    assert (digest, len(plan), plan.meta["stream_content_tokens"]) == (expected, samples, tokens)


@pytest.mark.parametrize("pack", sorted(MERGED_PACKED))
def test_packed_sequences_of_a_merged_stream_are_unchanged(tcon: mixsql.Connection, pack: str) -> None:
    got = [s["input_ids"].tolist() for s in tcon.mix(MERGED["repeat"][0]).sequences(64, limit=1500, pack=pack)]
    assert _digest(got) == MERGED_PACKED[pack]


def test_a_merged_plan_grows_with_the_samples_selected_not_the_budget(tcon: mixsql.Connection) -> None:
    q = ("MIX BY TOKENS 0.6 AS code WHERE domain = 'code', 0.4 AS prose WHERE domain <> 'code' FROM corpus "
         "LIMIT {n} TOKENS ON EXHAUSTION REPEAT PARTITIONS 2 SEED 4")
    small, large = (tcon.mix(q.format(n=n)).plan() for n in (2_000_000, 60_000_000))

    def stored(plan: CompiledPlan) -> int:
        return sum(f.stat().st_size for f in plan.directory.iterdir()
                   if f.name not in ("plan.json", "epoch_tokens.npy"))

    assert len(large) > 25 * len(small) and stored(large) == stored(small)  # every sample stored once, nothing more
    epochs = np.load(large.directory / "epoch_tokens.npy")  # each pool's tokens before each epoch: what a seek needs
    assert epochs.shape[:2] == (2, 2) and epochs.shape[2] <= 2 + max(
        -(-int(u) // int(s)) for u, s in zip(large.pool_used.ravel(), large.epoch_lengths.ravel()))
    C = large.chunk_size
    # a fresh process's seek to the end computes the last chunks only, and the budget is met there
    fresh = CompiledPlan(large.directory)
    end = fresh.positions_rows(len(fresh) - 3 * C, len(fresh))
    assert np.array_equal(end, large.positions_rows(len(large) - 3 * C, len(large)))
    assert large.meta["stream_content_tokens"] >= 60_000_000
    # the stream's prefix is the smaller budget's stream
    first, short = large.positions_rows(0, len(small)), small.positions_rows(0, len(small))
    assert np.array_equal(large.file[first], small.file[short]) and np.array_equal(large.row[first], small.row[short])
