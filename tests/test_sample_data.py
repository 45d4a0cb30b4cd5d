"""The committed sample corpus has what the demo and the tests rely on."""

from __future__ import annotations

import duckdb

from tests.conftest import JSONL_GLOB, PARQUET_GLOB, SAMPLE


def test_shards_formats_and_fields() -> None:
    parquet = sorted((SAMPLE / "parquet").glob("*.parquet"))
    jsonl = sorted((SAMPLE / "jsonl").glob("*.jsonl*"))
    assert len(parquet) >= 2 and len(jsonl) >= 2
    assert any(p.name.endswith(".jsonl.gz") for p in jsonl)
    assert sum(p.stat().st_size for p in parquet + jsonl) < 5_000_000
    types = {r[0]: r[1] for r in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{PARQUET_GLOB}')").fetchall()}
    assert {k: types[k] for k in ("text", "domain", "language", "quality", "n_bytes", "tags", "has_example")} == {
        "text": "VARCHAR", "domain": "VARCHAR", "language": "VARCHAR", "quality": "DOUBLE", "n_bytes": "BIGINT",
        "tags": "VARCHAR[]", "has_example": "BOOLEAN"}


def test_domains_and_languages_are_varied_and_formats_agree() -> None:
    q = "SELECT count(DISTINCT domain), count(DISTINCT language), count(*) FROM {}"
    p = duckdb.sql(q.format(f"read_parquet('{PARQUET_GLOB}')")).fetchall()[0]
    j = duckdb.sql(q.format(f"read_json('{JSONL_GLOB}')")).fetchall()[0]
    assert p == j and p[0] >= 3 and p[1] >= 6
    natural = duckdb.sql(f"SELECT count(DISTINCT language) FROM read_parquet('{PARQUET_GLOB}') "
                         "WHERE language NOT IN ('python', 'c')").fetchall()[0][0]
    assert natural >= 5


def test_the_image_set_is_built_by_its_script(tmp_path) -> None:
    import subprocess
    import sys
    import tarfile

    import pyarrow.parquet as pq
    import pytest

    pytest.importorskip("PIL")
    from tests.conftest import ROOT

    subprocess.run([sys.executable, str(ROOT / "sample_data" / "build_images.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    committed = ROOT / "sample_data" / "images"
    for shard in ("shard-00000.tar", "shard-00001.tar"):
        names = [tarfile.open(d / "webdataset" / shard).getnames() for d in (tmp_path, committed)]
        assert names[0] == names[1] and len(names[0]) == 3 * 48  # the same keys and members (encoders may differ)
    built, kept = (pq.read_table(d / "parquet" / "pairs-00000.parquet") for d in (tmp_path, committed))
    assert built.drop_columns(["image"]).equals(kept.drop_columns(["image"]))
