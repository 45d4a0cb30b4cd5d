"""The merge of a stream planned from token counts, as math a run computes (``tokenplan`` plans it).

Partition q's stream is its components' document sequences merged by start-time fair queueing:
document j of component i has the tag ``tau_i(j) = f_i(C_i(j))``, a non-decreasing function of
the cost of the component's documents before it (``C_i``: their ``n_tokens`` in a mixture BY
TOKENS, their number in one BY SAMPLES), and the stream is every document sorted by (tag,
component, j). Nothing of it is stored:

- **Counts at any position.** The documents of component i among the stream's first m are
  ``#{j : (tau_i(j), i) < (theta*, i*)}`` plus the ties, where ``theta*`` is the tag of the m-th
  document: the least theta with ``N(theta) = sum_i #{j : tau_i(j) <= theta} > m``. Each count is
  a binary search, first over the tags at the component's epoch starts (``C_i`` there is a sum of
  whole pools, known from the block runs alone), then within one epoch's costs; ``theta*`` is a
  binary search over tags. O(log) searches and the few epochs around ``theta*``: a seek, O(1) in
  the length of the stream.
- **The next documents.** From the counts at a position, the next L documents of the stream are
  the first L of each component's next L documents sorted by (tag, component, j): reading on
  costs a sort per chunk.

Tags are exact integers for constant shares (``C * scale_i``, ``scale_i`` the share's reciprocal
over a common numerator), float64 otherwise (IEEE arithmetic: the same on every machine). An
infinite tag is never taken. NumPy only: this module is imported by DataLoader workers.
"""

from __future__ import annotations

import collections
import typing as t

import numpy as np

COST_BITS = 44  # exact tags hold a component's cumulative cost in one partition up to 2**44 (1.7e13)
_EXACT_LIMIT = 1 << 62
MAX_EPOCHS = 1 << 40


