"""Many ranks starting at once (`make bench`, section (k)): N processes, each a rank of a 256-rank
world, start together on one catalog and one statement that has no compiled plan yet. Exactly one
may compile; the others wait for it (a lock; they poll it, they do not compute) and then read the
plan. Reported: who compiled, the distribution of each rank's time to its first batch (from
process start, imports included, and from the call), CPU seconds each waiting rank spent, and
per-rank peak RSS against the plan's size on disk.

    python bench/ranks.py [--ranks 64] [--world 256] [--samples 10000000] [--out bench_data/ranks.json]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.peer_common import peak_rss_mb  # noqa: E402

DATA = ROOT / "bench_data"
PEAK_RSS = inspect.getsource(peak_rss_mb)  # each rank defines it for itself
STATEMENT = ("MIX 0.5 AS web WHERE domain = 'web' AND quality > 0.3, 0.3 AS code WHERE domain = 'code', "
             "0.2 AS rest FROM synth SEED {seed} PARTITIONS 256")

RANK = PEAK_RSS + r"""
import json, os, resource, sys, time
began = time.perf_counter()
import torch
import mixsql
from mixsql import manifest
compiled = []
original = manifest.compile_plan
def counting(*args, **kwargs):
    compiled.append(time.perf_counter())
    return original(*args, **kwargs)
manifest.compile_plan = counting
cat, statement, rank, world, signals = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
imported = time.perf_counter()
open(os.path.join(signals, f"ready-{rank}"), "w").close()
while not os.path.exists(os.path.join(signals, "go")):  # every rank starts its work at the same moment
    time.sleep(0.005)
cpu0 = time.process_time()
called = time.perf_counter()
con = mixsql.connect(cat, create=False)
ds = con.mix(statement).torch_dataset(batch_size=4, rank=rank, world_size=world, columns=["text"])
ready = time.perf_counter()
batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=mixsql.collate)))
first = time.perf_counter()
print(json.dumps({"rank": rank, "compiled": bool(compiled), "import_s": imported - began,
                  "dataset_s": ready - called, "first_batch_s": first - called,
                  "cpu_s": time.process_time() - cpu0, "rss_mb": peak_rss_mb(),
                  "samples": len(batch["text"])}))
"""


def ensure(samples: int) -> Path:
    import gen_corpus
    from run import open_catalog

    name = f"synthetic-{samples // 1_000_000}M"
    src, cat = DATA / name, DATA / f"catalog-{name}"
    if not src.exists():
        gen_corpus.synthetic(src, samples)
    con = open_catalog(cat)
    if "synth" not in con.datasets():
        con.register("synth", [str(src)])
    con.close()
    return cat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=64, help="processes started at once")
    parser.add_argument("--world", type=int, default=256, help="the world size each is a rank of")
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=DATA / "ranks.json")
    args = parser.parse_args()
    cat = ensure(args.samples)
    statement = STATEMENT.format(seed=int(time.time()) % 100_000)  # a plan no earlier run compiled
    shutil.rmtree(cat / "counts", ignore_errors=True)
    ranks = [round(i * args.world / args.ranks) for i in range(args.ranks)]  # spread over the world
    signals = Path(tempfile.mkdtemp(prefix="mixsql-ranks-"))
    procs = [subprocess.Popen([sys.executable, "-c", RANK, str(cat), statement, str(r), str(args.world), str(signals)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for r in ranks]
    deadline = time.monotonic() + 1800
    while len(list(signals.glob("ready-*"))) < len(ranks):  # every rank has imported torch and mixsql
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    (signals / "go").touch()
    results, failed = [], []
    for r, p in zip(ranks, procs):
        out, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            failed.append({"rank": r, "status": p.returncode, "error": err.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(out.strip().splitlines()[-1]))
    shutil.rmtree(signals, ignore_errors=True)
    compilers = [x for x in results if x["compiled"]]
    waiters = [x for x in results if not x["compiled"]]
    plan_dirs = [p for p in (cat / "plans").iterdir() if not p.name.startswith(".")]
    plan_bytes = max(sum(f.stat().st_size for f in d.iterdir()) for d in plan_dirs) if plan_dirs else 0

    def dist(key: str, xs: list[dict]) -> dict:
        values = sorted(x[key] for x in xs)
        return {"median": statistics.median(values), "max": values[-1], "min": values[0]} if values else {}

    report = {"ranks": args.ranks, "world": args.world, "samples": args.samples, "statement": statement,
              "cores": os.cpu_count(), "failed": failed, "compiled_by": [x["rank"] for x in compilers],
              "plan_bytes": plan_bytes, "first_batch_s": dist("first_batch_s", results),
              "first_batch_s_waiting": dist("first_batch_s", waiters),
              "compile_s": dist("first_batch_s", compilers), "import_s": dist("import_s", results),
              "cpu_s_waiting": dist("cpu_s", waiters), "rss_mb": dist("rss_mb", results),
              "all_delivered": all(x["samples"] == 4 for x in results) and len(results) == args.ranks}
    print(json.dumps(report, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    if failed or len(compilers) != 1:
        raise SystemExit(f"expected exactly one rank to compile and none to fail: {len(compilers)} compiled, "
                         f"{len(failed)} failed")


if __name__ == "__main__":
    main()
