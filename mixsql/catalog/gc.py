"""``mixsql gc``: removing what a catalog no longer needs, never what a process uses.

What goes (each only if no process holds it, ``locks.hold``; ``all_unused`` and ``max_bytes``
widen the first two):

- **compiled plans** (``plans/<key>``) of dataset versions that are no longer current: no compile
  can find them again. With ``all_unused``, every plan not in use; with ``max_bytes``, the least
  recently used unused plans and caches until both fit;
- **compacted caches** (``caches/<key>``), by the same rules;
- **dataset versions** (``datasets/<name>-<version>-*``) that are superseded (``register --replace``
  or ``--append``) or dropped, once no remaining plan was compiled from them and their successor is
  older than ``grace_seconds`` (a process that read the catalog before may still bind against
  them);
- **binding counts** (``counts/``) of versions that are no longer current;
- what killed processes left: temporary directories older than ``grace_seconds`` whose compile lock
  no one holds, and ``.trash-*`` directories of an interrupted gc;
- compile locks (``.<key>.lock`` of a plan, cache or count) that no process holds: a process that
  opened one before it went waits on the new one (``atomic.locked``).

It runs under the catalog's writers' lock, so no registration changes what is current meanwhile;
readers take no lock that gc waits for, and gc takes none that they wait for.

A catalog may keep its plans and compacted caches under a size (``Catalog.set_cache_limit``): then
every process that compiles a plan or builds a cache runs ``prune`` afterwards, which is ``collect``
with that ``max_bytes``, skipped (until the next one) while another process holds the writers' lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
import typing as t
import uuid
from pathlib import Path

from mixsql import atomic, locks

if t.TYPE_CHECKING:
    from mixsql.catalog.store import Catalog

DEFAULT_GRACE_SECONDS = 600.0


@dataclasses.dataclass
class Collected:
    """What a gc removed (or, dry, would remove) and what it kept because a process uses it."""

    removed: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)  # (kind, path, bytes)
    in_use: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    recent: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)  # superseded within the grace
    dry_run: bool = False

    @property
    def freed_bytes(self) -> int:
        return sum(b for _, _, b in self.removed)

    def kinds(self) -> list[tuple[str, str, int, int]]:
        """(what happened, kind, how many, bytes) for each kind, in the order: removed, in use, recent."""
        out = []
        for what, items in (("removed", self.removed), ("in use", self.in_use), ("recent", self.recent)):
            kinds: dict[str, list[int]] = {}
            for kind, _, size in items:
                kinds.setdefault(kind, []).append(size)
            out += [(what, kind, len(sizes), sum(sizes)) for kind, sizes in kinds.items()]
        return out


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    with contextlib.suppress(OSError, ValueError):  # a compiled plan says its size (``manifest.SIZE_FILE``)
        return int((path / "size.txt").read_text(encoding="utf-8"))
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _meta(path: Path) -> dict[str, t.Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def collect(catalog: "Catalog", *, all_unused: bool = False, max_bytes: int | None = None,
            grace_seconds: float = DEFAULT_GRACE_SECONDS, dry_run: bool = False, wait: float = 600.0) -> Collected:
    """Remove what ``catalog`` no longer needs (module docstring); ``dry_run`` only says what.
    ``wait``: seconds to wait for the writers' lock (then an error)."""
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
        raise ValueError(f"max_bytes must be a number of bytes >= 0, not {max_bytes!r}")
    if not isinstance(grace_seconds, (int, float)) or grace_seconds < 0:
        raise ValueError(f"grace_seconds must be >= 0, not {grace_seconds!r}")
    out = Collected(dry_run=dry_run)
    root = catalog.path
    now = time.time()
    with catalog._write_lock(timeout=wait):
        catalog._stamp = None
        catalog._load()
        entries = catalog._index["datasets"]
        current = {(name, e["version"]) for name, e in entries.items()}
        current_dirs = {e["directory"] for e in entries.values()}

        def remove(kind: str, directory: Path, marker: str, size: int | None = None) -> bool:
            size = _bytes(directory) if size is None else size
            if dry_run:
                if locks.unused(directory / marker):
                    out.removed.append((kind, str(directory.relative_to(root)), size))
                    return True
                out.in_use.append((kind, str(directory.relative_to(root)), size))
                return False
            trash = directory.parent / f".trash-{directory.name}-{uuid.uuid4().hex[:8]}"
            if locks.remove_unused(directory, marker, trash):
                out.removed.append((kind, str(directory.relative_to(root)), size))
                return True
            out.in_use.append((kind, str(directory.relative_to(root)), size))
            return False

        # plans and caches: stale (or every unused one) first
        # (last used, kind, directory, marker, bytes, dataset versions) of what stays
        kept: list[tuple[float, str, Path, str, int, set[tuple[str, str]]]] = []
        for kind, folder, marker in (("plan", "plans", "plan.json"), ("compacted cache", "caches", "cache.json")):
            base = root / folder
            if not base.is_dir():
                continue
            for directory in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
                meta = _meta(directory / marker)
                versions = _versions(meta, kind)
                stale = meta is None or not versions <= current
                if (stale or all_unused) and remove(kind, directory, marker):
                    continue
                kept.append((_mtime(directory), kind, directory, marker,
                             _bytes(directory) if max_bytes is not None else 0, versions))
            for leftover in base.iterdir():  # what killed processes left behind
                if leftover.name.startswith(".trash-") or (
                        leftover.name.startswith(".tmp-") and now - _mtime(leftover) > grace_seconds
                        and locks.unused(base / f".{leftover.name[5:].rsplit('-', 1)[0]}.lock")):
                    out.removed.append(("temporary directory", str(leftover.relative_to(root)), _bytes(leftover)))
                    if not dry_run:
                        shutil.rmtree(leftover, ignore_errors=True)
            _remove_locks(base, out, dry_run, root)
        if max_bytes is not None:  # least recently used first, until what stays fits
            total = sum(k[4] for k in kept)
            for entry in sorted(kept, key=lambda k: k[0]):
                if total <= max_bytes:
                    break
                if remove(entry[1], entry[2], entry[3], entry[4]):
                    total -= entry[4]
                    kept.remove(entry)
        referenced = set().union(*(k[5] for k in kept if k[1] == "plan"))  # what the remaining plans were compiled from
        # dataset versions
        datasets = root / "datasets"
        successors = {name: _mtime(root / e["directory"]) for name, e in entries.items()}
        if datasets.is_dir():
            for directory in sorted(p for p in datasets.iterdir() if p.is_dir() and not p.name.startswith(".")):
                relative = str(directory.relative_to(root))
                if relative in current_dirs:
                    continue
                name, _, rest = directory.name.partition("-")
                version = rest.rsplit("-", 1)[0]
                if (name, version) in referenced and (name, version) not in current:  # (else its twin serves)
                    out.in_use.append(("dataset version", relative, _bytes(directory)))
                    continue
                since = successors.get(name, _mtime(directory))  # dropped: its own age
                if now - since <= grace_seconds:
                    out.recent.append(("dataset version", relative, _bytes(directory)))
                    continue
                remove("dataset version", directory, "files.parquet")
            if not dry_run:
                from mixsql.catalog.store import _sweep

                _sweep(datasets)
        # binding counts of versions no longer current
        counts = root / "counts"
        if counts.is_dir():
            _remove_locks(counts, out, dry_run, root)
            for path in sorted(counts.glob("*.json")):
                meta = _meta(path)
                try:
                    versions = {tuple(d) for d in json.loads(meta["ident"])["datasets"]} if meta else set()
                except (KeyError, TypeError, ValueError):
                    versions = set()
                if meta is None or not versions or not versions <= current or all_unused:
                    out.removed.append(("binding count", str(path.relative_to(root)), _bytes(path)))
                    if not dry_run:
                        with contextlib.suppress(OSError):
                            path.unlink()
    return out