class Tags:
    """The tag rule of one stream: ``{"kind": "exact", "scale": [...]}``, ``{"kind": "shares",
    "shares": [...]}`` (constant shares too fine for exact integers) or ``{"kind": "schedule", ...}``
    (the schedule's integral per piece, as ``bind.Schedule`` scales it, over P partitions)."""

    def __init__(self, rule: dict[str, t.Any]) -> None:
        self.rule = rule
        self.kind: str = rule["kind"]
        self.exact = self.kind == "exact"
        if self.exact:
            self.scale = [int(s) for s in rule["scale"]]
        elif self.kind == "shares":
            self.shares = [float(s) for s in rule["shares"]]
        else:
            self.P = int(rule["partitions"])
            self.starts = np.asarray(rule["starts"], dtype=np.float64)
            self.a, self.b, self.r = (np.asarray(rule[k], dtype=np.float64) for k in ("a", "b", "r"))

    def of(self, i: int, cost: np.ndarray) -> np.ndarray:
        """Tags of component i's documents whose costs before them are ``cost`` (int64)."""
        cost = np.asarray(cost, dtype=np.int64)
        if self.exact:
            if len(cost) and int(cost.max()) * self.scale[i] >= _EXACT_LIMIT:  # pragma: no cover - 2**44 tokens
                raise OverflowError(f"component {i}'s cost in one partition passed 2**{COST_BITS}: "
                                    "use more PARTITIONS")
            return cost * np.int64(self.scale[i])
        if self.kind == "shares":
            return cost.astype(np.float64) / self.shares[i]
        y = cost.astype(np.float64) * self.P
        a, b, r = self.a[i], self.b[i], self.r[i]
        k = np.searchsorted(a, y, side="right") - 1
        c = y - a[k]
        bk, rk = b[k], r[k]
        root = np.sqrt(np.maximum(bk * bk + 4 * rk * c, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(c > 0, 2 * c / (bk + root), 0.0)
        flat = (bk == 0) & (rk == 0)
        return np.where(flat, np.inf, self.starts[k] + d)

    def key(self, tag: t.Any) -> int:
        """An integer in the order of tags (tags are never negative: a float's bits are in order)."""
        return int(tag) if self.exact else int(np.float64(tag).view(np.int64))

    def tag(self, key: int) -> t.Any:
        return np.int64(key) if self.exact else np.int64(key).view(np.float64)

    def finite(self, tag: t.Any) -> bool:
        return self.exact or bool(np.isfinite(tag))


class Costs(t.Protocol):
    """What a merge reads of component c's sequence in partition q: its epochs' lengths, how many
    of its documents exist (None: unlimited), and costs (``what``: "cost", or "tokens")."""

    def size(self, c: int, q: int) -> int: ...

    def known(self, c: int, q: int) -> int | None: ...

    def starts(self, c: int, q: int, epochs: int, what: str = "cost") -> np.ndarray:
        """The cost before each of the first ``epochs`` epochs (from 0)."""

    def epoch(self, c: int, q: int, e: int, what: str = "cost") -> np.ndarray:
        """The cost along epoch e from its start (its existing documents + 1 values)."""


def merge(tags: t.Sequence[np.ndarray], components: t.Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(component, index among its given documents) of documents in merged order: sorted by (tag,
    component, index). ``tags[k]``: the tags of ``components[k]``'s documents, in sequence order."""
    if not tags:
        return np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.int64)
    all_tags = np.concatenate(tags)
    comps = np.repeat(np.asarray(components, dtype=np.int16), [len(x) for x in tags])
    index = np.concatenate([np.arange(len(x), dtype=np.int64) for x in tags])
    order = np.lexsort((comps, all_tags))  # stable: index ascending within a component and tag
    return comps[order], index[order]


class Merge:
    """Partition q's merged stream (module docstring): each component's count at any position, the
    documents that follow a position, and where a document is."""

    EPOCHS_KEPT = 16  # epochs' tags kept per merge (a seek's search and reading on touch few)

    def __init__(self, tags: Tags, costs: Costs, q: int, components: int) -> None:
        self.tags, self.costs, self.q, self.n = tags, costs, q, components
        self._start_tags: dict[int, np.ndarray] = {}
        self._starts: dict[int, np.ndarray] = {}
        self._epochs: collections.OrderedDict[tuple[int, int], np.ndarray] = collections.OrderedDict()
        self._size = [int(costs.size(c, q)) for c in range(components)]
        self._known = [costs.known(c, q) for c in range(components)]
        self._limit = [0 if size == 0 or known == 0 else None if known is None else -(-known // size)
                       for size, known in zip(self._size, self._known)]

    # -- one component ---------------------------------------------------------------------------

    def _epochs_of(self, c: int) -> int | None:
        """Epochs with documents (None: unlimited)."""
        return self._limit[c]

    def _epoch_starts(self, c: int, beyond: t.Any) -> np.ndarray:
        """Tags of the first document of each epoch, far enough to pass ``beyond`` (or all epochs)."""
        found = self._start_tags.get(c)
        limit = self._epochs_of(c)
        want = len(found) if found is not None else 0
        while found is None or ((limit is None or len(found) < limit) and found[-1] <= beyond):
            if want > MAX_EPOCHS:  # pragma: no cover - a pool whose documents cost nothing, repeated
                raise OverflowError(f"component {c}'s tags do not grow over {MAX_EPOCHS:,} epochs")
            want = max(8, want + want // 4) if limit is None else min(limit, max(8, 2 * want))
            self._starts[c] = np.asarray(self.costs.starts(c, self.q, want), dtype=np.int64)
            found = self._start_tags[c] = self.tags.of(c, self._starts[c])
            if limit is not None and len(found) >= limit:
                break
        return found

    def _epoch_tags(self, c: int, e: int) -> np.ndarray:
        found = self._epochs.get((c, e))
        if found is None:
            self._epoch_starts(c, -1)
            while len(self._starts[c]) <= e:
                self._epoch_starts(c, self._start_tags[c][-1])
            cost = np.asarray(self.costs.epoch(c, self.q, e), dtype=np.int64)[:-1] + self._starts[c][e]
            found = self._epochs[(c, e)] = self.tags.of(c, cost)
            while len(self._epochs) > self.EPOCHS_KEPT * max(self.n, 1):
                self._epochs.popitem(last=False)
        else:
            self._epochs.move_to_end((c, e))
        return found

    def count(self, c: int, theta: t.Any, inclusive: bool) -> int:
        """Component c's documents with tags below ``theta`` (or at most, ``inclusive``)."""
        if self._epochs_of(c) == 0:
            return 0
        side = "right" if inclusive else "left"
        starts = self._epoch_starts(c, theta)
        e = int(np.searchsorted(starts, theta, side=side)) - 1
        if e < 0:
            return 0
        return e * self._size[c] + int(np.searchsorted(self._epoch_tags(c, e), theta, side=side))

    def tags_of(self, c: int, j0: int, j1: int) -> np.ndarray:
        """Tags of documents [j0, j1) of component c (existing ones)."""
        size, known = self._size[c], self._known[c]
        if known is not None:
            j1 = min(j1, known)
        if j1 <= j0 or size == 0:
            return self.tags.of(c, np.zeros(0, dtype=np.int64))
        parts = [self._epoch_tags(c, e)[max(j0 - e * size, 0): j1 - e * size]
                 for e in range(j0 // size, (j1 - 1) // size + 1)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def total(self, c: int, j: int, what: str = "cost") -> int:
        """Component c's cost (or tokens) of its first j documents."""
        size = self.costs.size(c, self.q)
        if j <= 0 or size == 0:
            return 0
        e, i = divmod(j, size)
        if i == 0:
            e, i = e - 1, size
        return int(self.costs.starts(c, self.q, e + 1, what)[e]) + int(self.costs.epoch(c, self.q, e, what)[i])

    def end_tag(self, c: int) -> t.Any:
        """The tag after component c's last document (its supply's end), for a finite supply."""
        known = self.costs.known(c, self.q)
        assert known is not None
        return self.tags.of(c, np.asarray([self.total(c, known)]))[0]

    def finite_docs(self, c: int) -> int:
        """Documents of component c with a finite tag (the stream ever takes)."""
        known = self.costs.known(c, self.q)
        assert known is not None
        if self.tags.exact or known == 0:
            return known
        return self.count(c, np.inf, False)

    # -- the stream ------------------------------------------------------------------------------

    def below(self, theta: t.Any, upto: int) -> int:
        """Documents before the key (theta, upto) and the documents of ``upto`` at that tag: those
        with a lower tag, and those at the same tag of components up to ``upto``."""
        return sum(self.count(i, theta, i <= upto) for i in range(self.n))

    def counts_at(self, m: int) -> np.ndarray:
        """Each component's documents among the stream's first m (at most every finite one)."""
        out = np.zeros(self.n, dtype=np.int64)
        if m <= 0:
            return out
        hi = self._upper(m)
        if hi is None:  # fewer than m + 1 documents: all of them
            for c in range(self.n):
                out[c] = self.finite_docs(c)
            return out
        lo = -1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if sum(self.count(c, self.tags.tag(mid), True) for c in range(self.n)) > m:
                hi = mid
            else:
                lo = mid
        theta = self.tags.tag(hi)
        left = m
        for c in range(self.n):
            out[c] = self.count(c, theta, False)
        left -= int(out.sum())
        for c in range(self.n):
            if left <= 0:
                break
            take = min(left, self.count(c, theta, True) - int(out[c]))
            out[c] += take
            left -= take
        return out

    def _upper(self, m: int) -> int | None:
        """A key whose tag has more than m documents at or below it, or None if no tag has."""
        best = None
        for c in range(self.n):
            size, limit = self.costs.size(c, self.q), self._epochs_of(c)
            if size == 0 or limit == 0:
                continue
            e = -(-(m + 1) // size)  # the documents before epoch e are m + 1 or more
            if limit is not None and e >= limit:
                last = self.tags_of(c, (limit - 1) * size, limit * size)
                tag = last[-1] if len(last) else None
                if tag is None or not self.tags.finite(tag):
                    continue
                if self.count(c, tag, True) <= m:
                    continue  # all of it is not enough on its own
            else:
                starts = self._epoch_starts(c, -1)
                while len(starts) <= e:
                    starts = self._epoch_starts(c, starts[-1])
                tag = starts[e]
                if not self.tags.finite(tag):
                    continue
            key = self.tags.key(tag)
            best = key if best is None else min(best, key)
        if best is None:  # every component ends: the largest finite tag, if it has enough
            tags = [x for c in range(self.n) for x in self._last_tag(c)]
            if not tags:
                return None
            key = max(self.tags.key(x) for x in tags)
            if sum(self.count(c, self.tags.tag(key), True) for c in range(self.n)) <= m:
                return None
            return key
        return best

    def _last_tag(self, c: int) -> list[t.Any]:
        docs = self.finite_docs(c) if self.costs.known(c, self.q) is not None else 0
        return [] if docs == 0 else [self.tags_of(c, docs - 1, docs)[0]]

    def following(self, counts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(component, index in its sequence) of the ``length`` documents after the position where
        each component has had ``counts`` documents (fewer where the documents run out)."""
        tags, comps, firsts = [], [], []
        for c in range(self.n):
            found = self.tags_of(c, int(counts[c]), int(counts[c]) + length)
            if not self.tags.exact:
                found = found[: int(np.searchsorted(found, np.inf))]
            if len(found):
                tags.append(found)
                comps.append(c)
                firsts.append(int(counts[c]))
        comp, i = merge(tags, comps)
        comp, i = comp[:length].astype(np.int64), i[:length]
        if len(comp):
            i = i + np.asarray(firsts, dtype=np.int64)[np.searchsorted(comps, comp)]
        return comp, i

    def position(self, c: int, j: np.ndarray) -> np.ndarray:
        """Where documents j of component c are in the stream: the documents before their keys."""
        j = np.asarray(j, dtype=np.int64).reshape(-1)
        out = np.empty(len(j), dtype=np.int64)
        for k, x in enumerate(j.tolist()):
            theta = self.tags_of(c, x, x + 1)[0]
            out[k] = x + sum(self.count(i, theta, i < c) for i in range(self.n) if i != c)
        return out
