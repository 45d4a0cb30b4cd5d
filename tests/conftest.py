"""Shared fixtures: the sample corpus registered once per session, and scratch catalogs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import mixsql

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
PARQUET_GLOB = str(SAMPLE / "parquet" / "*.parquet")
JSONL_GLOB = str(SAMPLE / "jsonl" / "*.jsonl*")


@pytest.fixture(scope="session")
def sample_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog with the sample corpus as `corpus` (Parquet) and `corpus_jsonl` (JSONL). Do not modify."""
    path = tmp_path_factory.mktemp("catalog") / "cat"
    con = mixsql.connect(path)
    con.register("corpus", [PARQUET_GLOB])
    con.register("corpus_jsonl", [JSONL_GLOB])
    con.close()
    return path


@pytest.fixture()
def con(sample_catalog: Path) -> mixsql.Connection:
    c = mixsql.connect(sample_catalog, create=False)
    yield c
    c.close()


@pytest.fixture()
def scratch(tmp_path: Path) -> mixsql.Connection:
    """An empty catalog of one's own."""
    c = mixsql.connect(tmp_path / "cat")
    yield c
    c.close()


@pytest.fixture()
def data_copy(tmp_path: Path) -> Path:
    """A private copy of sample_data/ that a test may modify."""
    dst = tmp_path / "data"
    shutil.copytree(SAMPLE, dst, ignore=shutil.ignore_patterns("*.py", "*.md"))
    return dst


TOKENIZER = SAMPLE / "tokenizer.json"


@pytest.fixture(scope="session")
def token_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample corpus registered with the sample tokenizer (`corpus`, `corpus_jsonl`). Do not modify."""
    path = tmp_path_factory.mktemp("tokens") / "cat"
    con = mixsql.connect(path)
    con.register("corpus", [PARQUET_GLOB], tokenizer=TOKENIZER)
    con.register("corpus_jsonl", [JSONL_GLOB], tokenizer=TOKENIZER)
    con.close()
    return path


@pytest.fixture()
def tcon(token_catalog: Path) -> mixsql.Connection:
    c = mixsql.connect(token_catalog, create=False)
    yield c
    c.close()
