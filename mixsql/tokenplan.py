"""Stage ``plan`` for streams planned from token counts (``MIX BY TOKENS``, ``LIMIT n TOKENS``).

The sample planner (``plan``) fixes each chunk's counts from the shares alone. Shares of *tokens*
depend on which documents come, so here every canonical partition merges its components'
document sequences by weighted fair queueing, and the plan stores the result:

1. **Sequences.** Component i's sequence in partition q is its pools (``epochs.ordered_pool``:
   the block-then-sample shuffle) epoch after epoch, each epoch's pool window-shuffled whole, so
   taking more of it never changes what comes before. Document j costs ``c_i(j)``: its
   ``n_tokens`` in a mixture BY TOKENS, 1 in one BY SAMPLES (whose budget is in tokens). Let
   ``C_i(j) = c_i(0) + ... + c_i(j-1)``.
2. **Tags.** With ``G_i(x)`` the schedule's integral (``bind.Schedule``) over stream positions x in
   the mixture's unit, and partition q at its own position y standing for stream position ``P*y``,
   document j of component i gets the tag ``tau_i(j) = sup{x : G_i(x) <= P*C_i(j)}``: where the
   component's target passes the cost before the document (``P*C_i(j)/w_i`` for constant shares,
   compared exactly in integers; a schedule's tags are float64, the same on every IEEE machine).
   A component whose share stays 0 gets tag infinity: never taken.
3. **Merge.** Partition q's stream is its documents sorted by (tag, component index): start-time
   fair queueing. After a prefix ending at tag ``theta``, each ``e_i = t_i - G_i(theta)/P`` (t_i:
   component i's cost so far) lies in ``[0, L_i]``, L_i its longest document, so with constant
   shares and ``T`` the partition's cost so far::

       -w_i * sum_{j != i} L_j  <=  t_i - w_i*T  <=  (1 - w_i) * L_i

   at every document boundary, so at every chunk boundary: a component is never ahead of its share
   by a whole document of its own, and is behind by at most its share of the others' longest.
   (No rule can do better in general: right after a long document of one component, the others
   are behind by its length times their shares.) Shares count ``n_tokens``, the content of each
   document; the EOS (and BOS) that packing adds are not in them.
4. **The end.** A component with a finite supply (``MAX EPOCHS``; 1 unless ``REPEAT``) has a phantom
   tag: the tag of the document after its last. Under STOP (and REPEAT with MAX EPOCHS) partition
   q's stream ends before the first phantom in its order; under REDISTRIBUTE a component that ran
   out has no more documents and the others' tags go on, so they share its weight in proportion,
   until all ran out. The stream has ``min_q P*len_q + q`` samples (the first position whose
   partition cannot supply one); ``LIMIT n SAMPLES`` cuts it at n and ``LIMIT n TOKENS`` at the first
   sample at which it holds n tokens of content, an error if it ends earlier. A supply that
   ``REPEAT`` leaves unlimited is laid out epoch by epoch until the budget is reached.
5. **Compiling** merges the partitions in lockstep, a round of positions at a time: each lays
   out the next epoch of a component's pool only when the merge reaches it (the tags before it are
   then final), and a round keeps only each component's count at every C-th position of the
   partition (``merge_counts.npy``) and what decides the end. Memory follows the samples selected
   (an epoch of each pool at most), never the budget; time follows the stream.
6. **Run time** (``fairmerge``, ``planfile``) sorts a chunk's documents by their tags, each
   component's a known range of its sequence, whose costs are differences of the pools' token
   sums: seek and resume stay O(1), and later epochs are derived as in any plan (``epochs``).
   ``chunks.npy`` holds the counts per chunk row summed over partitions, for plots and EXPLAIN.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t
from fractions import Fraction

import numpy as np

from mixsql import epochs as _epochs
from mixsql import manifest as _manifest
from mixsql import plan as _plan
from mixsql.bind import BoundMix, Schedule
from mixsql.catalog import Catalog
from mixsql.chunks import partition_length
from mixsql.errors import PlanError, position
from mixsql.fairmerge import COST_BITS, Tags
from mixsql.limits import max_chunk_rows, max_stream_samples
from mixsql.parse import span

ROUND_POSITIONS = 1 << 20  # positions merged per round, over all partitions
LAID_RUNS = 1 << 22  # block runs of a component's epochs kept laid out for the partitions that reach them


@dataclasses.dataclass(eq=False)
class TokenLayout:
    """What the merge decided: each component's documents in each partition, the counts at every
    C-th position of every partition (``merge_counts.npy``) and the tag rule (``fairmerge.Tags``)."""

    used: np.ndarray  # [component, partition]: documents taken
    counts: np.ndarray  # [sum over q of (rows_q + 1), component]: counts at min(k*C, len_q), partition after partition
    rule: dict[str, t.Any]
    unit: str  # what a document costs: TOKENS (its n_tokens) or SAMPLES (1)
    same_stream: bool  # whether plans of formats 11 and 12, which chose exact tags by another bound, had this stream


def tag_rule(bound: t.Any, partitions: int) -> dict[str, t.Any]:
    """The tags of module docstring, 2: exact integers for constant shares (unless their common
    numerator is too fine for 2**62 / 2**COST_BITS), float64 shares, or the schedule's integral."""
    schedule = Schedule(tuple(c.share for c in bound.components), bound.schedule)
    if schedule.static:
        shares = schedule.shares
        numerators = [s.numerator * (math.lcm(*(x.denominator for x in shares)) // s.denominator) for s in shares]
        common = math.lcm(*[a for a in numerators if a]) if any(numerators) else 1
        scale = [common // a if a else 0 for a in numerators]
        if max(scale) < 1 << (62 - COST_BITS):
            return {"kind": "exact", "scale": scale}
        return {"kind": "shares", "shares": [float(s) for s in shares]}
    D, pieces = schedule._scaled
    n = len(bound.components)
    return {"kind": "schedule", "partitions": partitions, "starts": [float(p[0]) for p in pieces],
            **{name: [[p[k][i] / D for p in pieces] for i in range(n)] for k, name in ((1, "a"), (2, "b"), (3, "r"))}}


class _Lane:
    """One component's sequence in one partition, laid out an epoch at a time as the merge reaches
    it: the tags and tokens of its documents laid out and not yet merged, and the tag of the next."""

    def __init__(self, index: int, epochs_allowed: int | None, epoch_tokens: t.Callable[[int], np.ndarray],
                 tags: Tags, by_tokens: bool) -> None:
        self.index, self.epochs_allowed, self.epoch_tokens = index, epochs_allowed, epoch_tokens
        self.tags, self.by_tokens = tags, by_tokens
        self.epochs = 0
        self.cost = 0  # the cost of every document laid out
        self.supply = 0  # documents laid out
        self.pending_tags = tags.empty
        self.pending_tokens = np.zeros(0, dtype=np.int64)
        self.next_tag = tags.of(index, np.zeros(1, dtype=np.int64))[0]

    @property
    def more(self) -> bool:
        """Whether another epoch may be laid out (an empty pool has none: it is exhausted at once)."""
        return (self.epochs_allowed is None or self.epochs < self.epochs_allowed) and \
            (self.epochs == 0 or self.supply > 0)

    def lay_out(self) -> None:
        tokens = np.asarray(self.epoch_tokens(self.epochs), dtype=np.int64)
        cost = tokens if self.by_tokens else np.ones(len(tokens), dtype=np.int64)
        cum = np.concatenate(([0], np.cumsum(cost))) + self.cost
        tags = self.tags.of(self.index, cum)
        self.pending_tags = np.concatenate((self.pending_tags, tags[:-1]))
        self.pending_tokens = np.concatenate((self.pending_tokens, tokens))
        self.cost, self.next_tag = int(cum[-1]), tags[-1]
        self.epochs += 1
        self.supply += len(tokens)

    def take(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        tags, tokens = self.pending_tags[:count], self.pending_tokens[:count]
        self.pending_tags, self.pending_tokens = self.pending_tags[count:], self.pending_tokens[count:]
        return tags, tokens


def _finite(tag: t.Any) -> bool:
    return not isinstance(tag, (float, np.floating)) or math.isfinite(tag)


class _Partition:
    """One partition's merge (module docstring, 3-4), produced as far as asked: the component and
    tokens of every position from ``first`` (what is not yet folded into the counts) on."""

    def __init__(self, lanes: list[_Lane], policy: str) -> None:
        self.lanes, self.policy = lanes, policy
        self.produced = 0
        self.end: int | None = None
        self.ender = lanes[0].index
        self.comp: list[np.ndarray] = []
        self.tokens: list[np.ndarray] = []
        self.last: int | None = None  # the component of the last position merged

    def extend(self, target: int) -> None:
        """Merge until ``target`` positions exist or the stream ends."""
        while self.end is None and self.produced < target:
            best: tuple[t.Any, int] | None = None
            phantom = False
            for lane in self.lanes:
                if not lane.more and self.policy == "REDISTRIBUTE":
                    continue  # ran out: the others share its weight
                if not _finite(lane.next_tag):
                    continue  # never reached
                if best is None or (lane.next_tag, lane.index) < best:
                    best, phantom = (lane.next_tag, lane.index), not lane.more
            self._emit(best)
            if best is None or phantom:
                self.end = self.produced
                self.ender = self._ender(best) if best is not None else \
                    (self.last if self.last is not None else self.ender)
                break
            next(lane for lane in self.lanes if lane.index == best[1]).lay_out()

    def _emit(self, upto: tuple[t.Any, int] | None) -> None:
        """Merge every pending document before ``upto`` (tag, component), or all with a finite tag."""
        tags, comps, tokens = [], [], []
        for lane in self.lanes:
            pending = lane.pending_tags
            if upto is None:
                count = int(np.searchsorted(pending, np.inf)) if pending.dtype.kind == "f" else len(pending)
            else:
                count = int(np.searchsorted(pending, upto[0], side="right" if lane.index <= upto[1] else "left"))
            if count:
                tag, token = lane.take(count)
                tags.append(tag)
                comps.append(lane.index)
                tokens.append(token)
        if not tags:
            return
        all_tags = np.concatenate(tags)
        comp = np.repeat(np.asarray(comps, dtype=np.int16), [len(x) for x in tags])
        order = np.lexsort((comp, all_tags))
        self.comp.append(comp[order])
        self.tokens.append(np.concatenate(tokens)[order])
        self.produced += len(order)
        self.last = int(self.comp[-1][-1])

    def _ender(self, first: tuple[t.Any, int]) -> int:
        """The component that ends the stream: of the supplies that ran out with no document
        between them and the first (the same place), the first in statement order."""
        later = [(lane.pending_tags[0], lane.index) for lane in self.lanes if len(lane.pending_tags)]
        later += [(lane.next_tag, lane.index) for lane in self.lanes if lane.more and _finite(lane.next_tag)]
        nearest = min(later, default=None)
        tied = [lane.index for lane in self.lanes if not lane.more and _finite(lane.next_tag)
                and (nearest is None or (lane.next_tag, lane.index) < nearest)]
        return min(tied, default=first[1])

    def take(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The component and tokens of the next ``count`` positions, removed from what is kept."""
        if not self.comp:
            return np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.int64)
        comp = np.concatenate(self.comp) if len(self.comp) != 1 else self.comp[0]
        tokens = np.concatenate(self.tokens) if len(self.tokens) != 1 else self.tokens[0]
        self.comp, self.tokens = [comp[count:]], [tokens[count:]]
        return comp[:count], tokens[:count]

    def peek_tokens(self) -> np.ndarray:
        """Tokens of every position kept (not yet taken)."""
        return np.concatenate(self.tokens) if self.tokens else np.zeros(0, dtype=np.int64)


class _Counts:
    """What a partition keeps of its merged positions once taken: each component's count at every
    C-th position, its tokens, and where its last document was."""

    def __init__(self, n: int) -> None:
        self.at = 0
        self.counts = np.zeros(n, dtype=np.int64)
        self.rows: list[np.ndarray] = [self.counts[None, :].copy()]
        self.tokens = np.zeros(n, dtype=np.int64)
        self.last = np.full(n, -1, dtype=np.int64)

    def fold(self, comp: np.ndarray, tokens: np.ndarray, C: int, final: bool) -> None:
        n = len(self.counts)
        stop = self.at + len(comp)
        marks = np.arange((self.at // C + 1) * C, stop + 1, C, dtype=np.int64)
        if final and stop % C:
            marks = np.append(marks, stop)
        cum = np.zeros((len(comp) + 1, n), dtype=np.int64)
        for c in range(n):
            mine = comp == c
            if mine.any():
                cum[1:, c] = np.cumsum(mine)
                self.tokens[c] += int(tokens[mine].sum())
                self.last[c] = self.at + int(np.flatnonzero(mine)[-1])
        if len(marks):
            self.rows.append(cum[marks - self.at] + self.counts)
        self.counts = self.counts + cum[-1]
        self.at = stop


def resolve(bound: BoundMix, catalog: Catalog, *, window: int = _plan.DEFAULT_WINDOW) -> _plan.PlanSpec:
    """Select every component's samples and merge their sequences (module docstring): the plan's
    parameters and the stream's shape, with the counts the compiler writes."""
    engine = catalog.engine()
    if engine.version != bound.catalog_version:
        raise PlanError("the catalog changed since the statement was bound", hint="load the statement again")
    datasets = list(dict.fromkeys(c.dataset for c in bound.components))
    files, base, registered = _manifest.plan_files(engine, datasets)
    byte_ranges = any(f["format"] in ("jsonl", "npy", "tar") for f in files)
    names = tuple(c.name for c in bound.components)
    n = len(names)
    buckets = tuple(min(c.ordering.buckets, c.samples) if c.ordering else 1 for c in bound.components)
    C = bound.chunk_size
    # the partitions default as for samples, from the shares of samples the token shares imply
    mean = [c.tokens / c.samples if c.tokens and c.samples else 1.0 for c in bound.components]
    estimate = [float(c.share) / m if bound.unit == "TOKENS" else float(c.share) for c, m in zip(bound.components, mean)]
    total = sum(estimate) or 1.0
    sample_shares = [Fraction(e / total).limit_denominator(1 << 20) or Fraction(1, 1 << 20) for e in estimate]
    limit_estimate = bound.limit
    if bound.token_limit is not None:
        per = sum(s * m for s, m in zip(estimate, mean)) / total
        limit_estimate = max(1, int(bound.token_limit / max(per, 1e-9)))
    partitions = bound.requested_partitions or _plan.default_partitions(
        sample_shares, [c.samples * (c.max_epochs or _plan.UNLIMITED) for c in bound.components], C,
        [c.blocks for c in bound.components], limit_estimate)
    P = partitions
    most_rows = max_chunk_rows(n)
    if sum(c.samples for c in bound.components) > max_stream_samples() or \
            (limit_estimate is not None and limit_estimate // C > most_rows):
        raise _too_long(bound)
    if bound.policy != "REDISTRIBUTE":  # an empty pool would end its partition's stream at once
        for c, b in zip(bound.components, buckets):
            if min(_epochs.pool_sizes(c.samples, b, P)) == 0:
                raise PlanError(f"component {c.name!r} selects {c.samples:,} samples, too few for {P:,} partitions: "
                                "some partition would have none of it", hint="lower PARTITIONS",
                                source=bound.text, path=bound.path)
    rule = tag_rule(bound, P)
    tags = Tags(rule)
    by_tokens = bound.unit == "TOKENS"
    partitions_of: list[list[_Lane]] = [[] for _ in range(P)]
    for c, sel in _manifest.component_selections(engine, bound, registered, byte_ranges, True, lazy=True):
        source = sel.based(base[c.dataset]) if isinstance(sel, _manifest._IndexSelection) \
            else _manifest._ArraySelection(*_manifest.component_runs(sel, buckets[c.index], base[c.dataset]))
        tokens = source.n_tokens[source.index] if isinstance(source, _manifest._IndexSelection) \
            else source.sel["_tokens"]
        epochs = _Epochs(source.starts, source.keys, source.samples, np.asarray(tokens), buckets[c.index], P,
                         bound.seed, window, datasets.index(c.dataset), c.index)
        del sel, source
        for q in range(P):
            partitions_of[q].append(_Lane(c.index, c.max_epochs, epochs.tokens_of(q), tags, by_tokens))
    merges = [_Partition(lanes, bound.policy) for lanes in partitions_of]
    folded = [_Counts(n) for _ in range(P)]
    step = -(-max(C, ROUND_POSITIONS // P) // C) * C
    expected = -(-(limit_estimate or 0) // P)  # rounds of ``step`` up to the expected end, then shorter ones
    known, target = 0, 0
    while True:
        target = min(expected, target + step) if target < expected else target + min(step, max(C, target // 8))
        for merge in merges:
            merge.extend(target)
        produced = [m.produced for m in merges]
        known_now = min(P * x + q for q, x in enumerate(produced))
        supply = min((P * m.end + q for q, m in enumerate(merges) if m.end is not None), default=None)
        ran_out = supply is not None and supply == known_now
        samples, met = None, True
        if bound.limit is not None:
            if bound.limit <= known_now:
                samples = bound.limit
            elif ran_out:
                samples, met = known_now, False
        elif bound.token_limit is not None:
            found = _first_with_tokens(merges, folded, known, known_now, bound.token_limit, P)
            if found is not None:
                samples = found
            elif ran_out:
                samples, met = known_now, False
        elif ran_out:
            samples = known_now
        if samples is None and known_now // (P * C) > most_rows:
            raise _too_long(bound)
        upto = samples if samples is not None else known_now
        for q, (merge, fold) in enumerate(zip(merges, folded)):
            comp, tokens = merge.take(partition_length(upto, P, q) - fold.at)
            fold.fold(comp, tokens, C, samples is not None)
        known = known_now
        if samples is not None:
            break
    limiting = "LIMIT" if met and (bound.limit is not None or bound.token_limit is not None) else \
        names[merges[min(range(P), key=lambda q: (P * (merges[q].end if merges[q].end is not None else
                                                      produced[q] + 1) + q, q))].ender]
    stream_tokens = int(sum(int(f.tokens.sum()) for f in folded))
    error = None
    if not met:
        error = _plan.budget_error(bound, limiting, samples, stream_tokens)
    if error is None and samples == 0:
        error = PlanError(f"the stream is empty: some partition of the {P:,} cannot take a first sample",
                          hint="lower PARTITIONS, or give the components more samples",
                          source=bound.text, path=bound.path)
    used = np.stack([f.counts for f in folded], axis=1)  # [component, partition]
    left_at: list[int | None] = [None] * n
    if bound.policy == "REDISTRIBUTE":
        for q, (merge, fold) in enumerate(zip(merges, folded)):
            for lane in merge.lanes:
                c = lane.index
                if not lane.more and used[c, q] == lane.supply and lane.supply < fold.at:
                    at = P * (int(fold.last[c]) + 1) + q
                    left_at[c] = at if left_at[c] is None else min(left_at[c], at)
    left = tuple(x if x is not None and x < samples else None for x in left_at)
    per_partition = [np.concatenate(f.rows) for f in folded]
    rows = max(len(r) for r in per_partition) - 1
    table = np.zeros((rows + 1, n), dtype=np.int64)
    for r in per_partition:
        table[: len(r)] += r
        table[len(r):] += r[-1]
    tokens_taken = tuple(int(sum(int(f.tokens[c]) for f in folded)) for c in range(n))
    shape = _plan.StreamShape(samples=samples, chunk_size=C, partitions=P, limiting=limiting,
                              taken=tuple(int(x) for x in used.sum(axis=1)), left_at=left, table=table,
                              tokens_taken=tokens_taken, tokens=sum(tokens_taken))
    # formats 11 and 12 took exact tags where the costs they laid out, times the scale, stayed below 2**62
    laid = max((lane.epochs for merge in merges for lane in merge.lanes), default=1)
    cost = [(c.tokens or 0) if by_tokens else c.samples for c in bound.components]
    before = max(x * (c.max_epochs or 2 * laid + 2) for x, c in zip(cost, bound.components))
    same = rule["kind"] == "schedule" or (rule["kind"] == "exact" and before * max(rule["scale"]) < 1 << 62)
    layout = TokenLayout(used=used, counts=np.concatenate(per_partition), rule=rule, unit=bound.unit,
                         same_stream=same)
    return _plan.PlanSpec(bound=bound, partitions=P, buckets=buckets, window=window, shape=shape, error=error,
                          layout=layout)


class _Epochs:
    """One component's epochs: each partition's pool in visiting order (``epochs.ordered_pool``), as
    the tokens of its documents; an epoch's runs are laid out once for all partitions."""

    def __init__(self, starts: np.ndarray, keys: np.ndarray, samples: int, tokens: np.ndarray, buckets: int,
                 partitions: int, seed: int, window: int, dataset: int, component: int) -> None:
        self.starts, self.keys, self.samples, self.tokens = starts, keys, samples, tokens
        self.buckets, self.P, self.seed, self.window = buckets, partitions, seed, window
        self.dataset, self.component = dataset, component
        self._laid: dict[int, _epochs.Laid] = {}

    def tokens_of(self, q: int) -> t.Callable[[int], np.ndarray]:
        return lambda e: self._pool_tokens(q, e)

    def _pool_tokens(self, q: int, e: int) -> np.ndarray:
        laid = self._laid.get(e)
        if laid is None:  # each partition goes through a round's epochs in turn: keep what a round lays out
            laid = self._laid[e] = _epochs.laid_buckets(self.starts, self.keys, self.samples, self.buckets,
                                                        _epochs.epoch_salt(self.seed, self.dataset, e))
            while len(self._laid) > max(2, LAID_RUNS // max(len(self.keys), 1)):
                del self._laid[next(iter(self._laid))]
        order = _epochs.ordered_pool(laid, self.starts, self.keys, self.samples, self.P, self.seed, self.window,
                                     self.component, q, e)[0]
        return self.tokens[order]


def _first_with_tokens(merges: list[_Partition], folded: list[_Counts], lo: int, hi: int, budget: int,
                       P: int) -> int | None:
    """The first sample count in (lo, hi] whose stream holds ``budget`` tokens, or None."""
    cums = [np.concatenate(([0], np.cumsum(m.peek_tokens()))) + int(f.tokens.sum()) for m, f in zip(merges, folded)]

    def tokens_at(samples: int) -> int:
        return sum(int(cums[q][partition_length(samples, P, q) - folded[q].at]) for q in range(P))

    if hi <= lo or tokens_at(hi) < budget:
        return None
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if tokens_at(mid) >= budget:
            hi = mid
        else:
            lo = mid
    return hi


def _too_long(bound: BoundMix) -> PlanError:
    node = bound.tree.args.get("limit")
    where = span(node.this) if node is not None else None
    line, col = position(bound.text, where[0]) if where else (None, None)
    return PlanError("the stream is longer than this machine can plan (a plan keeps each component's count at every "
                     "chunk of every partition)", hint="lower the LIMIT or MAX EPOCHS, or raise CHUNK SIZE",
                     line=line, col=col, length=(where[1] - where[0]) if where else 1, source=bound.text,
                     path=bound.path)
