"""Packed sequences: exactness against the documents, labels, per-token ids, seek and resume."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import tokenizers
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mixsql
from mixsql import packing, tokens
from mixsql.errors import MixSQLError
from mixsql.state import StateError
from tests.conftest import TOKENIZER

MIX = ("MIX {by}0.4 AS code WHERE domain = 'code', 0.35 AS manual WHERE domain = 'manual', "
       "0.25 AS rest WHERE TRUE FROM {dataset} SEED 3 CHUNK SIZE 64 PARTITIONS {p}")


def _mix(con: mixsql.Connection, p: int, dataset: str = "corpus", unit: str = "SAMPLES") -> mixsql.api.Mix:
    """The test mixture by samples, or BY TOKENS (planned by ``tokenplan``: the same contract)."""
    return con.mix(MIX.format(p=p, dataset=dataset, by="BY TOKENS " if unit == "TOKENS" else ""))


UNITS = pytest.mark.parametrize("unit", ["SAMPLES", "TOKENS"])


def _encode(texts: list[str]) -> list[list[int]]:
    tok = tokenizers.Tokenizer.from_file(str(TOKENIZER))
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


@UNITS
@pytest.mark.parametrize("dataset", ["corpus", "corpus_jsonl"])
def test_one_partition_packs_exactly_the_sample_stream(tcon: mixsql.Connection, dataset: str, unit: str) -> None:
    mix = _mix(tcon, 1, dataset, unit)
    docs = list(mix.samples(columns=["text"]))
    stream = np.asarray(list(itertools.chain.from_iterable(ids + [0] for ids in _encode([d["text"] for d in docs]))))
    L = 96
    seqs = list(mix.sequences(L))
    packed = mix.packed(L)
    assert len(seqs) == len(packed) == (len(stream) - 1) // L
    assert packed.dropped_tokens == len(stream) - len(seqs) * L < L + 1
    inputs = np.concatenate([s["input_ids"] for s in seqs])
    labels = np.concatenate([s["labels"] for s in seqs])
    assert np.array_equal(inputs, stream[: len(inputs)])
    assert np.array_equal(labels, stream[1: len(inputs) + 1])  # shifted by one across sequence boundaries
    components = np.concatenate([s["component_ids"] for s in seqs])
    names = mix.components
    per_token = np.repeat([names.index(d["component"]) for d in docs],
                          [len(ids) + 1 for ids in _encode([d["text"] for d in docs])])
    assert np.array_equal(components, per_token[: len(components)])  # the EOS belongs to its document
    for s in seqs:
        assert all(v.dtype == np.int64 and v.shape == (L,) for v in s.values())


@UNITS
@pytest.mark.parametrize("p", [2, 4])
def test_every_document_appears_exactly_once(tcon: mixsql.Connection, p: int, unit: str) -> None:
    mix = _mix(tcon, p, unit=unit)
    L = 128
    packed = mix.packed(L)
    seqs = list(mix.sequences(L))
    lineage = mix.lineage(0, len(packed), seq_len=L).to_pylist()
    texts = {(r["file"], r["row"]): r["text"] for r in _texts(mix)}
    ids = dict(zip(texts, _encode(list(texts.values()))))
    covered: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for r in lineage:
        covered.setdefault((r["file"], r["row"]), []).append((r["token_start"], r["token_stop"]))
        assert r["document_tokens"] == len(ids[(r["file"], r["row"])])
    # each document's packed tokens are covered once, in order, without gaps (but for the dropped tails)
    tails = 0
    for key, spans in covered.items():
        spans.sort()
        assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        tails += len(ids[key]) + 1 - spans[-1][1]
    assert set(covered) <= set(texts)
    untouched = sum(len(ids[k]) + 1 for k in set(texts) - set(covered))
    assert tails + untouched == packed.dropped_tokens
    # and the tokens there are the document's: rebuild every input_ids from the lineage
    rows = iter(lineage)
    row = next(rows)
    for n, s in enumerate(seqs):
        got = []
        while row is not None and row["sequence"] == n:
            doc = ids[(row["file"], row["row"])] + [0]
            got += doc[row["token_start"]: row["token_stop"]]
            assert set(s["component_ids"][len(got) - (row["token_stop"] - row["token_start"]): len(got)].tolist()) \
                == {mix.components.index(row["component"])}
            row = next(rows, None)
        assert got == s["input_ids"].tolist()


def _texts(mix: mixsql.api.Mix) -> list[dict]:
    plan = mix.plan()
    from mixsql.read import Reader

    rows = np.arange(len(plan.component))
    table = Reader(plan, ["text"]).read(rows).to_pylist()
    return [{"file": plan.files[int(plan.file[r])].url, "row": int(plan.row[r]), "text": t["text"]}
            for r, t in zip(rows, table)]


def test_position_and_document_ids_follow_document_starts(tcon: mixsql.Connection) -> None:
    L = 64
    seqs = list(_mix(tcon, 2).sequences(L, limit=200))
    for s in seqs:
        starts = np.flatnonzero(np.diff(s["document_ids"]) != 0) + 1
        assert np.all(s["position_ids"][starts] == 0)  # a new document starts at position 0
        assert np.all(np.diff(s["document_ids"]) >= 0) and s["document_ids"][0] == 0
        inner = np.setdiff1d(np.arange(1, L), starts)
        assert np.all(s["position_ids"][inner] == s["position_ids"][inner - 1] + 1)
        assert np.all(s["input_ids"][starts - 1] == 0)  # each document ends with EOS (id 0)
    # a document running on into the next sequence continues its positions
    assert any(s["position_ids"][0] > 0 for s in seqs)


def test_bos_is_added_before_every_document(tcon: mixsql.Connection) -> None:
    mix = _mix(tcon, 1)
    docs = list(mix.samples(columns=["text"], limit=50))
    stream = list(itertools.chain.from_iterable([0] + ids + [0] for ids in _encode([d["text"] for d in docs])))
    seqs = list(mix.sequences(32, limit=20, bos="<|endoftext|>"))
    assert np.concatenate([s["input_ids"] for s in seqs]).tolist() == stream[: 20 * 32]
    assert mix.packed(32, bos=0).tokens == mix.packed(32).tokens + len(mix)


def _rank_batches(mix: mixsql.api.Mix, L: int, g: int, w: int, workers: int, start: int) -> list[list[tuple]]:
    """Global batches from w ranks (each its own DataLoader), as sorted lists of sequences."""
    per_rank = []
    for r in range(w):
        ds = mix.torch_dataset(batch_size=g // w, rank=r, world_size=w, seq_len=L, start_step=start)
        loader = torch.utils.data.DataLoader(ds, batch_size=g // w, num_workers=workers)
        per_rank.append([b["input_ids"] for b in loader])
    return [sorted(tuple(x.tolist()) for r in range(w) for x in per_rank[r][k]) for k in range(len(per_rank[0]))]


@UNITS
def test_global_batches_are_the_same_for_every_world_size_and_resume_anywhere(tcon: mixsql.Connection,
                                                                              unit: str) -> None:
    mix = _mix(tcon, 4, unit=unit)
    L, g = 64, 8
    ref = [s["input_ids"] for s in mix.sequences(L)]
    batches = len(ref) // g
    expected = [sorted(tuple(x.tolist()) for x in ref[k * g:(k + 1) * g]) for k in range(batches)]
    assert _rank_batches(mix, L, g, 1, 0, 0) == expected
    assert _rank_batches(mix, L, g, 2, 2, 0) == expected
    rng = random.Random(5)
    for _ in range(3):
        w, start = rng.choice([1, 2, 4, 8]), rng.randrange(batches)
        assert _rank_batches(mix, L, g, w, 0, start) == expected[start:]


def test_state_resumes_the_packed_stream_and_refuses_another_seq_len(tcon: mixsql.Connection) -> None:
    mix = _mix(tcon, 2)
    ds = mix.torch_dataset(batch_size=4, seq_len=64)
    it = iter(ds)
    seen = [next(it)["input_ids"] for _ in range(4 * 7)]
    state = ds.state_dict()
    assert state["seq_len"] == 64 and state["next"] == 7
    again = mix.torch_dataset(batch_size=4, seq_len=64)
    again.load_state_dict(state)
    rest = [x["input_ids"] for x in again]
    full = [x["input_ids"] for x in mix.torch_dataset(batch_size=4, seq_len=64)]
    assert all(torch.equal(a, b) for a, b in zip(seen + rest, full)) and len(seen + rest) == len(full)
    with pytest.raises(StateError, match="seq len: 64 -> 128"):
        mix.torch_dataset(batch_size=4, seq_len=128).load_state_dict(state)
    with pytest.raises(StateError, match="seq len: None -> 64"):
        mix.torch_dataset(batch_size=4, seq_len=64).load_state_dict(mix.torch_dataset(batch_size=4).state_dict())


def test_seek_is_independent_of_what_comes_before(tcon: mixsql.Connection) -> None:
    mix = _mix(tcon, 4)
    packed = mix.packed(64)
    ref = list(mix.sequences(64))
    from mixsql.read import Reader

    reader = Reader(packed.plan, ["text"])
    for start in (0, 1, 17, len(packed) - 5):
        got = packing.in_order(packed, reader, start, start + 5)
        for i in range(len(got["input_ids"])):
            assert all(np.array_equal(got[k][i], ref[start + i][k]) for k in packing.FIELDS)


def test_refusals(tcon: mixsql.Connection, con: mixsql.Connection, tmp_path) -> None:
    mix = _mix(tcon, 1)
    for bad in (1, 0, -3, 2.5, True, "64"):
        with pytest.raises(MixSQLError, match="seq_len must be an integer"):
            mix.packed(bad)
    other = tokenizers.Tokenizer.from_file(str(TOKENIZER))
    other.add_special_tokens(["<|pad|>"])
    with pytest.raises(tokens.TokenizerError, match="is not the one the data was counted with"):
        mix.packed(64, tokenizer=other)
    with pytest.raises(MixSQLError, match="register it with --tokenizer"):
        _mix(con, 1).packed(64)  # the sample catalog has no token counts
    with pytest.raises(MixSQLError, match="register it with --tokenizer"):
        _mix(con, 1).torch_dataset(seq_len=64)
    assert mix.packed(64, tokenizer=TOKENIZER).sequences == mix.packed(64).sequences


def test_mixed_tokenizers_cannot_pack(tmp_path) -> None:
    con = mixsql.connect(tmp_path / "cat")
    from tests.conftest import PARQUET_GLOB

    other = tokenizers.Tokenizer.from_file(str(TOKENIZER))
    other.add_special_tokens(["<|pad|>"])
    con.register("a", [PARQUET_GLOB], tokenizer=TOKENIZER)
    con.register("b", [PARQUET_GLOB], tokenizer=other)
    mix = con.mix("MIX 0.5 AS x FROM a, 0.5 AS y FROM b")
    with pytest.raises(MixSQLError, match="different tokenizers"):
        mix.packed(64)


def test_explain_shows_the_mixture_in_tokens(tcon: mixsql.Connection, con: mixsql.Connection) -> None:
    mix = _mix(tcon, 1)
    e = mix.explanation()
    for c in e.components:
        n = tcon.sql(f"SELECT sum(n_tokens)::BIGINT AS n FROM ({c.sql})").column("n")[0].as_py()
        assert c.tokens == n > 0 and c.tokens_taken == pytest.approx(c.taken * c.tokens / c.samples)
    text = mix.explain()
    assert "token share (est.)" in text and f"{e.components[0].tokens:,}" in text
    assert "token share" not in _mix(con, 1).explain()  # no token counts: no token table
    assert all(c["tokens"] is None for c in _mix(con, 1).explanation().to_dict()["components"])


def test_packed_lineage_joins_the_documents_properties(tcon: mixsql.Connection) -> None:
    mix = _mix(tcon, 2, unit="TOKENS")
    table = mix.lineage(3, 4, ["domain", "quality"], seq_len=128).to_pylist()
    assert table and all({"domain", "quality", "token_start"} <= set(r) for r in table)
    assert all((r["domain"] == "code") == (r["component"] == "code") for r in table)
    assert all(r["domain"] == "manual" for r in table if r["component"] == "manual")


# -- pack="component": every sequence from one component ------------------------------------------


def _component_reference(mix: mixsql.api.Mix, L: int) -> tuple[list[dict[str, list[int]]], int]:
    """The per-component packing written out from the sample stream, independently of ``packing``:
    each partition's documents (plan positions q, q+P, ...), each component's own packed stream in
    it, its sequences ordered by the stream document holding their last label, partitions
    round-robin; and the tokens dropped."""
    P, names = mix.partitions, mix.components
    docs = list(mix.samples(columns=["text"]))
    ids = _encode([d["text"] for d in docs])
    per_partition, dropped = [], 0
    for q in range(P):
        mine = [(names.index(docs[p]["component"]), ids[p]) for p in range(q, len(docs), P)]
        seqs = []
        for c in range(len(names)):
            stream, owner, position, doc_no = [], [], [], []
            for x, (cc, doc) in enumerate(mine):
                if cc == c:
                    stream += doc + [0]
                    owner += [x] * (len(doc) + 1)
                    position += list(range(len(doc) + 1))
                    doc_no += [x] * (len(doc) + 1)
            n = max(0, (len(stream) - 1) // L)
            dropped += len(stream) - n * L
            for j in range(n):
                d = doc_no[j * L: j * L + L]
                seqs.append(((owner[j * L + L], j), {
                    "input_ids": stream[j * L: j * L + L], "labels": stream[j * L + 1: j * L + L + 1],
                    "position_ids": position[j * L: j * L + L], "component_ids": [c] * L,
                    "document_ids": list(np.cumsum([0] + [int(a != b) for a, b in zip(d, d[1:])]))}))
        per_partition.append([s for _, s in sorted(seqs, key=lambda s: s[0])])
    out = [part[j] for j in range(max(map(len, per_partition), default=0)) for part in per_partition if j < len(part)]
    return out, dropped


@UNITS
@pytest.mark.parametrize("p", [1, 3])
def test_component_packing_matches_an_independent_packer(tcon: mixsql.Connection, p: int, unit: str) -> None:
    mix = _mix(tcon, p, unit=unit)
    L = 80
    expected, dropped = _component_reference(mix, L)
    packed = mix.packed(L, pack="component")
    got = list(mix.sequences(L, pack="component"))
    assert len(got) == len(packed) == len(expected) > 0
    assert packed.dropped_tokens == dropped
    assert int(packed.component_dropped().sum()) == dropped and (packed.component_dropped() < p * (L + 1)).all()
    assert packed.component_sequences.tolist() == [sum(s["component_ids"][0] == c for s in expected)
                                                   for c in range(len(mix.components))]
    for a, b in zip(got, expected):
        assert {k: v.tolist() for k, v in a.items()} == b
    # seeking anywhere gives the same sequences as streaming from the start
    from mixsql.read import Reader

    reader = Reader(packed.plan, ["text"])
    for start in (1, len(packed) // 2, len(packed) - 3):
        part = packing.in_order(packed, reader, start, start + 3)
        assert [part["input_ids"][i].tolist() for i in range(len(part["input_ids"]))] == \
            [s["input_ids"] for s in expected[start: start + 3]]


@pytest.mark.parametrize("p", [1, 4])
def test_component_packing_covers_every_document_once(tcon: mixsql.Connection, p: int) -> None:
    mix = _mix(tcon, p, unit="TOKENS")
    L = 128
    packed = mix.packed(L, pack="component")
    lineage = mix.lineage(0, len(packed), seq_len=L, pack="component").to_pylist()
    texts = {(r["file"], r["row"]): r["text"] for r in _texts(mix)}
    ids = dict(zip(texts, _encode(list(texts.values()))))
    covered: dict[tuple[str, int], list[tuple[int, int]]] = {}
    by_sequence: dict[int, set[str]] = {}
    for r in lineage:
        covered.setdefault((r["file"], r["row"]), []).append((r["token_start"], r["token_stop"]))
        by_sequence.setdefault(r["sequence"], set()).add(r["component"])
    assert all(len(v) == 1 for v in by_sequence.values()) and len(by_sequence) == len(packed)
    tails = 0
    for key, spans in covered.items():
        spans.sort()
        assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # carried over, no gap
        tails += len(ids[key]) + 1 - spans[-1][1]
    untouched = sum(len(ids[k]) + 1 for k in set(texts) - set(covered))
    assert tails + untouched == packed.dropped_tokens


def test_component_packing_serves_ranks_and_resumes(tcon: mixsql.Connection) -> None:
    mix = _mix(tcon, 4, unit="TOKENS")
    L, g = 64, 8
    ref = [s["input_ids"] for s in mix.sequences(L, pack="component")]
    batches = len(ref) // g
    expected = [sorted(tuple(x.tolist()) for x in ref[k * g:(k + 1) * g]) for k in range(batches)]

    def run(w: int, workers: int, start: int) -> list[list[tuple]]:
        per_rank = []
        for r in range(w):
            ds = mix.torch_dataset(batch_size=g // w, rank=r, world_size=w, seq_len=L, start_step=start,
                                   pack="component", batched=True)
            per_rank.append([b["input_ids"] for b in torch.utils.data.DataLoader(ds, batch_size=None,
                                                                                 num_workers=workers)])
        return [sorted(tuple(x.tolist()) for r in range(w) for x in per_rank[r][k]) for k in range(len(per_rank[0]))]

    assert run(1, 0, 0) == expected
    assert run(2, 2, 0) == expected
    assert run(8, 0, batches - 3) == expected[batches - 3:]
    state = mix.torch_dataset(batch_size=g, seq_len=L, pack="component").state_dict()
    assert state["pack"] == "component"
    with pytest.raises(StateError, match="pack: mixed -> component"):
        mix.torch_dataset(batch_size=g, seq_len=L, pack="component").load_state_dict(
            mix.torch_dataset(batch_size=g, seq_len=L).state_dict())
    with pytest.raises(MixSQLError, match="pack must be one of"):
        mix.packed(L, pack="domain")
    text = mix.explain(L, pack="component")
    assert "packed (component)" in text and all(f"{n:,}" in text for n in mix.packed(L, pack="component")
                                                 .component_sequences.tolist())


def test_component_packing_is_prefix_stable(tcon: mixsql.Connection) -> None:
    """A larger token budget only appends sequences (one partition: the global order is the partition's)."""
    small, large = (tcon.mix("MIX BY TOKENS 0.5 AS code WHERE domain = 'code', 0.5 AS rest WHERE TRUE FROM corpus "
                             f"SEED 1 PARTITIONS 1 LIMIT {n} TOKENS") for n in (20000, 60000))
    a = [s["input_ids"].tolist() for s in small.sequences(100, pack="component")]
    b = [s["input_ids"].tolist() for s in large.sequences(100, pack="component")]
    assert len(b) > len(a) > 0 and b[: len(a)] == a


@pytest.mark.parametrize("batched", [True, False])
def test_reused_output_memory_never_overwrites_a_batch_still_held(tcon: mixsql.Connection, monkeypatch,
                                                                   batched: bool) -> None:
    from mixsql import dataset

    monkeypatch.setattr(dataset, "READ_TOKENS", 4 * 64)  # many reads of 4 sequences each
    mix = tcon.mix(MIX.format(p=3, dataset="corpus", by="") + " LIMIT 600 SAMPLES")  # ~400 reads, KEPT_BLOCKS 3
    L = 64
    ref = [s["input_ids"].tolist() for s in mix.sequences(L)]

    def stream(keep: bool) -> tuple[list[list[int]], set[int]]:
        ds = mix.torch_dataset(batch_size=2, rank=0, world_size=1, seq_len=L, batched=batched)
        loader = torch.utils.data.DataLoader(ds, batch_size=None if batched else 2)
        held, seen, storages = [], [], set()
        for batch in loader:
            storages.add(batch["input_ids"].untyped_storage().data_ptr())
            if keep:
                held.append(batch)  # the consumer keeps every batch: none may be written again
            else:
                seen += batch["input_ids"].tolist()  # copied out, the batch dropped: its memory is reused
        if keep:
            seen = [x for b in held for x in b["input_ids"].tolist()]
        return seen, storages

    kept, fresh = stream(True)
    batches = len(ref) // 2
    assert [sorted(kept[2 * k: 2 * k + 2]) for k in range(batches)] == \
        [sorted(ref[2 * k: 2 * k + 2]) for k in range(batches)] and len(kept) == 2 * batches
    dropped, reused = stream(False)
    assert dropped == kept
    if batched:  # the batches are views of the read's block: a few blocks serve every read
        assert len(reused) <= packing.KEPT_BLOCKS < len(fresh)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=200), st.data())
def test_the_search_from_a_guess_finds_what_the_plain_search_finds(steps: list[int], data: st.DataObject) -> None:
    """``_last_at_most`` galloping out from any guess (a merged stream's positions are computed, so
    its probes should stay near the answer) agrees with the plain binary search."""
    from mixsql.packing import _last_at_most

    starts = np.concatenate(([0], np.cumsum(steps[1:], dtype=np.int64)))  # start(0) = 0, non-decreasing
    n = len(starts)
    tokens = np.asarray(data.draw(st.lists(st.integers(0, int(starts[-1]) + 60), min_size=1, max_size=8)))
    guesses = np.asarray(data.draw(st.lists(st.integers(-5, n + 5), min_size=len(tokens), max_size=len(tokens))))
    plain = _last_at_most(lambda m: starts[m], n, tokens)
    assert plain.tolist() == [int(np.searchsorted(starts, x, side="right")) - 1 for x in tokens.tolist()]
    assert _last_at_most(lambda m: starts[m], n, tokens, guesses).tolist() == plain.tolist()
