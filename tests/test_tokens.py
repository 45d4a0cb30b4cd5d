"""Tokenizers and token counts at registration."""

from __future__ import annotations

import itertools
import json

import pyarrow.parquet as pq
import pytest
import tokenizers

import mixsql
from mixsql import tokens
from mixsql.errors import CatalogError, DataError
from tests.conftest import JSONL_GLOB, PARQUET_GLOB, SAMPLE, TOKENIZER


def test_fingerprint_is_the_same_for_a_path_and_an_object() -> None:
    a = tokens.load(TOKENIZER)
    b = tokens.load(tokenizers.Tokenizer.from_file(str(TOKENIZER)))
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    assert a.eos_id() == a.tokenizer.token_to_id("<|endoftext|>")
    assert tokens.load(SAMPLE).fingerprint == a.fingerprint  # a directory holding tokenizer.json


def test_counts_exclude_special_tokens_and_handle_empty_text() -> None:
    tok = tokens.load(TOKENIZER)
    texts = ["def f(x):\n    return x", "", None, "<|endoftext|>"]
    expected = [len(tok.tokenizer.encode(s or "", add_special_tokens=False).ids) for s in texts]
    assert tok.counts(texts).tolist() == expected
    assert [len(x) for x in tok.encode(texts)] == expected
    assert expected[1] == expected[2] == 0


@pytest.mark.parametrize("glob", [PARQUET_GLOB, JSONL_GLOB])
def test_n_tokens_equal_an_independent_tokenization(tcon: mixsql.Connection, glob: str) -> None:
    name = "corpus" if glob == PARQUET_GLOB else "corpus_jsonl"
    info = tcon.dataset(name)
    assert info.tokenizer["fingerprint"] == tokens.load(TOKENIZER).fingerprint
    assert info.tokenizer["field"] == "text"
    rows = tcon.sql(f"SELECT _file_id, _row, n_tokens FROM {name} ORDER BY _file_id, _row").to_pylist()
    files = pq.read_table(info.files_path).to_pylist()
    tok = tokenizers.Tokenizer.from_file(str(TOKENIZER))
    texts: list[str] = []
    for f in sorted(files, key=lambda f: f["file_id"]):
        path = f["url"].removeprefix("file://")
        if f["format"] == "parquet":
            texts += pq.read_table(path, columns=["text"]).column("text").to_pylist()
        else:
            import gzip
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as fh:
                texts += [json.loads(line)["text"] for line in fh if line.strip()]
    assert len(texts) == len(rows) == info.samples
    assert [r["n_tokens"] for r in rows] == [len(tok.encode(s, add_special_tokens=False).ids) for s in texts]


def test_the_tokenizer_changes_the_dataset_version(tmp_path) -> None:
    con = mixsql.connect(tmp_path / "cat")
    plain = con.register("a", [PARQUET_GLOB])
    counted = con.register("b", [PARQUET_GLOB], tokenizer=TOKENIZER)
    assert plain.version != counted.version and plain.tokenizer is None
    assert (con.path / counted.tokenizer["path"]).read_text() == tokens.load(TOKENIZER).json


def test_bad_tokenizers_are_clear_errors_and_leave_the_catalog_unchanged(tmp_path) -> None:
    con = mixsql.connect(tmp_path / "cat")
    before = (con.path / "catalog.json").read_text()
    with pytest.raises(tokens.TokenizerError, match="no tokenizer file"):
        con.register("a", [PARQUET_GLOB], tokenizer=tmp_path / "missing.json")
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"not": "a tokenizer"}')
    with pytest.raises(tokens.TokenizerError, match="is not a Hugging Face tokenizer"):
        con.register("a", [PARQUET_GLOB], tokenizer=bogus)
    with pytest.raises(tokens.TokenizerError, match="tokenizer.json path or a tokenizers.Tokenizer"):
        con.register("a", [PARQUET_GLOB], tokenizer=42)
    with pytest.raises(CatalogError, match="one content field"):
        con.register("a", [PARQUET_GLOB], tokenizer=TOKENIZER, content=["text", "domain"])
    with pytest.raises(DataError, match="not text"):
        con.register("a", [PARQUET_GLOB], tokenizer=TOKENIZER, content=["tags"])
    assert (con.path / "catalog.json").read_text() == before


def test_a_field_named_n_tokens_collides_with_the_count(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a b", "n_tokens": 3}\n')
    con = mixsql.connect(tmp_path / "cat")
    with pytest.raises(DataError, match="n_tokens"):
        con.register("a", [str(path)], tokenizer=TOKENIZER)
    assert con.register("a", [str(path)]).samples == 1  # without a tokenizer it is a property like any other


def test_eos_comes_from_the_tokenizer_or_the_option(tmp_path) -> None:
    tok = tokens.load(TOKENIZER)
    assert tok.eos_id("<|endoftext|>") == tok.eos_id() == tok.eos_id(0)
    with pytest.raises(tokens.TokenizerError, match="not a token"):
        tok.eos_id("<nope>")
    with pytest.raises(tokens.TokenizerError, match="outside the vocabulary"):
        tok.eos_id(10 ** 6)
    bare = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, "b": 1}, unk_token="a"))
    with pytest.raises(tokens.TokenizerError, match="no special token"):
        tokens.load(bare).eos_id()
    assert tokens.load(bare).eos_id("b") == 1


