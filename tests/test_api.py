"""The Python API's small surface: connect, register, mix/load, and a Mix's properties."""

from __future__ import annotations

from pathlib import Path

import pytest

import mixsql
from mixsql.api import parse_param
from tests.conftest import PARQUET_GLOB, SAMPLE


def test_connect_register_and_look_up(tmp_path: Path) -> None:
    with pytest.raises(mixsql.CatalogError, match="no mixsql catalog"):
        mixsql.connect(tmp_path / "none", create=False)
    with mixsql.connect(tmp_path / "cat") as con:
        info = con.register("corpus", PARQUET_GLOB)  # one path as a string
        assert con.datasets() == ["corpus"] and con.dataset("corpus") == info and info.samples == 4200
        assert "corpus" in repr(con) and con.version == con.catalog.version
        with pytest.raises(mixsql.CatalogError, match="already registered"):
            con.register("corpus", [PARQUET_GLOB])
        con.drop("corpus")
        assert con.datasets() == []


def test_a_mix_and_its_properties(con: mixsql.Connection) -> None:
    mix = con.mix("MIX 0.7 AS code WHERE domain = 'code', 0.3 AS rest FROM corpus SEED 5 CHUNK SIZE 100")
    assert mix.components == ["code", "rest"] and (mix.seed, mix.chunk_size) == (5, 100)
    assert len(mix) == mix.spec.shape.samples > 0 and mix.partitions == mix.spec.partitions
    assert mix.sql()["code"] == 'SELECT * FROM "corpus" WHERE (domain = \'code\')'
    assert mixsql.parse(str(mix)).components[0].name == "code" and "seed=5" in repr(mix)
    assert mix.explanation().to_dict()["components"][0]["name"] == "code" and "code" in mix.explain()
    assert con.mix(str(mix), seed=9).seed == 9


def test_load_files_and_parameters(con: mixsql.Connection, tmp_path: Path) -> None:
    assert con.load(SAMPLE / "pretrain.mixsql").components
    with pytest.raises(mixsql.MixSQLError, match="no such file"):
        con.load(tmp_path / "missing.mixsql")
    bad = tmp_path / "latin1.mixsql"
    bad.write_bytes("MIX 1 AS caf\xe9 FROM corpus".encode("latin-1"))
    with pytest.raises(mixsql.MixSQLError, match="is not UTF-8"):
        con.load(bad)
    assert parse_param("q=0.5") == ("q", 0.5) and parse_param("langs=[\"en\"]") == ("langs", ["en"])
    assert parse_param("name=plain text") == ("name", "plain text")
    with pytest.raises(mixsql.MixSQLError, match="expected NAME=VALUE"):
        parse_param("novalue")
