"""Speed of the read path (`make bench`, section (i) of BENCHMARKS.md): the cases users hit.

Every arm counts the samples and text bytes it delivered and the row groups it decoded, and the
run fails if two arms that must deliver the same data do not. Arms run interleaved, at least 5
times; medians and spread ((max - min) / median) are reported.

- Decodes against the minimum (the distinct row groups the stream's samples lie in) for streams of
  1%, 10% and 100% of the corpus, for a full-coverage mixture (weights follow the components' sizes)
  and a selective one.
- `Mix.samples(columns=['text'])`: full coverage against `pyarrow.parquet.read_table(files).to_pylist()`,
  selective (whole stream and 1% of the corpus) against an oracle decoding exactly the row groups the
  stream touches, each once, on every core, then taking the stream's rows; engine overhead per sample.
- The torch DataLoader (`batched=True`) with 0 and 2 workers, the row groups each worker decoded,
  and torch's DataLoader alone handing over the same batches of text (nothing read): the floor.
- A fresh process: time to the first sample (`Mix.samples`) and to the first batch (DataLoader, 0 and
  2 workers, fork and spawn), and each worker's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch.utils.data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mixsql  # noqa: E402
from bench.report import splice  # noqa: E402
from bench.run import DATA, ensure_corpus, ensure_jsonl, touched  # noqa: E402
from mixsql.dataset import MixDataset, batch_as_is  # noqa: E402

FULL = """MIX NATURAL web WHERE domain = 'web', code WHERE domain = 'code',
    rest WHERE domain NOT IN ('web', 'code')
FROM bench CHUNK SIZE 1024{limit}"""
SELECTIVE = """MIX 0.3 AS code WHERE domain = 'code',
    0.5 AS web  WHERE domain = 'web' AND quality > 0.6,
    0.2 AS ref  WHERE domain IN ('books', 'arxiv', 'wiki')
FROM bench CHUNK SIZE 1024{limit}"""
BATCH = 32


class Mismatch(AssertionError):
    """Two arms that must deliver the same data did not."""


def _limit(n: int | None) -> str:
    return "" if n is None else f"\nLIMIT {n} SAMPLES"


# -- arms ---------------------------------------------------------------------------------------


def arm_samples(mix: mixsql.Mix) -> dict:
    n = chars = 0
    t = time.perf_counter()
    for s in mix.samples(columns=["text"]):
        chars += len(s["text"])
        n += 1
    return {"seconds": time.perf_counter() - t, "samples": n, "chars": chars}


def arm_read_table(paths: list[Path]) -> dict:
    t = time.perf_counter()
    n = chars = 0
    for record in pq.read_table(paths, columns=["text"]).to_pylist():
        chars += len(record["text"])
        n += 1
    return {"seconds": time.perf_counter() - t, "samples": n, "chars": chars}


def arm_read_batches(paths: list[Path]) -> dict:
    """The same read, made into dicts batch by batch (nothing held: no garbage collector passes over
    420k live dicts), the stronger baseline."""
    t = time.perf_counter()
    n = chars = 0
    for batch in pq.read_table(paths, columns=["text"]).to_batches(max_chunksize=4096):
        for record in batch.to_pylist():
            chars += len(record["text"])
            n += 1
    return {"seconds": time.perf_counter() - t, "samples": n, "chars": chars}


def arm_oracle(plan: mixsql.CompiledPlan, needed: dict[tuple[int, int], np.ndarray]) -> dict:
    """The touched row groups, each decoded once (one pyarrow.dataset call per 64, every core), the
    stream's rows taken from each, as dicts."""
    t = time.perf_counter()
    n = chars = 0
    fmt, local = pads.ParquetFileFormat(), pa.fs.LocalFileSystem()
    keys = list(needed)
    for at in range(0, len(keys), 64):
        part = keys[at: at + 64]
        frags = [fmt.make_fragment(plan.files[f].url.removeprefix("file://"), local, row_groups=[g]) for f, g in part]
        table = pads.FileSystemDataset(frags, frags[0].physical_schema, fmt, local).to_table(columns=["text"])
        start = 0
        for f, g in part:
            size = plan.files[f].row_groups[g]
            for record in table.slice(start, size).take(pa.array(needed[(f, g)])).to_pylist():
                chars += len(record["text"])
                n += 1
            start += size
    return {"seconds": time.perf_counter() - t, "samples": n, "chars": chars, "row_groups": len(needed)}


