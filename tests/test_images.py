"""Image-text datasets: WebDataset shards and Parquet image columns register, mix with text, stream
through the torch dataset, resume and lineage as text does; bad shards and columns are clear errors."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch.utils.data

import mixsql
from mixsql.errors import CatalogError, DataError
from tests.conftest import PARQUET_GLOB, SAMPLE

PIL = pytest.importorskip("PIL.Image")

SHARDS = SAMPLE / "images" / "webdataset"
PAIRS = SAMPLE / "images" / "parquet"
VLM = SAMPLE / "vlm.mixsql"


@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> mixsql.Connection:
    con = mixsql.connect(tmp_path_factory.mktemp("vlm") / "cat")
    con.register("images", [str(SHARDS)])
    con.register("pairs", [str(PAIRS)])
    con.register("corpus", [PARQUET_GLOB])
    return con


def _members(path: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar:
            key, ext = m.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def test_shards_register_one_sample_per_key_with_typed_properties(vlm: mixsql.Connection) -> None:
    assert vlm.dataset("images").samples == 96 and vlm.dataset("images").images == ("image",)
    types = {r["column_name"]: r["column_type"] for r in vlm.sql("DESCRIBE images").to_pylist()}
    assert types["aesthetic"] == "DOUBLE" and types["width"] == "BIGINT" and types["key"] == "VARCHAR"
    assert "image" not in types and "caption" not in types  # content stays in the shards
    assert vlm.dataset("pairs").images == ("image",)
    assert "image" not in {r["column_name"] for r in vlm.sql("DESCRIBE pairs").to_pylist()}
    rows = vlm.sql("SELECT key, image_bytes, width FROM images ORDER BY key").to_pylist()
    truth = {**_members(SHARDS / "shard-00000.tar"), **_members(SHARDS / "shard-00001.tar")}
    for row in rows:
        members = truth[row["key"]]
        image = next(v for k, v in members.items() if k in ("png", "jpg", "webp"))
        assert row["image_bytes"] == len(image) and row["width"] == json.loads(members["json"])["width"]


def test_mixed_statement_yields_images_captions_and_text(vlm: mixsql.Connection) -> None:
    mix = vlm.load(VLM)
    truth = {**_members(SHARDS / "shard-00000.tar"), **_members(SHARDS / "shard-00001.tar")}
    samples = list(mix.samples())
    assert {s["component"] for s in samples} == {"shards", "pairs", "text"}
    for s in samples:
        if s["component"] == "shards":
            members = truth[s["key"]]
            assert s["image"] == members[s["image_format"]] and s["caption"] == members["txt"].decode()
            assert s["aesthetic"] > 5 and s["text"] is None
        elif s["component"] == "pairs":
            image = PIL.open(io.BytesIO(s["image"]))
            assert image.size == (s["width"], s["height"]) and s["width"] >= 48 and s["caption"]
        else:
            assert s["image"] is None and s["text"]
    decoded = list(mix.samples(columns=["image", "width", "height"], images="tensor"))
    for s, d in zip(samples, decoded):
        if s["image"] is not None:
            assert tuple(d["image"].shape) == (3, s["height"], s["width"]) and d["image"].dtype == torch.uint8
    pil = next(s for s in mix.samples(columns=["image"], images="pil") if s["image"] is not None)
    assert isinstance(pil["image"], PIL.Image)


def test_each_shard_sample_is_one_ranged_read(vlm: mixsql.Connection) -> None:
    from mixsql.read import Reader

    mix = vlm.mix("MIX 1.0 AS all FROM images WHERE key IN ('000003', '000050', '000090') SEED 1")
    plan = mix.plan()
    reader = Reader(plan, ["key", "image", "caption"])
    got = reader.samples(plan.positions_rows(0, len(plan)))
    assert sorted(s["key"] for s in got) == ["000003", "000050", "000090"]
    assert reader.stats.jsonl_ranges <= 3 and reader.stats.bytes_decoded < 3 * 8192  # its members' bytes only


def test_torch_dataset_resume_and_lineage(vlm: mixsql.Connection) -> None:
    mix = vlm.load(VLM)
    want = [(s["component"], s["caption"], s["image"]) for s in mix.samples(columns=["caption", "image"])]
    ds = mix.torch_dataset(batch_size=4, rank=0, world_size=1, columns=["caption", "image"])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=mixsql.collate)
    got = [t for b in loader for t in zip(b["component"], b["caption"], b["image"])]
    assert got == want[:len(got)]
    resumed = mix.torch_dataset(batch_size=4, rank=0, world_size=1, columns=["caption", "image"], start_step=5)
    assert [(s["component"], s["caption"], s["image"]) for s in resumed] == want[20:len(got)]
    lineage = mix.lineage(2, 4, columns=["key", "aesthetic"]).to_pylist()
    assert [r["component"] for r in lineage] == [w[0] for w in want[8:12]]
    shard_rows = [r for r in lineage if r["component"] == "shards"]
    assert all(r["file"].endswith(".tar") and r["aesthetic"] > 5 for r in shard_rows)


def _shard(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_bad_shards_and_columns_are_clear_errors(tmp_path: Path, vlm: mixsql.Connection) -> None:
    png = (SHARDS / "shard-00000.tar")
    good = next(v for v in _members(png).values() if "png" in v)["png"]
    con = mixsql.connect(tmp_path / "cat")
    _shard(tmp_path / "nocap.tar", [("a.png", good), ("a.txt", b"x"), ("b.png", good)])
    with pytest.raises(DataError, match=r"nocap.tar, sample 'b' has no caption member \(.txt\)"):
        con.register("d", [str(tmp_path / "nocap.tar")])
    _shard(tmp_path / "split.tar", [("a.png", good), ("a.txt", b"x"), ("b.png", good), ("b.txt", b"y"),
                                    ("a.json", b"{}")])
    with pytest.raises(DataError, match="members of sample 'a' are not together"):
        con.register("d", [str(tmp_path / "split.tar")])
    _shard(tmp_path / "noimage.tar", [("a.txt", b"x")])
    with pytest.raises(DataError, match="sample 'a' has no image member"):
        con.register("d", [str(tmp_path / "noimage.tar")])
    assert con.datasets() == []  # nothing half-registered
    _shard(tmp_path / "corrupt.tar", [("a.png", b"\x89PNG not really"), ("a.txt", b"a cat")])
    con.register("corrupt", [str(tmp_path / "corrupt.tar")])
    mix = con.mix("MIX 1.0 AS all FROM corrupt SEED 1")
    assert list(mix.samples())[0]["image"] == b"\x89PNG not really"  # bytes are handed on as they are
    with pytest.raises(DataError, match=r"corrupt.tar, sample 0: field 'image' is not a decodable image"):
        list(mix.samples(images="pil"))
    with pytest.raises(DataError, match="image column 'width' is of type int64, not image bytes"):
        con.register("p", [str(PAIRS)], images=["width"])
    with pytest.raises(CatalogError, match="has no column 'picture'"):
        con.register("p", [str(PAIRS)], images=["picture"])
    with pytest.raises(CatalogError, match="is not a WebDataset shard"):
        con.register("p", [str(SHARDS / "shard-00000.tar"), PARQUET_GLOB])
    with pytest.raises(mixsql.MixSQLError, match="images must be one of"):
        list(vlm.load(VLM).samples(images="jpeg"))
