"""Build mixsql's sample corpus from text that ships with every Debian/Python machine.

Sources (licences in sample_data/README.md):
  * the Python standard library: module sources split into functions and classes (domain
    ``code``, language ``python``), the C API headers (``code``, ``c``), docstrings (``docs``,
    ``en``) and the language reference topics in ``pydoc_data`` (``manual``, ``en``);
  * GNU coreutils, grep and sed message catalogs (``/usr/share/locale``): the long ``--help``
    texts in English and their translations (``manual``) and short messages (``messages``).

The output is deterministic for a given machine: records are sorted by a content hash, so
shards are a seeded shuffle of the corpus (a mixture never sees one domain per file).

    python sample_data/build.py [--out sample_data] [--max-samples 4200]
"""

from __future__ import annotations

import argparse
import ast
import gettext
import glob
import gzip
import hashlib
import json
import os
import re
import sys
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
STDLIB = Path(sysconfig.get_paths()["stdlib"])
INCLUDE = Path(sysconfig.get_paths()["include"])
LOCALE = Path("/usr/share/locale")
GETTEXT_DOMAINS = {"coreutils": "GPL-3.0-or-later", "grep": "GPL-3.0-or-later", "sed": "GPL-3.0-or-later"}
LANGS = ["de", "fr", "es", "it", "pt_BR", "nl", "pl", "ru", "uk", "ja", "zh_CN", "ko", "sv", "cs", "tr", "vi"]
MODULES = [
    "json", "csv", "argparse", "pathlib", "textwrap", "difflib", "heapq", "bisect", "fractions",
    "statistics", "calendar", "shlex", "glob", "fnmatch", "string", "functools", "contextlib",
    "dataclasses", "enum", "queue", "random", "base64", "gzip", "zipfile", "tarfile", "shutil",
    "tempfile", "configparser", "logging/__init__", "http/client", "urllib/parse", "email/utils",
    "collections/__init__", "asyncio/queues", "sqlite3/dump", "unittest/case", "typing", "inspect",
    "ipaddress", "datetime", "decimal", "copy", "pprint", "weakref", "secrets", "uuid", "zoneinfo/_zoneinfo",
]
HEADERS = ["object.h", "abstract.h", "unicodeobject.h", "listobject.h", "dictobject.h", "longobject.h",
           "pyerrors.h", "modsupport.h", "import.h", "ceval.h", "pystate.h", "bytesobject.h", "tupleobject.h"]


def _record(text: str, *, source: str, domain: str, language: str, origin: str, extra_tags: list[str]) -> dict:
    data = text.encode("utf-8")
    letters = sum(ch.isalpha() for ch in text)
    lines = text.count("\n") + 1
    # A transparent heuristic, not a model: prose-like, mid-length texts score high.
    length_score = min(len(data), 4000) / 4000
    alpha_ratio = letters / max(len(text), 1)
    quality = round(0.55 * alpha_ratio + 0.35 * length_score + 0.10 * (1 - min(lines, 200) / 200), 4)
    tags = set(extra_tags)
    lower = text.lower()
    if ">>>" in text or "example" in lower or "beispiel" in lower:
        tags.add("example")
    if "deprecated" in lower:
        tags.add("deprecated")
    if "usage:" in lower or "how to" in lower or text.lstrip().startswith(("To ", "Use ")):
        tags.add("howto")
    return {
        "id": hashlib.sha1(f"{origin}\0{text}".encode()).hexdigest()[:16],
        "text": text,
        "source": source,
        "domain": domain,
        "language": language,
        "origin": origin,
        "quality": quality,
        "n_bytes": len(data),
        "n_lines": lines,
        "has_example": "example" in tags,
        "tags": sorted(tags),
    }


def python_code_and_docs() -> list[dict]:
    out = []
    for mod in MODULES:
        path = STDLIB / f"{mod}.py"
        if not path.exists():
            continue
        src = path.read_text(encoding="utf-8")
        tree = ast.parse(src)
        name = mod.replace("/__init__", "").replace("/", ".")
        doc = ast.get_docstring(tree)
        if doc and len(doc) > 40:
            out.append(_record(doc, source="cpython-stdlib", domain="docs", language="en",
                               origin=f"Lib/{mod}.py", extra_tags=["module-doc", f"module:{name}"]))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            segment = ast.get_source_segment(src, node)
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            if segment and 80 <= len(segment) <= 12000 and node.col_offset == 0:
                out.append(_record(segment, source="cpython-stdlib", domain="code", language="python",
                                   origin=f"Lib/{mod}.py:{node.lineno}", extra_tags=[kind, f"module:{name}"]))
            d = ast.get_docstring(node)
            if d and len(d) > 60:
                out.append(_record(d, source="cpython-stdlib", domain="docs", language="en",
                                   origin=f"Lib/{mod}.py:{node.lineno}", extra_tags=[f"{kind}-doc", f"module:{name}"]))
    return out