def _worker_stats(path: Path) -> None:
    """In this process and its forked workers: each worker's reader writes its decode counts at its end."""
    from mixsql import read

    made: list = []
    init = read.Reader.__init__
    original = MixDataset._samples

    def tracking(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        init(self, *args, **kwargs)
        made[:] = [self]  # the latest only: every reader kept would grow this process (and what workers fork)

    def samples(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        yield from original(self, *args, **kwargs)
        reader = made[-1]
        shared = reader.shared
        with open(path, "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "row_groups": reader.stats.row_groups,
                                 "decoded": shared.decoded if shared else reader.stats.row_groups,
                                 "mapped": shared.mapped if shared else 0}) + "\n")

    read.Reader.__init__ = tracking
    MixDataset._samples = samples


def arm_torch(mix: mixsql.Mix, workers: int, stats: Path) -> dict:
    """Every batch of ``mix`` through a DataLoader of ``workers``; each repetition from a cold start:
    the row groups DataLoader workers of this process decoded before (``mixsql.shared``, kept for
    as long as the process lives) are removed first, so none is served from an earlier repetition."""
    from mixsql import shared

    if shared._mine is not None:
        shutil.rmtree(shared._mine[1], ignore_errors=True)
    stats.unlink(missing_ok=True)
    ds = mix.torch_dataset(batch_size=BATCH, columns=["text"], batched=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=batch_as_is)
    n = chars = 0
    t = time.perf_counter()
    for batch in loader:
        n += len(batch["text"])
        chars += sum(len(x) for x in batch["text"])
    seconds = time.perf_counter() - t
    per_worker = [json.loads(line) for line in stats.read_text().splitlines()] if stats.exists() else []
    return {"seconds": seconds, "samples": n, "chars": chars,
            "decoded": [w["decoded"] for w in per_worker], "mapped": [w["mapped"] for w in per_worker]}


