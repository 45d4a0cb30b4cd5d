"""The merge of a stream planned from token counts, as a run computes it (``tokenplan`` plans it).

Partition q's stream is its components' document sequences merged by start-time fair queueing:
document j of component i has the tag ``tau_i(C_i(j))``, a non-decreasing function of the cost of
the component's documents before it (``C_i``: their ``n_tokens`` in a mixture BY TOKENS, their
number in one BY SAMPLES), and the stream is every document sorted by (tag, component, j). A
plan stores, for every C-th position of each partition, how many documents of each component came
before it (``merge_counts.npy``); since each component's documents in a chunk are then a known
range of its sequence, a chunk's order is a sort of those C documents by their tags: O(C) for any
chunk, with nothing before it computed, and no position of the stream stored.

Tags are exact integers for constant shares (``C * scale_i``, ``scale_i`` the share's reciprocal
over a common numerator), float64 otherwise (IEEE arithmetic: the same on every machine). An
infinite tag is never taken. NumPy only: this module is imported by DataLoader workers.
"""

from __future__ import annotations

import typing as t

import numpy as np

COST_BITS = 44  # exact tags hold a component's cumulative cost in one partition up to 2**44 (1.7e13)
_EXACT_LIMIT = 1 << 62


class Tags:
    """The tag rule of one stream: ``{"kind": "exact", "scale": [...]}``, ``{"kind": "shares",
    "shares": [...]}`` (constant shares too fine for exact integers) or ``{"kind": "schedule", ...}``
    (the schedule's integral per piece, as ``bind.Schedule`` scales it, over P partitions)."""

    def __init__(self, rule: dict[str, t.Any]) -> None:
        self.rule = rule
        self.kind: str = rule["kind"]
        if self.kind == "exact":
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
        if self.kind == "exact":
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

    @property
    def empty(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64 if self.kind == "exact" else np.float64)


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
