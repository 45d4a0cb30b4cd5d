"""Remote reads (`make bench`): mixsql on a real S3-compatible server against the same files on local disk.

moto's S3 server runs on loopback (tests/s3.py), with a proxy in front that adds a fixed latency to
every request and counts requests and bytes. Arms run interleaved, each at least 5 times; medians
and the spread (min-max) are reported as ratios to the local arm of the same repetition.

(h1) throughput of `Mix.samples(columns=['text'])`: local disk, S3 without added latency, S3 with
     50 ms per request; for a selective mixture, a full-coverage one and a short stream (1%).
(h2) bytes and requests fetched per sample delivered, against the minimum (the column chunks of
     the touched row groups, each fetched once, plus each file's footer).
(h3) the disk cache: bytes fetched over the network by one rank's DataLoader with 0, 2 and 4
     workers, against the same minimum.

    python bench/remote.py [--reps 5] [--docs 40000] [--latency 0.05] [--out bench_data/remote.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mixsql  # noqa: E402
from mixsql import fs as mfs  # noqa: E402
from mixsql import remote  # noqa: E402
from tests.s3 import Proxy, S3Server  # noqa: E402

DATA = ROOT / "bench_data" / "remote"
SELECTIVE = """MIX 0.3 AS code WHERE domain = 'code',
    0.5 AS web  WHERE domain = 'web' AND quality > 0.6,
    0.2 AS ref  WHERE domain IN ('books', 'arxiv', 'wiki')
FROM bench CHUNK SIZE 1024"""
FULL = """MIX 0.40 AS web WHERE domain = 'web', 0.15 AS code WHERE domain = 'code',
    0.45 AS rest WHERE domain NOT IN ('web', 'code')
FROM bench CHUNK SIZE 1024"""


def corpus(docs: int) -> Path:
    out = DATA / f"corpus-{docs}"
    if not out.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "gen_corpus.py"), "--out", str(out), "--docs", str(docs),
                        "--shards", "8", "--row-group", "512"], check=True)
    return out


def needed_ranges(plan: mixsql.CompiledPlan, rows: np.ndarray, columns: list[str]) -> dict[str, list[tuple[int, int]]]:
    """Per file, the byte ranges a reader of ``rows`` cannot do without: its footer and the touched
    row groups' chunks of ``columns``."""
    out = {}
    for f, info in enumerate(plan.files):
        mine = plan.row[rows[plan.file[rows] == f]]
        if not len(mine):
            continue
        pf = mfs.RemoteParquet(info.url, info.size, info.version)
        tail = max(min(info.size, mfs.FOOTER_READ), pf.metadata.serialized_size + 8)
        ranges = [(max(0, info.size - tail), info.size)]
        for g in np.unique(info.row_group_of(mine)).tolist():
            ranges += pf.chunk_ranges(g, columns)
        out[info.url] = ranges
    return out


def minimum(plan: mixsql.CompiledPlan, rows: np.ndarray, columns: list[str]) -> tuple[int, int, int]:
    """(bytes, row groups, files): the least a reader of ``rows`` fetches: touched chunks + footers."""
    ranges = needed_ranges(plan, rows, columns)
    groups = sum(len(np.unique(info.row_group_of(plan.row[rows[plan.file[rows] == f]])))
                 for f, info in enumerate(plan.files) if info.url in ranges)
    return sum(e - s for r in ranges.values() for s, e in r), groups, len(ranges)


def floor(ranges: dict[str, list[tuple[int, int]]], n: int) -> tuple[float, int]:
    """The fetch floor: only the needed ranges, every file's in one concurrent call, files side by
    side (what any client of this server needs at least; nothing decoded)."""
    import concurrent.futures

    began = time.perf_counter()

    def one(item: tuple[str, list[tuple[int, int]]]) -> int:
        fs, path = mfs.filesystem(item[0])
        return sum(len(b) for b in fs.cat_ranges([path] * len(item[1]), [s for s, _ in item[1]],
                                                 [e for _, e in item[1]]))

    with concurrent.futures.ThreadPoolExecutor(remote.settings().read_ahead) as pool:
        list(pool.map(one, ranges.items()))
    return time.perf_counter() - began, n


def stream(mix: mixsql.Mix, limit: int | None) -> tuple[float, int]:
    began = time.perf_counter()
    n = sum(1 for _ in mix.samples(limit=limit, columns=["text"]))
    return time.perf_counter() - began, n


