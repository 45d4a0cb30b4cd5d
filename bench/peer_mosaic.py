"""One arm of the peers' benchmark, run in the MosaicML Streaming virtual environment that
`bench/peers.py` builds: the selective mixture of `bench/speed.py` (code 0.3, web with quality >
0.6 0.5, books/arxiv/wiki 0.2) over the same Parquet files. Set-up is Mosaic's own path: each
component's documents (`text` only) written once to MDS shards with `MDSWriter`; then one
`StreamingDataset` of three `Stream`s with those proportions (unshuffled, like the other peers) and a
DataLoader deliver N documents' text. Prints one JSON line.

    python bench/peer_mosaic.py --files DIR --samples N --workers W --cache DIR
"""

from __future__ import annotations

import glob
import os
import time

from peer_common import COMPONENTS, WEIGHTS, arguments, consume, documents, report, texts


def main() -> None:
    args = arguments().parse_args()
    import streaming
    import torch.utils.data

    files = sorted(glob.glob(os.path.join(args.files, "*.parquet")))
    dirs = [os.path.join(args.cache, "mds", c) for c in COMPONENTS]
    t0 = time.perf_counter()
    built = False
    for component, out in zip(COMPONENTS, dirs):
        if not os.path.exists(os.path.join(out, "index.json")):
            with streaming.MDSWriter(out=out, columns={"text": "str"}, compression=None,
                                     size_limit=64 << 20) as writer:
                for path in files:
                    for item in documents(path, component):
                        writer.write(item)
            built = True
    setup = time.perf_counter() - t0 if built else 0.0
    streams = [streaming.Stream(local=d, proportion=w) for d, w in zip(dirs, WEIGHTS)]
    mixed = streaming.StreamingDataset(streams=streams, shuffle=False, batch_size=32, epoch_size=args.samples)
    loader = torch.utils.data.DataLoader(mixed, batch_size=32, num_workers=args.workers, collate_fn=texts)
    report(setup, consume(loader, args.samples, batched=True), os.path.join(args.cache, "mds"), streaming.__version__)
    streaming.base.util.clean_stale_shared_memory()


if __name__ == "__main__":
    main()
