"""mixsql benchmarks (`make bench`): ratios against baselines measured in the same run.

Method (../shared/research/performance.md): arms run interleaved in one process tree, each at least
5 times, and medians are reported; shared machines are noisy, so read ratios, not absolutes.

(a) throughput of `Mix.samples()` for a 3-component selective mixture against the *oracle* (plain
    pyarrow decoding exactly the row groups the mixture touches, each once) and a full sequential
    pyarrow read; row-group decodes per minimal decodes; engine overhead in µs per sample.
(b) bytes decoded per byte delivered for single ranks of a simulated world of 256, and that ratio
    over the single-process oracle's (the rank's fair share of the minimal decoding).
(c) planning time and peak memory at 10M and 100M catalog samples (synthetic properties).
(d) time to first batch of a torch DataLoader, with the plan cached and compiled from scratch.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mixsql  # noqa: E402
from bench.report import splice  # noqa: E402
from mixsql import cpu  # noqa: E402
from bench.peer_common import peak_rss_mb  # noqa: E402
from mixsql.read import Reader  # noqa: E402

DATA = ROOT / "bench_data"
STATEMENT = """MIX 0.3 AS code WHERE domain = 'code',
    0.5 AS web  WHERE domain = 'web' AND quality > 0.6,
    0.2 AS ref  WHERE domain IN ('books', 'arxiv', 'wiki')
FROM bench
CHUNK SIZE 1024"""


def open_catalog(path: Path) -> mixsql.Connection:
    """The benchmark's catalog; one made by an older mixsql is rebuilt."""
    try:
        return mixsql.connect(path)
    except mixsql.CatalogError:
        import shutil

        shutil.rmtree(path)
        return mixsql.connect(path)


def ensure_jsonl() -> Path:
    """The bench corpus as JSONL, one file per Parquet shard, written once (DuckDB's COPY)."""
    import duckdb

    out = DATA / "corpus-jsonl"
    if not (out / ".done").exists():
        out.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect()
        for path in sorted((DATA / "corpus").glob("*.parquet")):
            con.execute(f"COPY (SELECT * FROM read_parquet('{path}')) TO '{out / (path.stem + '.jsonl')}' "
                        "(FORMAT JSON)")
        (out / ".done").touch()
    return out


def ensure_corpus() -> mixsql.Connection:
    if not (DATA / "corpus").exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "gen_corpus.py"), "--out", str(DATA / "corpus")],
                       check=True)
    con = open_catalog(DATA / "catalog")
    if "bench" not in con.datasets():
        t = time.perf_counter()
        info = con.register("bench", [str(DATA / "corpus")])
        print(f"registered {info.samples:,} samples in {time.perf_counter() - t:.1f} s", flush=True)
    return con


# -- (a) ------------------------------------------------------------------------------------------------


def arm_mixsql(mix: mixsql.Mix) -> dict:
    plan = mix.plan()
    reader = Reader(plan, ["text"])
    n = nbytes = 0
    t = time.perf_counter()
    for start in range(0, len(plan), 4096):
        for s in reader.samples(plan.positions_rows(start, min(start + 4096, len(plan)))):
            nbytes += len(s["text"])
            n += 1
    return {"seconds": time.perf_counter() - t, "samples": n, "chars": nbytes,
            "row_groups": reader.stats.row_groups, "bytes_decoded": reader.stats.bytes_decoded,
            "decode_seconds": reader.stats.decode_seconds}


