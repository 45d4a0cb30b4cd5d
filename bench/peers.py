"""The peers, side by side with mixsql (`make bench`, section (j) of BENCHMARKS.md).

Each peer runs in its own virtual environment that this script builds in `bench_data/` (torch==2.13.0
first, then the peer pinned); a peer that cannot be installed is reported with the reason. Every arm
delivers the same number of documents of the same selective mixture (`bench/speed.py`'s: code 0.3,
web with quality > 0.6 0.5, books/arxiv/wiki 0.2) from the same Parquet files, at 0 and 2 DataLoader
workers; arms run interleaved, medians of the repetitions. Reported: set-up (conversion, indexing,
planning; the first repetition, from nothing), docs/s, time to the first sample, peak RSS and the
disk a copy takes, and mixsql's docs/s over each peer's.

Peers so far: Hugging Face `datasets` 5.0.1, streaming (`load_dataset(..., streaming=True)` +
`filter` + `interleave_datasets`) and from its Arrow cache (the same, not streaming); LitData 0.2.76
(`optimize` per component, then `CombinedStreamingDataset` with the weights); MosaicML Streaming
0.13.0 (`MDSWriter` per component, then one `StreamingDataset` of three `Stream`s).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import splice  # noqa: E402
from bench.run import DATA, ensure_corpus  # noqa: E402
from bench.speed import SELECTIVE, arm_samples, arm_torch, fresh_cache  # noqa: E402

PEERS = {"hf": ["datasets==5.0.1"], "litdata": ["litdata==0.2.76", "pyarrow==26.0.1"],
         # its torchvision 0.29.1 takes torch 2.14.1 (this machine's copy on disk) in place of 2.13.0
         "mosaic": ["mosaicml-streaming==0.13.0", "pyarrow==26.0.1"]}


def venv(name: str, packages: list[str]) -> tuple[Path | None, str]:
    """The peer's virtual environment (built once), or None and why it could not be."""
    where = DATA / f"venv-{name}"
    python = where / "bin" / "python"
    stamp = where / ".installed"
    if stamp.exists() and stamp.read_text() == json.dumps(packages):
        return python, ""
    shutil.rmtree(where, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, capture_output=True, text=True)
        for step in (["torch==2.13.0"], packages):  # torch first: the CPU build on disk
            subprocess.run([str(python), "-m", "pip", "install", "-q", *step], check=True, capture_output=True,
                           text=True, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        reason = (getattr(e, "stderr", "") or str(e)).strip().splitlines()
        return None, reason[-1] if reason else str(e)
    stamp.write_text(json.dumps(packages))
    return python, ""


def peer_arm(python: Path, script: str, workers: int, samples: int, cache: Path, *extra: str) -> dict:
    """One repetition of a peer's arm: its child script in its own environment, one JSON line back."""
    proc = subprocess.run([str(python), str(ROOT / "bench" / script), "--files", str(DATA / "corpus"),
                           "--samples", str(samples), "--workers", str(workers), "--cache", str(cache), *extra],
                          check=True, capture_output=True, text=True, timeout=3600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _num(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--samples", type=int, default=20_000, help="documents every arm delivers")
    parser.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md", help="section (j) goes here")
    args = parser.parse_args()
    con = ensure_corpus()
    statement = SELECTIVE.format(limit=f"\nLIMIT {args.samples} SAMPLES")
    for kept in ("plans", "counts"):  # set-up from nothing: binding's counts and the plan made again
        shutil.rmtree(con.path / kept, ignore_errors=True)
    t0 = time.perf_counter()
    mix = con.mix(statement)
    mix.plan()
    mixsql_setup = time.perf_counter() - t0
    cached, built, cache_setup = fresh_cache(con, statement)
    small, built_small, small_setup = fresh_cache(con, statement, compression="lz4")
    stats = DATA / "peers-workers.jsonl"
    arms: dict[str, object] = {
        "mixsql, 0 workers": lambda: arm_torch(mix, 0, stats),
        "mixsql, 2 workers": lambda: arm_torch(mix, 2, stats),
        "mixsql compacted cache, 0 workers": lambda: arm_torch(cached, 0, stats),
        "mixsql compacted cache, 2 workers": lambda: arm_torch(cached, 2, stats),
        "mixsql compacted cache (LZ4), 0 workers": lambda: arm_torch(small, 0, stats),
        "mixsql compacted cache (LZ4), 2 workers": lambda: arm_torch(small, 2, stats),
        "mixsql Mix.samples": lambda: arm_samples(mix),
    }
    unavailable = {}
    hf, why = venv("hf", PEERS["hf"])
    cache = DATA / "hf-cache"
    shutil.rmtree(cache, ignore_errors=True)
    if hf is None:
        unavailable["HF datasets"] = why
    else:
        for mode, label in (("arrow", "HF datasets, Arrow cache"), ("stream", "HF datasets, streaming")):
            for workers in (0, 2):
                arms[f"{label}, {workers} workers"] = (lambda m=mode, w=workers: peer_arm(
                    hf, "peer_hf.py", w, args.samples, cache, "--mode", m))
    lit, why = venv("litdata", PEERS["litdata"])
    lit_cache = DATA / "litdata-cache"
    shutil.rmtree(lit_cache, ignore_errors=True)  # its `optimize` runs in the first repetition: the set-up
    if lit is None:
        unavailable["LitData"] = why
    else:
        for workers in (0, 2):
            arms[f"LitData, {workers} workers"] = (lambda w=workers: peer_arm(lit, "peer_litdata.py", w, args.samples,
                                                                                  lit_cache))
    mosaic, why = venv("mosaic", PEERS["mosaic"])
    mosaic_cache = DATA / "mosaic-cache"
    shutil.rmtree(mosaic_cache, ignore_errors=True)  # its MDS conversion runs in the first repetition: the set-up
    if mosaic is None:
        unavailable["MosaicML Streaming"] = why
    else:
        for workers in (0, 2):
            arms[f"MosaicML Streaming, {workers} workers"] = (lambda w=workers: peer_arm(
                mosaic, "peer_mosaic.py", w, args.samples, mosaic_cache))
    runs: dict[str, list[dict]] = {k: [] for k in arms}
    for rep in range(args.reps):
        for name, arm in arms.items():
            runs[name].append(arm())  # type: ignore[operator]
            if runs[name][-1]["samples"] != args.samples:
                raise AssertionError(f"{name} delivered {runs[name][-1]['samples']} documents, not {args.samples}")
        print(f"  rep {rep + 1}/{args.reps}: " + ", ".join(f"{k} {v[-1]['seconds']:.2f}s" for k, v in runs.items()),
              flush=True)
    rows = {}
    for name, rs in runs.items():
        seconds = statistics.median(r["seconds"] for r in rs)
        peer = "first_s" in rs[0]  # the peers' children report these; mixsql's in-process arms do not
        rows[name] = {"seconds": seconds, "docs_per_s": args.samples / seconds,
                      "spread": (max(r["seconds"] for r in rs) - min(r["seconds"] for r in rs)) / seconds,
                      "setup_s": rs[0].get("setup_s"),
                      "first_s": statistics.median(r["first_s"] for r in rs) if peer else None,
                      "disk_bytes": rs[0].get("disk_bytes", 0),
                      "peak_rss_mb": max(r["peak_rss_mb"] for r in rs) if peer else None}
    rows["mixsql, 0 workers"]["setup_s"] = rows["mixsql, 2 workers"]["setup_s"] = mixsql_setup
    for k in ("mixsql compacted cache, 0 workers", "mixsql compacted cache, 2 workers"):
        rows[k]["setup_s"], rows[k]["disk_bytes"] = cache_setup, built.bytes
    for k in ("mixsql compacted cache (LZ4), 0 workers", "mixsql compacted cache (LZ4), 2 workers"):
        rows[k]["setup_s"], rows[k]["disk_bytes"] = small_setup, built_small.bytes
    for peer in ("LitData", "MosaicML Streaming"):  # one conversion serves both arms: in the 0-worker arm's first rep
        if f"{peer}, 2 workers" in rows:
            rows[f"{peer}, 2 workers"]["setup_s"] = rows[f"{peer}, 0 workers"]["setup_s"]
    lines = [
        "## (j) The peers (`bench/peers.py`)",
        "",
        f"{args.samples:,} documents of the selective mixture from the bench corpus's Parquet files, every arm; "
        f"{args.reps} interleaved repetitions, medians. Set-up is the first repetition's, from nothing (HF: "
        "`load_dataset` and the filters; mixsql: bind and compile the plan, or build the compacted cache).",
        "",
        "| arm | set-up s | docs/s | spread | first sample s | disk MB | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
        *[f"| {k} | {_num(v['setup_s'], '.1f')} | {v['docs_per_s']:,.0f} | {v['spread']:.0%} | "
          f"{_num(v['first_s'], '.2f')} | {v['disk_bytes'] / 1e6:,.0f} | {_num(v['peak_rss_mb'], ',.0f')} |"
          for k, v in rows.items()],
        "",
    ]
    ratios = []
    for workers in (0, 2):
        ours, cache_ours = rows[f"mixsql, {workers} workers"], rows[f"mixsql compacted cache, {workers} workers"]
        small_ours = rows[f"mixsql compacted cache (LZ4), {workers} workers"]
        for peer in ("HF datasets, streaming", "HF datasets, Arrow cache", "LitData", "MosaicML Streaming"):
            other = rows.get(f"{peer}, {workers} workers")
            if other is None:
                continue
            ratios.append(f"| {peer}, {workers} workers | {ours['docs_per_s'] / other['docs_per_s']:.2f} | "
                          f"{cache_ours['docs_per_s'] / other['docs_per_s']:.2f} | "
                          f"{small_ours['docs_per_s'] / other['docs_per_s']:.2f} |")
    if ratios:
        lines += ["| mixsql docs/s over | from the files | from the compacted cache | from the LZ4 compacted cache |",
                  "|---|---|---|---|", *ratios, "",
                  "Targets: from the files ≥ 4 × HF streaming (and MosaicML) at every worker count; with the "
                  "compacted cache ahead of every peer."]
    if "LitData, 0 workers" in rows:
        lit = rows["LitData, 0 workers"]
        lines.append("")
        for label, key in (("Compacted cache", "mixsql compacted cache, 0 workers"),
                           ("LZ4 compacted cache", "mixsql compacted cache (LZ4), 0 workers")):
            ours = rows[key]
            lines.append(f"- {label} against LitData's copy: set-up {ours['setup_s'] / lit['setup_s']:.2f} × "
                         f"(target ≤ 0.5), disk {ours['disk_bytes'] / 1e6:,.1f} MB against "
                         f"{lit['disk_bytes'] / 1e6:,.1f} MB, {ours['disk_bytes'] / lit['disk_bytes']:.4f} × (target < 1).")
    for name, why in unavailable.items():
        lines.append(f"- {name} could not be installed: {why}")
    lines.append("- LitData's set-up is its `optimize` of the three components' documents (`text` only) into its "
                 "chunk format, on every core; it reads them with `CombinedStreamingDataset(weights=(0.3, 0.5, 0.2))`, "
                 "unshuffled (mixsql shuffles within windows). MosaicML Streaming's set-up is `MDSWriter` per component "
                 "(`text` only, uncompressed shards), read by one `StreamingDataset` of three `Stream`s with the "
                 "weights as proportions, unshuffled; its environment has torch 2.14.1, which its torchvision needs. "
                 "mixsql's arms run in this process (time to the first sample and RSS: section (i)).")
    splice(args.report, None, {"j": "\n".join(lines)})
    (DATA / "peers.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
