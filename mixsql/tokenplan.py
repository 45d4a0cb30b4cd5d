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
   ``REPEAT`` leaves unlimited has no phantom: its epochs go on as far as a search reaches.
5. **Nothing per position is stored** (``fairmerge``): each component's count at any position of a
   partition is a binary search over the tag, whose counts are binary searches over the tags at
   its epoch starts (sums of whole pools, from the block runs alone) and then within one epoch.
   Compiling finds each partition's end (the first phantom's place), the stream's length (for a
   token budget a search over positions, each probe a count per partition) and what each
   partition takes: work and memory follow the epochs around the places asked about, never the
   budget. A plan stores each selected sample once (later epochs derived, ``epochs``) and the tag
   rule; ``chunks.npy`` holds only the counts at the start and the end.
6. **Run time** finds a chunk's first counts by that search (a seek) or from the chunk before, and
   sorts the next C documents of each component by tag: seek and resume stay O(1).
"""

from __future__ import annotations

import collections
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
from mixsql.fairmerge import COST_BITS, Merge, Tags
from mixsql.limits import max_stream_samples
from mixsql.parse import span

LAID_RUNS = 1 << 22  # block runs of a component's epochs kept laid out for the partitions that reach them


@dataclasses.dataclass(eq=False)
class TokenLayout:
    """What the merge decided: each component's documents in each partition, and the tag rule
    (``fairmerge.Tags``) a run sorts by."""

    used: np.ndarray  # [component, partition]: documents taken
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


class _Epochs:
    """One component's epochs: each partition's pool in visiting order (``epochs.ordered_pool``) as
    the tokens of its documents, and each epoch's token sum per partition from the block runs alone
    (``epochs.pool_totals``); an epoch's runs are laid out once for all partitions."""

    def __init__(self, starts: np.ndarray, keys: np.ndarray, samples: int, tokens: np.ndarray, buckets: int,
                 partitions: int, seed: int, window: int, dataset: int, component: int) -> None:
        self.starts, self.keys, self.samples, self.tokens = starts, keys, samples, tokens
        self.buckets, self.P, self.seed, self.window = buckets, partitions, seed, window
        self.dataset, self.component = dataset, component
        self.cumulative = np.concatenate(([0], np.cumsum(tokens, dtype=np.int64)))
        self._laid: dict[int, _epochs.Laid] = {}
        self._totals: list[np.ndarray] = []  # [epoch][partition]

    def _laid_out(self, e: int) -> _epochs.Laid:
        laid = self._laid.get(e)
        if laid is None:
            laid = self._laid[e] = _epochs.laid_buckets(self.starts, self.keys, self.samples, self.buckets,
                                                        _epochs.epoch_salt(self.seed, self.dataset, e))
            while len(self._laid) > max(2, LAID_RUNS // max(len(self.keys), 1)):
                del self._laid[next(iter(self._laid))]
        return laid

    def pool_tokens(self, q: int, e: int) -> np.ndarray:
        order = _epochs.ordered_pool(self._laid_out(e), self.starts, self.keys, self.samples, self.P, self.seed,
                                     self.window, self.component, q, e)[0]
        return self.tokens[order].astype(np.int64)

    def totals(self, epochs: int) -> np.ndarray:
        """[epoch, partition]: tokens of each partition's pool in the first ``epochs`` epochs."""
        while len(self._totals) < epochs:
            e = len(self._totals)
            self._totals.append(_epochs.pool_totals(self._laid_out(e), self.samples, self.P, self.cumulative))
        return np.asarray(self._totals[:epochs]).reshape(epochs, self.P)


class _SourceCosts:
    """``fairmerge.Costs`` of the selections while compiling: a component's supply in partition q
    is its pool times ``MAX EPOCHS`` (unlimited under REPEAT without it)."""

    def __init__(self, sources: dict[int, _Epochs], sizes: np.ndarray, allowed: list[int | None],
                 by_tokens: bool) -> None:
        self.sources, self.sizes, self.allowed, self.by_tokens = sources, sizes, allowed, by_tokens
        self._epochs: collections.OrderedDict[tuple[int, int, int], np.ndarray] = collections.OrderedDict()

    def size(self, c: int, q: int) -> int:
        return int(self.sizes[c, q])

    def known(self, c: int, q: int) -> int | None:
        return None if self.allowed[c] is None else int(self.sizes[c, q]) * int(self.allowed[c])

    def starts(self, c: int, q: int, epochs: int, what: str = "cost") -> np.ndarray:
        if what == "cost" and not self.by_tokens:
            return np.arange(epochs, dtype=np.int64) * int(self.sizes[c, q])
        totals = self.sources[c].totals(max(epochs - 1, 0))[:, q]
        return np.concatenate(([0], np.cumsum(totals))).astype(np.int64)[:epochs]

    def epoch(self, c: int, q: int, e: int, what: str = "cost") -> np.ndarray:
        if what == "cost" and not self.by_tokens:
            return np.arange(int(self.sizes[c, q]) + 1, dtype=np.int64)
        found = self._epochs.get((c, q, e))
        if found is None:
            found = self._epochs[(c, q, e)] = np.concatenate(([0], np.cumsum(self.sources[c].pool_tokens(q, e))))
            while len(self._epochs) > 4 * len(self.sources) + 4:
                self._epochs.popitem(last=False)
        return found


def resolve(bound: BoundMix, catalog: Catalog, *, window: int = _plan.DEFAULT_WINDOW) -> _plan.PlanSpec:
    """Select every component's samples and find the stream's end and what each partition takes
    (module docstring): the plan's parameters and the stream's shape, with what the compiler writes."""
    try:
        return _resolve(bound, catalog, window)
    except OverflowError as e:  # exact tags past 2**62: a budget of ~10^13 tokens in one partition
        raise PlanError(f"the stream is too long for its partitions: {e}", hint="use more PARTITIONS, or a lower LIMIT",
                        source=bound.text, path=bound.path) from None


def _resolve(bound: BoundMix, catalog: Catalog, window: int) -> _plan.PlanSpec:
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
    estimate = [float(c.share) / m if bound.unit == "TOKENS" else float(c.share)
                for c, m in zip(bound.components, mean)]
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
    if sum(c.samples for c in bound.components) > max_stream_samples():
        raise _too_long(bound)
    sizes = np.asarray([_epochs.pool_sizes(c.samples, b, P) for c, b in zip(bound.components, buckets)],
                       dtype=np.int64).reshape(n, P)
    if bound.policy != "REDISTRIBUTE":  # an empty pool would end its partition's stream at once
        for c in bound.components:
            if int(sizes[c.index].min()) == 0:
                raise PlanError(f"component {c.name!r} selects {c.samples:,} samples, too few for {P:,} partitions: "
                                "some partition would have none of it", hint="lower PARTITIONS",
                                source=bound.text, path=bound.path)
    by_tokens = bound.unit == "TOKENS"
    if by_tokens:
        for c in bound.components:
            if c.max_epochs is None and not c.tokens:
                raise PlanError(f"component {c.name!r} has no tokens: mixed BY TOKENS and repeated, it would "
                                "never end", hint="drop it, or give it MAX EPOCHS", source=bound.text, path=bound.path)
    rule = tag_rule(bound, P)
    tags = Tags(rule)
    sources: dict[int, _Epochs] = {}
    for c, sel in _manifest.component_selections(engine, bound, registered, byte_ranges, True, lazy=True):
        source = sel.based(base[c.dataset]) if isinstance(sel, _manifest._IndexSelection) \
            else _manifest._ArraySelection(*_manifest.component_runs(sel, buckets[c.index], base[c.dataset]))
        tokens = source.n_tokens[source.index] if isinstance(source, _manifest._IndexSelection) \
            else source.sel["_tokens"]
        sources[c.index] = _Epochs(source.starts, source.keys, source.samples, np.asarray(tokens), buckets[c.index],
                                   P, bound.seed, window, datasets.index(c.dataset), c.index)
        del sel, source
    costs = _SourceCosts(sources, sizes, [c.max_epochs for c in bound.components], by_tokens)
    merges = [Merge(tags, costs, q, n) for q in range(P)]
    avail: list[int | None] = []
    enders: list[int] = []
    finite = all(c.max_epochs is not None for c in bound.components)
    for merge in merges:  # where each partition's supply ends (module docstring, 4)
        phantoms = []
        if bound.policy != "REDISTRIBUTE":
            for c in range(n):
                theta = merge.end_tag(c) if bound.components[c].max_epochs is not None else None
                if theta is not None and tags.finite(theta):
                    phantoms.append((merge.below(theta, c), c))
        if phantoms:  # the first supply to run out ends it
            at, ender = min(phantoms)
        elif finite:  # every finite document, then the end (REDISTRIBUTE: the others share a weight left)
            docs = [merge.finite_docs(c) for c in range(n)]
            last = [(tags.key(merge.tags_of(c, d - 1, d)[0]), c) for c, d in enumerate(docs) if d]
            at, ender = sum(docs), (max(last)[1] if last else 0)
        else:
            at, ender = None, 0
        avail.append(at)
        enders.append(ender)
    supply = min((P * a + q for q, a in enumerate(avail) if a is not None), default=None)

    def stream_tokens(m: np.ndarray) -> np.ndarray:
        """Tokens of each partition's first m[q] documents."""
        out = np.zeros(P, dtype=np.int64)
        for q, merge in enumerate(merges):
            counts = merge.counts_at(int(m[q]))
            out[q] = sum(merge.total(c, int(k), "tokens") for c, k in enumerate(counts.tolist()))
        return out

    met = True
    if bound.limit is not None:
        samples = bound.limit if supply is None else min(bound.limit, supply)
        met = supply is None or supply >= bound.limit
    elif bound.token_limit is not None:
        samples, met = _token_end(stream_tokens, bound.token_limit, supply, limit_estimate, P)
    else:
        assert supply is not None, "the binder refuses REPEAT without a LIMIT"
        samples = supply
    lengths = [partition_length(samples, P, q) for q in range(P)]
    used = np.stack([merge.counts_at(x) for merge, x in zip(merges, lengths)], axis=1)  # [component, partition]
    taken_tokens = np.asarray([[merge.total(c, int(used[c, q]), "tokens") for q, merge in enumerate(merges)]
                               for c in range(n)], dtype=np.int64).reshape(n, P)
    first = min(range(P), key=lambda q: (P * avail[q] + q if avail[q] is not None else float("inf"), q))
    limiting = "LIMIT" if met and (bound.limit is not None or bound.token_limit is not None) else names[enders[first]]
    error = None
    if not met:
        error = _plan.budget_error(bound, limiting, samples, int(taken_tokens.sum()))
    if error is None and samples == 0:
        error = PlanError(f"the stream is empty: some partition of the {P:,} cannot take a first sample",
                          hint="lower PARTITIONS, or give the components more samples",
                          source=bound.text, path=bound.path)
    left_at: list[int | None] = [None] * n
    if bound.policy == "REDISTRIBUTE":  # where a component ran out: after its last document's place
        for q, merge in enumerate(merges):
            for c in range(n):
                docs = merge.finite_docs(c)
                if docs and used[c, q] == docs and docs < lengths[q]:
                    at = P * (int(merge.position(c, np.asarray([docs - 1]))[0]) + 1) + q
                    left_at[c] = at if left_at[c] is None else min(left_at[c], at)
    left = tuple(x if x is not None and x < samples else None for x in left_at)
    tokens_taken = tuple(int(x) for x in taken_tokens.sum(axis=1))
    # a merged stream has no table of counts shared by its partitions: the start and the end, for EXPLAIN
    table = np.stack([np.zeros(n, dtype=np.int64), used.sum(axis=1)])
    shape = _plan.StreamShape(samples=samples, chunk_size=C, partitions=P, limiting=limiting,
                              taken=tuple(int(x) for x in used.sum(axis=1)), left_at=left, table=table,
                              tokens_taken=tokens_taken, tokens=sum(tokens_taken))
    # formats 11 and 12 took exact tags where the costs they laid out, times the scale, stayed below 2**62
    laid = max((-(-int(used[c, q]) // max(int(sizes[c, q]), 1)) for c in range(n) for q in range(P)), default=1)
    cost = [(c.tokens or 0) if by_tokens else c.samples for c in bound.components]
    before = max(x * (c.max_epochs or 2 * laid + 2) for x, c in zip(cost, bound.components))
    same = rule["kind"] == "schedule" or (rule["kind"] == "exact" and before * max(rule["scale"]) < 1 << 62)
    layout = TokenLayout(used=used, rule=rule, unit=bound.unit, same_stream=same)
    return _plan.PlanSpec(bound=bound, partitions=P, buckets=buckets, window=window, shape=shape, error=error,
                          layout=layout)


def _token_end(stream_tokens: t.Callable[[np.ndarray], np.ndarray], budget: int, supply: int | None,
               estimate: int | None, P: int) -> tuple[int, bool]:
    """(samples, met): the first sample count whose stream holds ``budget`` tokens of content.
    Sample count P*(M-1) + r has M documents in partitions q < r and M - 1 in the others, so M
    is found first (each probe a count at one position per partition), then r."""

    def g(M: int) -> int:
        return int(stream_tokens(np.full(P, M, dtype=np.int64)).sum())

    if supply is not None:
        full = stream_tokens(np.asarray([partition_length(supply, P, q) for q in range(P)], dtype=np.int64))
        if int(full.sum()) < budget:
            return supply, False
        hi = -(-supply // P)
    else:  # from the estimate up, a quarter more each time: few epochs past the end are ever laid out
        hi = max(1, -(-(estimate or 1) // P) * 21 // 20)
        while g(hi) < budget:
            hi += hi // 4 + 1
    lo, g_lo, g_hi = 0, 0, g(hi)  # g(lo) < budget <= g(hi)
    bisect = False
    while hi - lo > 1:
        if bisect:
            mid = (lo + hi) // 2
        else:  # the tokens grow about linearly: interpolate, every other probe
            mid = min(hi - 1, max(lo + 1, lo + int((budget - g_lo) * (hi - lo) / max(g_hi - g_lo, 1))))
        bisect = not bisect
        value = g(mid)
        if value >= budget:
            hi, g_hi = mid, value
        else:
            lo, g_lo = mid, value
    before = stream_tokens(np.full(P, hi - 1, dtype=np.int64))
    after = stream_tokens(np.full(P, hi, dtype=np.int64))
    running = int(before.sum())
    for r in range(1, P + 1):
        running += int(after[r - 1] - before[r - 1])
        if running >= budget:
            return P * (hi - 1) + r, True
    raise AssertionError("unreachable: g(hi) holds the budget")  # pragma: no cover


def _too_long(bound: BoundMix) -> PlanError:
    node = bound.tree.args.get("limit")
    where = span(node.this) if node is not None else None
    line, col = position(bound.text, where[0]) if where else (None, None)
    return PlanError("the components select more samples than this machine can plan (a plan stores each once)",
                     hint="select fewer samples", line=line, col=col,
                     length=(where[1] - where[0]) if where else 1, source=bound.text, path=bound.path)