class _Floor(torch.utils.data.IterableDataset):
    """Ready batches of distinct texts of the stream's sizes: what torch's DataLoader alone costs
    (``empty``: as many batches, each an int: its cost per batch alone)."""

    def __init__(self, sizes: list[int], empty: bool = False) -> None:
        self.sizes, self.empty = sizes, empty

    def __iter__(self):  # type: ignore[no-untyped-def]
        info = torch.utils.data.get_worker_info()
        w, n = (0, 1) if info is None else (info.id, info.num_workers)
        base = "abcdefghij" * 500
        for b in range(w, len(self.sizes) // BATCH, n):
            if self.empty:
                yield {"text": [b] * BATCH}
                continue
            texts = [f"{b}-{k}" + base[: self.sizes[b * BATCH + k]] for k in range(BATCH)]
            yield {"text": texts, "component": ["web"] * BATCH}


def arm_floor(sizes: list[int], workers: int, empty: bool = False) -> dict:
    loader = torch.utils.data.DataLoader(_Floor(sizes, empty), batch_size=None, num_workers=workers,
                                         collate_fn=batch_as_is)
    n = 0
    t = time.perf_counter()
    for batch in loader:
        n += len(batch["text"])
    return {"seconds": time.perf_counter() - t, "samples": n}


FIRST_CHILD = r"""
import json, os, sys, time
import torch.utils.data
kind, workers, context = sys.argv[3], int(sys.argv[4]), sys.argv[5]
if kind != "bare":  # torch alone imports nothing of mixsql
    import mixsql, mixsql.api
    from mixsql.dataset import batch_as_is
t0 = time.perf_counter()
mix = None if kind == "bare" else mixsql.connect(sys.argv[1], create=False).mix(sys.argv[2])
if kind == "samples":
    next(iter(mix.samples(columns=["text"])))
    print(json.dumps({"first_s": time.perf_counter() - t0}))
    sys.exit(0)
kw = {} if workers == 0 else {"multiprocessing_context": context}
if kind == "bare":  # torch's own worker: a DataLoader over range(), what any worker costs before mixsql
    loader = torch.utils.data.DataLoader(range(1 << 20), batch_size=32, num_workers=workers, **kw)
else:
    ds = mix.torch_dataset(batch_size=32, columns=["text"], batched=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=batch_as_is, **kw)
it = iter(loader)
next(it)
first = time.perf_counter() - t0
rss, private = [], []
for _ in range(int(sys.argv[6])):  # run the workers into their steady state (read-ahead full), then
    next(it)                       # read their peak RSS and what is theirs alone
for pid in getattr(it, "_workers", []):
    with open(f"/proc/{pid.pid}/status") as fh:
        rss += [int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM")]
    with open(f"/proc/{pid.pid}/smaps_rollup") as fh:  # pages no other process maps (USS)
        private.append(sum(int(line.split()[1]) for line in fh if line.startswith("Private_")) / 1024)
print(json.dumps({"first_s": first, "worker_rss_mb": rss, "worker_private_mb": private}))
"""


def first_sample(cat: Path, statement: str, kind: str, workers: int = 0, context: str = "fork",
                 batches: int = 400) -> dict:
    """A fresh process: the first sample or batch, and with workers their memory after ``batches`` more."""
    proc = subprocess.run([sys.executable, "-c", FIRST_CHILD, str(cat), statement, kind, str(workers), context,
                           str(batches)], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the run ------------------------------------------------------------------------------------


def fresh_cache(con: mixsql.Connection, statement: str, compression: str | None = None
                ) -> tuple[mixsql.Mix, t.Any, float]:
    """The statement's mixture reading its compacted cache of the text, the cache, and the seconds
    its build took: one found from an earlier run is removed and built again, to time the build."""
    for attempt in range(2):
        mix = con.mix(statement)
        began, t0 = time.time(), time.perf_counter()
        built = mix.cache(["text"], compression=compression)
        seconds = time.perf_counter() - t0
        if (built.directory / "cache.json").stat().st_mtime >= began or attempt:
            break
        shutil.rmtree(built.directory)
    return mix, built, seconds


def _summary(runs: list[dict]) -> dict:
    seconds = [r["seconds"] for r in runs]
    med = statistics.median(seconds)
    return {"seconds": med, "spread": (max(seconds) - min(seconds)) / med, "samples": runs[0]["samples"],
            "docs_per_s": runs[0]["samples"] / med, "chars": runs[0].get("chars")}


def _same(a: dict, b: dict, what: str) -> None:
    if (a["samples"], a.get("chars")) != (b["samples"], b.get("chars")):
        raise Mismatch(f"{what}: {a['samples']:,} samples / {a.get('chars')} chars against "
                       f"{b['samples']:,} / {b.get('chars')}")


def decodes(con: mixsql.Connection, corpus: int) -> dict:
    """Row groups decoded / the minimum, for stream lengths of 1%, 10% and 100% of the corpus."""
    from mixsql.read import Reader

    out: dict = {}
    for name, text in (("full", FULL), ("selective", SELECTIVE)):
        for share in (0.01, 0.1, 1.0):
            mix = con.mix(text.format(limit=_limit(None if share == 1.0 else int(corpus * share))))
            plan = mix.plan()
            rows = plan.positions_rows(0, len(plan))
            reader = Reader(plan, ["text"])
            for start in range(0, len(plan), 4096):
                reader.samples(plan.positions_rows(start, min(start + 4096, len(plan))))
            minimum = len(touched(plan, rows))
            out[f"{name} {share:.0%}"] = {"samples": len(plan), "minimum": minimum, "decoded": reader.stats.row_groups,
                                          "ratio": reader.stats.row_groups / minimum}
            print(f"  decodes {name} {share:.0%}: {out[f'{name} {share:.0%}']}", flush=True)
    return out


def _verdict(value: float, target: float, at_least: bool) -> str:
    met = value >= target if at_least else value <= target
    return "met" if met else "**not met**"


def section(r: dict) -> str:
    """Section (i) of BENCHMARKS.md from the results."""
    q, arms, first = r["ratios"], r["arms"], r["first"]
    lines = [
        "## (i) Speed of the read path (`bench/speed.py`)",
        "",
        f"The bench corpus ({r['corpus']:,} documents, {r['row_groups']:,} row groups of 1,024), {r['cores']} cores,"
        f" {r['reps']} interleaved repetitions, medians; spread = (max - min) / median. A full-coverage mixture (NATURAL"
        " over three components that cover the corpus) and the selective one of (a). Every arm counts what it "
        "delivered; arms that must deliver the same samples and bytes are checked to (the run fails otherwise).",
        "",
        "**Row groups decoded against the minimum** (the distinct row groups the stream's samples lie in):",
        "",
        "| stream | samples | minimum | decoded | ratio |",
        "|---|---|---|---|---|",
        *[f"| {k} | {v['samples']:,} | {v['minimum']:,} | {v['decoded']:,} | **{v['ratio']:.2f}** |"
          for k, v in r["decodes"].items()],
        "",
        f"Target ≤ 1.1 at every length: {_verdict(max(v['ratio'] for v in r['decodes'].values()), 1.1, False)}.",
        "",
        "| arm | median s | spread | docs/s |",
        "|---|---|---|---|",
        *[f"| {k} | {v['seconds']:.2f} | {v['spread']:.0%} | {v['docs_per_s']:,.0f} |" for k, v in arms.items()],
        "",
        "| measure | value | target | status |",
        "|---|---|---|---|",
        f"| full coverage: `Mix.samples` / `read_table(files).to_pylist()` | {q['full_over_read_table']:.2f} | ≥ 0.9 "
        f"| {_verdict(q['full_over_read_table'], 0.9, True)} |",
        f"| full coverage: `Mix.samples` / `read_table` made into dicts batch by batch | {q['full_over_read_batches']:.2f}"
        f" | (≥ 0.9) | {_verdict(q['full_over_read_batches'], 0.9, True)} |",
        f"| selective: `Mix.samples` / oracle | {q['selective_over_oracle']:.2f} | ≥ 0.9 | "
        f"{_verdict(q['selective_over_oracle'], 0.9, True)} |",
        f"| selective, 1 % of the corpus: `Mix.samples` / oracle | {q['short_over_oracle']:.2f} | (≥ 0.9) | "
        f"{_verdict(q['short_over_oracle'], 0.9, True)} |",
        f"| engine overhead (selective, total time minus the oracle's) | {q['engine_us_per_sample']:.1f} µs/sample | "
        f"≤ 2 | {_verdict(q['engine_us_per_sample'], 2, False)} |",
        f"| row groups decoded by 2 DataLoader workers together / by 0 workers | {q['worker_decodes_over_zero']:.2f} | "
        f"≤ 1.1 | {_verdict(q['worker_decodes_over_zero'], 1.1, False)} |",
        f"| DataLoader docs/s, 2 workers / 0 workers, selective (the issue's case) | "
        f"{q['two_over_zero_workers_selective']:.2f} | ≥ 1.5 | {_verdict(q['two_over_zero_workers_selective'], 1.5, True)} |",
        f"| DataLoader docs/s, 2 workers / 0 workers, full coverage | {q['two_over_zero_workers']:.2f} | ≥ 1.5 | "
        f"{_verdict(q['two_over_zero_workers'], 1.5, True)} |",
        f"| DataLoader docs/s, 2 workers / torch's DataLoader alone with 2 workers | {q['two_workers_over_floor']:.2f} "
        "| (≤ 1 by definition) | |",
        f"| torch's DataLoader alone, 2 workers handing over empty batches / mixsql with 0 workers (s) | "
        f"{arms['floor: DataLoader alone, empty batches, 2 workers']['seconds']:.2f} / "
        f"{arms['full: DataLoader, 0 workers']['seconds']:.2f} | | the hand-off alone |",
        f"| first sample, `Mix.samples` / first batch, DataLoader 0 workers (s) | {first['Mix.samples']['first_s']:.2f}"
        f" / {first['DataLoader, 0 workers']['first_s']:.2f} | as fast | "
        f"{_verdict(first['Mix.samples']['first_s'], 1.15 * first['DataLoader, 0 workers']['first_s'], False)} |",
        f"| worker start-up to the first batch, fork / spawn (s) | {first['DataLoader, 2 workers (fork)']['first_s']:.2f}"
        f" / {first['DataLoader, 2 workers (spawn)']['first_s']:.2f} | ≤ 0.5 | "
        f"{_verdict(first['DataLoader, 2 workers (spawn)']['first_s'], 0.5, False)} (spawn) |",
        f"| the same for torch alone (a DataLoader over `range()`), fork / spawn (s) | "
        f"{first['torch alone, 2 workers (fork)']['first_s']:.2f} / "
        f"{first['torch alone, 2 workers (spawn)']['first_s']:.2f} | | the floor |",
        f"| a worker's peak RSS over its first 400 batches (its read-ahead full), fork / spawn (MB) | {first['DataLoader, 2 workers (fork)']['worker_rss_mb']:.0f} / "
        f"{first['DataLoader, 2 workers (spawn)']['worker_rss_mb']:.0f} | ≤ 150 | "
        f"{_verdict(first['DataLoader, 2 workers (spawn)']['worker_rss_mb'], 150, False)} |",
        f"| the same for torch alone, fork / spawn (MB) | {first['torch alone, 2 workers (fork)']['worker_rss_mb']:.0f} / "
        f"{first['torch alone, 2 workers (spawn)']['worker_rss_mb']:.0f} | | the floor |",
        f"| a worker's own memory (pages no other process maps), fork / spawn (MB) | "
        f"{first['DataLoader, 2 workers (fork)']['worker_private_mb']:.0f} / "
        f"{first['DataLoader, 2 workers (spawn)']['worker_private_mb']:.0f} | | what a worker adds |",
        f"| the same for torch alone, fork / spawn (MB) | {first['torch alone, 2 workers (fork)']['worker_private_mb']:.0f}"
        f" / {first['torch alone, 2 workers (spawn)']['worker_private_mb']:.0f} | | the floor |",
        f"| a worker's peak RSS / own memory over {first['long']['batches']:,} batches, nearly the whole full-coverage "
        f"stream (fork, MB) | {first['long']['worker_rss_mb']:.0f} / {first['long']['worker_private_mb']:.0f} | | "
        "a long run: a worker keeps a block while its reads ahead need it, then maps it back from the workers' shared blocks (512 MiB for all) if read again |",
        "",
        f"Per worker (2 workers): decoded {r['workers']['decoded_2']} row groups, mapped {r['workers']['mapped_2']} "
        f"decoded by the other; 0 workers: {r['workers']['decoded_0']}.",
        "",
        "**The compacted cache** (`mix.cache(['text'])`: the components' samples, the text column only, in "
        f"uncompressed Arrow IPC shards read in place; the source corpus is {r['source_bytes'] / 1e6:,.0f} MB of zstd Parquet, every column):",
        "",
        "| statement | samples cached | built in s | MB on disk | `Mix.samples` cached / from the sources |",
        "|---|---|---|---|---|",
        *[f"| {k} | {v['samples']:,} | {v['seconds']:.1f} | {v['bytes'] / 1e6:,.0f} | "
          f"**{q[k + '_cached_over_source']:.2f}** |" for k, v in r["compact"].items()],
        "",
        f"Full coverage from the cache / `read_table(files).to_pylist()`: **{q['full_cached_over_read_table']:.2f}**. "
        "The peers (LitData, HF, MosaicML) against the cache: section (j).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DATA / "speed.json")
    parser.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md", help="section (i) goes here")
    args = parser.parse_args()
    con = ensure_corpus()
    paths = sorted((DATA / "corpus").glob("*.parquet"))
    corpus = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
    stats = DATA / "speed-workers.jsonl"
    _worker_stats(stats)
    results: dict = {"reps": args.reps, "cores": os.cpu_count(), "corpus": corpus,
                     "row_groups": sum(pq.ParquetFile(p).num_row_groups for p in paths)}
    results["decodes"] = decodes(con, corpus)

    full = con.mix(FULL.format(limit=""))
    selective = con.mix(SELECTIVE.format(limit=""))
    short = con.mix(SELECTIVE.format(limit=_limit(corpus // 100)))
    oracles = {}
    for name, mix in (("selective", selective), ("short", short)):
        plan = mix.plan()
        rows = plan.positions_rows(0, len(plan))
        oracles[name] = (plan, touched(plan, rows))
    sizes = [len(s["text"]) for s in full.samples(columns=["text"])]
    cached = {}
    for name, statement in (("full", FULL.format(limit="")), ("selective", SELECTIVE.format(limit=""))):
        mix, built, seconds = fresh_cache(con, statement)
        cached[name] = mix
        results.setdefault("compact", {})[name] = {"seconds": seconds, "bytes": built.bytes,
                                                   "samples": built.meta["samples"]}
        print(f"  compacted cache ({name}): {results['compact'][name]}", flush=True)
    if "bench_jsonl" not in con.datasets():  # the same corpus as JSONL: its cache parses no JSON when read
        con.register("bench_jsonl", [str(ensure_jsonl() / "*.jsonl")])
    jsonl_statement = SELECTIVE.format(limit="").replace("FROM bench", "FROM bench_jsonl")
    jsonl = con.mix(jsonl_statement)
    cached["jsonl"], built, seconds = fresh_cache(con, jsonl_statement)
    results["compact"]["selective, from JSONL"] = {"seconds": seconds, "bytes": built.bytes,
                                                   "samples": built.meta["samples"]}
    results["source_bytes"] = sum(p.stat().st_size for p in paths)
    arms = {
        "full: Mix.samples": lambda: arm_samples(full),
        "full: read_table": lambda: arm_read_table(paths),
        "full: read_table, batch by batch": lambda: arm_read_batches(paths),
        "full: Mix.samples, compacted cache": lambda: arm_samples(cached["full"]),
        "selective: Mix.samples": lambda: arm_samples(selective),
        "selective: Mix.samples, compacted cache": lambda: arm_samples(cached["selective"]),
        "selective: oracle": lambda: arm_oracle(*oracles["selective"]),
        "selective, from JSONL: Mix.samples": lambda: arm_samples(jsonl),
        "selective, from JSONL: Mix.samples, compacted cache": lambda: arm_samples(cached["jsonl"]),
        "short: Mix.samples": lambda: arm_samples(short),
        "short: oracle": lambda: arm_oracle(*oracles["short"]),
        "full: DataLoader, 0 workers": lambda: arm_torch(full, 0, stats),
        "full: DataLoader, 2 workers": lambda: arm_torch(full, 2, stats),
        "selective: DataLoader, 0 workers": lambda: arm_torch(selective, 0, stats),
        "selective: DataLoader, 2 workers": lambda: arm_torch(selective, 2, stats),
        "floor: DataLoader alone, 0 workers": lambda: arm_floor(sizes, 0),
        "floor: DataLoader alone, 2 workers": lambda: arm_floor(sizes, 2),
        "floor: DataLoader alone, empty batches, 2 workers": lambda: arm_floor(sizes, 2, empty=True),
    }
    runs: dict[str, list[dict]] = {k: [] for k in arms}
    for rep in range(args.reps):
        for name, arm in arms.items():
            runs[name].append(arm())
        print(f"  rep {rep + 1}/{args.reps}: " + ", ".join(f"{k} {v[-1]['seconds']:.2f}s" for k, v in runs.items()),
              flush=True)
    summary = {k: _summary(v) for k, v in runs.items()}
    _same(runs["full: read_table"][0], runs["full: read_table, batch by batch"][0], "the two full reads")
    for a, b in (("selective: Mix.samples", "selective: oracle"), ("short: Mix.samples", "short: oracle"),
                 ("full: Mix.samples", "full: Mix.samples, compacted cache"),
                 ("selective: Mix.samples", "selective: Mix.samples, compacted cache"),
                 ("selective, from JSONL: Mix.samples", "selective, from JSONL: Mix.samples, compacted cache"),
                 ("full: DataLoader, 0 workers", "full: DataLoader, 2 workers"),
                 ("selective: DataLoader, 0 workers", "selective: DataLoader, 2 workers")):
        _same(runs[a][0], runs[b][0], f"{a} / {b}")
    if runs["full: Mix.samples"][0]["samples"] > runs["full: read_table"][0]["samples"]:
        raise Mismatch("the full-coverage stream delivered more samples than the corpus has")
    for name, r in runs.items():  # every repetition delivers the same
        for other in r[1:]:
            _same(r[0], other, f"{name}, repetitions")
    zero, two = runs["full: DataLoader, 0 workers"][0], runs["full: DataLoader, 2 workers"][0]
    results["arms"] = summary
    results["workers"] = {"decoded_0": zero["decoded"], "decoded_2": two["decoded"], "mapped_2": two["mapped"]}
    samples_per_s = {k: v["docs_per_s"] for k, v in summary.items()}
    results["ratios"] = {
        "full_over_read_table": samples_per_s["full: Mix.samples"] / samples_per_s["full: read_table"],
        "full_over_read_batches": samples_per_s["full: Mix.samples"] / samples_per_s["full: read_table, batch by batch"],
        "selective_over_oracle": samples_per_s["selective: Mix.samples"] / samples_per_s["selective: oracle"],
        "short_over_oracle": samples_per_s["short: Mix.samples"] / samples_per_s["short: oracle"],
        "two_over_zero_workers": samples_per_s["full: DataLoader, 2 workers"]
        / samples_per_s["full: DataLoader, 0 workers"],
        "two_over_zero_workers_selective": samples_per_s["selective: DataLoader, 2 workers"]
        / samples_per_s["selective: DataLoader, 0 workers"],
        "two_workers_over_floor": samples_per_s["full: DataLoader, 2 workers"]
        / samples_per_s["floor: DataLoader alone, 2 workers"],
        "worker_decodes_over_zero": sum(two["decoded"]) / max(1, sum(zero["decoded"])),
        "full_cached_over_source": samples_per_s["full: Mix.samples, compacted cache"]
        / samples_per_s["full: Mix.samples"],
        "selective, from JSONL_cached_over_source": samples_per_s["selective, from JSONL: Mix.samples, compacted cache"]
        / samples_per_s["selective, from JSONL: Mix.samples"],
        "selective_cached_over_source": samples_per_s["selective: Mix.samples, compacted cache"]
        / samples_per_s["selective: Mix.samples"],
        "full_cached_over_read_table": samples_per_s["full: Mix.samples, compacted cache"]
        / samples_per_s["full: read_table"],
        "engine_us_per_sample": (summary["selective: Mix.samples"]["seconds"] - summary["selective: oracle"]["seconds"])
        / summary["selective: oracle"]["samples"] * 1e6,
    }
    cat = DATA / "catalog"
    statement = FULL.format(limit="")
    first: dict = {}
    for label, kind, workers, context in (("Mix.samples", "samples", 0, "fork"), ("DataLoader, 0 workers", "torch", 0,
                                           "fork"), ("DataLoader, 2 workers (fork)", "torch", 2, "fork"),
                                          ("DataLoader, 2 workers (spawn)", "torch", 2, "spawn"),
                                          ("torch alone, 2 workers (fork)", "bare", 2, "fork"),
                                          ("torch alone, 2 workers (spawn)", "bare", 2, "spawn")):
        got = [first_sample(cat, statement, kind, workers, context) for _ in range(args.reps)]
        first[label] = {"first_s": statistics.median(g["first_s"] for g in got),
                        "worker_rss_mb": max((max(g.get("worker_rss_mb") or [0]) for g in got), default=0),
                        "worker_private_mb": max((max(g.get("worker_private_mb") or [0]) for g in got), default=0)}
        print(f"  first {label}: {first[label]}", flush=True)
    # a long run: a worker's memory near the end of the whole full-coverage stream (its workers still up)
    batches = len(full.plan()) // BATCH // 2 * 2 - 64
    got = [first_sample(cat, statement, "torch", 2, "fork", batches) for _ in range(max(1, args.reps // 2))]
    first["long"] = {"batches": batches, "worker_rss_mb": max(max(g["worker_rss_mb"]) for g in got),
                     "worker_private_mb": max(max(g["worker_private_mb"]) for g in got)}
    print(f"  long run: {first['long']}", flush=True)
    results["first"] = first
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    splice(args.report, None, {"i": section(results)})
    print(json.dumps(results["ratios"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
