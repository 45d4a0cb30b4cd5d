"""The bound statement: what binding gives the planner."""

from __future__ import annotations

import dataclasses
import typing as t
from fractions import Fraction

from mixsql.parse import MixStatement

if t.TYPE_CHECKING:
    from mixsql.bind.schedule import Segment


DEFAULT_SEED = 0
DEFAULT_CHUNK_SIZE = 1024
DEFAULT_BUCKETS = 10


@dataclasses.dataclass(frozen=True)
class Ordering:
    """A component visited in key order: shuffled within ``buckets`` quantiles of the key."""

    key: str  # DuckDB SQL of the key
    descending: bool
    buckets: int


@dataclasses.dataclass(frozen=True)
class BoundComponent:
    """One leaf component of a bound mixture (``name`` is its dotted path in a hierarchy)."""

    index: int
    name: str
    dataset: str
    weight: Fraction  # its own weight as written or derived from the data, relative to its siblings
    share: Fraction  # effective share of the stream at the declared weights (product along its path)
    predicate: str | None  # DuckDB SQL of statement WHERE AND ancestors' AND its own WHERE; None if none
    sql: str  # the exact selection, overlaps with earlier components excluded
    samples: int  # samples this component owns
    bytes: int  # content bytes of those samples
    blocks: int  # distinct blocks (row groups, JSONL ranges) holding them: what reading them decodes
    overlaps: tuple[tuple[str, int], ...]  # (earlier component, samples matching both that it took)
    max_epochs: int | None = 1  # passes over its samples the stream may make; None: unlimited
    ordering: Ordering | None = None
    tokens: int | None = None  # n_tokens of its samples; None when its dataset has no token counts


@dataclasses.dataclass(frozen=True)
class Node:
    """A component of the statement's tree (leaf or inner), for EXPLAIN."""

    path: str
    weight: Fraction  # relative to its siblings (declared, or derived from the data)
    share: Fraction  # effective: product of normalised weights along the path
    derived: str | None  # "NATURAL BY SAMPLES", "TEMPERATURE 2 BY BYTES": how the weight was derived
    children: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Adaptation:
    """``ADAPT USING algorithm(options) LAG n STEPS``: weights learnt from the run's feedback."""

    algorithm: str
    options: tuple[tuple[str, t.Any], ...]
    lag: int  # steps between the feedback of step s and the first chunk row its weights govern

    def to_dict(self) -> dict[str, t.Any]:
        return {"algorithm": self.algorithm, "options": dict(self.options), "lag": self.lag}


@dataclasses.dataclass(frozen=True)
class BoundMix:
    """A MIX statement bound to a catalog version: everything the planner needs."""

    text: str
    path: str | None
    tree: MixStatement  # with parameters substituted
    components: tuple[BoundComponent, ...]
    seed: int
    chunk_size: int
    requested_partitions: int | None  # the statement's PARTITIONS or an override; None: the planner's default
    catalog_version: str
    dataset_versions: tuple[tuple[str, str], ...]
    schedule: tuple[Segment, ...] = ()  # empty: the declared shares throughout; positions in ``unit``
    limit: int | None = None  # the stream's length in samples (LIMIT n SAMPLES or STEPS), None: not in samples
    unit: str = "SAMPLES"  # what the shares are shares of: SAMPLES, or TOKENS (MIX BY TOKENS)
    token_limit: int | None = None  # LIMIT n TOKENS: the stream ends at the sample that reaches n tokens
    policy: str = "STOP"  # ON EXHAUSTION
    batch_size: int | None = None
    counts_steps: bool = False  # a point or budget is in STEPS of ``batch_size`` samples
    overlap: str = "FIRST"
    nodes: tuple[Node, ...] = ()
    params: tuple[tuple[str, t.Any], ...] = ()
    template: str = ""  # the statement before parameters are bound, canonical: its identity across configs
    adapt: Adaptation | None = None  # ADAPT USING ...: the weights come from the run

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.components]

    @property
    def in_tokens(self) -> bool:
        """The stream is planned from token counts (``tokenplan``): it mixes by tokens or its budget is in tokens."""
        return self.unit == "TOKENS" or self.token_limit is not None
