"""What every peer's child script shares (standard library only: each runs in the peer's own
virtual environment, with this directory on its path): consuming N documents' text from an
iterable of rows or of batches, and the one JSON line it prints."""

from __future__ import annotations

import json
import os
import resource
import time
import typing as t


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


def report(setup: float, counted: tuple[int, int, float, float], disk_dir: str | None, version: str) -> None:
    """The arm's one JSON line: set-up, throughput, first sample, disk of its copy, peak RSS."""
    n, chars, first, seconds = counted
    disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(disk_dir) for f in fs) if disk_dir else 0
    print(json.dumps({"setup_s": setup, "seconds": seconds, "samples": n, "chars": chars, "first_s": first,
                      "disk_bytes": disk, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "version": version}))
