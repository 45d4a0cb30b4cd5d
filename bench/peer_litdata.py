"""One arm of the peers' benchmark, run in the LitData virtual environment that `bench/peers.py`
builds: the selective mixture of `bench/speed.py` (code 0.3, web with quality > 0.6 0.5,
books/arxiv/wiki 0.2) over the same Parquet files. Set-up is LitData's own path: `optimize` writes
each component's documents (its rows of every file, `text` only) to LitData's chunk format once, on
every core; then `CombinedStreamingDataset(weights=(0.3, 0.5, 0.2), seed=0)` and a
`StreamingDataLoader` deliver N documents' text. Prints one JSON line.

    python bench/peer_litdata.py --files DIR --samples N --workers W --cache DIR
"""

from __future__ import annotations

import functools
import glob
import os
import time

from peer_common import COMPONENTS, WEIGHTS, arguments, consume, documents, report, texts

def main() -> None:
    args = arguments().parse_args()
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
    loader = litdata.StreamingDataLoader(mixed, batch_size=32, num_workers=args.workers, collate_fn=texts)
    report(setup, consume(loader, args.samples, batched=True), args.cache, litdata.__version__)


if __name__ == "__main__":
    main()