def touched(plan: mixsql.CompiledPlan, rows: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """(file, row group) -> rows within it that the stream needs."""
    out: dict[tuple[int, int], list[int]] = {}
    for f in np.unique(plan.file[rows]).tolist():
        info = plan.files[f]
        local = plan.row[rows[plan.file[rows] == f]]
        groups = info.row_group_of(local)
        for g in np.unique(groups).tolist():
            out[(f, g)] = np.sort(local[groups == g] - info.row_group_starts[g])
    return out


def arm_oracle(plan: mixsql.CompiledPlan, needed: dict[tuple[int, int], np.ndarray]) -> dict:
    n = nbytes = decoded = 0
    decode = 0.0
    t = time.perf_counter()
    files: dict[int, pq.ParquetFile] = {}
    for (f, g), local in needed.items():
        pf = files.get(f) or files.setdefault(f, pq.ParquetFile(plan.files[f].url.removeprefix("file://")))
        began = time.perf_counter()
        table = pf.read_row_group(g, columns=["text"], use_threads=False)
        decode += time.perf_counter() - began
        decoded += table.nbytes
        for text in table.column("text").take(local).to_pylist():
            nbytes += len(text)
            n += 1
    return {"seconds": time.perf_counter() - t, "samples": n, "chars": nbytes, "row_groups": len(needed),
            "bytes_decoded": decoded, "decode_seconds": decode}


def arm_full(paths: list[Path]) -> dict:
    n = nbytes = 0
    t = time.perf_counter()
    for p in paths:
        for batch in pq.ParquetFile(p).iter_batches(columns=["text"], batch_size=8192, use_threads=False):
            for text in batch.column(0).to_pylist():
                nbytes += len(text)
                n += 1
    return {"seconds": time.perf_counter() - t, "samples": n, "chars": nbytes}


def bench_throughput(con: mixsql.Connection, reps: int) -> dict:
    mix = con.mix(STATEMENT)
    plan = mix.plan()
    rows = plan.positions_rows(0, len(plan))
    needed = touched(plan, rows)
    paths = sorted((DATA / "corpus").glob("*.parquet"))
    runs: dict[str, list[dict]] = {"mixsql": [], "oracle": [], "full": []}
    for rep in range(reps):
        runs["oracle"].append(arm_oracle(plan, needed))
        runs["mixsql"].append(arm_mixsql(mix))
        runs["full"].append(arm_full(paths))
        print(f"  (a) rep {rep + 1}/{reps}: " + ", ".join(f"{k} {v[-1]['seconds']:.2f}s" for k, v in runs.items()),
              flush=True)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    spread = {k: (max(r["seconds"] for r in v) - min(r["seconds"] for r in v)) / med[k] for k, v in runs.items()}
    m, o, f = runs["mixsql"][0], runs["oracle"][0], runs["full"][0]
    total_rgs = sum(pq.ParquetFile(p).num_row_groups for p in paths)
    return {
        "samples": m["samples"], "partitions": plan.partitions, "corpus_docs": f["samples"],
        "row_groups_total": total_rgs, "row_groups_touched": len(needed),
        "seconds": med, "spread": spread,
        "docs_per_s": {k: runs[k][0]["samples"] / med[k] for k in med},
        "mb_per_s": {k: runs[k][0]["chars"] / 1e6 / med[k] for k in med},
        "mixsql_over_oracle": (m["samples"] / med["mixsql"]) / (o["samples"] / med["oracle"]),
        "oracle_over_full": (o["samples"] / med["oracle"]) / (f["samples"] / med["full"]),
        "decodes_over_minimal": m["row_groups"] / len(needed),
        "overhead_us_per_sample": (med["mixsql"] - med["oracle"]) / m["samples"] * 1e6,
        # the same without the Parquet decoder's time, which both arms spend and which dominates the noise
        "engine_us_per_sample": (statistics.median(r["seconds"] - r["decode_seconds"] for r in runs["mixsql"])
                                 - statistics.median(r["seconds"] - r["decode_seconds"] for r in runs["oracle"]))
        / m["samples"] * 1e6,
        "oracle_decoded_per_delivered": o["bytes_decoded"] / o["chars"],
    }


# -- (b) ------------------------------------------------------------------------------------------------


def bench_ranks(con: mixsql.Connection, oracle_ratio: float, ranks: tuple[int, ...] = (0, 100, 255)) -> dict:
    mix = con.mix(STATEMENT, partitions=256)
    plan = mix.plan()
    out = {}
    for rank in ranks:
        ds = mix.torch_dataset(batch_size=4, rank=rank, world_size=256, columns=["text"])
        reader = Reader(plan, ["text"])
        delivered = 0
        for n in range(ds.batches):
            delivered += sum(len(s["text"]) for s in reader.samples(ds.batch_rows(plan, n)))
        ratio = reader.stats.bytes_decoded / delivered
        out[rank] = {"samples": len(ds), "decoded_per_delivered": ratio, "over_oracle": ratio / oracle_ratio,
                     "row_groups": reader.stats.row_groups}
        print(f"  (b) rank {rank}/256: {len(ds):,} samples, {reader.stats.row_groups} row groups, "
              f"{ratio:.1f} bytes decoded per byte delivered ({ratio / oracle_ratio:.2f}x the oracle's)", flush=True)
    return out


# -- (c), (d): separate processes, so peak memory and start-up are their own --------------------------------

PEAK_RSS = inspect.getsource(peak_rss_mb)  # the children define it for themselves

PLAN_CHILD = PEAK_RSS + r"""
import json, resource, sys, time
t0 = time.perf_counter()
import mixsql
con = mixsql.connect(sys.argv[1], create=False)
t1 = time.perf_counter()
mix = con.mix(sys.argv[2], seed=int(sys.argv[3]))
t2 = time.perf_counter()
plan = mix.plan()
t3 = time.perf_counter()
print(json.dumps({"bind_s": t2 - t1, "compile_s": t3 - t2, "plan_s": t3 - t1, "stream": len(plan),
                  "matched": sum(c.samples for c in mix.bound.components),
                  "peak_rss_mb": peak_rss_mb()}))
"""

DUCKDB_CHILD = PEAK_RSS + r"""
import glob, json, sys, time
import duckdb
t0 = time.perf_counter()
con = duckdb.connect()
files = sorted(glob.glob(sys.argv[1] + "/datasets/synth-*/samples-*.parquet"))
table = con.sql("SELECT * FROM (SELECT CASE WHEN domain = 'code' THEN 0 WHEN domain = 'web' AND quality > 0.3 THEN 1 "
                "WHEN domain IN ('books', 'arxiv', 'wiki') THEN 2 END::TINYINT AS _c, _file_id, _row::INTEGER AS _row "
                f"FROM read_parquet({files!r})) WHERE _c IS NOT NULL").to_arrow_table()
print(json.dumps({"duckdb_s": time.perf_counter() - t0, "duckdb_rows": table.num_rows,
                  "duckdb_peak_rss_mb": peak_rss_mb()}))
"""

SYNTHETIC = """MIX 0.3 AS code WHERE domain = 'code',
    0.5 AS web  WHERE domain = 'web' AND quality > 0.3,
    0.2 AS ref  WHERE domain IN ('books', 'arxiv', 'wiki')
FROM synth"""


def _plain_numpy_env() -> dict[str, str]:
    """This environment without a choice of NumPy's code paths (``mixsql.cpu``)."""
    return {k: v for k, v in os.environ.items() if k not in ("NPY_DISABLE_CPU_FEATURES", cpu.KEEP_ENV)}


def bench_planning(sizes: list[int], reps: int) -> dict:
    out = {}
    for rows in sizes:
        name = f"synthetic-{rows // 1_000_000}M"
        src, cat = DATA / name, DATA / f"catalog-{name}"
        if not src.exists():
            subprocess.run([sys.executable, str(ROOT / "bench" / "gen_corpus.py"), "--out", str(src),
                            "--synthetic", str(rows)], check=True)
        con = open_catalog(cat)
        if "synth" not in con.datasets():
            t = time.perf_counter()
            con.register("synth", [str(src)])
            print(f"  (c) registered {rows:,} synthetic samples in {time.perf_counter() - t:.1f} s", flush=True)
        results = []
        for rep in range(reps):  # interleaved with the baseline: DuckDB alone selecting (component, file, row)
            import shutil

            shutil.rmtree(cat / "plans", ignore_errors=True)  # measure binding and compiling, not the caches
            shutil.rmtree(cat / "counts", ignore_errors=True)
            proc = subprocess.run([sys.executable, "-c", PLAN_CHILD, str(cat), SYNTHETIC, str(1000 + rep)],
                                  capture_output=True, text=True, check=True, env=_plain_numpy_env())
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            command_env = _plain_numpy_env()
            if cpu.prefer_avx2_sort(command_env, modules=set()):  # what the `mixsql` command sets on this CPU
                shutil.rmtree(cat / "plans", ignore_errors=True)
                shutil.rmtree(cat / "counts", ignore_errors=True)
                proc = subprocess.run([sys.executable, "-c", PLAN_CHILD, str(cat), SYNTHETIC, str(1000 + rep)],
                                      capture_output=True, text=True, check=True, env=command_env)
                command = json.loads(proc.stdout.strip().splitlines()[-1])
                results[-1].update({f"command_{k}": command[k] for k in ("bind_s", "compile_s", "plan_s")})
            proc = subprocess.run([sys.executable, "-c", DUCKDB_CHILD, str(cat)], capture_output=True, text=True,
                                  check=True)
            results[-1].update(json.loads(proc.stdout.strip().splitlines()[-1]))
            if results[-1]["duckdb_rows"] != results[-1]["matched"]:
                raise SystemExit(f"(c) DuckDB selected {results[-1]['duckdb_rows']:,} samples, binding matched "
                                 f"{results[-1]['matched']:,}")
            print(f"  (c) {rows:,}: {results[-1]}", flush=True)
        out[rows] = {k: statistics.median(r[k] for r in results) for k in results[0]}
        out[rows]["spread"] = (max(r["plan_s"] for r in results) - min(r["plan_s"] for r in results)) / out[rows]["plan_s"]
        out[rows]["over_duckdb"] = statistics.median(r["plan_s"] / r["duckdb_s"] for r in results)
        if "command_plan_s" in results[0]:
            out[rows]["command_over_duckdb"] = statistics.median(r["command_plan_s"] / r["duckdb_s"] for r in results)
        out[rows]["reps"] = reps
    return out


REGISTER_CHILD = PEAK_RSS + r"""
import json, os, resource, shutil, sys, tempfile, time
import mixsql
where = tempfile.mkdtemp(prefix="mixsql-bench-register-")
on_ray = sys.argv[2] == "ray"
if on_ray:  # a local cluster of this machine's cores, started before the clock (a cluster is up already)
    import ray
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
try:
    con = mixsql.connect(os.path.join(where, "catalog"))
    t0 = time.perf_counter()
    info = con.register("d", [sys.argv[1]], ray="" if on_ray else None)
    seconds = time.perf_counter() - t0
finally:
    shutil.rmtree(where, ignore_errors=True)
print(json.dumps({"seconds": seconds, "samples": info.samples, "bytes": info.bytes,
                  "peak_rss_mb": peak_rss_mb()}))
"""


def bench_registration(sources: dict[str, Path], reps: int) -> dict:
    """Registration of Parquet into a fresh catalog (a fresh process each, interleaved): samples/s
    over the machine and per core, and content bytes decoded per second; a name ending in "on Ray"
    scans as Ray tasks on a local cluster of this machine's cores."""
    runs: dict[str, list[dict]] = {name: [] for name in sources}
    for rep in range(reps):
        for name, src in sources.items():
            mode = "ray" if name.endswith("on Ray") else "local"
            proc = subprocess.run([sys.executable, "-c", REGISTER_CHILD, str(src), mode], capture_output=True,
                                  text=True, check=True)
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  (c) register {name}: {runs[name][-1]['seconds']:.2f} s", flush=True)
    cores = os.cpu_count() or 1
    out = {}
    for name, rs in runs.items():
        seconds = statistics.median(r["seconds"] for r in rs)
        out[name] = {"seconds": seconds, "samples": rs[0]["samples"], "bytes": rs[0]["bytes"],
                     "spread": (max(r["seconds"] for r in rs) - min(r["seconds"] for r in rs)) / seconds,
                     "per_core": rs[0]["samples"] / seconds / cores, "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)}
    return out


TTFB_CHILD = r"""
import json, sys, time
import mixsql, mixsql.api, torch.utils.data  # mixsql resolves names lazily: import before timing
t0 = time.perf_counter()
con = mixsql.connect(sys.argv[1], create=False)
mix = con.mix(sys.argv[2], seed=int(sys.argv[3]))
ds = mix.torch_dataset(batch_size=32, rank=0, world_size=8, columns=["text"])
batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=32, collate_fn=mixsql.collate)))
print(json.dumps({"ttfb_s": time.perf_counter() - t0, "batch": len(batch["text"])}))
"""


def bench_ttfb(reps: int) -> dict:
    cat = DATA / "catalog"
    cold, warm = [], []
    import shutil

    for rep in range(reps):
        shutil.rmtree(cat / "plans", ignore_errors=True)
        shutil.rmtree(cat / "counts", ignore_errors=True)
        seed = 5000 + rep  # the first start compiles; the second finds the plan in the cache
        for bucket, s in ((cold, seed), (warm, seed)):
            proc = subprocess.run([sys.executable, "-c", TTFB_CHILD, str(cat), STATEMENT, str(s)],
                                  capture_output=True, text=True, check=True)
            bucket.append(json.loads(proc.stdout)["ttfb_s"])
        print(f"  (d) rep {rep + 1}: cold {cold[-1]:.2f}s, cached {warm[-1]:.2f}s", flush=True)
    return {"cold_s": statistics.median(cold), "cached_s": statistics.median(warm)}


SEEK_CHILD = r"""
import json, sys, time
import mixsql, mixsql.api, torch.utils.data  # mixsql resolves names lazily: import before timing
t0 = time.perf_counter()
con = mixsql.connect(sys.argv[1], create=False)
mix = con.mix(sys.argv[2], seed=7)
ds = mix.torch_dataset(batch_size=4, rank=0, world_size=1, columns=["text", "quality"], start_step=int(sys.argv[3]))
batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=mixsql.collate)))
print(json.dumps({"ttfb_s": time.perf_counter() - t0, "batch": len(batch["text"]), "batches": ds.batches}))
"""
SEEK_STEPS = (0, 10_000, 10_000_000)


def bench_seek(reps: int, rows: int) -> dict:
    """(e) time to first batch at step 0, 10^4 and 10^7 (batch 4, one rank): a fresh process each,
    plan cached, steps interleaved."""
    cat = DATA / f"catalog-synthetic-{rows // 1_000_000}M"
    subprocess.run([sys.executable, "-c", SEEK_CHILD, str(cat), SYNTHETIC, "0"], check=True, capture_output=True)
    times: dict[int, list[float]] = {s: [] for s in SEEK_STEPS}
    batches = 0
    for rep in range(reps):
        for step in SEEK_STEPS:
            proc = subprocess.run([sys.executable, "-c", SEEK_CHILD, str(cat), SYNTHETIC, str(step)],
                                  capture_output=True, text=True, check=True)
            out = json.loads(proc.stdout)
            times[step].append(out["ttfb_s"])
            batches = out["batches"]
        print(f"  (e) rep {rep + 1}: " + ", ".join(f"step {s:,} {v[-1]:.2f}s" for s, v in times.items()), flush=True)
    return {"batches": batches, "rows": rows, "seconds": {str(s): statistics.median(v) for s, v in times.items()},
            "spread": {str(s): (max(v) - min(v)) / statistics.median(v) for s, v in times.items()}}


WORKER_CHILD = PEAK_RSS + r"""
import json, resource, sys, time
t0 = time.perf_counter()
import mixsql.dataset
if sys.argv[1] == "compiler":
    import mixsql.api
print(json.dumps({"s": time.perf_counter() - t0, "rss_mb": peak_rss_mb(),
                  "modules": len(sys.modules)}))
"""


def bench_worker_import(reps: int) -> dict:
    """(f) what a DataLoader worker imports: the runtime alone (``mixsql.dataset``) against the runtime
    plus the whole compiler (what a worker loaded before the runtime stood alone); fresh processes,
    interleaved, torch included in both."""
    out: dict[str, list[dict]] = {"runtime": [], "compiler": []}
    for rep in range(reps):
        for arm in out:
            proc = subprocess.run([sys.executable, "-c", WORKER_CHILD, arm], capture_output=True, text=True, check=True)
            out[arm].append(json.loads(proc.stdout))
        print(f"  (f) rep {rep + 1}: runtime {out['runtime'][-1]['s']:.2f}s, with the compiler "
              f"{out['compiler'][-1]['s']:.2f}s", flush=True)
    return {arm: {"s": statistics.median(r["s"] for r in runs), "rss_mb": statistics.median(r["rss_mb"] for r in runs),
                  "modules": statistics.median(r["modules"] for r in runs)} for arm, runs in out.items()}


def _per_core_doc(register: dict, cores: int) -> float:
    r = register["corpus (text)"]
    return r["bytes"] / r["seconds"] / cores / 1e6


def write_report(results: dict, path: Path) -> None:
    a, b, c, d, e = results["a"], results["b"], results["c"], results["d"], results["e"]
    preamble = "\n".join([
        "# Benchmarks",
        "",
        "Reproduce with `make bench` (`python bench/run.py`, then `bench/packing.py`, `bench/remote.py`,",
        "`bench/speed.py`, `bench/peers.py`), which builds its own ~1 GB corpus into `bench_data/`",
        "(`bench/gen_corpus.py`).",
        "Arms run interleaved in one process tree; medians of "
        f"{results['reps']} runs. Machine: {results['machine']}. Sections (a)-(f) run at {results['when']}.",
    ])
    lines = [
        "## (a) Throughput of `Mix.samples()` (3-component selective mixture, one process)",
        "",
        f"Corpus: {a['corpus_docs']:,} documents, {a['row_groups_total']:,} row groups of 1,024 rows. The mixture "
        f"streams {a['samples']:,} samples ({a['samples'] / a['corpus_docs']:.0%} of the corpus) and touches "
        f"{a['row_groups_touched']:,} row groups ({a['row_groups_touched'] / a['row_groups_total']:.0%}).",
        "",
        "| arm | median s | spread | docs/s | MB/s |",
        "|---|---|---|---|---|",
    ]
    for k, label in (("mixsql", "mixsql `Mix.samples(columns=['text'])`"),
                     ("oracle", "oracle: pyarrow, touched row groups once"),
                     ("full", "full sequential pyarrow read")):
        lines.append(f"| {label} | {a['seconds'][k]:.2f} | {a['spread'][k]:.0%} | {a['docs_per_s'][k]:,.0f} | "
                     f"{a['mb_per_s'][k]:,.0f} |")
    lines += [
        "",
        f"- **mixsql / oracle: {a['mixsql_over_oracle']:.2f}** (target ≥ 0.8)",
        f"- row-group decodes / minimal: **{a['decodes_over_minimal']:.2f}** (target ≤ 1.1)",
        f"- engine overhead: **{a['engine_us_per_sample']:.1f} µs per sample** (target ≤ 5): the time each arm spends "
        "outside the Parquet decoder (timed around every `read_row_group` call), mixsql's minus the oracle's, per "
        "sample; both decode the same row groups, and the decoder's run-to-run noise would otherwise swamp the "
        f"difference. Total time minus total time gives {a['overhead_us_per_sample']:.1f} µs.",
        f"- oracle / full sequential read (docs/s): {a['oracle_over_full']:.2f}, the cost of selectivity itself",
        "",
        "## (b) Decoding per rank at 256 ranks (PARTITIONS 256, batch 4 per rank)",
        "",
        f"The single-process oracle decodes {a['oracle_decoded_per_delivered']:.1f} bytes per byte delivered "
        "(selectivity). Per rank:",
        "",
        "| rank | samples | row groups decoded | bytes decoded / delivered | over the oracle's ratio |",
        "|---|---|---|---|---|",
    ]
    for rank, r in b.items():
        lines.append(f"| {rank} | {r['samples']:,} | {r['row_groups']} | {r['decoded_per_delivered']:.1f} | "
                     f"**{r['over_oracle']:.2f}** |")
    lines += [
        "",
        "Target: per-rank amplification ≤ 2 (over the oracle's). Each rank reads only its own partition's",
        "blocks plus the row groups on its pool boundaries.",
        "",
        "## (c) Planning (bind + count + compile, a fresh process, no cache)",
        "",
        f"Measured {results.get('c_when', results['when'])}, medians of "
        f"{next(iter(c.values())).get('reps', 3)} runs, each interleaved with the baseline: DuckDB alone, in a fresh "
        "process, selecting the same statement's (component, file, row) for every matched sample (first match by "
        "`CASE`) into Arrow, which is the floor of any plan that reads the catalog's properties with DuckDB.",
        "",
        "| catalog samples | matched | stream | bind s | compile s | total s | spread | DuckDB alone s | over DuckDB | "
        "as the command: bind s | compile s | total s | over DuckDB | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rows, r in c.items():
        lines.append(f"| {int(rows):,} | {int(r['matched']):,} | {int(r['stream']):,} | {r['bind_s']:.2f} | "
                     f"{r['compile_s']:.2f} | **{r['plan_s']:.2f}** | {r.get('spread', 0):.0%} | "
                     + (f"{r['duckdb_s']:.2f} | **{r['over_duckdb']:.2f}** | " if "duckdb_s" in r else "— | — | ")
                     + (f"{r['command_bind_s']:.2f} | {r['command_compile_s']:.2f} | **{r['command_plan_s']:.2f}** | "
                        f"**{r['command_over_duckdb']:.2f}** | " if "command_over_duckdb" in r else "— | — | — | — | ")
                     + f"{r['peak_rss_mb']:,.0f} |")
    cores = os.cpu_count() or 1

    def verdicts(key: str, ratio: str) -> str:
        seconds = "; ".join(f"{int(rows) // 1_000_000}M: "
                            f"{'met' if r[key] <= (0.5 if int(rows) <= 10_000_000 else 5.0) else '**not met**'}"
                            for rows, r in c.items() if key in r)
        ratios = "; ".join(f"{int(rows) // 1_000_000}M: {'met' if r[ratio] <= 1.5 else '**not met**'}"
                           for rows, r in c.items() if ratio in r)
        return f"seconds: {seconds}; ≤ 1.5 × DuckDB alone: {ratios or '—'}"

    commanded = any("command_plan_s" in r for r in c.values())
    lines += [
        "",
        "Targets (issue 17): 10M bound and compiled in ≤ 0.5 s, 100M in ≤ 5 s with < 2 GB peak; the research notes "
        "set them as ≤ 1.5 × DuckDB alone (the ratio columns, in the same run). From Python: "
        + verdicts("plan_s", "over_duckdb") + "."
        + (" As the `mixsql` command runs it: " + verdicts("command_plan_s", "command_over_duckdb") + "." if commanded
           else ""),
        "",
        "\"As the command\": the same child with `NPY_DISABLE_CPU_FEATURES` set as the `mixsql` command sets it on this "
        "CPU (`mixsql.cpu`): on AMD Zen 4, NumPy's AVX-512 sort stores with `vpcompressq` to memory, which Zen 4 "
        "runs in microcode, so NumPy sorts 64-bit keys about 5 × slower than with its AVX2 sort, and compiling "
        "sorts keys within windows. A Python program gets the same by calling `mixsql.cpu.prefer_avx2_sort()` "
        "before it imports NumPy. The plans are identical (tested)."
        + ("" if commanded else " On this CPU the command changes nothing, so that arm was not run."),
        "",
        f"Registration of Parquet (and of the same corpus as JSONL) into a fresh catalog (a fresh process each, medians; {cores} cores; files scan "
        "in parallel: threads, or `--ray` tasks on a local Ray cluster of these cores, started before the clock):",
        "",
        "| source | samples | content bytes | seconds | spread | samples/s | per core | content MB/s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {name} | {r['samples']:,} | {r['bytes']:,} | {r['seconds']:.2f} | {r['spread']:.0%} | "
          f"{r['samples'] / r['seconds']:,.0f} | **{r['per_core']:,.0f}** | {r['bytes'] / r['seconds'] / 1e6:,.0f} | "
          f"{r['peak_rss_mb']:,.0f} |" for name, r in results["c_register"].items()],
        "",
        "Target: ≥ 1M rows/s per core. Every content byte is decoded once: UTF-8 is validated at registration",
        "(a bad byte is refused there, naming file and row, not met mid-run), and `_bytes` is each sample's",
        "length. So a text corpus registers at the speed its text decodes (content MB/s), and 1M rows/s per",
        "core holds for documents up to that speed per core / 1M bytes"
        + (f" (here {_per_core_doc(results['c_register'], cores):,.0f} bytes)." if "corpus (text)" in results["c_register"]
           else "."),
        "",
        "## (d) Time to first batch (DataLoader, 32 samples, rank 0 of 8, a fresh process, timed after its imports)",
        "",
        f"- plan cached (a second start, or rank k > 0 of a run): **{d['cached_s']:.2f} s**",
        f"- plan compiled from scratch: **{d['cold_s']:.2f} s**",
        "",
        "Target: first batch within 1 s.",
        "",
        "## (e) Seek: time to first batch at a step (batch 4, one rank, a fresh process after its imports, plan cached)",
        "",
        f"The {e['rows'] // 1_000_000}M-sample synthetic catalog's plan ({e['batches']:,} global batches). "
        "Resuming at step N computes its rows from the chunk table: nothing before it is replayed.",
        "",
        "| start step | median s | spread | over step 0 |",
        "|---|---|---|---|",
        *[f"| {int(k):,} | {v:.2f} | {e['spread'][k]:.0%} | {v / e['seconds']['0']:.2f} |" for k, v in e["seconds"].items()],
        "",
        "Target: flat in the step.",
        "",
        "## (f) What a DataLoader worker imports (a fresh process, medians)",
        "",
        "| a worker imports | import s | peak RSS MB | modules |",
        "|---|---|---|---|",
        *[f"| {label} | {results['f'][arm]['s']:.2f} | {results['f'][arm]['rss_mb']:.0f} | "
          f"{results['f'][arm]['modules']:.0f} |" for arm, label in
          (("runtime", "the runtime alone (`mixsql.dataset`): now"),
           ("compiler", "the runtime and the compiler (sqlglot, DuckDB, bind, plan): before"))],
        "",
        "<details><summary>raw results</summary>",
        "",
        "```json",
        json.dumps(results, indent=1, default=str),
        "```",
        "</details>",
    ]
    text = "\n".join(lines)
    marks = [text.index(f"## ({k})") for k in "abcdef"] + [len(text)]
    splice(path, preamble, {k: text[marks[i]: marks[i + 1]] for i, k in enumerate("abcdef")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--planning", default="10000000,100000000", help="catalog sizes for (c), comma-separated")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--only", choices=["c"], help="run one section; the others keep their last results "
                        "(read back from the report's raw results)")
    args = parser.parse_args()
    if args.only == "c":  # planning alone: no corpus needed; the registration table keeps its last run
        text = args.out.read_text(encoding="utf-8")
        results = json.loads(text[text.index("```json") + 7: text.index("```", text.index("```json") + 7)])
        results["c"] = bench_planning([int(x) for x in args.planning.split(",") if x], max(1, min(args.reps, 5)))
        results["c_when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        write_report(results, args.out)
        print(f"wrote {args.out}")
        return
    con = ensure_corpus()
    results: dict = {"reps": args.reps, "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                     f"Python {platform.python_version()}", "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print("(a) throughput", flush=True)
    results["a"] = bench_throughput(con, args.reps)
    print("(b) 256 ranks", flush=True)
    results["b"] = bench_ranks(con, results["a"]["oracle_decoded_per_delivered"])
    print("(c) planning", flush=True)
    results["c"] = bench_planning([int(x) for x in args.planning.split(",") if x], max(1, min(args.reps, 5)))
    sizes = [int(x) for x in args.planning.split(",") if x]
    results["c_register"] = bench_registration(
        {"corpus (text)": DATA / "corpus", "corpus (text), on Ray": DATA / "corpus",
         "corpus (text), JSONL": ensure_jsonl() / "*.jsonl",
         **{f"synthetic {n // 1_000_000}M": DATA / f"synthetic-{n // 1_000_000}M" for n in sizes if n <= 10_000_000}},
        max(1, min(args.reps, 3)))
    print("(d) time to first batch", flush=True)
    results["d"] = bench_ttfb(args.reps)
    sizes = [int(x) for x in args.planning.split(",") if x]
    print("(e) seek", flush=True)
    results["e"] = bench_seek(args.reps, max(sizes))
    print("(f) worker imports", flush=True)
    results["f"] = bench_worker_import(args.reps)
    write_report(results, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
