"""Image-text samples: WebDataset tar shards read one sample per ranged request, and image fields
decoded on request.

A WebDataset shard is a tar whose members are grouped by *key* (the member's path up to the first
dot of its file name): ``000012.jpg``, ``000012.txt``, ``000012.json`` are one sample. Registration
records each sample's byte range, from its first member's header to its last member's end, so a
reader fetches exactly that range and parses its members with ``tarfile``. A sample's record is
``key``, ``image`` (the encoded bytes), ``image_format`` (the extension), ``image_bytes``,
``caption`` (the ``.txt`` member) and the fields of its ``.json`` member.

Images stay encoded unless asked: ``images="pil"`` gives ``PIL.Image.Image`` values,
``images="tensor"`` uint8 tensors of shape (channels, height, width), with Pillow (``mixsql[images]``).
"""

from __future__ import annotations

import io
import json
import tarfile
import typing as t

from mixsql.errors import DataError, MixSQLError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
CAPTION_EXTENSIONS = ("txt", "caption", "text")
RECORD_FIELDS = ("key", "image", "image_format", "image_bytes", "caption")  # a tar sample's own fields
DECODINGS = ("bytes", "pil", "tensor")


def split_name(name: str) -> tuple[str, str]:
    """(key, extension) of a member name: the extension starts at the first dot of the file name."""
    directory, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), (ext.lower() if dot else "")


def sample_members(blob: bytes, url: str, row: int) -> tuple[str, dict[str, bytes]]:
    """The key and the members (extension → bytes) of one sample's byte range of a shard."""
    members: dict[str, bytes] = {}
    key = None
    try:
        with tarfile.open(fileobj=io.BytesIO(blob + b"\0" * 1024), mode="r:") as tar:  # + the end-of-archive blocks
            for member in tar:
                if not member.isfile():
                    continue
                k, ext = split_name(member.name)
                if key is None:
                    key = k
                elif k != key:
                    break
                handle = tar.extractfile(member)
                members[ext] = handle.read() if handle is not None else b""
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{url}, sample {row}: its byte range is not a readable tar member ({e}); the shard changed "
                        "since it was registered or is corrupt", file=url, row=row,
                        hint="register the dataset again with --replace") from None
    if key is None:
        raise DataError(f"{url}, sample {row}: no member in its byte range; the shard changed since it was registered",
                        file=url, row=row, hint="register the dataset again with --replace")
    return key, members


def sample_record(key: str, members: dict[str, bytes], url: str, row: int | None = None) -> dict[str, t.Any]:
    """A sample's record from its members, or a DataError naming the shard, key and what is missing."""
    where = f"{url}, sample {key!r}" if row is None else f"{url}, sample {row} ({key!r})"
    images = [ext for ext in members if ext in IMAGE_EXTENSIONS]
    if len(images) != 1:
        what = "no image member" if not images else f"{len(images)} image members ({', '.join(images)})"
        raise DataError(f"{where} has {what}; a WebDataset sample needs exactly one of "
                        f".{', .'.join(IMAGE_EXTENSIONS[:4])} ...", file=url, row=row,
                        hint="fix the shard (each key: one image, a .txt caption, optionally a .json)")
    captions = [ext for ext in members if ext in CAPTION_EXTENSIONS]
    if not captions:
        raise DataError(f"{where} has no caption member (.txt)", file=url, row=row,
                        hint="fix the shard (each key: one image, a .txt caption, optionally a .json)")
    try:
        caption = members[captions[0]].decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{where}: its caption is not valid UTF-8", file=url, row=row) from None
    record: dict[str, t.Any] = {"key": key, "image": members[images[0]], "image_format": images[0],
                                "image_bytes": len(members[images[0]]), "caption": caption}
    if "json" in members:
        try:
            fields = json.loads(members["json"])
        except (ValueError, UnicodeDecodeError) as e:
            raise DataError(f"{where}: its .json member does not parse ({e})", file=url, row=row) from None
        if not isinstance(fields, dict):
            raise DataError(f"{where}: its .json member is not a JSON object", file=url, row=row)
        clash = [name for name in fields if name in RECORD_FIELDS]
        if clash:
            raise DataError(f"{where}: its .json member has a field {clash[0]!r}, which the sample itself gives",
                            file=url, row=row, hint=f"rename it; a sample's own fields are {', '.join(RECORD_FIELDS)}")
        record.update(fields)
    return record


def check_decoding(images: str) -> None:
    if images not in DECODINGS:
        raise MixSQLError(f"images must be one of {', '.join(map(repr, DECODINGS))}, not {images!r}")
    if images != "bytes":
        try:
            import PIL.Image  # noqa: F401
        except ImportError:
            raise MixSQLError(f"images={images!r} decodes with Pillow, which is not installed",
                              hint="pip install 'mixsql[images]' (or keep images='bytes')") from None


def decode(value: bytes | None, images: str, url: str, row: int, field: str) -> t.Any:
    """An encoded image as ``images`` asks: PIL image or uint8 (C, H, W) tensor; a DataError naming
    the file, row and field if it does not decode."""
    if value is None or images == "bytes":
        return value
    import PIL.Image

    try:
        image = PIL.Image.open(io.BytesIO(value))
        image.load()
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as e:
        raise DataError(f"{url}, sample {row}: field {field!r} is not a decodable image ({e})", file=url, row=row,
                        hint="fix or drop the sample (a WHERE clause can leave it out)") from None
    if images == "pil":
        return image
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB", "RGBA") else image)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
