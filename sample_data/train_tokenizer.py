"""Train the sample corpus's tokenizer: a small byte-level BPE with an end-of-text special token.

Deterministic for a given corpus and ``tokenizers`` version: the texts are fed in file and row
order, and BPE training breaks ties by a fixed rule. The result, ``sample_data/tokenizer.json``, is
committed, so nothing needs to train it again; run this after rebuilding the corpus.

    python sample_data/train_tokenizer.py [--vocab 4096] [--out sample_data/tokenizer.json]
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|endoftext|>"


def texts(root: Path) -> list[str]:
    """Every text of the Parquet shards, in file and row order."""
    out: list[str] = []
    for path in sorted(glob.glob(str(root / "parquet" / "*.parquet"))):
        out += pq.read_table(path, columns=["text"]).column("text").to_pylist()
    return out


def train(corpus: list[str], vocab: int) -> Tokenizer:
    """A byte-level BPE of ``vocab`` tokens (256 bytes, merges, and EOS)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=here / "tokenizer.json")
    args = parser.parse_args()
    tokenizer = train(texts(here), args.vocab)
    tokenizer.save(str(args.out), pretty=False)
    print(f"{args.out}: {tokenizer.get_vocab_size()} tokens, EOS {EOS!r} = {tokenizer.token_to_id(EOS)}")


if __name__ == "__main__":
    main()
