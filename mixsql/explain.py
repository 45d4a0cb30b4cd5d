"""EXPLAIN: what a bound mixture will do, per component, before anything is read.

Shows matched samples and bytes, weights as written and normalised, where each component would
run out, the stream length and its limiting component, overlaps, and the compiled DuckDB SQL.
"""

from __future__ import annotations

import dataclasses
import typing as t

from mixsql.bind import BoundMix
from mixsql.plan import PlanSpec, StreamShape, resolve


@dataclasses.dataclass(frozen=True)
class ComponentRow:
    name: str
    dataset: str
    samples: int
    bytes: int
    blocks: int
    weight: str
    share: float
    lasts: int  # stream samples before this component alone would run out
    sql: str
    overlaps: tuple[tuple[str, int], ...]


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Structured EXPLAIN output; ``str()`` renders it as text."""

    components: tuple[ComponentRow, ...]
    stream: StreamShape
    spec: PlanSpec
    seed: int
    catalog_version: str
    source: str | None

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "source": self.source, "seed": self.seed, "chunk_size": self.stream.chunk_size,
            "partitions": self.stream.partitions,
            "catalog_version": self.catalog_version,
            "stream": {"samples": self.stream.samples, "limiting": self.stream.limiting},
            "components": [dataclasses.asdict(c) for c in self.components],
        }

    def __str__(self) -> str:
        return render(self)


def explain(bound: BoundMix) -> Explanation:
    """Explain ``bound`` (pure: reads only the counts binding computed)."""
    spec = resolve(bound)
    s = spec.shape
    rows = tuple(
        ComponentRow(name=c.name, dataset=c.dataset, samples=c.samples, bytes=c.bytes, blocks=c.blocks,
                     weight=_number(c.weight),
                     share=float(c.share), lasts=n, sql=c.sql, overlaps=c.overlaps)
        for c, n in zip(bound.components, s.per_component)
    )
    return Explanation(components=rows, stream=s, spec=spec, seed=bound.seed, catalog_version=bound.catalog_version,
                       source=bound.path)


def render(e: Explanation) -> str:
    head = ["component", "dataset", "samples", "bytes", "blocks", "weight", "share", "runs out after"]
    body = []
    for c in e.components:
        lasts = f"{c.lasts:,} samples" + ("  <- limits the stream" if c.name == e.stream.limiting else "")
        body.append([c.name, c.dataset, f"{c.samples:,}", _bytes(c.bytes), f"{c.blocks:,}", c.weight,
                     f"{c.share:.1%}", lasts])
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    right = {2, 3, 4, 5, 6}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [f"MIX {e.source or '<statement>'}  ·  seed {e.seed}  ·  chunk size {e.stream.chunk_size:,}  ·  "
           f"partitions {e.stream.partitions}  ·  catalog {e.catalog_version}", "", line(head),
           line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    out.append("")
    if e.stream.samples == 0:
        out.append(f"stream: EMPTY - {e.stream.limiting!r} cannot supply its first sample")
    else:
        out.append(f"stream: {e.stream.samples:,} samples until {e.stream.limiting!r} runs out; "
                   f"no sample appears twice")
        out.append(f"  {e.stream.partitions} canonical partition{'s' * (e.stream.partitions != 1)} of about "
                   f"{e.stream.samples // e.stream.partitions:,} samples, each an exactly mixed stream of "
                   f"{e.stream.chunk_size:,}-sample chunks")
    overlaps = [(c.name, other, n) for c in e.components for other, n in c.overlaps]
    if overlaps:
        out.append("overlaps (a sample belongs to the first component it matches, in statement order):")
        for name, other, n in overlaps:
            out.append(f"  {n:,} samples match both {other!r} and {name!r}; they belong to {other!r}")
    else:
        out.append("overlaps: none (no sample matches two components)")
    out.append("")
    out.append("compiled SQL (paste into `mixsql sql` to see a component's samples):")
    for c in e.components:
        out.append(f"  {c.name}: {c.sql}")
    return "\n".join(out)


def _number(value: t.Any) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    f = float(value)
    return f"{f:.6g}"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover
