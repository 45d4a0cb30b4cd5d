"""Tokenizers: a Hugging Face ``tokenizers`` tokenizer, its fingerprint, its end-of-document token,
and batched counting and encoding. Used at registration (token counts) and by every DataLoader
worker that tokenizes on the fly, so it imports no compile-time stage.

A tokenizer's *fingerprint* is a hash of its JSON, canonicalised (keys sorted), so a tokenizer
loaded from a file and the same tokenizer passed as an object agree. Counts and ids never include
the special tokens a post-processor would add (``add_special_tokens=False``): the packer adds the
separators itself.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import typing as t
from pathlib import Path

import numpy as np

from mixsql.errors import MixSQLError

EOS_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[EOS]", "<|im_end|>")
ENCODE_BATCH = 1024  # texts per encode_batch call: the tokenizer's threads share each batch


class TokenizerError(MixSQLError):
    """A tokenizer that cannot be loaded, lacks what is asked of it, or is not the one the data was counted with."""


class Tokenizer:
    """A loaded tokenizer (``load``): counting and encoding without added special tokens."""

    def __init__(self, tokenizer: t.Any, source: str) -> None:
        self.tokenizer = tokenizer
        self.source = source
        self.json = tokenizer.to_str()
        canonical = json.dumps(json.loads(self.json), sort_keys=True, separators=(",", ":"))
        self.fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self._encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)

    def __repr__(self) -> str:
        return f"<Tokenizer {self.source} {self.fingerprint}: {self.vocab_size:,} tokens>"

    def encode(self, texts: t.Sequence[str | None]) -> list[list[int]]:
        """Token ids of each text (None and "" give no tokens)."""
        out: list[list[int]] = []
        for start in range(0, len(texts), ENCODE_BATCH):
            batch = [s or "" for s in texts[start: start + ENCODE_BATCH]]
            out += [e.ids for e in self._encode(batch, add_special_tokens=False)]
        return out

    def counts(self, texts: t.Sequence[str | None]) -> np.ndarray:
        """Number of tokens of each text, as int64."""
        counts = np.zeros(len(texts), dtype=np.int64)
        for start in range(0, len(texts), ENCODE_BATCH):
            batch = [s or "" for s in texts[start: start + ENCODE_BATCH]]
            counts[start: start + len(batch)] = [len(e) for e in self._encode(batch, add_special_tokens=False)]
        return counts

    def special_tokens(self) -> list[str]:
        """The added tokens marked special, in id order."""
        decoder = self.tokenizer.get_added_tokens_decoder()
        return [tok.content for _, tok in sorted(decoder.items()) if tok.special]

    def token_id(self, token: str | int, what: str) -> int:
        """The id of ``token`` (a token's text, or an id), checked against the vocabulary."""
        if isinstance(token, bool):
            raise TokenizerError(f"{what} must be a token or a token id, not {token!r}")
        if isinstance(token, (int, np.integer)):
            if not 0 <= int(token) < self.vocab_size:
                raise TokenizerError(f"{what} id {int(token)} is outside the vocabulary of {self.source} "
                                     f"(ids 0..{self.vocab_size - 1})")
            return int(token)
        found = self.tokenizer.token_to_id(token)
        if found is None:
            raise TokenizerError(f"{what} {token!r} is not a token of {self.source}",
                                 hint=self._specials_hint())
        return int(found)

    def eos_id(self, eos: str | int | None = None) -> int:
        """The end-of-document token: ``eos`` if given, else the tokenizer's own (a special token named
        like an end of text, or its only special token)."""
        if eos is not None:
            return self.token_id(eos, "the EOS token")
        specials = self.special_tokens()
        named = [s for s in specials if s in EOS_NAMES]
        if len(named) == 1 or (not named and len(specials) == 1):
            return int(self.tokenizer.token_to_id((named or specials)[0]))
        why = "has no special token" if not specials else f"has several special tokens ({', '.join(specials[:8])})"
        raise TokenizerError(f"{self.source} {why}, so mixsql cannot tell which one ends a document",
                             hint="name it: --eos TOKEN (API: eos='<|endoftext|>' or an id)")

    def _specials_hint(self) -> str:
        specials = self.special_tokens()
        return f"its special tokens are {', '.join(specials[:12])}" if specials else "it has no special tokens"


def load(tokenizer: "str | os.PathLike[str] | Tokenizer | t.Any") -> Tokenizer:
    """A tokenizer from a ``tokenizer.json`` path, a ``tokenizers.Tokenizer`` or a ``Tokenizer``."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    import tokenizers

    if isinstance(tokenizer, tokenizers.Tokenizer):
        return Tokenizer(tokenizer, "the tokenizer object")
    if not isinstance(tokenizer, (str, os.PathLike)):
        raise TokenizerError(f"a tokenizer is a tokenizer.json path or a tokenizers.Tokenizer, not "
                             f"{type(tokenizer).__name__}")
    path = Path(tokenizer).expanduser()
    if path.is_dir() and (path / "tokenizer.json").is_file():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(f"no tokenizer file at {path}",
                             hint="pass the path of a Hugging Face tokenizer.json (e.g. sample_data/tokenizer.json)")
    try:
        loaded = tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exceptions with serde's message
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TokenizerError(f"{path} is not a Hugging Face tokenizer file: {first}",
                             hint="pass a tokenizer.json as saved by tokenizers or transformers") from None
    return Tokenizer(loaded, str(path))


def from_json(text: str, source: str) -> Tokenizer:
    """A tokenizer from its JSON text (as a plan or the catalog stores it); parsed once per process."""
    return _from_json(text, source)


@functools.lru_cache(maxsize=8)
def _from_json(text: str, source: str) -> Tokenizer:
    import tokenizers

    return Tokenizer(tokenizers.Tokenizer.from_str(text), source)