def c_headers() -> list[dict]:
    out = []
    for header in HEADERS:
        path = INCLUDE / header
        if not path.exists():
            path = INCLUDE / "cpython" / header
        if not path.exists():
            continue
        src = path.read_text(encoding="utf-8", errors="replace")
        # Paragraph-sized pieces: blank lines separate declarations and their comments.
        for i, block in enumerate(re.split(r"\n\s*\n", src)):
            if 120 <= len(block) <= 6000:
                out.append(_record(block, source="cpython-include", domain="code", language="c",
                                   origin=f"Include/{header}#{i}", extra_tags=["header", "c-api"]))
    return out


def reference_manual() -> list[dict]:
    from pydoc_data.topics import topics

    out = []
    for name in sorted(topics):
        for j, part in enumerate(re.split(r"\n\n(?=\S)", topics[name])):
            if 200 <= len(part) <= 8000:
                out.append(_record(part, source="python-reference", domain="manual", language="en",
                                   origin=f"pydoc_data.topics:{name}#{j}", extra_tags=["reference", f"topic:{name}"]))
    return out


def gettext_texts() -> list[dict]:
    out = []
    for domain in GETTEXT_DOMAINS:
        english_done = False
        for lang in LANGS:
            mo = LOCALE / lang / "LC_MESSAGES" / f"{domain}.mo"
            if not mo.exists():
                continue
            with open(mo, "rb") as fh:
                catalog = gettext.GNUTranslations(fh)._catalog  # type: ignore[attr-defined]
            for key in sorted(k for k in catalog if isinstance(k, str) and k):
                value = catalog[key]
                if not isinstance(value, str) or not value.strip():
                    continue
                kind, dom = ("usage", "manual") if len(key) >= 200 else ("message", "messages")
                if dom == "messages" and len(key) < 25:
                    continue
                tags = [kind, f"program:{domain}"]
                out.append(_record(value, source=f"gnu-{domain}", domain=dom, language=lang.split("_")[0],
                                   origin=f"{domain}.mo:{lang}", extra_tags=tags))
                if not english_done:
                    out.append(_record(key, source=f"gnu-{domain}", domain=dom, language="en",
                                       origin=f"{domain}.pot", extra_tags=tags))
            english_done = True
    return out


def _select(records: list[dict], max_samples: int) -> list[dict]:
    """Deduplicate, cap each (domain, language) group, then order by content hash."""
    seen: set[str] = set()
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(records, key=lambda r: r["id"]):
        if r["id"] in seen:
            continue
        seen.add(r["id"])
        groups.setdefault((r["domain"], r["language"]), []).append(r)
    caps = {"code": 900, "docs": 700, "manual": 500, "messages": 160}
    chosen = []
    for (domain, language), items in sorted(groups.items()):
        cap = caps[domain] if language in ("en", "python", "c") else caps[domain] // 6
        chosen.extend(items[:cap])
    chosen.sort(key=lambda r: r["id"])
    return chosen[:max_samples]


SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("domain", pa.string()),
    ("language", pa.string()), ("origin", pa.string()), ("quality", pa.float64()), ("n_bytes", pa.int64()),
    ("n_lines", pa.int64()), ("has_example", pa.bool_()), ("tags", pa.list_(pa.string())),
])


def write(records: list[dict], out: Path, parquet_shards: int = 4, jsonl_shards: int = 3) -> None:
    (out / "parquet").mkdir(parents=True, exist_ok=True)
    (out / "jsonl").mkdir(parents=True, exist_ok=True)
    for old in glob.glob(str(out / "parquet" / "*.parquet")) + glob.glob(str(out / "jsonl" / "*.jsonl*")):
        os.remove(old)
    for i in range(parquet_shards):
        part = records[i::parquet_shards]
        table = pa.Table.from_pylist(part, schema=SCHEMA)
        # Small row groups so that a selective mixture touches only part of each file.
        pq.write_table(table, out / "parquet" / f"corpus-{i:05d}.parquet", row_group_size=128,
                       compression="zstd")
    for i in range(jsonl_shards):
        part = records[i::jsonl_shards]
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part).encode("utf-8")
        if i == jsonl_shards - 1:
            with gzip.GzipFile(out / "jsonl" / f"corpus-{i:05d}.jsonl.gz", "wb", mtime=0) as fh:
                fh.write(lines)
        else:
            (out / "jsonl" / f"corpus-{i:05d}.jsonl").write_bytes(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--max-samples", type=int, default=4200)
    args = parser.parse_args(argv)
    records = python_code_and_docs() + c_headers() + reference_manual() + gettext_texts()
    chosen = _select(records, args.max_samples)
    write(chosen, args.out)
    by_domain: dict[str, int] = {}
    for r in chosen:
        by_domain[r["domain"]] = by_domain.get(r["domain"], 0) + 1
    print(f"wrote {len(chosen)} samples to {args.out}: {by_domain}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
