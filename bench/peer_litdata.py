"""One arm of the peers' benchmark, run in the LitData virtual environment that `bench/peers.py`
builds: the selective mixture of `bench/speed.py` (code 0.3, web with quality > 0.6 0.5,
books/arxiv/wiki 0.2) over the same Parquet files. Set-up is LitData's own path: `optimize` writes
each component's documents (its rows of every file, `text` only) to LitData's chunk format once, on
every core; then `CombinedStreamingDataset(weights=(0.3, 0.5, 0.2), seed=0)` and a
`StreamingDataLoader` deliver N documents' text. Prints one JSON line.

    python bench/peer_litdata.py --files DIR --samples N --workers W --cache DIR
"""

from __future__ import annotations

import argparse
import functools
import glob
import os
import time

from peer_common import consume, report

COMPONENTS = ("code", "web", "ref")
WEIGHTS = (0.3, 0.5, 0.2)


def documents(path: str, component: str):  # type: ignore[no-untyped-def]
    """The component's documents in one Parquet file, as LitData items."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["text", "domain", "quality"])
    domain = table.column("domain")
    if component == "code":
        keep = pc.equal(domain, "code")
    elif component == "web":
        keep = pc.and_(pc.equal(domain, "web"), pc.greater(table.column("quality"), 0.6))
    else:
        keep = pc.is_in(domain, value_set=__import__("pyarrow").array(["books", "arxiv", "wiki"]))
    for text in table.filter(keep).column("text").to_pylist():
        yield {"text": text}


def _texts(rows):  # type: ignore[no-untyped-def]
    return [r["text"] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--cache", required=True)
    args = parser.parse_args()
    import litdata

    files = sorted(glob.glob(os.path.join(args.files, "*.parquet")))
    dirs = [os.path.join(args.cache, c) for c in COMPONENTS]
    t0 = time.perf_counter()
    built = False
    for component, out in zip(COMPONENTS, dirs):
        if not os.path.exists(os.path.join(out, "index.json")):
            litdata.optimize(fn=functools.partial(documents, component=component), inputs=files, output_dir=out,
                             chunk_bytes="64MB", num_workers=os.cpu_count() or 1)
            built = True
    setup = time.perf_counter() - t0 if built else 0.0
    mixed = litdata.CombinedStreamingDataset([litdata.StreamingDataset(d) for d in dirs], weights=WEIGHTS, seed=0,
                                             iterate_over_all=False)
    loader = litdata.StreamingDataLoader(mixed, batch_size=32, num_workers=args.workers, collate_fn=_texts)
    report(setup, consume(loader, args.samples, batched=True), args.cache, litdata.__version__)


if __name__ == "__main__":
    main()
