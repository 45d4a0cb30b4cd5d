"""Binding errors: each says what and where (line, column) and what to do."""

from __future__ import annotations

import json

from fractions import Fraction

import numpy as np
import duckdb
import pytest

import mixsql
from tests.conftest import PARQUET_GLOB
from mixsql.errors import BindError, MixSQLError


def _err(con: mixsql.Connection, text: str, cls: type = BindError) -> MixSQLError:
    with pytest.raises(cls) as e:
        con.mix(text)
    assert e.value.source == text
    return e.value


@pytest.mark.parametrize("text, line, col, fragment, hint", [
    ("MIX 1 AS a FROM corpsu", 1, 17, "unknown dataset 'corpsu'", "did you mean 'corpus'?"),
    ("MIX 1 AS a FROM nothing_like_it", 1, 17, "unknown dataset", "registered datasets: corpus, corpus_jsonl"),
    ("MIX 1 AS a WHERE qualty > 0.5 FROM corpus", 1, 18, "unknown column 'qualty'", "did you mean 'quality'?"),
    ("MIX 1 AS a WHERE domain = 'code',\n    1 AS b WHERE lang = 'en'\nFROM corpus", 2, 18,
     "unknown column 'lang'", "did you mean 'language'?"),
    ("MIX 1 AS a FROM corpus WHERE xyz = 1", 1, 30, "unknown column 'xyz' in the WHERE of component 'a'",
     "properties"),
    ("MIX 1 AS a WHERE domain = 'code', 1 AS b FROM corpus WHERE xyz = 1", 1, 60,
     "unknown column 'xyz' in the statement's WHERE", "properties"),
    ("MIX 1 AS a WHERE quality + 1 FROM corpus", 1, 18, "has type DOUBLE, a predicate must be BOOLEAN", "compare"),
    ("MIX 1 AS a WHERE domain FROM corpus", 1, 18, "has type VARCHAR", None),
    ("MIX 1 AS a, 2 AS b FROM corpus WHERE n_bytes", 1, 38, "the statement's WHERE is not a condition", None),
    ("MIX 0 AS a FROM corpus", 1, 5, "weight must be positive", None),
    ("MIX 0.0 AS a, 1 AS b FROM corpus", 1, 5, "weight must be positive", None),
    ("MIX 1 AS a WHERE domain = 'code', 1 AS A WHERE domain = 'docs' FROM corpus", 1, 40,
     "duplicate component name 'A'", None),
    ("MIX 1 AS a WHERE domain = 'code', 1 AS b WHERE domain = 'nope' FROM corpus", 1, 48,
     "component 'b' matches no sample", "check its predicate"),
    ("MIX 1 AS a WHERE domain = 'code', 1 AS b WHERE domain = 'code' AND quality > 0.3 FROM corpus", 1, 48,
     "component 'b' matches no sample", "belongs to an earlier component: 'a'"),
    ("MIX 1 AS a WHERE domain = 'code' FROM corpus WHERE n_bytes < 0", 1, 18, "matches no sample",
     "none pass the statement's WHERE"),
    ("MIX 1 AS a WHERE lenght(tags) > 1 FROM corpus", 1, 18, "lenght", 'Did you mean "length"?'),
    ("MIX 1 AS a WHERE count(*) > 1 FROM corpus", 1, 18, "aggregate", "one sample at a time"),
    ("MIX 1 AS a WHERE domain = 'x', 1 AS b, 1 AS c FROM corpus", 1, 18, "component 'a' matches no sample", None),
    ("MIX 1 AS a WHERE domain = 'code', 1 AS b WHERE domain = 'docs'", 1, 10,
     "component 'a' has no dataset", "add FROM"),
    ("MIX 1 AS a WHERE domain = 'code', 1 AS b FROM corpus, 1 AS c FROM corpus", 1, 60,
     "component 'c' matches no sample", "earlier components take every sample"),
])
def test_bind_errors(con: mixsql.Connection, text: str, line: int, col: int, fragment: str | None,
                     hint: str | None) -> None:
    e = _err(con, text)
    assert (e.line, e.col) == (line, col), e.render()
    assert fragment in e.message, e.render()
    if hint:
        assert hint in (e.hint or ""), e.render()


def test_a_share_below_one_sample_per_chunk_is_carried(con: mixsql.Connection) -> None:
    mix = con.mix("MIX 1000 AS a WHERE domain = 'code', 1 AS b WHERE domain = 'docs' FROM corpus CHUNK SIZE 64")
    table = mix.spec.table
    counts = np.diff(table, axis=0)[:, 1]
    assert set(counts.tolist()) <= {0, 1} and counts.sum() >= 1  # one sample every ~16 chunks, rounding carried
    k = np.arange(len(table))
    assert np.all(np.abs(table[:, 1] - k * 64 / 1001) < 1)

