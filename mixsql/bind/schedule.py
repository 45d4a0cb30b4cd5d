"""The schedule over plan positions (curriculum stages and ramps), orderings, epochs and the budget."""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import functools
import math
import typing as t
from fractions import Fraction

from sqlglot import expressions as exp

from mixsql.bind.base import _Base
from mixsql.bind.checks import ORDERABLE
from mixsql.bind.model import BoundComponent, DEFAULT_BUCKETS, Node, Ordering
from mixsql.limits import MAX_BUCKETS, max_chunk_rows, max_stream_samples
from mixsql.parse import Component
from mixsql.parse.ast import OrderKey, Stage


@dataclasses.dataclass(frozen=True)
class Segment:
    """Between plan positions ``start`` and ``end`` (None: forever) the leaf shares go linearly from
    ``begin`` to ``finish`` (equal for a STAGE)."""

    start: int
    end: int | None
    begin: tuple[Fraction, ...]
    finish: tuple[Fraction, ...]
    kind: str  # DECLARED, STAGE or RAMP

    def at(self, x: Fraction | int) -> tuple[Fraction, ...]:
        if self.end is None or self.begin == self.finish:
            return self.begin
        f = Fraction(x - self.start, self.end - self.start)
        return tuple(a + (b - a) * f for a, b in zip(self.begin, self.finish))


class Schedule:
    """The leaf shares over plan positions: piecewise linear (``bind.Segment``), integrated exactly."""

    def __init__(self, shares: t.Sequence[Fraction], segments: t.Sequence[t.Any]) -> None:
        self.segments = list(segments)
        self.static = not self.segments or all(s.begin == s.finish == tuple(shares) for s in self.segments)
        self.shares = tuple(shares)
        self._before: list[tuple[Fraction, ...]] = []  # integral up to each segment's start
        total = tuple(Fraction(0) for _ in shares)
        for seg in self.segments:
            self._before.append(total)
            if seg.end is not None:
                total = tuple(a + b for a, b in zip(total, self._piece(seg, seg.end)))

    @staticmethod
    def _piece(seg: t.Any, x: int) -> tuple[Fraction, ...]:
        width = x - seg.start
        return tuple((a + b) * width / 2 for a, b in zip(seg.begin, seg.at(x)))

    def integral(self, x: int) -> tuple[Fraction, ...]:
        """Expected samples of each component among plan positions [0, x)."""
        if self.static:
            return tuple(s * x for s in self.shares)
        k = max(i for i, seg in enumerate(self.segments) if seg.start <= x or i == 0)
        seg = self.segments[k]
        return tuple(a + b for a, b in zip(self._before[k], self._piece(seg, max(x, seg.start))))

    @functools.cached_property
    def _scaled(self) -> tuple[int, list[tuple[int, list[int], list[int], list[int]]]]:
        """A denominator D and, per segment, integers (start, A, B, R) with D * integral(x) =
        A + (x - start) * B + (x - start)**2 * R: the integral in integer arithmetic."""
        pieces = []
        if self.static:
            pieces.append((0, [Fraction(0)] * len(self.shares), list(self.shares), [Fraction(0)] * len(self.shares)))
        else:
            for seg, before in zip(self.segments, self._before):
                bend = [(f - b) / (2 * (seg.end - seg.start)) if seg.end is not None else Fraction(0)
                        for b, f in zip(seg.begin, seg.finish)]
                pieces.append((seg.start, list(before), list(seg.begin), bend))
        D = math.lcm(*(v.denominator for _, *coefficients in pieces for part in coefficients for v in part))
        return D, [(start, [int(v * D) for v in a], [int(v * D) for v in b], [int(v * D) for v in r])
                   for start, a, b, r in pieces]

    def integral_scaled(self, x: int) -> tuple[int, list[int]]:
        """(D, D * integral(x)) in integers."""
        D, pieces = self._scaled
        k = max(bisect.bisect_right([p[0] for p in pieces], x) - 1, 0)
        start, a, b, r = pieces[k]
        d = max(x - start, 0)
        return D, [ai + d * bi + d * d * ri for ai, bi, ri in zip(a, b, r)]

    def straddles(self, x0: int, x1: int) -> bool:
        """Whether a segment starts inside (x0, x1)."""
        return not self.static and any(x0 < seg.start < x1 for seg in self.segments)

    def integral_seen_from(self, x0: int, x1: int) -> tuple[Fraction, ...]:
        """``integral(x1)`` as known at x0: the segments that start after x0 replaced by the segment
        in force at x0, continued (a ramp to its end, then its final shares). A chunk row's counts
        use this, so nothing the schedule says after a chunk row's first position changes that row:
        what is appended to a curriculum later never changes the positions before it."""
        if not self.straddles(x0, x1):
            return self.integral(x1)
        seg = self.segments[max(i for i, s in enumerate(self.segments) if s.start <= x0 or i == 0)]
        base, first = self.integral(x0), seg.at(x0)
        if seg.end is None or seg.begin == seg.finish:
            return tuple(b + v * (x1 - x0) for b, v in zip(base, first))
        stop = min(x1, seg.end)
        ramp = tuple((a + z) * (stop - x0) / 2 for a, z in zip(first, seg.at(stop)))
        return tuple(b + r + f * (x1 - stop) for b, r, f in zip(base, ramp, seg.finish))

    def at(self, x: int) -> tuple[Fraction, ...]:
        """The shares in force at plan position x."""
        if self.static:
            return self.shares
        k = max(i for i, seg in enumerate(self.segments) if seg.start <= x or i == 0)
        return self.segments[k].at(x)


