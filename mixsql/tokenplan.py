"""Stage ``plan`` for streams planned from token counts (``MIX BY TOKENS``, ``LIMIT n TOKENS``).

The sample planner (``plan``) fixes each chunk's counts from the shares alone. Shares of *tokens*
depend on which documents come, so here every canonical partition merges its components'
document sequences by weighted fair queueing, and the plan stores the result:

1. **Sequences.** Component i's sequence in partition q is its pools (``manifest.epoch_pools``:
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
5. **Run time** reads ``stream_rows.npy``, each partition's stream as plan rows (``planfile``), so
   seek and resume stay O(1); ``chunks.npy`` holds the counts per chunk row summed over partitions,
   for plots and EXPLAIN.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t
from fractions import Fraction
from pathlib import Path

import numpy as np

from mixsql import epochs as _epochs
from mixsql import manifest as _manifest
from mixsql import plan as _plan
from mixsql.bind import BoundMix, Schedule
from mixsql.catalog import Catalog
from mixsql.chunks import partition_length
from mixsql.errors import PlanError, position
from mixsql.limits import max_stream_samples
from mixsql.parse import span
from mixsql.planfile import SAMPLE_COLUMNS

_INT_KEYS = 1 << 62


@dataclasses.dataclass(eq=False)
class _Component:
    """One component's selection and its sequence in every partition, laid out epoch by epoch."""

    index: int
    sel: dict[str, np.ndarray]
    run_key: np.ndarray
    dataset: int  # index of its dataset among the plan's
    buckets: int
    epochs_allowed: int | None  # None: unlimited (REPEAT)
    pieces: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = dataclasses.field(default_factory=list)
    # pieces[e][q]: (indices into sel in visiting order, window starts, block windows, block keys) of epoch e

    def lay_out(self, epochs: int, partitions: int, seed: int, window: int) -> None:
        while len(self.pieces) < epochs:
            e = len(self.pieces)
            out = []
            for q, (pool, cuts) in enumerate(_manifest.epoch_pools(self.sel, self.run_key, self.buckets, partitions,
                                                                  seed, self.dataset, e)):
                order, starts, block_window, block_key = _epochs.window_shuffle(
                    self.sel["_run"][pool], self.run_key, window, seed, (self.index, q, e), cuts)
                out.append((pool[order], starts, block_window, block_key))
            self.pieces.append(out)

    def sequence(self, q: int) -> np.ndarray:
        """Indices into ``sel`` of partition q's sequence over the epochs laid out so far."""
        parts = [epoch[q][0] for epoch in self.pieces]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    @property
    def finite(self) -> bool:
        return self.epochs_allowed is not None


@dataclasses.dataclass(eq=False)
class TokenLayout:
    """What the merge decided: each partition's stream as (component, index in its sequence)."""

    components: list[_Component]
    merged: list[tuple[np.ndarray, np.ndarray]]  # per partition, cut to its length in the stream
    used: np.ndarray  # [component, partition]: documents taken
    tokens_taken: tuple[int, ...]  # n_tokens each component gives the stream
    stream_tokens: int  # n_tokens of the whole stream


