"""Packed-sequence throughput: tokens/s of ``torch_dataset(seq_len=2048)`` against a hand-written
baseline doing the same work in one process (pyarrow read of the same documents in stream order,
``encode_batch``, numpy concatenation with EOS into sequences of L + 1 tokens); the same stream from
stored token ids (``con.tokenize``), per-component packing, what torch's DataLoader costs by itself
with 2 workers (the floor for those arms), the time to the first batch, and a stored
``list<uint16>`` column served by ``Mix.samples`` against a plain pyarrow read of that column.

Arms run interleaved, 5 repetitions, medians and spread (max - min over median); read the ratios.

    python bench/packing.py [--docs 48000] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import gen_corpus  # noqa: E402

import mixsql  # noqa: E402
from mixsql import tokens  # noqa: E402

DATA = ROOT / "bench_data" / "packing"
TOKENIZER = ROOT / "sample_data" / "tokenizer.json"
L = 2048
STATEMENT = "MIX 0.5 AS web WHERE domain = 'web', 0.3 AS code WHERE domain = 'code', 0.2 AS rest FROM bench " \
            "PARTITIONS 4"


def ensure(docs: int) -> mixsql.Mix:
    corpus = DATA / f"corpus-{docs}"
    if not corpus.exists():
        gen_corpus.corpus(corpus, docs, 8, 1024)
        for path in corpus.glob("*.parquet"):  # its n_tokens is synthetic: registration counts the real ones
            pq.write_table(pq.read_table(path).drop(["n_tokens"]), path, row_group_size=1024, compression="zstd")
    con = mixsql.connect(DATA / f"catalog-{docs}")
    if "bench" not in con.datasets():
        t = time.perf_counter()
        con.register("bench", [str(corpus)], tokenizer=TOKENIZER)
        print(f"registered and tokenized {docs:,} documents in {time.perf_counter() - t:.1f} s", flush=True)
    return con.mix(STATEMENT)


def ensure_ids(docs: int) -> mixsql.Mix:
    """The same corpus in another catalog, tokenized once into shards of token ids."""
    con = mixsql.connect(DATA / f"catalog-{docs}-ids")
    if "bench" not in con.datasets():
        con.register("bench", [str(DATA / f"corpus-{docs}")], tokenizer=TOKENIZER)
        t = time.perf_counter()
        shards = DATA / f"shards-{docs}"
        import shutil

        shutil.rmtree(shards, ignore_errors=True)
        con.tokenize("bench", TOKENIZER, shards)
        print(f"tokenized {docs:,} documents into {shards} in {time.perf_counter() - t:.1f} s", flush=True)
    return con.mix(STATEMENT)


def arm_column(mix: mixsql.Mix) -> float:
    """The stored ids as samples: NumPy arrays per sample."""
    return float(sum(len(s["token_ids"]) for s in mix.samples(columns=["token_ids"])))


def arm_column_pyarrow(plan: mixsql.CompiledPlan) -> float:
    """The same column read by plain pyarrow, file by file, flattened to NumPy."""
    n = 0
    for f in plan.files:
        column = pq.read_table(f.url.removeprefix("file://"), columns=["token_ids"]).column(0).combine_chunks()
        n += len(np.asarray(column.flatten()))
    return float(n)


FIRST: dict[str, list[float]] = {}  # seconds to the first batch (a cold start), per arm


def arm_mixsql(mix: mixsql.Mix, workers: int, batched: bool = False, pack: str = "mixed", name: str = "") -> float:
    t = time.perf_counter()
    ds = mix.torch_dataset(seq_len=L, batch_size=8, world_size=1, rank=0, batched=batched, pack=pack)
    loader = torch.utils.data.DataLoader(ds, batch_size=None if batched else 8, num_workers=workers)
    n = 0
    for batch in loader:
        if not n:
            FIRST.setdefault(name, []).append(time.perf_counter() - t)
        n += batch["input_ids"].numel()
    return n


class _Floor(torch.utils.data.IterableDataset):
    """What torch's DataLoader costs by itself: ready (8, L) int64 batches of five fields, each batch
    built and handed over as ``batched=True`` does, nothing read or packed."""

    def __init__(self, batches: int) -> None:
        self.batches = batches

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        for _ in range(start, self.batches, step):
            block = torch.zeros((5, 8, L), dtype=torch.int64)
            yield dict(zip(("input_ids", "labels", "position_ids", "document_ids", "component_ids"), block.unbind(0)))


def arm_floor(batches: int, workers: int) -> float:
    n = 0
    for batch in torch.utils.data.DataLoader(_Floor(batches), batch_size=None, num_workers=workers):
        n += batch["input_ids"].numel()
    return n


def arm_baseline(plan: mixsql.CompiledPlan, tok: tokens.Tokenizer, eos: int) -> float:
    """The same documents, per partition in stream order, read, tokenized and packed by hand."""
    texts: dict[int, list[str]] = {}
    n = 0
    for q in range(plan.partitions):
        rows = plan.partition_rows(q, 0, plan.partition_length(q))
        files = plan.file[rows]
        out = []
        for f in np.unique(files).tolist():
            if f not in texts:
                texts[f] = pq.read_table(plan.files[f].url.removeprefix("file://"), columns=["text"]) \
                    .column("text").to_pylist()
        docs = [texts[f][r] for f, r in zip(files.tolist(), plan.row[rows].tolist())]
        encoded = tok.tokenizer.encode_batch_fast(docs, add_special_tokens=False)
        for e in encoded:
            out.append(np.asarray(e.ids, dtype=np.int64))
            out.append(np.asarray([eos], dtype=np.int64))
        stream = np.concatenate(out)
        s = (len(stream) - 1) // L
        inputs = stream[: s * L].reshape(s, L)
        labels = stream[1: s * L + 1].reshape(s, L)
        assert labels.shape == inputs.shape  # built as the dataset builds them, then counted once
        n += inputs.size
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=48_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    mix = ensure(args.docs)
    ids = ensure_ids(args.docs)
    plan = mix.plan()
    packed = mix.packed(L)
    tok = packed.tokenizer
    ids_plan = ids.plan()
    full = ids._connection.mix("MIX 1 AS all_docs FROM bench")  # every sample once: the column arms
    full_plan = full.plan()
    batches = len(packed) // 8
    arms = {"baseline": lambda: arm_baseline(plan, tok, packed.eos),
            "mixsql-0": lambda: arm_mixsql(mix, 0, name="mixsql-0"),
            "mixsql-2": lambda: arm_mixsql(mix, 2, name="mixsql-2"),
            "mixsql-0-batched": lambda: arm_mixsql(mix, 0, True, name="mixsql-0-batched"),
            "stored-0": lambda: arm_mixsql(ids, 0, name="stored-0"),
            "stored-2": lambda: arm_mixsql(ids, 2, name="stored-2"),
            "mixsql-2-batched": lambda: arm_mixsql(mix, 2, True, name="mixsql-2-batched"),
            "stored-0-batched": lambda: arm_mixsql(ids, 0, True, name="stored-0-batched"),
            "stored-2-batched": lambda: arm_mixsql(ids, 2, True, name="stored-2-batched"),
            "stored-0-component": lambda: arm_mixsql(ids, 0, True, "component", name="stored-0-component"),
            "floor-2": lambda: arm_floor(batches, 2)}
    # the two column arms are short (well under a second): a loop of their own, twice the repetitions,
    # so that a neighbour arm's DataLoader workers winding down do not land in one of them only
    columns = {"column-pyarrow": lambda: arm_column_pyarrow(full_plan), "column-samples": lambda: arm_column(full)}
    times: dict[str, list[float]] = {k: [] for k in [*arms, *columns]}
    tokens_done: dict[str, float] = {}
    for group, reps in ((arms, args.reps), (columns, 2 * args.reps)):
        for _ in range(reps):
            for name, arm in group.items():
                t = time.perf_counter()
                tokens_done[name] = arm()
                times[name].append(time.perf_counter() - t)
    arms = {**arms, **columns}
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: tokens_done[k] / med[k] for k in arms}
    result = {"seq_len": L, "sequences": len(packed), "tokens": packed.tokens, "dropped_tokens": packed.dropped_tokens,
              "tokens_per_s": rate, "spread": {k: (max(v) - min(v)) / med[k] for k, v in times.items()},
              "ratio_vs_baseline": {k: rate[k] / rate["baseline"] for k in arms
                                    if not k.startswith(("baseline", "column", "floor"))},
              "ratio_vs_dataloader_floor_2_workers": {k: rate[k] / rate["floor-2"] for k in arms if k.endswith("-2")
                                                      or k.endswith("-2-batched")},
              "first_batch_s": {k: statistics.median(v) for k, v in FIRST.items()},
              "stored_vs_on_the_fly": {w: rate[f"stored-{w}"] / rate[f"mixsql-{w}"]
                                       for w in ("0", "2", "0-batched", "2-batched") if f"mixsql-{w}" in rate},
              "component_vs_mixed_stored_0": rate["stored-0-component"] / rate["stored-0-batched"],
              "column_samples_vs_pyarrow": rate["column-samples"] / rate["column-pyarrow"],
              "same_stream": len(ids.packed(L)) == len(packed) and ids_plan.samples == plan.samples,
              "engine_us_per_sequence": (med["mixsql-0"] / (tokens_done["mixsql-0"] / L)
                                         - med["baseline"] / (tokens_done["baseline"] / L)) * 1e6}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
