"""Build the benchmark corpus: Zipf pseudo-word documents in Parquet shards (deterministic, no network).

    python bench/gen_corpus.py [--out bench_data/corpus] [--docs 420000] [--shards 32] [--row-group 1024]

About 2.5 KB of text per document (1-4 KB), so the default is about 1.05 GB of text. Columns:
id, text, domain (8, skewed), lang (10), quality (beta(2, 3)), n_bytes, n_tokens. Documents are
in random order, so a selective mixture touches most row groups (the case the oracle is for).
Also writes `synthetic/` property-only catalogs on request (--synthetic N) for planning benchmarks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DOMAINS = np.array(["web", "code", "books", "arxiv", "wiki", "news", "forum", "legal"])
DOMAIN_P = np.array([0.40, 0.15, 0.10, 0.10, 0.10, 0.08, 0.05, 0.02])
LANGS = np.array(["en", "de", "fr", "es", "it", "zh", "ja", "ru", "pt", "nl"])
LANG_P = np.array([0.55, 0.08, 0.07, 0.07, 0.05, 0.05, 0.04, 0.04, 0.03, 0.02])


def _vocabulary(rng: np.random.Generator, size: int = 50_000) -> list[str]:
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    lengths = rng.integers(2, 11, size)
    return ["".join(rng.choice(letters, n)) for n in lengths]


def _text_buffer(rng: np.random.Generator, words: list[str], n_words: int) -> str:
    ranks = np.minimum(rng.zipf(1.2, n_words) - 1, len(words) - 1)
    return " ".join(words[i] for i in ranks)


def corpus(out: Path, docs: int, shards: int, row_group: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = _vocabulary(rng)
    buffer = _text_buffer(rng, words, 6_000_000)  # ~40 MB that documents are cut from
    out.mkdir(parents=True, exist_ok=True)
    per = -(-docs // shards)
    for s in range(shards):
        n = min(per, docs - s * per)
        if n <= 0:
            break
        lengths = rng.integers(1000, 4000, n)
        starts = rng.integers(0, len(buffer) - 4001, n)
        text = [buffer[a:a + b] for a, b in zip(starts.tolist(), lengths.tolist())]
        table = pa.table({
            "id": pa.array([f"d{s:03d}-{i:07d}" for i in range(n)]),
            "text": pa.array(text),
            "domain": pa.array(rng.choice(DOMAINS, n, p=DOMAIN_P)),
            "lang": pa.array(rng.choice(LANGS, n, p=LANG_P)),
            "quality": pa.array(np.round(rng.beta(2, 3, n), 4)),
            "n_bytes": pa.array(lengths.astype(np.int64)),
            "n_tokens": pa.array((lengths // 4).astype(np.int64)),
        })
        pq.write_table(table, out / f"shard-{s:05d}.parquet", row_group_size=row_group, compression="zstd")


def synthetic(out: Path, rows: int, files: int = 16, seed: int = 1) -> None:
    """Property-only shards (a 1-byte text) for planning benchmarks at 10M-100M samples."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    per = -(-rows // files)
    for f in range(files):
        n = min(per, rows - f * per)
        with pq.ParquetWriter(out / f"part-{f:04d}.parquet", pa.schema([
                ("text", pa.string()), ("domain", pa.string()), ("lang", pa.string()), ("quality", pa.float64())]),
                compression="zstd") as writer:
            for start in range(0, n, 1 << 20):
                m = min(1 << 20, n - start)
                writer.write_table(pa.table({
                    "text": pa.array(["x"] * m),
                    "domain": pa.array(rng.choice(DOMAINS, m, p=DOMAIN_P)),
                    "lang": pa.array(rng.choice(LANGS, m, p=LANG_P)),
                    "quality": pa.array(np.round(rng.beta(2, 3, m), 4)),
                }), row_group_size=1 << 17)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_data/corpus"))
    parser.add_argument("--docs", type=int, default=420_000)
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--row-group", type=int, default=1024)
    parser.add_argument("--synthetic", type=int, default=0, help="rows of a property-only corpus instead")
    args = parser.parse_args()
    if args.synthetic:
        synthetic(args.out, args.synthetic)
    else:
        corpus(args.out, args.docs, args.shards, args.row_group)


if __name__ == "__main__":
    main()
