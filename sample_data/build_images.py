"""Build mixsql's small image-text sample set: generated pictures of shapes with their captions.

Two layouts of the same kind of data, as vision-language corpora ship them:
  * ``images/webdataset/shard-0000{0,1}.tar``: WebDataset shards, a key per sample with
    ``KEY.{png,jpg,webp}`` (the picture), ``KEY.txt`` (its caption) and ``KEY.json`` (width,
    height, aesthetic score, source, caption length);
  * ``images/parquet/pairs-00000.parquet``: the LAION / Hugging Face layout, an ``image`` column
    of ``{bytes, path}`` structs beside ``caption`` and the same properties.

The output is byte-for-byte deterministic (seeded; tar headers carry fixed times and owners).
Needs Pillow (``pip install 'mixsql[images]'``).

    python sample_data/build_images.py [--out sample_data/images]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 40),
           "purple": (140, 60, 180), "orange": (240, 130, 30), "white": (245, 245, 245), "black": (20, 20, 20)}
SHAPES = ("circle", "square", "triangle", "stripe")
FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}


def picture(rng: random.Random) -> tuple[Image.Image, str, float]:
    """A picture of one shape on a background, its caption and an 'aesthetic' score."""
    size = rng.choice((32, 48, 64))
    fg, bg = rng.sample(sorted(COLOURS), 2)
    shape = rng.choice(SHAPES)
    image = Image.new("RGB", (size, size), COLOURS[bg])
    draw = ImageDraw.Draw(image)
    a, b = size // 5, size - size // 5
    if shape == "circle":
        draw.ellipse((a, a, b, b), fill=COLOURS[fg])
    elif shape == "square":
        draw.rectangle((a, a, b, b), fill=COLOURS[fg])
    elif shape == "triangle":
        draw.polygon(((size // 2, a), (b, b), (a, b)), fill=COLOURS[fg])
    else:
        for x in range(0, size, 8):
            draw.rectangle((x, 0, x + 3, size), fill=COLOURS[fg])
    article = "an" if fg[0] in "aeiou" else "a"
    caption = f"{article} {fg} {shape} on a {bg} background"
    contrast = sum(abs(p - q) for p, q in zip(COLOURS[fg], COLOURS[bg])) / 765
    aesthetic = round(2 + 6 * contrast + rng.uniform(-0.8, 0.8), 2)
    return image, caption, aesthetic


def encoded(image: Image.Image, ext: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=FORMATS[ext], **({"quality": 85} if ext != "png" else {}))
    return out.getvalue()


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 1700000000, 0o644, "mixsql", "mixsql"
    tar.addfile(info, io.BytesIO(data))


def build(out: Path, shards: int = 2, per_shard: int = 48, rows: int = 48, seed: int = 16) -> None:
    rng = random.Random(seed)
    (out / "webdataset").mkdir(parents=True, exist_ok=True)
    (out / "parquet").mkdir(parents=True, exist_ok=True)
    n = 0
    for s in range(shards):
        with tarfile.open(out / "webdataset" / f"shard-{s:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for _ in range(per_shard):
                image, caption, aesthetic = picture(rng)
                ext = rng.choice(sorted(FORMATS))
                key = f"{n:06d}"
                meta = {"width": image.width, "height": image.height, "aesthetic": aesthetic,
                        "source": rng.choice(("synthetic-shapes", "synthetic-stripes")),
                        "caption_length": len(caption)}
                _member(tar, f"{key}.{ext}", encoded(image, ext))
                _member(tar, f"{key}.txt", caption.encode())
                _member(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
                n += 1
    records = []
    for i in range(rows):
        image, caption, aesthetic = picture(rng)
        records.append({"image": {"bytes": encoded(image, "png"), "path": f"pair-{i:05d}.png"}, "caption": caption,
                        "width": image.width, "height": image.height, "aesthetic": aesthetic,
                        "source": "synthetic-pairs"})
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("caption", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
                        ("aesthetic", pa.float64()), ("source", pa.string())])
    pq.write_table(pa.Table.from_pylist(records, schema=schema), out / "parquet" / "pairs-00000.parquet",
                   row_group_size=16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "images")
    args = parser.parse_args()
    build(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