def test_overrides_and_defaults(con: mixsql.Connection) -> None:
    text = "MIX 3 AS a WHERE domain = 'code', 1 AS b FROM corpus SEED 5 CHUNK SIZE 16"
    mix = con.mix(text)
    assert (mix.seed, mix.chunk_size) == (5, 16)
    mix = con.mix(text, seed=9, chunk_size=32)
    assert (mix.seed, mix.chunk_size) == (9, 32)
    mix = con.mix("MIX 1 AS a FROM corpus")
    assert (mix.seed, mix.chunk_size) == (0, 1024)
    with pytest.raises(BindError, match="chunk_size must be an integer from 1"):
        con.mix(text, chunk_size=0)
    with pytest.raises(BindError, match="seed must be an integer"):
        con.mix(text, seed=-1)


def test_weights_are_normalised_exactly(con: mixsql.Connection) -> None:
    mix = con.mix("MIX 3 AS a WHERE domain = 'code', 1.5 AS b WHERE domain = 'docs', 0.5 AS c FROM corpus")
    assert [c.share for c in mix.bound.components] == [Fraction(6, 10), Fraction(3, 10), Fraction(1, 10)]
    assert mix.components == ["a", "b", "c"]


def test_qualified_struct_and_lambda_references(con: mixsql.Connection) -> None:
    mix = con.mix("MIX 1 AS a WHERE corpus.domain = 'code' AND len(list_filter(tags, x -> x LIKE 'module:%')) = 1, "
                  "1 AS b FROM corpus")
    expected = duckdb.sql(f"SELECT count(*) FROM read_parquet('{PARQUET_GLOB}') WHERE domain = 'code' AND "
                          "len(list_filter(tags, lambda x: x LIKE 'module:%')) = 1").fetchall()[0][0]
    assert mix.bound.components[0].samples == expected > 0


def test_case_insensitive_names(con: mixsql.Connection) -> None:
    mix = con.mix("MIX 1 AS a WHERE DOMAIN = 'code', 1 AS b FROM CORPUS")
    assert mix.bound.components[0].dataset == "corpus"


def test_bad_literal_types_are_reported_not_crashed(con: mixsql.Connection) -> None:
    with pytest.raises(BindError) as e:
        con.mix("MIX 1 AS a WHERE quality > 'high' FROM corpus")
    assert "'high'" in e.value.message and (e.value.line, e.value.col, e.value.length) == (1, 28, 6)  # the literal


def test_counts_are_cached_by_dataset_versions_and_predicates(scratch: mixsql.Connection) -> None:
    from tests.conftest import PARQUET_GLOB

    scratch.register("corpus", [PARQUET_GLOB])
    text = "MIX 1 AS a WHERE domain = 'code', 1 AS b WHERE domain = 'docs' FROM corpus"
    first = scratch.mix(text)
    cached = list((scratch.path / "counts").glob("*.json"))
    assert len(cached) == 1
    again = scratch.mix(text)
    assert [c.samples for c in again.bound.components] == [c.samples for c in first.bound.components]
    expected = [c.samples for c in first.bound.components]
    saved = json.loads(cached[0].read_text())
    saved["counts"] = {"0": [1, 2, 3, [], None], "1": [4, 5, 6, [], None]}
    cached[0].write_text(json.dumps(saved))  # what is read is what was cached, under its own key
    assert [c.samples for c in scratch.mix(text).bound.components] == [1, 4]
    for foreign in ['{"0": [1, 2, 3, [], null], "1": [4, 5, 6, [], null]}',  # no key inside
                    json.dumps({**saved, "ident": saved["ident"].replace("code", "docs")}),  # another key
                    json.dumps({**saved, "counts": {"0": [-1, 2, 3, [], None], "1": [4, 5, 6, [], None]}}),  # not counts
                    json.dumps({**saved, "counts": {"0": [1, 2, 3, [], None]}}), "not json"]:
        cached[0].write_text(foreign)
        assert [c.samples for c in scratch.mix(text).bound.components] == expected, foreign
    scratch.mix(text.replace("'docs'", "'manual'"))
    assert len(list((scratch.path / "counts").glob("*.json"))) == 2


def test_of_binders_starting_together_one_counts_and_the_others_read_its_counts(scratch: mixsql.Connection,
                                                                                 monkeypatch) -> None:
    import fcntl
    import threading

    from mixsql.bind.counts import Counts

    scratch.register("corpus", [PARQUET_GLOB])
    text = "MIX 1 AS a WHERE domain = 'code', 1 AS b FROM corpus"
    scratch.mix(text)
    path = next((scratch.path / "counts").glob("*.json"))
    saved = path.read_text()
    path.unlink()
    counted = []
    original = Counts._count
    monkeypatch.setattr(Counts, "_count", lambda self, *a: counted.append(1) or original(self, *a))
    lock = path.parent / f".{path.stem}.lock"
    with open(lock, "a+") as held:  # another process is counting this statement
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        got = []
        binder = threading.Thread(target=lambda: got.append(scratch.mix(text)))
        binder.start()
        binder.join(0.5)
        assert binder.is_alive() and not counted  # it waits, and counts nothing meanwhile
        path.write_text(saved)  # the other process's counts appear
    binder.join(30)
    assert not counted and [c.samples for c in got[0].bound.components] == \
        [c.samples for c in scratch.mix(text).bound.components]