def loader_bytes(con: mixsql.Connection, statement: str, workers: int, proxy: Proxy, cache: Path) -> tuple[int, int]:
    import torch.utils.data

    shutil.rmtree(cache, ignore_errors=True)
    remote.configure(cache_dir=str(cache))
    mix = con.mix(statement)
    ds = mix.torch_dataset(batch_size=16, rank=0, world_size=1, columns=["text"])
    before = proxy.stats()["bytes"]
    loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=workers, collate_fn=mixsql.collate)
    n = sum(len(b["text"]) for b in loader)
    return proxy.stats()["bytes"] - before, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--docs", type=int, default=40_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=ROOT / "bench_data" / "remote.json")
    args = parser.parse_args()
    data = corpus(args.docs)
    work = Path(tempfile.mkdtemp(prefix="mixsql-remote-"))
    results: dict = {"docs": args.docs, "latency_s": args.latency, "reps": args.reps}
    with S3Server() as server:
        server.upload(data, "bench", "corpus")
        local = mixsql.connect(work / "local")
        local.register("bench", [str(data / "*.parquet")])
        with Proxy(server.endpoint) as counting, Proxy(server.endpoint, delay=args.latency) as slow:
            remote.configure(storage_options=server.options(), cache_dir=None)
            s3 = mixsql.connect(work / "s3")
            s3.register("bench", ["s3://bench/corpus/*.parquet"])
            cases = {"selective": (SELECTIVE, None), "full": (FULL, None),
                     "short (1%)": (FULL, max(1, args.docs // 100))}
            h1: dict = {}
            h2: dict = {}
            for name, (statement, limit) in cases.items():
                times: dict[str, list[float]] = {"local": [], "s3": [], "s3 + latency": [], "fetch floor": [],
                                                 "fetch floor + latency": []}
                counts = {}
                planned = s3.mix(statement).plan()
                wanted = needed_ranges(planned, planned.positions_rows(0, limit or len(planned)), ["text"])
                for _ in range(args.reps):
                    for arm, endpoint, con in (("local", None, local), ("s3", server.endpoint, s3),
                                               ("s3 + latency", slow.endpoint, s3), ("fetch floor", server.endpoint,
                                                                                      None),
                                               ("fetch floor + latency", slow.endpoint, None)):
                        if endpoint is not None:
                            remote.configure(storage_options=server.options(endpoint), cache_dir=None)
                        remote.reset_counters()
                        if con is None:
                            seconds, n = floor(wanted, counts["local"][0])
                        else:
                            seconds, n = stream(con.mix(statement), limit)
                        times[arm].append(n / seconds)
                        counts[arm] = (n, remote.counters.snapshot())
                ns = {arm: c[0] for arm, c in counts.items()}
                if len(set(ns.values())) != 1:
                    raise SystemExit(f"{name}: the arms delivered different counts {ns}")
                h1[name] = {arm: {"docs_per_s": statistics.median(v), "min": min(v), "max": max(v),
                                  "ratio_to_local": statistics.median([a / b for a, b in zip(v, times["local"])]),
                                  "ratio_to_s3": statistics.median([a / b for a, b in zip(v, times["s3"])])}
                            for arm, v in times.items()}
                plan = s3.mix(statement).plan()
                rows = plan.positions_rows(0, ns["s3"])
                least, groups, files = minimum(plan, rows, ["text"])
                got = counts["s3"][1]
                h2[name] = {"samples": ns["s3"], "bytes_fetched": got["bytes_fetched"], "minimum_bytes": least,
                            "bytes_ratio": got["bytes_fetched"] / least, "requests": got["requests"],
                            "row_groups": groups, "files": files,
                            "requests_per_row_group": got["requests"] / groups,
                            "metadata_requests": got["metadata_requests"]}
                print(name, json.dumps(h1[name]), json.dumps(h2[name]), flush=True)
            results["throughput"] = h1
            results["bytes"] = h2
            remote.configure(storage_options=server.options(counting.endpoint))
            plan = s3.mix(SELECTIVE).plan()
            least, _, _ = minimum(plan, plan.positions_rows(0, len(plan) - len(plan) % 16), ["text"])
            h3 = {}
            for workers in (0, 2, 4):
                fetched, n = loader_bytes(s3, SELECTIVE, workers, counting, work / "cache")
                h3[str(workers)] = {"bytes_fetched": fetched, "minimum_bytes": least, "ratio": fetched / least,
                                    "samples": n}
                print("workers", workers, json.dumps(h3[str(workers)]), flush=True)
            results["cache"] = h3
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
