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

Per token, a sequence also carries ``position_ids`` (the token's offset in its document: 0 at each
document's first token, continuing in a sequence that a document runs on into), ``document_ids``
(0, 1, ... for the documents of the sequence, in order, for masking attention across documents)
and ``component_ids`` (the document's component; its BOS and EOS belong to it).
"""

from __future__ import annotations

import itertools
import numbers
import typing as t

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixsql import tokens as _tokens
from mixsql import world
from mixsql.errors import DataError, MixSQLError
from mixsql.planfile import CompiledPlan

FIELDS = ("input_ids", "labels", "position_ids", "document_ids", "component_ids")
READ_TOKENS = 1 << 20  # tokens of sequences assembled per read: amortises the per-call work, bounds memory


def check_seq_len(seq_len: t.Any) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, numbers.Integral) or not 2 <= seq_len <= 1 << 24:
        raise MixSQLError(f"seq_len must be an integer from 2 to {1 << 24:,}, not {seq_len!r}",
                          hint="e.g. seq_len=2048")
    return int(seq_len)


class PackedPlan:
    """A compiled plan seen as packed sequences of ``seq_len`` tokens (module docstring)."""

    def __init__(self, plan: CompiledPlan, seq_len: int, *, tokenizer: t.Any = None, eos: str | int | None = None,
                 bos: str | int | None = None) -> None:
        self.plan = plan
        self.seq_len = check_seq_len(seq_len)
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
        P = plan.partitions
        self.lengths = np.asarray([plan.partition_length(q) for q in range(P)], dtype=np.int64)
        self.bases = np.concatenate(([0], np.cumsum(self.lengths + 1)[:-1])).astype(np.int64)
        cum = plan.stream_tokens
        self.stream_tokens = np.asarray([int(cum[b + n]) + int(n) * self.separators
                                         for b, n in zip(self.bases, self.lengths)], dtype=np.int64)
        self.partition_sequences = np.maximum(0, (self.stream_tokens - 1) // self.seq_len)
        self.sequences = int(self.partition_sequences.sum())
        self.dropped_tokens = int((self.stream_tokens - self.partition_sequences * self.seq_len).sum())

    def __len__(self) -> int:
        return self.sequences

    @property
    def tokens(self) -> int:
        """Tokens of all packed streams (documents and separators)."""
        return int(self.stream_tokens.sum())

    def identity(self) -> dict[str, t.Any]:
        """What, beyond the plan, a state of this stream must match."""
        return {"seq_len": self.seq_len, "eos": self.eos, "bos": self.bos,
                "tokenizer": self.tokenizer.fingerprint}

    # -- arithmetic ------------------------------------------------------------------------------

    def doc_start(self, q: int, m: np.ndarray) -> np.ndarray:
        """Token offset of document(s) m in partition q's packed stream: t_q(m) = c_q(m) + m*s."""
        m = np.asarray(m, dtype=np.int64)
        return np.asarray(self.plan.stream_tokens[self.bases[q] + m], dtype=np.int64) + m * self.separators

    def doc_at(self, q: int, token: np.ndarray) -> np.ndarray:
        """The document holding each token offset of partition q: the largest m with t_q(m) <= token."""
        token = np.asarray(token, dtype=np.int64)
        lo = np.zeros(token.shape, dtype=np.int64)
        hi = np.full(token.shape, int(self.lengths[q]) - 1, dtype=np.int64)
        while bool((lo < hi).any()):  # about log2(len_q) steps, each a gather from the memory map
            mid = (lo + hi + 1) // 2
            right = self.doc_start(q, mid) <= token
            lo, hi = np.where(right, mid, lo), np.where(right, hi, mid - 1)
        return lo

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(partition, sequence index in it) of global sequence positions."""
        return world.ragged_locate(positions, self.partition_sequences.tolist())

    def slices(self, batch: int, global_batch_size: int, world_size: int, rank: int) -> list[tuple[int, int, int]]:
        """Rank ``rank``'s share of global batch ``batch``: (partition, first sequence, stop)."""
        return world.ragged_slices(batch, global_batch_size, self.partition_sequences.tolist(), world_size, rank)

    def documents(self, q: int, j0: int, j1: int) -> tuple[int, int]:
        """Documents [m0, m1) of partition q that sequences [j0, j1) (with their last label) touch."""
        m0, m1 = self.doc_at(q, np.asarray([j0 * self.seq_len, j1 * self.seq_len]))
        return int(m0), int(m1) + 1

    # -- assembling ------------------------------------------------------------------------------

    def build(self, pieces: t.Sequence[tuple[int, int, int]], reader: t.Any) -> dict[str, np.ndarray]:
        """Sequences of ``pieces`` ((partition, first, stop), in that order) as int64 arrays of shape
        (sequences, seq_len), their documents read and tokenized in one pass."""
        pieces = [p for p in pieces if p[2] > p[1]]
        docs: dict[int, t.Iterator[list[int]]] = {}
        for q in {p[0] for p in pieces}:  # one search per partition for all its pieces
            ends = np.asarray([(j0 * self.seq_len, j1 * self.seq_len) for p, j0, j1 in pieces if p == q])
            docs[q] = iter(self.doc_at(q, ends).tolist())
        spans = [(q, j0, j1, m[0], m[1] + 1) for q, j0, j1 in pieces for m in [next(docs[q])]]
        if not spans:
            return {name: np.zeros((0, self.seq_len), dtype=np.int64) for name in FIELDS}
        rows = [self.plan.partition_rows(q, m0, m1) for q, _, _, m0, m1 in spans]
        unique, inverse = np.unique(np.concatenate(rows), return_inverse=True)
        ids = self._token_ids(reader, unique)
        total = sum(j1 - j0 for _, j0, j1, _, _ in spans)
        out = {name: np.empty((total, self.seq_len), dtype=np.int64) for name in FIELDS}  # filled in place
        at, n = 0, 0
        for (q, j0, j1, m0, m1), r in zip(spans, rows):
            mine = inverse[at: at + len(r)]
            at += len(r)
            self._pack(q, j0, j1, m0, r, [ids[i] for i in mine], {k: v[n: n + j1 - j0] for k, v in out.items()})
            n += j1 - j0
        return out

    def _token_ids(self, reader: t.Any, rows: np.ndarray) -> list[np.ndarray]:
        """Token ids of the documents at plan ``rows``: stored ids as they are (no Python object per
        token), text tokenized; checked against the counts the plan holds."""
        table = reader.read(rows)
        source = self._file_source[np.asarray(self.plan.file[rows], dtype=np.int64)]
        got = np.zeros(len(rows), dtype=np.int64)
        flats: list[np.ndarray] = []
        where = np.zeros(len(rows), dtype=np.int64)  # each row's first id in the concatenation of flats
        at = 0
        for s, (field, kind) in enumerate(self.sources):
            mine = np.flatnonzero(source == s)
            if not len(mine):
                continue
            column = table.column(field)
            if len(mine) != len(rows):
                column = column.take(pa.array(mine))
            if kind == "ids":
                array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
                lengths = np.asarray(pc.fill_null(pc.list_value_length(array), 0), dtype=np.int64)
                flat = np.asarray(array.flatten(), dtype=np.int64)
            else:
                encoded = self.tokenizer.encode(column.to_pylist())
                lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
                flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum()))
            got[mine] = lengths
            where[mine] = at + np.concatenate(([0], np.cumsum(lengths)[:-1]))
            flats.append(flat)
            at += len(flat)
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
        flat = np.concatenate(flats) if len(flats) > 1 else flats[0] if flats else np.zeros(0, dtype=np.int64)
        return [flat[a: a + n] for a, n in zip(where.tolist(), got.tolist())]  # views of one array

    def _pack(self, q: int, j0: int, j1: int, m0: int, rows: np.ndarray, ids: list[np.ndarray],
              out: dict[str, np.ndarray]) -> None:
        """Sequences [j0, j1) of partition q into ``out`` (views of shape (j1 - j0, L)), from the
        documents from m0 on (their plan ``rows`` and token ``ids``)."""
        L, s = self.seq_len, self.separators
        sizes = np.fromiter((len(x) + s for x in ids), dtype=np.int64, count=len(ids))
        ends = np.cumsum(sizes)
        starts = ends - sizes
        offset = j0 * L - int(self.doc_start(q, np.asarray(m0)))
        n = (j1 - j0) * L
        buf = np.empty(int(ends[-1]), dtype=np.int64)
        if s == 1:  # tokens then EOS: the documents' ids fill the gaps between the separators
            buf[ends - 1] = self.eos
            flat = np.concatenate(ids) if len(ids) > 1 else ids[0]
            mask = np.ones(len(buf), dtype=bool)
            mask[ends - 1] = False
            buf[mask] = flat
        else:
            is_token = np.ones(len(buf), dtype=bool)
            is_token[ends - 1] = False
            is_token[starts] = False
            buf[starts] = self.bos
            buf[is_token] = np.concatenate(ids)
            buf[ends - 1] = self.eos
        out["input_ids"].reshape(-1)[:] = buf[offset: offset + n]
        out["labels"].reshape(-1)[:] = buf[offset + 1: offset + 1 + n]
        # per-token ids only over the taken range: which document each token is in, and where it starts
        doc = np.repeat(np.arange(len(ids), dtype=np.int64), sizes)[offset: offset + n]
        out["position_ids"].reshape(-1)[:] = np.arange(offset, offset + n, dtype=np.int64) - starts[doc]
        out["component_ids"].reshape(-1)[:] = self.plan.component[rows].astype(np.int64)[doc]
        local = doc.reshape(j1 - j0, L)
        out["document_ids"][:] = local - local[:, :1]


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
        for n, q, j in zip(range(start, stop), qs.tolist(), js.tolist()):
            m0, m1 = packed.documents(q, j, j + 1)
            ms = np.arange(m0, m1, dtype=np.int64)
            doc_starts = packed.doc_start(q, ms)
            rows = plan.partition_rows(q, m0, m1)
            sizes = plan.tokens[rows].astype(np.int64) + packed.separators
            lo = np.maximum(j * L - doc_starts, 0)
            hi = np.minimum(j * L + L - doc_starts, sizes)
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
