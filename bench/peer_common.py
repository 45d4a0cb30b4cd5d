"""What every peer's child script shares (standard library only at import: each runs in the peer's
own virtual environment, with this directory on its path): the arguments, the mixture's components
and weights and their documents, consuming N documents' text from an iterable of rows or of
batches, and the one JSON line it prints."""

from __future__ import annotations

import argparse
import json
import os
import time
import typing as t


COMPONENTS = ("code", "web", "ref")
WEIGHTS = (0.3, 0.5, 0.2)


def documents(path: str, component: str):  # type: ignore[no-untyped-def]
    """The component's documents in one Parquet file, as items ``{"text": ...}`` (the filters are
    the mixture's WHERE clauses; pyarrow is the peer environment's)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["text", "domain", "quality"])
    domain = table.column("domain")
    if component == "code":
        keep = pc.equal(domain, "code")
    elif component == "web":
        keep = pc.and_(pc.equal(domain, "web"), pc.greater(table.column("quality"), 0.6))
    else:
        keep = pc.is_in(domain, value_set=pa.array(["books", "arxiv", "wiki"]))
    for text in table.filter(keep).column("text").to_pylist():
        yield {"text": text}


def texts(rows):  # type: ignore[no-untyped-def]
    """A DataLoader's collate function: a batch of rows as its list of texts."""
    return [r["text"] for r in rows]


def arguments() -> argparse.ArgumentParser:
    """The options every peer's arm takes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--cache", required=True)
    return parser


def consume(items: t.Iterable[t.Any], samples: int, batched: bool) -> tuple[int, int, float, float]:
    """Take ``samples`` documents' text from ``items`` (rows with a "text" field, or batches: lists
    of texts): (documents, characters, seconds to the first, seconds in all)."""
    n = chars = 0
    first = None
    began = time.perf_counter()
    for item in items:
        if first is None:
            first = time.perf_counter() - began
        for text in (item[: samples - n] if batched else [item["text"]]):
            chars += len(text)
            n += 1
        if n >= samples:
            break
    return n, chars, first or 0.0, time.perf_counter() - began


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB: VmHWM, which starts anew with each program (ru_maxrss
    does not: Linux keeps it across fork and exec, so a child of a large parent reports the parent's)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(setup: float, counted: tuple[int, int, float, float], disk_dir: str | None, version: str) -> None:
    """The arm's one JSON line: set-up, throughput, first sample, disk of its copy, peak RSS."""
    n, chars, first, seconds = counted
    disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(disk_dir) for f in fs) if disk_dir else 0
    print(json.dumps({"setup_s": setup, "seconds": seconds, "samples": n, "chars": chars, "first_s": first,
                      "disk_bytes": disk, "peak_rss_mb": peak_rss_mb(),
                      "version": version}))
