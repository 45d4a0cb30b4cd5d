"""Packed sequences: a compiled plan's documents joined into fixed-length token sequences.

The math (every quantity comes from the plan's ``stream_tokens``, computed when it was compiled):

- **Packed stream of partition q**: its documents in stream order (``CompiledPlan.partition_rows``),
  each written as ``[BOS] tokens EOS`` (BOS only when asked), so with ``c_q(m)`` the tokens of its
  first m documents and ``s = 1 + bos`` separators per document, document m starts at token
  ``t_q(m) = c_q(m) + m*s`` and the stream holds ``T_q = t_q(len_q)`` tokens.
- **Sequence j of partition q** is tokens ``[j*L, j*L + L)`` as ``input_ids`` and
  ``[j*L + 1, j*L + L + 1)`` as ``labels`` (Megatron's convention: L + 1 tokens per sequence, the
  last shared with the next one). Partition q has ``S_q = max(0, (T_q - 1) // L)`` sequences; the
  ``T_q - S_q*L`` tokens after them are never an input and are dropped (``dropped_tokens``). No
  other token is dropped or repeated: a document longer than what is left of a sequence goes on in
  the next one.
- **Global order**: sequence position n is the round-robin over partitions of unequal length
  (``world.ragged_locate``), so with one partition the packed stream is exactly the documents of
  the sample stream in order. Global batch N of G sequences is positions ``[N*G, (N+1)*G)``, the
  same for every world size dividing G; a rank's share is ``world.ragged_slices``.
- **Seek**: the document holding token t of partition q is one binary search over ``t_q`` in the
  memory-mapped plan; nothing before it is computed or read, so any step starts at once.

**Per-component packing** (``pack="component"``: every sequence holds one component's tokens, as
per-domain losses and some curricula need). Component c's documents in partition q, contiguous plan
rows in visiting order, form their own packed stream: with ``u_cq(k)`` the tokens of its first k
documents with separators (a difference of ``row_tokens``), it has ``S_cq = max(0, (u_cq(n_cq) - 1)
// L)`` sequences, by the same rule as above; the ``u_cq(n_cq) - S_cq*L`` tokens after them are
dropped and reported per component (at most L per component and partition). A document longer than
what is left of a sequence goes on in that component's next sequence (carry-over); no padding.
Partition q's sequences are ordered by **completion**: sequence j of c is complete at the stream
document ``x_c(j)`` that holds its last label (token ``j*L + L`` of c's stream), and the partition
lists its sequences by (x, j), as a packer with one buffer per component would emit them. That order
depends on the stream up to x only, so it is prefix stable. Seek: the number of sequences complete
before stream document X is ``sum_c max(0, (u_cq(n_c(X)) - 1) // L)`` with n_c(X) the number of c's
documents before X (a binary search in ``row_index``), so sequence i of partition q is one binary
search over X: O(C log^2 n), nothing before it computed or read.

Per token, a sequence also carries ``position_ids`` (the token's offset in its document: 0 at each
document's first token, continuing in a sequence that a document runs on into), ``document_ids``
(0, 1, ... for the documents of the sequence, in order, for masking attention across documents)
and ``component_ids`` (the document's component; its BOS and EOS belong to it).
"""

from __future__ import annotations

import itertools
import numbers
import sys
import typing as t

import numpy as np
import pyarrow as pa

from mixsql import tokens as _tokens
from mixsql import world
from mixsql.chunks import rotation
from mixsql.errors import DataError, MixSQLError
from mixsql.planfile import CompiledPlan, prefix_counts

FIELDS = ("input_ids", "labels", "position_ids", "document_ids", "component_ids")
PACK_MODES = ("mixed", "component")
READ_TOKENS = 1 << 20  # tokens of sequences assembled per read: amortises the per-call work, bounds memory
KEPT_BLOCKS = 3  # output blocks of reads kept for reuse (the one in use, the one before, a spare)


def check_seq_len(seq_len: t.Any) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, numbers.Integral) or not 2 <= seq_len <= 1 << 24:
        raise MixSQLError(f"seq_len must be an integer from 2 to {1 << 24:,}, not {seq_len!r}",
                          hint="e.g. seq_len=2048")
    return int(seq_len)


def check_pack(pack: t.Any) -> str:
    if pack not in PACK_MODES:
        raise MixSQLError(f"pack must be one of {', '.join(map(repr, PACK_MODES))}, not {pack!r}",
                          hint="'mixed' packs each partition's stream as it is; 'component' fills every sequence "
                               "from one component")
    return str(pack)


