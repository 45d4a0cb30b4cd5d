"""Resume state: where a stream stands, as a few numbers plus the identity of what is streamed.

A state never grows with progress. Its position is *global*: ``samples``, the plan positions that
all ranks together have consumed (``step * global_batch_size``). Because global batch N is plan
positions ``[N*G, (N+1)*G)`` for every world size dividing G (``world``), a state saved at one
topology resumes at any other with the same G, or with any G that divides the position, exactly at
a global-batch boundary.

A DataLoader worker's state also says which worker it is (``worker`` of ``workers``) and which
of its batches comes next (``next``), so torchdata's ``StatefulDataLoader`` can resume each worker
where it stood. From the states of all workers of a loader, the global step is the smallest
``next``: the loader takes batches from its workers round-robin, so the worker whose turn is next
holds the first batch not yet consumed.
"""

from __future__ import annotations

import typing as t

from mixsql.errors import MixSQLError
from mixsql.planfile import CompiledPlan

STATE_FORMAT = "mixsql-state/1"


class StateError(MixSQLError):
    """A saved state that does not fit the stream it is loaded into."""


def identity(plan: CompiledPlan) -> dict[str, t.Any]:
    """What a state must match: the statement, its parameters, the data and the plan's parameters."""
    meta = plan.meta
    return {"plan": meta["key"], "same_stream": list(meta.get("same_stream", [])),
            "statement": meta.get("template"), "params": meta.get("params", {}),
            "datasets": {name: version for name, version in meta["datasets"]}, "seed": meta["seed"],
            "chunk_size": meta["chunk_size"], "partitions": meta["partitions"]}


def make(ident: t.Mapping[str, t.Any], global_batch_size: int, origin: int, workers: int, worker: int,
         next_batch: int) -> dict[str, t.Any]:
    """The state of an iterator over the stream ``ident`` (``identity``) that yields global batches
    origin + worker, + workers, ... and will yield ``next_batch`` next."""
    return {"format": STATE_FORMAT, **ident, "global_batch_size": global_batch_size, "origin": origin,
            "workers": workers, "worker": worker, "next": next_batch}


def differences(saved: t.Mapping[str, t.Any], now: t.Mapping[str, t.Any]) -> list[str]:
    """What differs between a saved state's stream and the stream ``now`` (``identity``), in words
    (empty: the same stream)."""
    packing = [f"{key.replace('_', ' ')}: {saved.get(key)} -> {now.get(key)}" for key in PACKING
               if saved.get(key) != now.get(key)]
    if saved.get("plan") == now["plan"] or saved.get("plan") in now.get("same_stream", ()):
        return packing  # the same stream (a plan of an earlier format that only laid it out differently)
    out = packing
    if saved.get("statement") != now["statement"]:
        out.append("the statement changed")
    before, after = saved.get("params") or {}, now["params"]
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            out.append(f"parameter {name}: {before.get(name, '(unset)')!r} -> {after.get(name, '(unset)')!r}")
    for name in sorted(set(saved.get("datasets") or {}) | set(now["datasets"])):
        a, b = (saved.get("datasets") or {}).get(name), now["datasets"].get(name)
        if a != b:
            out.append(f"dataset {name}: version {a or '(absent)'} -> {b or '(absent)'} (its data changed)")
    for key in ("seed", "chunk_size", "partitions"):
        if saved.get(key) != now[key]:
            out.append(f"{key.replace('_', ' ')}: {saved.get(key)} -> {now[key]}")
    return out or ["the compiled plan differs (another mixsql plan format)"]


FIELDS: dict[str, type | tuple[type, ...]] = {
    "plan": str, "statement": (str, type(None)), "params": dict, "datasets": dict, "seed": int, "chunk_size": int,
    "partitions": int, "global_batch_size": int, "origin": int, "workers": int, "worker": int, "next": int}
PACKING = ("seq_len", "eos", "bos", "pack", "tokenizer")  # in the state of a packed stream (``packing``), else absent
MAX_DEPTH = 32  # how deep a loader's state may hide ours


def states_in(obj: t.Any) -> list[dict[str, t.Any]]:
    """Every mixsql state inside ``obj``: one of ours, or a (Stateful)DataLoader's state holding them.
    Each is checked (``check``); ``obj`` must be a mapping, and is walked without following cycles."""
    if not isinstance(obj, t.Mapping):
        raise StateError(f"a state is a dict, not {type(obj).__name__}",
                         hint="pass MixDataset.state_dict() or a StatefulDataLoader's state_dict()")
    found: list[dict[str, t.Any]] = []
    seen: set[int] = set()

    def walk(value: t.Any, depth: int) -> None:
        if id(value) in seen or depth > MAX_DEPTH:
            return
        if isinstance(value, t.Mapping):
            seen.add(id(value))
            if value.get("format") == STATE_FORMAT:
                found.append(check(value))
                return
            for v in value.values():
                walk(v, depth + 1)
        elif isinstance(value, (list, tuple)):
            seen.add(id(value))
            for v in value:
                walk(v, depth + 1)

    walk(obj, 0)
    return found


def check(state: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """A saved state with every field present and of its type, or a StateError naming the first that is not."""
    for key, kind in FIELDS.items():
        if key not in state:
            raise StateError(f"the saved state has no {key!r}", hint="it is not a whole mixsql state: save it with "
                             "state_dict() and pass it unchanged")
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise StateError(f"the saved state's {key!r} is {value!r}, not {_kind(kind)}")
    for key in ("global_batch_size", "workers"):
        if state[key] < 1:
            raise StateError(f"the saved state's {key!r} is {state[key]}; it must be at least 1")
    for key in ("seed", "origin", "next", "chunk_size", "partitions"):
        if state[key] < 0:
            raise StateError(f"the saved state's {key!r} is {state[key]}; it cannot be negative")
    if not 0 <= state["worker"] < state["workers"]:
        raise StateError(f"the saved state names worker {state['worker']} of {state['workers']}")
    return dict(state)


def _kind(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"str": "text", "dict": "a dict", "int": "an integer", "NoneType": "null"}[k.__name__]
                       for k in kinds)


def global_position(states: list[dict[str, t.Any]]) -> tuple[dict[str, t.Any], int]:
    """(a representative state, plan positions consumed) from one iterator's state or all of a loader's."""
    if not states:
        raise StateError("no mixsql state found", hint="pass MixDataset.state_dict() or a StatefulDataLoader's "
                         "state_dict(), or start at a step: torch_dataset(..., start_step=N)")
    first = states[0]
    workers = first["workers"]
    if workers == 1:
        return first, first["next"] * first["global_batch_size"]
    ids = {s["worker"] for s in states if s["workers"] == workers and s["origin"] == first["origin"]}
    if ids != set(range(workers)):
        raise StateError(f"this is the state of DataLoader worker {first['worker']} of {workers}; the global "
                         "step needs every worker's", hint="pass the whole StatefulDataLoader.state_dict()")
    return first, min(s["next"] for s in states) * first["global_batch_size"]