# -- stored token ids -----------------------------------------------------------------------------


def _with_ids(tmp_path, kind=None, row_group_size=64):
    """The sample Parquet files rewritten with their token ids in a column ``ids`` (and without, for comparison)."""
    import glob
    import os

    import pyarrow as pa

    tok = tokenizers.Tokenizer.from_file(str(TOKENIZER))
    ids_dir, text_dir = tmp_path / "ids", tmp_path / "text"
    ids_dir.mkdir()
    text_dir.mkdir()
    for f in sorted(glob.glob(PARQUET_GLOB)):
        table = pq.read_table(f)
        pq.write_table(table, text_dir / os.path.basename(f), row_group_size=row_group_size)
        ids = [e.ids for e in tok.encode_batch(table.column("text").to_pylist(), add_special_tokens=False)]
        table = table.append_column("ids", pa.array(ids, kind or pa.list_(pa.uint16())))
        pq.write_table(table, ids_dir / os.path.basename(f), row_group_size=row_group_size)
    return ids_dir, text_dir


@pytest.mark.parametrize("width", ["uint16", "int32", "int64"])
def test_a_column_of_token_ids_packs_exactly_as_the_text_does(tmp_path, width: str) -> None:
    import numpy as np
    import pyarrow as pa

    ids_dir, text_dir = _with_ids(tmp_path, pa.list_(getattr(pa, width)()))
    con = mixsql.connect(tmp_path / "cat")
    con.register("text", [str(text_dir / "*.parquet")], tokenizer=TOKENIZER)
    info = con.register("ids", [str(ids_dir / "*.parquet")], tokenizer=TOKENIZER, tokens="ids", content=["text"])
    assert info.content == ("text", "ids") and info.tokenizer["kind"] == "ids"
    n = con.sql("SELECT sum(n_tokens)::BIGINT AS a, sum(_bytes)::BIGINT AS b FROM ids").to_pylist()[0]
    text = con.sql("SELECT sum(n_tokens)::BIGINT AS a, sum(_bytes)::BIGINT AS b FROM text").to_pylist()[0]
    assert n["a"] == text["a"]
    assert n["b"] == text["b"] + n["a"] * np.dtype(width).itemsize  # the ids' real size, not their JSON's
    for p in (1, 3):
        q = "MIX BY TOKENS 0.5 AS code WHERE domain = 'code', 0.5 AS rest FROM {} PARTITIONS " + str(p)
        a = list(con.mix(q.format("text")).sequences(96))
        b = list(con.mix(q.format("ids")).sequences(96))
        assert len(a) == len(b) > 0
        assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_token_id_columns_are_checked(tmp_path) -> None:
    import pyarrow as pa

    ids_dir, _ = _with_ids(tmp_path)
    cat = tmp_path / "cat"
    con = mixsql.connect(cat)
    with pytest.raises(CatalogError, match="needs the tokenizer"):
        con.register("x", [str(ids_dir / "*.parquet")], tokens="ids")
    with pytest.raises(DataError, match="'domain' is string, not a list of integer token ids"):
        con.register("x", [str(ids_dir / "*.parquet")], tokenizer=TOKENIZER, tokens="domain")
    bad = tmp_path / "bad.parquet"
    table = pq.read_table(sorted(ids_dir.glob("*.parquet"))[0])
    ids = table.column("ids").to_pylist()
    ids[5] = ids[5] + [4096]  # beyond the sample tokenizer's 4,096 ids
    pq.write_table(table.set_column(table.column_names.index("ids"), "ids", pa.array(ids, pa.list_(pa.uint16()))),
                   bad)
    with pytest.raises(DataError, match=r"bad.parquet, row 5: token id 4096 in 'ids' is outside the tokenizer's "
                                        r"vocabulary of 4,096"):
        con.register("x", [str(bad)], tokenizer=TOKENIZER, tokens="ids")
    assert con.datasets() == []
    assert not any((cat / "datasets").glob("*")) if (cat / "datasets").exists() else True