def _remove_locks(base: Path, out: Collected, dry_run: bool, root: Path) -> None:
    """The compile locks (``.<key>.lock``) in ``base`` that no process holds and no compile in
    progress (``.tmp-<key>-*``) needs: one file per plan, cache or count ever made otherwise."""
    for lock in sorted(base.glob(".*.lock")):
        key = lock.name[1:-len(".lock")]
        if any(base.glob(f".tmp-{key}-*")):
            continue
        if dry_run:
            if locks.unused(lock):
                out.removed.append(("compile lock", str(lock.relative_to(root)), 0))
        elif atomic.remove_lock(lock):
            out.removed.append(("compile lock", str(lock.relative_to(root)), 0))


def prune(catalog: "Catalog") -> Collected | None:
    """With a cache limit set, ``collect`` down to it now, without waiting for the writers' lock
    (None: no limit, or another process writes the catalog and the next compile prunes)."""
    limit = catalog.cache_limit
    if limit is None:
        return None
    from mixsql.errors import CatalogError

    try:
        return collect(catalog, max_bytes=limit, wait=0.0)
    except CatalogError:
        return None


def _versions(meta: dict[str, t.Any] | None, kind: str) -> set[tuple[str, str]]:
    if meta is None:
        return set()
    if kind == "plan":
        return {(str(d[0]), str(d[1])) for d in meta.get("datasets", [])}
    return {(str(d), str(v)) for d, v in meta.get("datasets", {}).items()}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