class Scheduling(_Base):
    """The binder's schedule, orderings, epochs and budget."""

    _counts_steps = False  # set when a point or budget is given in STEPS

    def _resolve_path(self, path: exp.Expr, nodes: t.Sequence[str], what: str) -> str:
        name = path.name
        lowered = {n.lower(): n for n in nodes}
        if name.lower() in lowered:
            return lowered[name.lower()]
        close = difflib.get_close_matches(name, list(nodes), n=1)
        raise self.error(f"unknown component {name!r} in {what}", path,
                         hint=f"did you mean {close[0]!r}?" if close else f"components: {', '.join(nodes)}")

    def _schedule(self, nodes: list[Node], leaves: list[str], batch_size: int | None) -> tuple[Segment, ...]:
        curriculum = self.mix.args.get("curriculum")
        stages = [s for s in (curriculum.expressions if curriculum is not None else []) if isinstance(s, Stage)]
        if not stages:
            return ()
        by_path = {n.path: n for n in nodes}
        declared = tuple(by_path[leaf].share for leaf in leaves)
        segments: list[Segment] = []
        start, previous = 0, declared
        for i, stage in enumerate(stages):
            weights = {n.path: n.weight for n in nodes}
            for assign in stage.expressions:
                target = self._resolve_path(assign.this, list(by_path), "the curriculum")
                weights[target] = self._number(assign.args["weight"], "weight")
            shares = self._stage_shares(weights, leaves, stage)
            until = stage.args.get("until")
            end = None
            if until is None:
                if i != len(stages) - 1:
                    raise self.error(f"only the last {stage.name} may omit UNTIL", stage,
                                     hint="give it UNTIL <n> TOKENS" if self._unit == "TOKENS"
                                     else "give it UNTIL <n> SAMPLES or STEPS")
                if stage.name == "RAMP":
                    raise self.error("a RAMP needs UNTIL: where it arrives at its weights", stage)
            else:
                end = self._in_samples(until, stage.args["unit"], batch_size)
                if end <= start:
                    raise self.error(f"stage points must increase: UNTIL {until.sql()} {stage.args['unit']} is "
                                     f"at {self._unit.lower()[:-1]} {end:,}, not after the previous point ({start:,})",
                                     until)
            begin = previous if stage.name == "RAMP" else shares
            segments.append(Segment(start=start, end=end, begin=begin, finish=shares, kind=stage.name))
            if end is not None:
                start, previous = end, shares
        if segments[-1].end is not None:  # a stage is an interval: the MIX weights return; a ramp's target holds
            after = previous if segments[-1].kind == "RAMP" else declared
            segments.append(Segment(start=start, end=None, begin=after, finish=after,
                                    kind="HOLD" if segments[-1].kind == "RAMP" else "MIX"))
        return tuple(segments)

    def _stage_shares(self, weights: dict[str, Fraction], leaves: list[str], stage: exp.Expr) -> tuple[Fraction, ...]:
        share = self._effective(weights, lambda parent: self.error(
            f"every component {'of ' + repr(parent) + ' ' if parent else ''}has weight 0 in this {stage.name}", stage,
            hint="give at least one a positive weight"))
        return tuple(share[leaf] for leaf in leaves)

    _unit = "SAMPLES"  # the statement's MIX BY unit: what its shares and schedule positions count

    def _in_samples(self, literal: exp.Expr, unit: str, batch_size: int | None) -> int:
        """A schedule point (n SAMPLES, n STEPS or n TOKENS) in the stream's unit: samples, or tokens
        for a mixture BY TOKENS."""
        value = int(literal.this)
        if self._unit == "TOKENS":
            if unit != "TOKENS":
                raise self.error(f"this mixture is BY TOKENS, so its points are in TOKENS, not {unit}", literal,
                                 hint="give UNTIL <n> TOKENS (steps x global batch x sequence length)")
            return value
        if unit == "SAMPLES":
            return value
        if unit == "STEPS":
            if batch_size is None:
                raise self.error("STEPS need the global batch size", literal,
                                 hint="add BATCH SIZE <samples per global batch> to the statement")
            self._counts_steps = True
            return value * batch_size
        raise self.error("a point in TOKENS needs a mixture whose shares are shares of tokens", literal,
                         hint="write MIX BY TOKENS ..., or give the point in SAMPLES or STEPS")

    def _limit(self, batch_size: int | None) -> tuple[int | None, int | None]:
        """The budget: (samples, None) for LIMIT n SAMPLES or STEPS, (None, tokens) for LIMIT n TOKENS."""
        budget = self.mix.args.get("limit")
        if budget is None:
            return None, None
        unit = budget.args["unit"]
        value = int(budget.this.this)
        if value < 1:
            raise self.error("LIMIT must be at least 1", budget.this)
        if unit == "TOKENS":
            return None, value
        if self._unit == "TOKENS" and unit == "STEPS":
            raise self.error("this mixture is BY TOKENS, so a budget in STEPS (of documents) means nothing to it",
                             budget.this, hint="give LIMIT <n> TOKENS (steps x global batch x sequence length)")
        unit_before, self._unit = self._unit, "SAMPLES"
        try:
            return self._in_samples(budget.this, unit, batch_size), None
        finally:
            self._unit = unit_before

    def _orderings(self, leaves: list[tuple[str, Component, list[Component]]],
                   datasets: list[str]) -> list[Ordering | None]:
        curriculum = self.mix.args.get("curriculum")
        out: list[Ordering | None] = [None] * len(leaves)
        paths = [name for name, _, _ in leaves]
        inner = sorted({name.rsplit(".", k)[0] for name in paths for k in range(1, name.count(".") + 1)})
        for item in (curriculum.expressions if curriculum is not None else []):
            if not isinstance(item, OrderKey):
                continue
            target = self._resolve_path(item.this, paths + inner, "the curriculum")
            buckets = DEFAULT_BUCKETS if item.args.get("buckets") is None else int(item.args["buckets"].this)
            if not 1 <= buckets <= MAX_BUCKETS:
                raise self.error(f"BUCKETS must be from 1 to {MAX_BUCKETS:,}", item.args["buckets"])
            key = item.args["key"]
            for i, path in enumerate(paths):
                if path != target and not path.startswith(target + "."):
                    continue
                if out[i] is not None:
                    raise self.error(f"component {path!r} is ordered twice in the curriculum", item.this)
                kind = self._key_type(key, datasets[i])
                if not ORDERABLE.match(kind):
                    raise self.error(f"the curriculum key of {path!r} has type {kind}, which cannot be ordered", key,
                                     hint="order by a number, text, date or time (e.g. quality DESC)")
                out[i] = Ordering(key=key.sql(dialect="duckdb", comments=False),
                                  descending=bool(item.args.get("desc")), buckets=buckets)
        return out

    def _epochs(self, leaves: list[tuple[str, Component, list[Component]]]) -> list[int | None]:
        policy = self._word("exhaustion", "STOP")
        out: list[int | None] = []
        for _, leaf, ancestors in leaves:
            node = next((n.args["max_epochs"] for n in [leaf] + ancestors[::-1]
                         if n.args.get("max_epochs") is not None), None)
            if node is None:
                out.append(None if policy == "REPEAT" else 1)
                continue
            value = int(node.this)
            if value < 1:
                raise self.error("MAX EPOCHS must be at least 1", node)
            out.append(value)
        return out

    def _check_size(self, limit: int | None, components: list[BoundComponent],
                    leaves: list[tuple[str, Component, list[Component]]], chunk_size: int,
                    token_limit: int | None = None) -> None:
        """The stream fits what this machine can compile (``limits.max_stream_samples``), checked
        before the planner allocates anything for it."""
        most = max_stream_samples()
        rows = max_chunk_rows(len(components))
        if token_limit is not None:  # a stream as long as a sample budget's longest
            per = [c.tokens / c.samples for c in components if c.tokens and c.samples]
            estimate = token_limit / min(per) if per else float(token_limit)
            if estimate > rows * chunk_size:
                raise self.error(f"LIMIT {token_limit:,} tokens is about {estimate:,.0f} samples, more than this "
                                 f"machine can plan (at most {rows * chunk_size:,} in chunks of {chunk_size:,})",
                                 self.mix.args["limit"].this,
                                 hint="lower the LIMIT (a run can be planned in stages, one statement each)")
            return
        selected = sum(c.samples for c in components)
        supply = [c.samples * (c.max_epochs or 0) for c in components]
        length = limit if limit is not None else sum(supply)
        if limit is not None and min(limit, selected) > most:
            raise self.error(f"LIMIT {limit:,} samples is more than this machine can plan: a plan stores each "
                             f"sample it selects once, and at most {most:,} fit in its memory",
                             self.mix.args["limit"].this,
                             hint="lower the LIMIT, or select fewer samples (a run can be planned in stages, "
                                  "one statement each)")
        if limit is None and selected > most:
            top = max(range(len(components)), key=lambda i: components[i].samples)
            raise self.error(f"the components select {selected:,} samples, more than this machine can plan (at most "
                             f"{most:,} fit in its memory)", leaves[top][1].this,
                             hint="add LIMIT <n> SAMPLES, or select fewer samples")
        if length > rows * chunk_size:
            node = self.mix.args["limit"].this if limit is not None else None
            if node is None:
                top = max(range(len(components)), key=lambda i: supply[i])
                _, leaf, ancestors = leaves[top]
                node = next((n.args["max_epochs"] for n in [leaf] + ancestors[::-1]
                             if n.args.get("max_epochs") is not None), leaf.this)
            raise self.error(f"the stream holds {length:,} samples, more than this machine can plan in chunks of "
                             f"{chunk_size:,} (at most {rows * chunk_size:,}: the chunk table is {rows:,} rows)", node,
                             hint="raise CHUNK SIZE, or lower the LIMIT (or MAX EPOCHS)")
