"""Resume states: built, checked and compared without a dataset."""

from __future__ import annotations

import pytest

from mixsql import state
from mixsql.state import StateError

IDENT = {"plan": "p" * 24, "statement": "abc", "params": {"q": 0.5}, "datasets": {"corpus": "v1"}, "seed": 1,
         "chunk_size": 64, "partitions": 4}


def test_make_and_check_round_trip() -> None:
    s = state.make(IDENT, 32, origin=0, workers=2, worker=1, next_batch=7)
    assert state.check(s) == s and state.states_in({"loader": [s]}) == [s]
    with pytest.raises(StateError, match="global step needs every worker's"):
        state.global_position([s])
    other = state.make(IDENT, 32, origin=0, workers=2, worker=0, next_batch=6)
    assert state.global_position([s, other]) == (s, 6 * 32)  # the smallest next: the batch not yet consumed


def test_differences_say_what_changed() -> None:
    s = state.make(IDENT, 32, 0, 1, 0, 3)
    now = {**IDENT, "plan": "q" * 24, "params": {"q": 0.6}, "datasets": {"corpus": "v2"}, "seed": 2}
    words = state.differences(s, now)
    assert "parameter q: 0.5 -> 0.6" in words and any("dataset corpus: version v1 -> v2" in w for w in words)
    assert "seed: 1 -> 2" in words and state.differences(s, IDENT) == []


@pytest.mark.parametrize("field, value", [("next", -1), ("workers", 0), ("worker", 2), ("global_batch_size", 0),
                                          ("seed", "1"), ("plan", None), ("params", []), ("origin", 1.5)])
def test_check_refuses_each_bad_field(field: str, value: object) -> None:
    s = state.make(IDENT, 32, 0, 2, 0, 3)
    with pytest.raises(StateError, match=repr(field) if field != "worker" else "names worker 2 of 2"):
        state.check({**s, field: value})


def test_a_state_of_an_earlier_format_of_the_same_stream_resumes() -> None:
    """Plan formats 12 to 14 only changed how a plan is laid out (later epochs derived; a merged
    stream's counts, then none), not its stream: a state saved on an earlier plan of the statement resumes."""
    saved = state.make({**IDENT, "plan": "e" * 24}, 32, 0, 1, 0, 3)
    now = {**IDENT, "plan": "f" * 24, "same_stream": ["e" * 24]}
    assert state.differences(saved, now) == []
    assert state.differences({**saved, "plan": "d" * 24}, now) == ["the compiled plan differs (another mixsql plan format)"]


def test_a_compiled_plan_names_the_earlier_keys_of_its_stream(con) -> None:  # noqa: ANN001
    from mixsql import manifest

    mix = con.mix("MIX 0.6 AS code WHERE domain = 'code', 0.4 AS rest FROM corpus SEED 4")
    plan = mix.plan()
    assert plan.meta["same_stream"] == [manifest.plan_key(mix.spec, f) for f in (11, 12, 13)]
    assert plan.key not in plan.meta["same_stream"]
    assert state.identity(plan)["same_stream"] == plan.meta["same_stream"]


def test_a_merged_plan_names_its_earlier_keys_where_its_tags_were_chosen_alike(tcon) -> None:  # noqa: ANN001
    from mixsql import manifest

    mix = tcon.mix("MIX BY TOKENS 0.6 AS code WHERE domain = 'code', 0.4 AS rest FROM corpus SEED 4")
    assert mix.plan().meta["same_stream"] == [manifest.plan_key(mix.spec, f) for f in (11, 12, 13)]
    fine = tcon.mix("MIX BY TOKENS 0.123457 AS code WHERE domain = 'code', 0.876543 AS rest FROM corpus")
    assert fine.plan().meta["merge"]["tags"]["kind"] == "shares" and fine.plan().meta["same_stream"] == []