@pytest.mark.parametrize("glob", [PARQUET_GLOB, JSONL_GLOB])
def test_tokenize_writes_ids_once_and_keeps_every_stream(tmp_path, glob: str) -> None:
    import numpy as np

    con = mixsql.connect(tmp_path / "cat")
    con.register("d", [glob], tokenizer=TOKENIZER)
    q = ("MIX BY TOKENS 0.5 AS code WHERE domain = 'code', 0.3 AS m WHERE domain = 'manual', 0.2 AS rest FROM d "
         "PARTITIONS 3 SEED 2")
    before = list(con.mix(q).sequences(100))
    lineage = con.mix(q).lineage(0, 40).to_pylist()
    info = con.tokenize("d", TOKENIZER, tmp_path / "shards")
    assert info.content == ("text", "token_ids") and info.tokenizer["kind"] == "ids"
    shards = sorted((tmp_path / "shards").glob("*.parquet"))
    assert len(shards) == len(list(con.catalog.dataset("d").files())) and not list((tmp_path / "shards").glob(".tmp*"))
    after = list(con.mix(q).sequences(100))
    assert len(after) == len(before) > 0
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(before, after) for k in x)
    assert [r["row"] for r in con.mix(q).lineage(0, 40).to_pylist()] == [r["row"] for r in lineage]
    # the shards' row groups are the source's blocks
    rows = con.sql("SELECT _file_id, _block, count(*) AS n FROM d GROUP BY ALL ORDER BY ALL").to_pylist()
    groups = [(i, g, pq.ParquetFile(s).metadata.row_group(g).num_rows)
              for i, s in enumerate(shards) for g in range(pq.ParquetFile(s).metadata.num_row_groups)]
    assert [(r["_file_id"], r["_block"], r["n"]) for r in rows] == [g for g in groups if g[2]]
    with pytest.raises(CatalogError, match="already reads its token ids from 'token_ids'"):
        con.tokenize("d", TOKENIZER, tmp_path / "again")


def _flat_arrays(tmp_path, sidecar: bool = True):
    """The sample corpus as OLMo-style flat token arrays (uint16, EOS-separated), properties beside them."""
    import glob

    import numpy as np

    tok = tokenizers.Tokenizer.from_file(str(TOKENIZER))
    out = tmp_path / "flat"
    out.mkdir()
    texts = []
    for i, f in enumerate(sorted(glob.glob(PARQUET_GLOB))):
        table = pq.read_table(f)
        ids = [e.ids for e in tok.encode_batch(table.column("text").to_pylist(), add_special_tokens=False)]
        np.save(out / f"part-{i}.npy", np.concatenate([np.asarray(x + [0], dtype=np.uint16) for x in ids]))
        if sidecar:
            pq.write_table(table.drop_columns(["text"]), out / f"part-{i}.parquet")
        texts.append(ids)
    return out, texts


def test_flat_token_arrays_register_one_sample_per_document(tmp_path) -> None:
    import numpy as np

    out, ids = _flat_arrays(tmp_path)
    con = mixsql.connect(tmp_path / "cat")
    info = con.register("flat", [str(out)], tokenizer=TOKENIZER)  # the directory: the sidecars are not data
    assert info.samples == sum(len(x) for x in ids) and info.content == ("token_ids",)
    rows = con.sql("SELECT _file_id, _row, n_tokens, domain FROM flat ORDER BY _file_id, _row").to_pylist()
    assert [r["n_tokens"] for r in rows] == [len(x) for f in ids for x in f]
    assert {r["domain"] for r in rows} == {"code", "docs", "manual", "messages"}
    mix = con.mix("MIX BY TOKENS 0.5 AS code WHERE domain = 'code', 0.5 AS rest FROM flat PARTITIONS 2")
    lineage = mix.lineage(0, 200).to_pylist()
    for r, s in zip(lineage, mix.samples(limit=200)):
        i = int(r["file"].rsplit("-", 1)[1].split(".")[0])
        assert s["token_ids"].tolist() == ids[i][r["row"]]
    stream = list(itertools.chain.from_iterable(s["token_ids"].tolist() + [0] for s in con.mix(
        "MIX BY TOKENS 1 AS all_docs FROM flat PARTITIONS 1").samples()))
    seqs = list(con.mix("MIX BY TOKENS 1 AS all_docs FROM flat PARTITIONS 1").sequences(64))
    assert np.concatenate([s["input_ids"] for s in seqs]).tolist() == stream[: 64 * len(seqs)]


def test_bad_flat_token_arrays_are_clear_errors(tmp_path) -> None:
    import numpy as np

    out, _ = _flat_arrays(tmp_path, sidecar=False)
    con = mixsql.connect(tmp_path / "cat")
    with pytest.raises(CatalogError, match="need the tokenizer"):
        con.register("x", [str(out / "part-0.npy")])
    np.save(tmp_path / "wide.npy", np.arange(10, dtype=np.int64))
    with pytest.raises(DataError, match="holds int64 of shape .10,., not a flat array of uint16 or uint32"):
        con.register("x", [str(tmp_path / "wide.npy")], tokenizer=TOKENIZER)
    np.save(tmp_path / "big.npy", np.asarray([1, 2, 0, 5000, 0], dtype=np.uint16))
    with pytest.raises(DataError, match="token id 5000 at position 3 is outside the tokenizer's vocabulary"):
        con.register("x", [str(tmp_path / "big.npy")], tokenizer=TOKENIZER)
    np.save(tmp_path / "two.npy", np.asarray([1, 2, 0, 3, 0], dtype=np.uint16))
    pq.write_table(pq.read_table(sorted(PARQUET_GLOB_FILES())[0]).slice(0, 5).drop_columns(["text"]),
                   tmp_path / "two.parquet")
    with pytest.raises(DataError, match="have 5 rows, but it holds 2 documents"):
        con.register("x", [str(tmp_path / "two.npy")], tokenizer=TOKENIZER)
    assert con.datasets() == []


def PARQUET_GLOB_FILES() -> list[str]:
    import glob

    return glob.glob(PARQUET_GLOB)
