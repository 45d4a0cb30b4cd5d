"""One arm of the peers' benchmark, run in the Hugging Face `datasets` virtual environment that
`bench/peers.py` builds: the selective mixture of `bench/speed.py` (code 0.3, web with quality >
0.6 0.5, books/arxiv/wiki 0.2) over the same Parquet files, `interleave_datasets` with those
probabilities, N documents' text delivered. Prints one JSON line.

    python bench/peer_hf.py --files DIR --samples N --workers W --mode stream|arrow --cache DIR
"""

from __future__ import annotations

import glob
import os
import time

from peer_common import arguments, consume, report, texts


def _components(ds):  # type: ignore[no-untyped-def]
    return [
        ds.filter(lambda r: r["domain"] == "code"),
        ds.filter(lambda r: r["domain"] == "web" and r["quality"] > 0.6),
        ds.filter(lambda r: r["domain"] in ("books", "arxiv", "wiki")),
    ]


def main() -> None:
    parser = arguments()
    parser.add_argument("--mode", choices=["stream", "arrow"], required=True)
    args = parser.parse_args()
    import datasets
    import torch.utils.data

    datasets.disable_progress_bars()
    files = sorted(glob.glob(os.path.join(args.files, "*.parquet")))
    t0 = time.perf_counter()
    if args.mode == "stream":
        ds = datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
    else:
        ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=args.cache)
    parts = _components(ds)
    mixed = datasets.interleave_datasets(parts, probabilities=[0.3, 0.5, 0.2], seed=0,
                                         stopping_strategy="all_exhausted").select_columns(["text"])
    setup = time.perf_counter() - t0
    if args.workers == 0:
        counted = consume(mixed, args.samples, batched=False)
    else:
        loader = torch.utils.data.DataLoader(mixed, batch_size=32, num_workers=args.workers,
                                             collate_fn=texts)
        counted = consume(loader, args.samples, batched=True)
    report(setup, counted, args.cache if args.mode == "arrow" else None, datasets.__version__)


if __name__ == "__main__":
    main()