class _Keys:
    """The tag rule (module docstring, 2) for every component: exact integers for constant shares."""

    def __init__(self, bound: BoundMix, partitions: int, largest: int) -> None:
        self.schedule = Schedule(tuple(c.share for c in bound.components), bound.schedule)
        self.P = partitions
        shares = self.schedule.shares
        numerators = [s.numerator * (math.lcm(*(x.denominator for x in shares)) // s.denominator) for s in shares]
        common = math.lcm(*[a for a in numerators if a]) if any(numerators) else 1
        self.scale = [common // a if a else 0 for a in numerators]
        self.exact = self.schedule.static and largest * max(self.scale) < _INT_KEYS
        if not self.schedule.static:
            D, pieces = self.schedule._scaled
            self.starts = np.asarray([float(p[0]) for p in pieces])
            self.a = np.asarray([[ai / D for ai in p[1]] for p in pieces], dtype=np.float64).T  # [component, piece]
            self.b = np.asarray([[bi / D for bi in p[2]] for p in pieces], dtype=np.float64).T
            self.r = np.asarray([[ri / D for ri in p[3]] for p in pieces], dtype=np.float64).T

    def tags(self, i: int, cum: np.ndarray) -> np.ndarray:
        """Tags of documents whose costs before them are ``cum`` (int64 exact keys, or float64)."""
        if self.exact:
            return cum * np.int64(self.scale[i])
        if self.schedule.static:
            return cum.astype(np.float64) / float(self.schedule.shares[i])
        y = cum.astype(np.float64) * self.P
        a, b, r = self.a[i], self.b[i], self.r[i]
        k = np.searchsorted(a, y, side="right") - 1
        c = y - a[k]
        bk, rk = b[k], r[k]
        root = np.sqrt(np.maximum(bk * bk + 4 * rk * c, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(c > 0, 2 * c / (bk + root), 0.0)
        flat = (bk == 0) & (rk == 0)
        return np.where(flat, np.inf, self.starts[k] + d)


def _merge(keys: _Keys, members: list[_Component], costs: list[np.ndarray], policy: str
           ) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """One partition: (component, index) of its documents in merged order, where its stream must
    end (first phantom of a finite supply; everything under REDISTRIBUTE), the component that ends
    it, and where the laid-out part of an unlimited supply ends."""
    tags, comps, idx = [], [], []
    phantoms: list[tuple[t.Any, int, bool]] = []
    for m, cost in zip(members, costs):
        cum = np.concatenate(([0], np.cumsum(cost, dtype=np.int64)))
        tag = keys.tags(m.index, cum)
        live = np.isfinite(tag[:-1]) if tag.dtype.kind == "f" else slice(None)
        chosen = np.arange(len(cost), dtype=np.int64)[live]
        tags.append(tag[:-1][live])
        comps.append(np.full(len(chosen), m.index, dtype=np.int16))
        idx.append(chosen)
        phantoms.append((tag[-1], m.index, m.finite))
    all_tags = np.concatenate(tags) if tags else np.zeros(0, dtype=np.int64)
    all_comps = np.concatenate(comps) if comps else np.zeros(0, dtype=np.int16)
    all_idx = np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)
    order = np.lexsort((all_comps, all_tags))
    merged_comp, merged_idx = all_comps[order], all_idx[order]
    sorted_tags = all_tags[order]

    def rank(tag: t.Any, comp: int) -> int:
        if isinstance(tag, float) and not math.isfinite(tag):
            return len(order)
        below = int(np.searchsorted(sorted_tags, tag, side="left"))
        equal_end = int(np.searchsorted(sorted_tags, tag, side="right"))
        return below + int(np.count_nonzero(merged_comp[below:equal_end] <= comp))  # after its own documents

    stop, ender = len(order), int(merged_comp[-1]) if len(order) else members[0].index
    if policy != "REDISTRIBUTE":
        stop, ender = min([(rank(tg, c), c) for tg, c, finite in phantoms if finite], default=(len(order), ender))
    laid = min([rank(tg, c) for tg, c, finite in phantoms if not finite], default=len(order) + 1)
    return merged_comp, merged_idx, stop, ender, laid


def _stream_tokens_at(cum_tokens: list[np.ndarray], samples: int, P: int) -> int:
    return sum(int(cum_tokens[q][partition_length(samples, P, q)]) for q in range(P))


def resolve(bound: BoundMix, catalog: Catalog, *, window: int = _plan.DEFAULT_WINDOW) -> _plan.PlanSpec:
    """Select every component's samples, lay out their sequences and merge them (module docstring):
    the plan's parameters and the stream's shape, with the layout the compiler writes."""
    engine = catalog.engine()
    if engine.version != bound.catalog_version:
        raise PlanError("the catalog changed since the statement was bound", hint="load the statement again")
    datasets = list(dict.fromkeys(c.dataset for c in bound.components))
    files, base, registered = _manifest.plan_files(engine, datasets)
    byte_ranges = any(f["format"] in ("jsonl", "npy") for f in files)
    names = tuple(c.name for c in bound.components)
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
    members: list[_Component] = []
    for c, sel in _manifest.component_selections(engine, bound, registered, byte_ranges, True):
        sel, run_key = _manifest.component_runs(sel, buckets[c.index], base[c.dataset])
        members.append(_Component(index=c.index, sel=sel, run_key=run_key, dataset=datasets.index(c.dataset),
                                  buckets=buckets[c.index], epochs_allowed=c.max_epochs))
    most = max_stream_samples()
    epochs = [m.epochs_allowed or 1 for m in members]
    while True:
        for m, e in zip(members, epochs):
            m.lay_out(e, P, bound.seed, window)
        supply = sum(len(m.sel["_row"]) * len(m.pieces) for m in members)
        if supply > most:
            raise _too_long(bound, most)
        largest = max((int(m.sel["_tokens"].sum()) if bound.unit == "TOKENS" else len(m.sel["_row"])) * len(m.pieces)
                      for m in members)
        keys = _Keys(bound, P, largest)
        merged, stops, enders, laid, cum_tokens = [], [], [], [], []
        for q in range(P):
            seqs = [m.sequence(q) for m in members]
            costs = [m.sel["_tokens"][s].astype(np.int64) if bound.unit == "TOKENS" else np.ones(len(s), np.int64)
                     for m, s in zip(members, seqs)]
            comp, idx, stop, ender, lay = _merge(keys, members, costs, bound.policy)
            merged.append((comp, idx))
            stops.append(stop)
            enders.append(ender)
            laid.append(lay)
            tokens = np.zeros(len(comp), dtype=np.int64)
            for m, s in zip(members, seqs):
                mine = comp == m.index
                tokens[mine] = m.sel["_tokens"][s[idx[mine]]]
            cum_tokens.append(np.concatenate(([0], np.cumsum(tokens))))
        avail = [min(s, l) for s, l in zip(stops, laid)]
        supply_samples = min(P * a + q for q, a in enumerate(avail))
        short_laid = min(P * l + q for q, l in enumerate(laid))  # where the laid-out epochs end
        samples, met = _end(bound, supply_samples, cum_tokens, P)
        if met or short_laid > supply_samples or all(m.finite for m in members):
            break
        epochs = [len(m.pieces) if m.finite else len(m.pieces) * 2 for m in members]  # lay out more, merge again
    first = min(range(P), key=lambda q: (P * avail[q] + q, q))
    limiting = "LIMIT" if met and (bound.limit is not None or bound.token_limit is not None) else names[enders[first]]
    error = None
    if not met:
        error = _plan.budget_error(bound, limiting, samples, _stream_tokens_at(cum_tokens, samples, P))
    if error is None and samples == 0:
        error = PlanError(f"the stream is empty: some partition of the {P:,} cannot take a first sample",
                          hint="lower PARTITIONS, or give the components more samples",
                          source=bound.text, path=bound.path)
    n = len(members)
    used = np.zeros((n, P), dtype=np.int64)
    tokens_taken = [0] * n
    left_at: list[int | None] = [None] * n
    length = [partition_length(samples, P, q) for q in range(P)]
    rows = max((-(-x // C) for x in length), default=0)
    table = np.zeros((rows + 1, n), dtype=np.int64)
    for q in range(P):
        comp, idx = merged[q]
        comp, idx = comp[:length[q]], idx[:length[q]]
        merged[q] = (comp, idx)
        for m in members:
            positions = np.flatnonzero(comp == m.index)
            used[m.index, q] = len(positions)
            if len(positions):
                seq = m.sequence(q)
                tokens_taken[m.index] += int(m.sel["_tokens"][seq[idx[positions]]].sum())
            table[:, m.index] += np.searchsorted(positions, np.minimum(np.arange(rows + 1) * C, length[q]))
            supply = len(m.sequence(q))
            if bound.policy == "REDISTRIBUTE" and used[m.index, q] == supply and supply < length[q]:
                at = P * (int(positions[-1]) + 1 if len(positions) else 0) + q
                left_at[m.index] = at if left_at[m.index] is None else min(left_at[m.index], at)
    left = tuple(x if x is not None and x < samples else None for x in left_at)
    shape = _plan.StreamShape(samples=samples, chunk_size=C, partitions=P, limiting=limiting,
                              taken=tuple(int(x) for x in used.sum(axis=1)), left_at=left, table=table,
                              tokens_taken=tuple(tokens_taken), tokens=sum(tokens_taken))
    layout = TokenLayout(components=members, merged=merged, used=used, tokens_taken=tuple(tokens_taken),
                         stream_tokens=sum(tokens_taken))
    return _plan.PlanSpec(bound=bound, partitions=P, buckets=buckets, window=window, shape=shape, error=error,
                          layout=layout)


def _end(bound: BoundMix, supply: int, cum_tokens: list[np.ndarray], P: int) -> tuple[int, bool]:
    """(samples in the stream, whether its budget is met): module docstring, 4."""
    if bound.limit is not None:
        return min(bound.limit, supply), supply >= bound.limit
    if bound.token_limit is not None:
        if _stream_tokens_at(cum_tokens, supply, P) < bound.token_limit:
            return supply, False
        lo, hi = 1, supply  # the first sample count whose stream holds the budget
        while lo < hi:
            mid = (lo + hi) // 2
            if _stream_tokens_at(cum_tokens, mid, P) >= bound.token_limit:
                hi = mid
            else:
                lo = mid + 1
        return lo, True
    return supply, True


def _too_long(bound: BoundMix, most: int) -> PlanError:
    node = bound.tree.args.get("limit")
    where = span(node.this) if node is not None else None
    line, col = position(bound.text, where[0]) if where else (None, None)
    return PlanError(f"the stream needs more than {most:,} samples, more than this machine can plan (a plan holds "
                     "every sample of its stream)", hint="lower the LIMIT or MAX EPOCHS", line=line, col=col,
                     length=(where[1] - where[0]) if where else 1, source=bound.text, path=bound.path)


def write_samples(spec: _plan.PlanSpec, catalog: Catalog, directory: Path,
                  progress: t.Callable[[int, int, str], None] | None = None) -> dict[str, t.Any]:
    """Write the merged stream's samples (by component, partition and visiting order, as ``manifest``
    does), ``stream_rows.npy`` (each partition's stream as plan rows, partitions one after another),
    the windows and the summed chunk table; return the layout."""
    layout: TokenLayout = spec.layout
    bound = spec.bound
    P = spec.partitions
    engine = catalog.engine()
    datasets = list(dict.fromkeys(c.dataset for c in bound.components))
    files, base, _ = _manifest.plan_files(engine, datasets)
    byte_ranges = any(f["format"] in ("jsonl", "npy") for f in files)
    token_info, tokens_missing = _manifest.token_source(engine, datasets)
    names = [n for n in SAMPLE_COLUMNS if (byte_ranges or n not in ("offset", "length"))
             and (token_info is not None or n != "tokens")]
    out = _manifest._Out(directory, names, int(layout.used.sum()))
    pool_starts = np.zeros((len(bound.components), P), dtype=np.int64)
    window_starts, window_blocks, window_keys = [], [], []
    windows_so_far = 0
    for m in layout.components:
        c = bound.components[m.index]
        if progress is not None:
            progress(c.index, len(bound.components), c.name)
        for q in range(P):
            pool_starts[c.index, q] = out.at
            want = int(layout.used[c.index, q])
            for chosen, starts, block_window, block_key in (epoch[q] for epoch in m.pieces):
                if want <= 0:
                    break
                take = min(want, len(chosen))
                chosen = chosen[:take]
                starts = starts[starts < take]
                keep = block_window < len(starts)
                window_blocks.append(block_window[keep] + windows_so_far)
                window_keys.append(block_key[keep])
                windows_so_far += len(starts)
                window_starts.append(starts + out.at)
                sel = m.sel
                out.write(component=np.full(take, c.index, dtype=np.int16),
                          file=(sel["_file_id"][chosen] + base[c.dataset]).astype(np.int32),
                          row=sel["_row"][chosen],
                          **({"offset": sel["_offset"][chosen], "length": sel["_length"][chosen]}
                             if byte_ranges else {}),
                          **({"tokens": sel["_tokens"][chosen]} if token_info is not None else {}))
                want -= take
    out.close()
    if progress is not None:
        progress(len(bound.components), len(bound.components), "")
    total = int(layout.used.sum())
    rows = np.lib.format.open_memmap(directory / "stream_rows.npy", mode="w+",
                                     dtype=np.int32 if total < 1 << 31 else np.int64, shape=(total,))
    at = 0
    for q, (comp, idx) in enumerate(layout.merged):
        rows[at: at + len(comp)] = pool_starts[comp.astype(np.int64), q] + idx
        at += len(comp)
    rows.flush()
    del rows
    _manifest.save_windows(directory, spec, window_starts, window_keys, window_blocks)
    return {"files": files, "pool_starts": pool_starts.tolist(), "physical_starts": pool_starts.tolist(),
            "pool_used": layout.used.tolist(), "derived": [], "columns": names, "tokens": token_info,
            "tokens_missing": tokens_missing, "order": "merged",
            "dataset_info": _manifest.dataset_info(engine, datasets)}
