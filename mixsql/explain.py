"""EXPLAIN: what a bound mixture will do, per component, before anything is read.

Shows matched samples and bytes, weights as written (or derived from the data) and effective
shares, the samples and epochs the stream takes from each component (flagging any beyond its
MAX EPOCHS), the stream's length and what ends it, the tree of a hierarchical mixture, the
curriculum's schedule as a table, overlaps, and the compiled DuckDB SQL.
"""

from __future__ import annotations

import dataclasses
import typing as t

from mixsql.bind import BoundMix
from mixsql.output import aligned as _table
from mixsql.output import human_bytes as _bytes
from mixsql.plan import PlanSpec, StreamShape, resolve


@dataclasses.dataclass(frozen=True)
class ComponentRow:
    name: str
    dataset: str
    samples: int
    bytes: int
    blocks: int
    weight: str  # relative to its siblings, as written or derived from the data
    share: float  # effective share at the declared weights
    taken: int  # samples the stream takes from it (what the budget needs, if it cannot be met)
    epochs: float  # passes over its samples that implies
    max_epochs: int | None  # None: unlimited
    exceeds: bool  # the stream needs more epochs than allowed
    left_at: int | None  # plan position where it left the stream (REDISTRIBUTE)
    order: str | None  # "quality DESC, 10 buckets"
    sql: str
    overlaps: tuple[tuple[str, int], ...]
    tokens: int | None = None  # n_tokens of its samples (None: no token counts)
    exact_tokens: int | None = None  # n_tokens the stream takes from it, when planned from token counts

    @property
    def tokens_taken(self) -> float | None:
        """Tokens the stream takes from it: exact when the stream is planned from token counts, else
        estimated from its mean document length (taken x tokens / samples)."""
        if self.exact_tokens is not None:
            return float(self.exact_tokens)
        if self.tokens is None:
            return None
        return self.taken * self.tokens / self.samples if self.samples else 0.0


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Structured EXPLAIN output; ``str()`` renders it as text."""

    components: tuple[ComponentRow, ...]
    stream: StreamShape
    spec: PlanSpec
    seed: int
    catalog_version: str
    source: str | None
    policy: str
    limit: int | None
    batch_size: int | None
    tree: tuple[tuple[str, str, float, str | None], ...]  # (path, weight, effective share, derivation), inner nodes too
    schedule: tuple[tuple[int, str, tuple[float, ...]], ...]  # (plan position, kind, leaf shares) at each point
    error: str | None
    unit: str = "SAMPLES"  # what the shares are shares of
    token_limit: int | None = None
    adapt: dict[str, t.Any] | None = None  # ADAPT USING ...: the weights above are the prior

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "source": self.source, "seed": self.seed, "chunk_size": self.stream.chunk_size,
            "partitions": self.stream.partitions, "catalog_version": self.catalog_version,
            "policy": self.policy, "limit": self.limit, "batch_size": self.batch_size, "unit": self.unit,
            "token_limit": self.token_limit,
            "stream": {"samples": self.stream.samples, "limiting": self.stream.limiting,
                       "tokens": self.stream.tokens},
            "components": [dataclasses.asdict(c) for c in self.components],
            "tree": [{"path": p, "weight": w, "share": s, "derived": d} for p, w, s, d in self.tree],
            "schedule": [{"at": x, "kind": k, "shares": dict(zip([c.name for c in self.components], v))}
                         for x, k, v in self.schedule],
            "error": self.error, "adapt": self.adapt,
        }

    def __str__(self) -> str:
        return render(self)


def explain(bound: BoundMix, spec: PlanSpec | None = None) -> Explanation:
    """Explain ``bound`` (reads only the counts binding computed, or for a stream planned from token
    counts the ``spec`` its merge gave; a budget that cannot be met is shown, not raised)."""
    if spec is None:
        if bound.in_tokens:
            raise ValueError("a stream planned from token counts is explained from its spec (tokenplan.resolve)")
        spec = resolve(bound)
    s = spec.shape
    rows = []
    for c in bound.components:
        taken = s.taken[c.index]
        epochs = taken / c.samples if c.samples else 0.0
        order = None
        if c.ordering is not None:
            order = f"{c.ordering.key} {'DESC' if c.ordering.descending else 'ASC'}, {spec.buckets[c.index]} buckets"
        rows.append(ComponentRow(
            name=c.name, dataset=c.dataset, samples=c.samples, bytes=c.bytes, blocks=c.blocks,
            weight=_number(c.weight), share=float(c.share), taken=taken, epochs=epochs, max_epochs=c.max_epochs,
            exceeds=c.max_epochs is not None and taken > c.max_epochs * c.samples, left_at=s.left_at[c.index],
            order=order, sql=c.sql, overlaps=c.overlaps, tokens=c.tokens,
            exact_tokens=s.tokens_taken[c.index] if s.tokens_taken is not None else None))
    tree = tuple((n.path, _number(n.weight), float(n.share), n.derived) for n in bound.nodes)
    schedule = []
    for seg in bound.schedule:
        if seg.kind == "HOLD" and schedule and schedule[-1][0] == seg.start:
            continue  # a RAMP's end point already shows it
        schedule.append((seg.start, seg.kind, tuple(float(v) for v in seg.begin)))
        if seg.end is not None and seg.kind == "RAMP":
            schedule.append((seg.end, "", tuple(float(v) for v in seg.finish)))
    return Explanation(components=tuple(rows), stream=s, spec=spec, seed=bound.seed, unit=bound.unit,
                       token_limit=bound.token_limit,
                       catalog_version=bound.catalog_version, source=bound.path, policy=bound.policy,
                       limit=bound.limit, batch_size=bound.batch_size, tree=tree, schedule=tuple(schedule),
                       adapt=bound.adapt.to_dict() if bound.adapt is not None else None,
                       error=spec.error.render() if spec.error else None)


def _tokens(e: Explanation) -> list[str]:
    """The mixture in tokens, when every component has token counts: what the model sees."""
    if not e.components or any(c.tokens is None for c in e.components):
        return []
    exact = e.stream.tokens_taken is not None
    taken = [c.tokens_taken or 0.0 for c in e.components]
    total = sum(taken) or 1.0
    mark = "" if exact else " (est.)"
    body = [[c.name, f"{c.tokens:,}", f"{c.tokens / c.samples:,.0f}" if c.samples else "-", f"{t:,.0f}",
             f"{t / c.tokens:.2f}" if c.tokens else "-", f"{t / total:.1%}", f"{c.share:.1%}"]
            for c, t in zip(e.components, taken)]
    if e.unit == "TOKENS":
        out = ["tokens (the statement mixes BY TOKENS: shares are shares of n_tokens):"]
        share_head = "target share"
    elif exact:
        out = ["tokens (the statement mixes samples, its budget is in tokens; token shares as realised):"]
        share_head = "sample share"
    else:
        out = ["tokens (the statement mixes samples; token shares follow from each component's mean length):"]
        share_head = "sample share"
    out += _table(["component", "tokens", "per sample", f"taken{mark}", "epochs", f"token share{mark}", share_head],
                  body, {1, 2, 3, 4, 5, 6})
    if exact:
        out.append(f"  {total:,.0f} tokens of content in the stream (EOS separators come on top when packed); "
                   "pack them with torch_dataset(seq_len=...)")
        if e.unit == "TOKENS":
            out.append("  each partition merges its components by weighted fair queueing: at every chunk boundary "
                       "each one is within one document of its share")
    else:
        out.append(f"  about {total:,.0f} tokens in the stream; pack them with torch_dataset(seq_len=...)")
    out.append("")
    return out


def render(e: Explanation) -> str:
    head = ["component", "dataset", "samples", "bytes", "blocks", "weight", "share", "taken", "epochs", "note"]
    body = []
    for c in e.components:
        notes = []
        if c.exceeds:
            notes.append(f"EXCEEDS MAX EPOCHS {c.max_epochs}")
        elif c.max_epochs != 1:
            notes.append(f"max epochs {c.max_epochs if c.max_epochs is not None else 'unlimited'}")
        if c.name == e.stream.limiting:
            notes.append("<- runs out first, ends the stream")
        if c.left_at is not None:
            notes.append(f"runs out at sample {c.left_at:,}; its share goes to the others")
        if c.order:
            notes.append(f"ordered by {c.order}")
        body.append([c.name, c.dataset, f"{c.samples:,}", _bytes(c.bytes), f"{c.blocks:,}", c.weight,
                     f"{c.share:.1%}", f"{c.taken:,}", f"{c.epochs:.2f}", "; ".join(notes)])
    out = [f"MIX {e.source or '<statement>'}  ·  seed {e.seed}  ·  chunk size {e.stream.chunk_size:,}  ·  "
           f"partitions {e.stream.partitions}  ·  catalog {e.catalog_version}", ""]
    out += _table(head, body, {2, 3, 4, 5, 6, 7, 8})
    out.append("")
    out += _tokens(e)
    if e.error:
        out.append("ERROR: " + e.error.splitlines()[0])
        out.append("  (taken and epochs above: what the budget would need)")
    elif e.stream.samples == 0:
        out.append(f"stream: EMPTY - {e.stream.limiting!r} cannot supply its first sample")
    else:
        why = "its LIMIT" if e.stream.limiting == "LIMIT" else f"{e.stream.limiting!r} runs out"
        if e.stream.limiting == "LIMIT" and e.token_limit is not None:
            why = f"its LIMIT of {e.token_limit:,} tokens"
        repeats = any(c.epochs > 1 for c in e.components)
        out.append(f"stream: {e.stream.samples:,} samples, until {why} (ON EXHAUSTION {e.policy}); "
                   + ("components over one epoch are reshuffled each epoch" if repeats else "no sample appears twice"))
        out.append(f"  {e.stream.partitions} canonical partition{'s' * (e.stream.partitions != 1)} of about "
                   f"{e.stream.samples // e.stream.partitions:,} samples, each an exactly mixed stream of "
                   f"{e.stream.chunk_size:,}-sample chunks"
                   + (f" (mixed in {e.unit.lower()})" if e.unit == "TOKENS" else ""))
    if any("." in p for p, _, _, _ in e.tree) or any(d for _, _, _, d in e.tree):
        out += ["", "tree (weights relative to siblings; share = effective share of the stream):"]
        for path, weight, share, derived in e.tree:
            depth = path.count(".")
            label = "  " * depth + path.rsplit(".", 1)[-1]
            out.append(f"  {label:<24} weight {weight:<10} share {share:6.1%}" + (f"  ({derived})" if derived else ""))
    if e.schedule:
        out += ["", "schedule (shares in force from each point; RAMP interpolates linearly to the next point):"]
        unit = f" / steps of {e.batch_size:,}" if e.batch_size and e.unit == "SAMPLES" else ""
        head = [f"from {e.unit.lower()[:-1]}{unit}", "kind"] + [c.name for c in e.components]
        body = []
        for x, kind, shares in e.schedule:
            at = f"{x:,}" + (f" / {x / e.batch_size:,.6g}" if unit else "")
            body.append([at, kind] + [f"{v:.1%}" for v in shares])
        out += ["  " + line for line in _table(head, body, set(range(2, len(head))) | {0})]
        row = e.stream.chunk_size * e.stream.partitions
        if e.unit == "TOKENS":
            out.append("  a partition reaches a point when its own tokens x partitions pass it")
        elif any(x % row for x, _, _ in e.schedule):
            out.append(f"  resolution: chunk rows of {row:,} samples (chunk size x partitions); a point inside a "
                       "chunk row takes effect from the next row, which catches up (prefix stable)")
    if e.adapt is not None:
        options = ", ".join(f"{k} = {v}" for k, v in e.adapt["options"].items()) or "defaults"
        row = e.stream.chunk_size * e.stream.partitions
        out += ["", f"adapts: {e.adapt['algorithm']} ({options}), LAG {e.adapt['lag']} steps of {e.batch_size:,}",
                "  the weights above are the prior: each step's feedback (dataset.feedback) may change them from the "
                f"first chunk row of {row:,} samples after step + LAG; taken and epochs are the prior's",
                "  a component that runs out leaves and the others share its weight; the stream keeps its LIMIT"]
    overlaps = [(c.name, other, n) for c in e.components for other, n in c.overlaps]
    out.append("")
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


def render_packing(summary: dict[str, t.Any], components: t.Sequence[ComponentRow] = ()) -> str:
    """The packed stream (``PackedPlan.summary``) as text: what a trainer gets and what is dropped."""
    L, n = summary["seq_len"], summary["sequences"]
    sep = "BOS + EOS" if summary["bos"] is not None else "EOS"
    out = ["", "", f"packed ({summary['pack']}): {n:,} sequences of {L:,} tokens (+1 label each, shared with the next) "
           f"from {summary['tokens']:,} tokens with {sep} per document"]
    if summary["pack"] == "mixed":
        out.append(f"  dropped: {summary['dropped_tokens']:,} tokens, the incomplete tail of each of "
                   f"{summary['partitions']} partition(s)")
        return "\n".join(out)
    targets = {c.name: c.share for c in components}
    body = [[c["name"], f"{c['sequences']:,}", f"{c['share']:.1%}",
             f"{targets[c['name']]:.1%}" if c["name"] in targets else "-", f"{c['dropped_tokens']:,}"]
            for c in summary["components"]]
    out += ["  every sequence holds one component's documents; a document longer than what is left of a "
            "sequence carries over into that component's next one (no padding)"]
    out += _table(["component", "sequences", "sequence share", "target share", "dropped tokens"], body, {1, 2, 3, 4})
    out.append(f"  dropped: {summary['dropped_tokens']:,} tokens, the incomplete tail of each component in each of "
               f"{summary['partitions']} partition(s) (at most {L:,} each)")
    return "\n".join(out)