def _last_at_most(start: t.Callable[[np.ndarray], np.ndarray], n: int, token: np.ndarray,
                  guess: np.ndarray | None = None) -> np.ndarray:
    """For each token offset, the largest k in [0, n) with start(k) <= token (start increasing,
    start(0) = 0): a vectorised binary search, each step one gather from the memory map. With a
    ``guess``, the search first gallops out from it, so that its probes stay near the answer (where a
    plan that computes its positions, a merged stream's, has them at hand)."""
    token = np.asarray(token, dtype=np.int64)
    lo = np.zeros(token.shape, dtype=np.int64)
    hi = np.full(token.shape, n - 1, dtype=np.int64)
    if guess is not None and n > 1:
        g = np.clip(np.asarray(guess, dtype=np.int64), 0, n - 1)
        below = start(g) <= token
        lo, hi = np.where(below, g, lo), np.where(below, hi, g - 1)
        step = np.ones(token.shape, dtype=np.int64)
        down = ~below & (hi > 0)  # from the guess down, until a start at most the token
        while bool(down.any()):
            p = np.maximum(hi - step + 1, 0)
            ok = start(p) <= token
            lo = np.where(down & ok, p, lo)
            hi = np.where(down & ~ok, p - 1, hi)
            down &= ~ok & (hi > 0)
            step *= 2
        step[:] = 1
        up = below & (lo < hi)  # from the guess up, until a start past the token
        while bool(up.any()):
            p = np.minimum(lo + step, hi)
            ok = start(p) <= token
            lo = np.where(up & ok, p, lo)
            hi = np.where(up & ~ok, p - 1, hi)
            up &= ok & (lo < hi)
            step *= 2
    while bool((lo < hi).any()):
        mid = (lo + hi + 1) // 2
        right = start(mid) <= token
        lo, hi = np.where(right, mid, lo), np.where(right, hi, mid - 1)
    return lo


class Layout(t.NamedTuple):
    """``PackedPlan.layout``: the packed streams' segments of some pieces, their documents' plan
    rows, and the number of sequences."""

    segments: list[tuple[t.Any, int, int, np.ndarray]]
    spans: list[tuple[np.ndarray, int]]
    sequences: int

    @property
    def rows(self) -> np.ndarray:
        """The plan rows whose documents ``build`` reads (what a read-ahead fetches)."""
        return np.unique(np.concatenate([r for r, _ in self.spans])) if self.spans else np.zeros(0, dtype=np.int64)


class PackedPlan:
    """A compiled plan seen as packed sequences of ``seq_len`` tokens (module docstring)."""

    def __init__(self, plan: CompiledPlan, seq_len: int, *, tokenizer: t.Any = None, eos: str | int | None = None,
                 bos: str | int | None = None, pack: str = "mixed") -> None:
        self.plan = plan
        self.seq_len = check_seq_len(seq_len)
        self.pack = check_pack(pack)
        info = plan.meta.get("tokens")
        if not info:
            raise MixSQLError(f"cannot pack: {plan.meta.get('tokens_missing') or 'the plan has no token counts'}",
                              hint="register the datasets with --tokenizer (API: tokenizer=...), then compile again")
        self.tokenizer = _tokens.load(tokenizer) if tokenizer is not None else _tokens.from_json(
            (plan.directory / "tokenizer.json").read_text(encoding="utf-8"), info["source"])
        if self.tokenizer.fingerprint != info["fingerprint"]:
            raise _tokens.TokenizerError(
                f"the tokenizer {self.tokenizer.source} (fingerprint {self.tokenizer.fingerprint}) is not the one "
                f"the data was counted with, {info['source']} (fingerprint {info['fingerprint']})",
                hint="pack with the tokenizer the datasets were registered with, or register them again with this one")
        # where each dataset's tokens come from: (field, "text" to tokenize or "ids" stored)
        self.sources = sorted({(i.get("token_field") or info["field"], i.get("token_kind") or "text")
                               for i in plan.dataset_info.values()})
        self.fields = sorted({f for f, _ in self.sources})
        by_dataset = {d: self.sources.index((i.get("token_field") or info["field"], i.get("token_kind") or "text"))
                      for d, i in plan.dataset_info.items()}
        self._file_source = np.asarray([by_dataset[f.dataset] for f in plan.files], dtype=np.int16)
        self.eos = self.tokenizer.eos_id(eos)
        self.bos = None if bos is None else self.tokenizer.token_id(bos, "the BOS token")
        self.separators = 1 + (self.bos is not None)
        self._blocks: list[np.ndarray] = []  # output blocks of earlier builds, written again once free
        self._free = 0
        P, L, s = plan.partitions, self.seq_len, self.separators
        self.adaptive = plan.adapt is not None
        self._from_table = self.adaptive or bool(plan.derived) or plan.merge is not None
        if self.adaptive:
            self._init_adaptive()
            return
        self.lengths = np.asarray([plan.partition_length(q) for q in range(P)], dtype=np.int64)
        self.bases = np.concatenate(([0], np.cumsum(self.lengths + 1)[:-1])).astype(np.int64)
        if self._from_table:  # a plan that derives later epochs stores no per-position layout
            plan.row_tokens  # the error of a plan without token counts
            self.stream_tokens = np.asarray([int(self.doc_start(q, np.asarray([n]))[0])
                                             for q, n in enumerate(self.lengths.tolist())], dtype=np.int64)
        else:
            cum = plan.stream_tokens
            self.stream_tokens = np.asarray([int(cum[b + n]) + int(n) * s
                                             for b, n in zip(self.bases, self.lengths)], dtype=np.int64)
        if self.pack == "mixed":
            self.partition_sequences = np.maximum(0, (self.stream_tokens - 1) // L)
            self.dropped_tokens = int((self.stream_tokens - self.partition_sequences * L).sum())
            self.component_sequences = None
        else:
            self.pool_start = plan.pool_start
            self.pool_length = np.asarray(plan.pool_lengths, dtype=np.int64)
            pool_tokens = np.asarray([[int(plan.pool_tokens(c, q, np.asarray([n]))[0]) for q, n in enumerate(row)]
                                      for c, row in enumerate(self.pool_length.tolist())],
                                     dtype=np.int64).reshape(self.pool_length.shape) + self.pool_length * s  # u_cq(n_cq)
            self.pool_sequences = np.maximum(0, (pool_tokens - 1) // L)  # S_cq, [component, partition]
            self.pool_dropped = pool_tokens - self.pool_sequences * L
            self.partition_sequences = self.pool_sequences.sum(axis=0)
            self.dropped_tokens = int(self.pool_dropped.sum())
            self.component_sequences = self.pool_sequences.sum(axis=1)
        self.sequences = int(self.partition_sequences.sum())

    def _init_adaptive(self) -> None:
        """An adaptive plan (``ADAPT``): its document streams follow the weight log as far as it goes,
        so the layout is computed from the table (``adaptive_doc_start``), not stored. Its LIMIT counts
        sequences: position n is sequence n // P of partition n % P, each partition's stream of
        documents as long as its sequences need."""
        if self.pack != "mixed":
            raise MixSQLError("pack='component' of an adaptive mixture is not supported yet", hint="pack='mixed'")
        plan, P = self.plan, self.plan.partitions
        total = int(plan.meta["limit"])
        self.partition_sequences = np.asarray([len(range(q, total, P)) for q in range(P)], dtype=np.int64)
        self.sequences = total
        self.dropped_tokens = 0
        self.component_sequences = None
        self.pool_start = plan.pool_start
        most = int(sum(plan.adapt["capacity"]))  # documents a partition can have at most
        self.lengths = np.full(P, most, dtype=np.int64)
        self.stream_tokens = self.partition_sequences * self.seq_len + 1  # the tokens the sequences take

    def table_doc_start(self, q: int, m: np.ndarray) -> np.ndarray:
        """t_q(m) from the chunk table (an adaptive plan, or one that derives later epochs): the tokens
        of each component's first n_c(m) documents of the partition (``CompiledPlan.pool_tokens``),
        n_c read off the table and the chunk's order; the largest int64 for a document beyond the end
        of an adaptive log's supply."""
        plan, C, s = self.plan, self.plan.chunk_size, self.separators
        table = plan.table
        flat = np.asarray(m, dtype=np.int64).reshape(-1)
        if not self.adaptive:
            n = plan.stream_counts(q, flat)
            tokens = np.zeros(len(flat), dtype=np.int64)
            for c in range(n.shape[1]):
                tokens += plan.pool_tokens(c, q, n[:, c])
            return (tokens + flat * s).reshape(np.shape(m))
        k, r = flat // C, flat % C
        out = np.full(len(flat), np.iinfo(np.int64).max, dtype=np.int64)
        end = getattr(table, "end_row", None)
        rot = rotation(q, plan.partitions, C)
        for kk in np.unique(k).tolist():
            sel = np.flatnonzero(k == kk)
            if end is not None and kk >= end:
                sel = sel[(kk == end) & (r[sel] == 0)]  # only the stream's very end exists there
                if not len(sel):
                    continue
            before = table[kk]
            n = np.repeat(before[None, :], len(sel), axis=0)
            if (r[sel] > 0).any():
                n = n + prefix_counts(tuple((table[kk + 1] - before).tolist()), rot)[r[sel]]
            tokens = np.zeros(len(sel), dtype=np.int64)
            for c in range(n.shape[1]):
                tokens += plan.pool_tokens(c, q, n[:, c])
            out[sel] = tokens + flat[sel] * s
        return out.reshape(np.shape(m))

    def rows_after(self, batch: int, global_batch_size: int) -> int:
        """The first chunk row after every row that the sequences of global batches 0..``batch``
        read (with their last labels): where a weight change may begin without touching them."""
        L, C, P = self.seq_len, self.plan.chunk_size, self.plan.partitions
        stop = (batch + 1) * global_batch_size
        row = 0
        for q in range(P):
            count = min(len(range(q, stop, P)), int(self.partition_sequences[q]))
            if count:
                m = int(self.doc_at(q, np.asarray([count * L]))[0])
                row = max(row, m // C + 1)
        return row

    def __len__(self) -> int:
        return self.sequences

    @property
    def tokens(self) -> int:
        """Tokens of all packed streams (documents and separators)."""
        return int(self.stream_tokens.sum())

    def identity(self) -> dict[str, t.Any]:
        """What, beyond the plan, a state of this stream must match."""
        return {"seq_len": self.seq_len, "eos": self.eos, "bos": self.bos, "pack": self.pack,
                "tokenizer": self.tokenizer.fingerprint}

    def summary(self) -> dict[str, t.Any]:
        """The packed stream in numbers (EXPLAIN --seq-len): sequences, tokens, what is dropped and
        why, and with ``pack="component"`` each component's sequences, share and dropped tail."""
        out: dict[str, t.Any] = {
            "seq_len": self.seq_len, "pack": self.pack, "eos": self.eos, "bos": self.bos,
            "sequences": self.sequences, "tokens": self.tokens, "dropped_tokens": self.dropped_tokens,
            "partitions": len(self.lengths), "separators_per_document": self.separators}
        if self.component_sequences is not None:
            dropped = self.component_dropped()
            out["components"] = [{"name": name, "sequences": int(n), "share": int(n) / max(self.sequences, 1),
                                  "dropped_tokens": int(d)}
                                 for name, n, d in zip(self.plan.names, self.component_sequences, dropped)]
        return out

    def component_dropped(self) -> np.ndarray | None:
        """Tokens dropped per component (``pack="component"``: the tail of each of its pools)."""
        return None if self.component_sequences is None else self.pool_dropped.sum(axis=1)

    # -- arithmetic ------------------------------------------------------------------------------

    def doc_start(self, q: int, m: np.ndarray) -> np.ndarray:
        """Token offset of document(s) m in partition q's packed stream: t_q(m) = c_q(m) + m*s."""
        if self.adaptive or self._from_table:
            return self.table_doc_start(q, m)
        m = np.asarray(m, dtype=np.int64)
        return np.asarray(self.plan.stream_tokens[self.bases[q] + m], dtype=np.int64) + m * self.separators

    def doc_at(self, q: int, token: np.ndarray) -> np.ndarray:
        """The document holding each token offset of partition q: the largest m with t_q(m) <= token."""
        guess = None
        if self._from_table and not self.adaptive:  # positions computed, not stored: search near the answer
            n, total = int(self.lengths[q]), max(int(self.stream_tokens[q]), 1)
            guess = (np.asarray(token, dtype=np.float64) * (n / total)).astype(np.int64)
        return _last_at_most(lambda m: self.doc_start(q, m), int(self.lengths[q]), token, guess)

    def pool_doc_start(self, c: int, q: int, k: np.ndarray) -> np.ndarray:
        """u_cq(k): token offset of document(s) k of component c's packed stream in partition q."""
        k = np.asarray(k, dtype=np.int64)
        return self.plan.pool_tokens(c, q, k.reshape(-1)).reshape(k.shape) + k * self.separators

    def pool_doc_at(self, c: int, q: int, token: np.ndarray) -> np.ndarray:
        """The document of component c's stream in partition q holding each token offset."""
        return _last_at_most(lambda k: self.pool_doc_start(c, q, k), int(self.pool_length[c, q]), token)

    def _complete_before(self, q: int, x: np.ndarray) -> np.ndarray:
        """[component, len(x)]: the sequences of each component complete before stream document x."""
        x = np.asarray(x, dtype=np.int64)
        out = np.zeros((len(self.pool_length), len(x)), dtype=np.int64)
        index = None if self._from_table else self.plan.row_index
        counts = self.plan.stream_counts(q, x) if index is None else None
        for c in np.flatnonzero(self.pool_sequences[:, q]).tolist():
            p0, n = int(self.pool_start[c, q]), int(self.pool_length[c, q])
            seen = np.searchsorted(index[p0: p0 + n], x.astype(index.dtype)) if index is not None \
                else np.minimum(counts[:, c], n)  # same dtype: no copy of the map
            out[c] = np.maximum(0, (self.pool_doc_start(c, q, seen) - 1) // self.seq_len)
        return out

    def component_locate(self, q: int, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(component, its sequence index j) of partition q's sequences i (``pack="component"``): the
        stream document completing sequence i is the smallest x with more than i sequences complete
        by x (one binary search over x), and the sequence is the one of x's component due there."""
        i = np.asarray(i, dtype=np.int64)
        n = int(self.lengths[q])
        guess = None
        if self._from_table and not self.adaptive:  # positions computed, not stored: search near the answer
            guess = ((i + 1).astype(np.float64) * (n / max(int(self.partition_sequences[q]), 1))).astype(np.int64)
        # the last x with at most i sequences complete before it is the first with more by x + 1
        lo = _last_at_most(lambda x: self._complete_before(q, x).sum(axis=0), n, i, guess)
        before = self._complete_before(q, lo)
        comp = np.asarray([int(self.plan.component[self.plan.partition_rows(q, x, x + 1)[0]]) for x in lo.tolist()],
                          dtype=np.int64)
        return comp, i - before.sum(axis=0) + before[comp, np.arange(len(i))]

    def _firsts(self, q: int, i: int) -> np.ndarray:
        """[component]: the first sequence of each component at or after partition q's sequence i."""
        if i >= int(self.partition_sequences[q]):
            return self.pool_sequences[:, q].copy()
        comp, j = self.component_locate(q, np.asarray([i]))
        x = int(self.plan.stream_index(int(comp[0]), q, self.pool_doc_at(int(comp[0]), q, (j + 1) * self.seq_len))[0])
        out = self._complete_before(q, np.asarray([x]))[:, 0]
        out[comp[0]] = j[0]
        return out

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(partition, sequence index in it) of global sequence positions."""
        return world.ragged_locate(positions, self.partition_sequences.tolist())

    def slices(self, batch: int, global_batch_size: int, world_size: int, rank: int) -> list[tuple[int, int, int]]:
        """Rank ``rank``'s share of global batch ``batch``: (partition, first sequence, stop)."""
        return world.ragged_slices(batch, global_batch_size, self.partition_sequences.tolist(), world_size, rank)

    def slices_many(self, batches: t.Sequence[int], global_batch_size: int, world_size: int,
                    rank: int) -> list[tuple[int, int, int]]:
        """``slices`` of several global batches, one after another."""
        return [piece for pieces in world.ragged_slices_many(batches, global_batch_size,
                                                             self.partition_sequences.tolist(), world_size, rank)
                for piece in pieces]

    def sequence_documents(self, q: int, i: int, located: tuple[int, int] | None = None
                           ) -> tuple[np.ndarray, np.ndarray, int]:
        """Partition q's sequence i: the plan rows of the documents it touches (with its last label),
        their token offsets in the packed stream they are in, and the sequence's first offset.
        ``located``: its (component, j) when already known (``component_locate``)."""
        L = self.seq_len
        if self.pack == "mixed":
            m0, m1 = self.doc_at(q, np.asarray([i * L, i * L + L]))
            ms = np.arange(m0, m1 + 1, dtype=np.int64)
            return self.plan.partition_rows(q, int(m0), int(m1) + 1), self.doc_start(q, ms), i * L
        if located is None:
            comp, j = self.component_locate(q, np.asarray([i]))
            located = int(comp[0]), int(j[0])
        c, j0 = located
        k0, k1 = self.pool_doc_at(c, q, np.asarray([j0 * L, j0 * L + L]))
        ks = np.arange(k0, k1 + 1, dtype=np.int64)
        return self.plan.pool_rows(c, q, ks), self.pool_doc_start(c, q, ks), j0 * L

    # -- assembling ------------------------------------------------------------------------------

    def build(self, pieces: t.Sequence[tuple[int, int, int]] | Layout, reader: t.Any) -> dict[str, np.ndarray]:
        """Sequences of ``pieces`` ((partition, first, stop), in that order; or their ``layout``) as
        int64 arrays of shape (sequences, seq_len), their documents read and tokenized in one pass."""
        L = self.seq_len
        segments, spans, at = pieces if isinstance(pieces, Layout) else self.layout(pieces)
        if not at:
            return {name: np.zeros((0, L), dtype=np.int64) for name in FIELDS}
        unique, inverse = np.unique(np.concatenate([rows for rows, _ in spans]), return_inverse=True)
        ids = self._token_ids(reader, unique)
        out = dict(zip(FIELDS, self._block(at)))  # filled in place
        done = 0
        for (_, first, stop, where), (rows, offset) in zip(segments, spans):
            mine = inverse[done: done + len(rows)]
            done += len(rows)
            self._pack(offset, rows, [ids[i] for i in mine], stop - first, where, out)
        return out

    def _block(self, at: int) -> np.ndarray:
        """Int64 (fields, at, seq_len) for ``build`` to fill: a block of an earlier build once nothing
        but this list refers to it (every array, view or tensor made from it holds a reference), so
        its memory is written again without the page faults of fresh memory; else a new one."""
        for i in range(len(self._blocks)):
            if len(self._blocks[i][0]) == at and sys.getrefcount(self._blocks[i]) == self._free:
                return self._blocks[i]
        if len(self._blocks) >= KEPT_BLOCKS:
            self._blocks.pop(0)
        self._blocks.append(np.empty((len(FIELDS), at, self.seq_len), dtype=np.int64))
        self._free = sys.getrefcount(self._blocks[-1])  # what a block held by the list alone counts, measured
        return self._blocks[-1]

    def layout(self, pieces: t.Sequence[tuple[int, int, int]]) -> Layout:
        """Where the sequences of ``pieces`` come from (``build`` takes it, so a read-ahead that
        computed it does not compute it again)."""
        return Layout(*self._segments(pieces))

    def _segments(self, pieces: t.Sequence[tuple[int, int, int]]) -> tuple[list[tuple[t.Any, int, int, np.ndarray]],
                                                                           list[tuple[np.ndarray, int]], int]:
        """The packed streams' segments that ``pieces`` cover, (key, first, stop, output rows) each,
        adjacent runs of one stream merged; for each the plan rows of its documents and the offset
        of its first sequence in them; and the number of sequences."""
        L = self.seq_len
        pieces = [p for p in pieces if p[2] > p[1]]
        # runs of one packed stream: key (partition, or (component, partition)) -> [first, stop, output rows]
        runs: dict[t.Any, list[list[t.Any]]] = {}
        at = 0
        asked: dict[int, list[tuple[int, int, int]]] = {}  # partition -> (first, stop, output row of first)
        for q, i0, i1 in pieces:
            if self.pack == "mixed":
                runs.setdefault(q, []).append([i0, i1, np.arange(at, at + i1 - i0)])
            else:
                asked.setdefault(q, []).append((i0, i1, at))
            at += i1 - i0
        for q, parts in asked.items():  # one mapping to components for the hull of a partition's pieces
            lo, hi = min(p[0] for p in parts), max(p[1] for p in parts)
            dest = np.full(hi - lo, -1, dtype=np.int64)
            for i0, i1, o in parts:
                dest[i0 - lo: i1 - lo] = np.arange(o, o + i1 - i0)
            for c, j0, _, rank in self._component_runs(q, lo, hi):
                where = dest[rank]  # output rows of c's sequences from j0 on (-1: not asked for)
                need = np.flatnonzero(where >= 0)
                for run in np.split(need, np.flatnonzero(np.diff(need) != 1) + 1) if len(need) else []:
                    runs.setdefault((c, q), []).append([j0 + int(run[0]), j0 + int(run[-1]) + 1, where[run]])
        segments = []  # (key, first, stop, output rows): adjacent runs of a stream packed together
        for key, parts in runs.items():
            parts.sort(key=lambda r: r[0])
            merged = [[parts[0][0], parts[0][1], [parts[0][2]]]]
            for first, stop, where in parts[1:]:
                if first == merged[-1][1]:
                    merged[-1][1] = stop
                    merged[-1][2].append(where)
                else:
                    merged.append([first, stop, [where]])
            segments += [(key, first, stop, np.concatenate(wheres) if len(wheres) > 1 else wheres[0])
                         for first, stop, wheres in merged]
        spans = []  # (plan rows of the segment's documents, token offset of its first sequence in them)
        for key, first, stop, _ in segments:
            if self.pack == "mixed":
                m0, m1 = self.doc_at(key, np.asarray([first * L, stop * L])).tolist()
                spans.append((self.plan.partition_rows(key, m0, m1 + 1),
                              first * L - int(self.doc_start(key, np.asarray(m0)))))
            else:
                c, q = key
                k0, k1 = self.pool_doc_at(c, q, np.asarray([first * L, stop * L])).tolist()
                spans.append((self.plan.pool_rows(c, q, np.arange(k0, k1 + 1, dtype=np.int64)),
                              first * L - int(self.pool_doc_start(c, q, np.asarray(k0)))))
        return segments, spans, at

    def _component_runs(self, q: int, i0: int, i1: int) -> list[tuple[int, int, int, np.ndarray]]:
        """Partition q's sequences [i0, i1) (``pack="component"``) as (component, first j, stop j,
        the position of each of them among the i1 - i0): each component's are consecutive, and they
        interleave by completion (the stream document holding the last label, then j)."""
        L = self.seq_len
        first, stop = self._firsts(q, i0), self._firsts(q, i1)
        keys, owners = [], []
        for c in np.flatnonzero(stop > first).tolist():
            js = np.arange(first[c], stop[c], dtype=np.int64)
            k = self.pool_doc_at(c, q, (js + 1) * L)
            keys.append(self.plan.stream_index(c, q, k))
            owners.append((c, js))
        if int(sum(len(js) for _, js in owners)) != i1 - i0:  # pragma: no cover - the counts disagree
            raise MixSQLError(f"internal: partition {q} sequences [{i0}, {i1}) map to "
                              f"{sum(len(js) for _, js in owners)} component sequences")
        x = np.concatenate(keys)
        j_all = np.concatenate([js for _, js in owners])
        rank = np.empty(len(x), dtype=np.int64)
        rank[np.lexsort((j_all, x))] = np.arange(len(x))
        out, done = [], 0
        for c, js in owners:
            out.append((c, int(js[0]), int(js[-1]) + 1, rank[done: done + len(js)]))
            done += len(js)
        return out

    def _token_ids(self, reader: t.Any, rows: np.ndarray) -> list[np.ndarray]:
        """Token ids of the documents at plan ``rows``: stored ids as they are (no Python object per
        token), text tokenized; checked against the counts the plan holds."""
        source = self._file_source[np.asarray(self.plan.file[rows], dtype=np.int64)]
        out: list[np.ndarray] = [None] * len(rows)  # type: ignore[list-item]
        for s, (field, kind) in enumerate(self.sources):
            mine = np.flatnonzero(source == s) if len(self.sources) > 1 else np.arange(len(rows))
            if not len(mine):
                continue
            if kind == "ids":  # views of the decoded column, in its own integer type
                got = reader.id_views(rows[mine], field)
            else:
                encoded = self.tokenizer.encode(reader.read(rows[mine]).column(field).to_pylist())
                lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
                flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum()))
                bounds = np.concatenate(([0], np.cumsum(lengths))).tolist()
                got = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            for slot, ids in zip(mine.tolist(), got):
                out[slot] = ids
        got = np.fromiter((len(x) for x in out), dtype=np.int64, count=len(out))
        expected = self.plan.tokens[rows]
        bad = np.flatnonzero(got != expected)
        if len(bad):
            i = int(bad[0])
            f = self.plan.files[int(self.plan.file[rows[i]])]
            field, kind = self.sources[int(source[i])]
            raise DataError(f"{f.url}, row {int(self.plan.row[rows[i]])}: {field!r} has {got[i]} tokens now, but "
                            f"{expected[i]} when it was registered", file=f.url, row=int(self.plan.row[rows[i]]),
                            hint="the file changed since it was registered; register it again" if kind == "ids" else
                            "the tokenizer's behaviour changed (another tokenizers version?); register again")
        return out

    def _pack(self, offset: int, rows: np.ndarray, ids: list[np.ndarray], count: int, where: np.ndarray,
              out: dict[str, np.ndarray]) -> None:
        """``count`` consecutive sequences of one packed stream into rows ``where`` of ``out``, from its
        documents at plan ``rows`` (token ``ids``), the first sequence ``offset`` tokens into the first."""
        L, s = self.seq_len, self.separators
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        sizes = lengths + s
        n = count * L
        # the stream in narrow integers (ids are checked against the vocabulary, < 2**31), widened to
        # int64 by the copies into ``out``: less memory traffic than int64 throughout
        eos = np.full(1, self.eos, dtype=np.int32)
        if s == 1:  # one copy: each document's ids, then its EOS
            buf = np.concatenate([a for x in ids for a in (x, eos)], dtype=np.int32, casting="unsafe")
        else:
            bos = np.full(1, self.bos, dtype=np.int32)
            buf = np.concatenate([a for x in ids for a in (bos, x, eos)], dtype=np.int32, casting="unsafe")
        contiguous = int(where[-1]) - int(where[0]) == len(where) - 1
        dest: t.Any = slice(int(where[0]), int(where[0]) + len(where)) if contiguous else where
        doc = np.repeat(np.arange(len(ids), dtype=np.int32), sizes)[offset: offset + n]
        out["input_ids"][dest] = buf[offset: offset + n].reshape(count, L)
        out["labels"][dest] = buf[offset + 1: offset + 1 + n].reshape(count, L)
        out["component_ids"][dest] = np.repeat(self.plan.component[rows], sizes)[offset: offset + n].reshape(count, L)
        starts = (np.cumsum(sizes) - sizes).astype(np.int32)
        position = _arange(offset + n)[offset:] - np.repeat(starts, sizes)[offset: offset + n]  # offset in its document
        out["position_ids"][dest] = position.reshape(count, L)
        local = doc.reshape(count, L)
        if contiguous:  # a sequence spans far fewer than 2**31 documents
            np.subtract(local, local[:, :1], out=out["document_ids"][dest], casting="unsafe")
        else:
            out["document_ids"][dest] = local - local[:, :1]


_ARANGE = np.arange(1 << 16, dtype=np.int32)


def _arange(n: int) -> np.ndarray:
    """0..n-1 as a view of one shared array (grown when more is asked than ever before)."""
    global _ARANGE
    if n > len(_ARANGE):
        _ARANGE = np.arange(max(n, 2 * len(_ARANGE)), dtype=np.int64 if n >= 1 << 31 else np.int32)
    return _ARANGE[:n]


def lineage(packed: PackedPlan, start: int, stop: int) -> pa.Table:
    """Where global sequences [start, stop) come from: one row per (sequence, document piece), with the
    document's tokens [token_start, token_stop) it holds (offsets in the document as packed: its BOS
    if any, its tokens, its EOS). Nothing before ``start`` is computed."""
    plan, L = packed.plan, packed.seq_len
    stop = min(stop, len(packed))
    cols: dict[str, list[t.Any]] = {k: [] for k in ("sequence", "partition", "index", "component", "dataset", "file",
                                                    "row", "document_tokens", "token_start", "token_stop")}
    if stop > start:
        qs, js = packed.locate(np.arange(start, stop, dtype=np.int64))
        located: dict[tuple[int, int], tuple[int, int]] = {}
        if packed.pack == "component":  # one search per partition for all its sequences
            for q in np.unique(qs).tolist():
                mine = js[qs == q]
                comp, j = packed.component_locate(q, mine)
                located.update(((q, i), (c, k)) for i, c, k in zip(mine.tolist(), comp.tolist(), j.tolist()))
        for n, q, j in zip(range(start, stop), qs.tolist(), js.tolist()):
            rows, doc_starts, first = packed.sequence_documents(q, j, located.get((q, j)))
            sizes = plan.tokens[rows].astype(np.int64) + packed.separators
            lo = np.maximum(first - doc_starts, 0)
            hi = np.minimum(first + L - doc_starts, sizes)
            keep = hi > lo  # the last document may be there only for the last label
            for r, a, b, size in zip(rows[keep].tolist(), lo[keep].tolist(), hi[keep].tolist(), sizes[keep].tolist()):
                f = plan.files[int(plan.file[r])]
                cols["sequence"].append(n)
                cols["partition"].append(q)
                cols["index"].append(j)
                cols["component"].append(plan.names[int(plan.component[r])])
                cols["dataset"].append(f.dataset)
                cols["file"].append(f.url)
                cols["row"].append(int(plan.row[r]))
                cols["document_tokens"].append(size - packed.separators)
                cols["token_start"].append(a)
                cols["token_stop"].append(b)
    types = {"sequence": pa.int64(), "partition": pa.int32(), "index": pa.int64(), "component": pa.string(),
             "dataset": pa.string(), "file": pa.string(), "row": pa.int64(), "document_tokens": pa.int64(),
             "token_start": pa.int64(), "token_stop": pa.int64()}
    return pa.table({k: pa.array(v, types[k]) for k, v in cols.items()})


def in_order(packed: PackedPlan, reader: t.Any, start: int, stop: int) -> dict[str, np.ndarray]:
    """Global sequences [start, stop) in stream order (arrays of shape (n, seq_len))."""
    stop = min(stop, len(packed))
    if stop <= start:
        return packed.build([], reader)
    qs, js = packed.locate(np.arange(start, stop, dtype=np.int64))
    pieces, first = [], {}
    at = 0
    for q in np.unique(qs).tolist():
        mine = js[qs == q]
        j0, j1 = int(mine.min()), int(mine.max()) + 1
        pieces.append((q, j0, j1))
        first[q] = at - j0
        at += j1 - j0
    built = packed.build(pieces, reader)
    where = np.asarray([first[q] for q in qs.tolist()], dtype=np.int64) + js
    return {name: values[where] for name, values in built.items()}
