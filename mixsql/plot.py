"""``mixsql explain FILE --plot out.png``: the schedule and the realised shares, over training progress.

Top: each component's share as the statement declares it over plan positions (stages, ramps, entry
and exit). Bottom: the shares the compiled chunk table actually gives each chunk row (what the
stream delivers), so a curriculum can be checked at a glance. Needs matplotlib (``mixsql[plot]``).
"""

from __future__ import annotations

import os
import typing as t

import numpy as np

from mixsql.errors import MixSQLError
from mixsql.plan import Schedule

if t.TYPE_CHECKING:
    from mixsql.api import Mix


def plot(mix: "Mix", path: str | os.PathLike[str], *, points: int = 400) -> None:
    """Draw ``mix``'s schedule and realised shares into a PNG at ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise MixSQLError("--plot needs matplotlib", hint="pip install 'mixsql[plot]'") from None
    spec = mix.spec
    names = list(spec.names)
    length = max(len(mix), 1)
    unit, scale = "samples", 1.0
    if mix.bound.batch_size:
        unit, scale = f"steps of {mix.bound.batch_size:,}", float(mix.bound.batch_size)
    schedule = Schedule(spec.shares, mix.bound.schedule)
    C, P = spec.chunk_size, spec.partitions
    counts = np.diff(spec.table, axis=0).astype(float)
    rows = np.arange(len(counts)) * C * P
    what = f"shares of each chunk row ({C:,} samples x {P} partitions)"
    if mix.bound.in_tokens:  # a merged stream has no chunk table: shares from the compiled plan
        plan = mix.plan()
        order = plan.positions_rows(0, len(plan))
        by_tokens = mix.bound.unit == "TOKENS"  # progress and shares in tokens, else in samples
        weight = np.asarray(plan.tokens[order], dtype=np.float64) if by_tokens else np.ones(len(order))
        before = np.concatenate(([0.0], np.cumsum(weight)))[:-1]
        length = max(float(weight.sum()), 1.0)
        if by_tokens:
            unit, scale = "tokens", 1.0
        edges = np.linspace(0, length, points + 1)
        bins = np.clip(np.searchsorted(edges, before, side="right") - 1, 0, points - 1)
        counts = np.zeros((points, len(names)))
        np.add.at(counts, (bins, np.asarray(plan.component[order], dtype=np.int64)), weight)
        rows = edges[:-1]
        what = f"{'token' if by_tokens else 'sample'} shares of {points} equal stretches of the stream"
    xs = np.linspace(0, length, points)
    declared = np.array([[float(v) for v in schedule.at(int(x))] for x in xs]).T
    keep = rows < length
    realised = (counts[keep] / np.maximum(counts[keep].sum(axis=1, keepdims=True), 1)).T
    colors = [plt.get_cmap("tab20")(i % 20) for i in range(len(names))]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, constrained_layout=True)
    top.stackplot(xs / scale, declared, labels=names, colors=colors, alpha=0.9)
    top.set_title("schedule: declared shares")
    if keep.any():
        bottom.stackplot(np.append(rows[keep], length) / scale, np.hstack([realised, realised[:, -1:]]),
                         colors=colors, step="post", alpha=0.9)
    bottom.set_title(f"realised: {what}")
    for axis in (top, bottom):
        axis.set_ylim(0, 1)
        axis.set_xlim(0, length / scale)
        axis.set_ylabel("share")
    bottom.set_xlabel(f"training progress ({unit})")
    top.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", frameon=False)
    fig.suptitle(f"{mix.bound.path or 'MIX statement'}: {len(mix):,} samples"
                 + (f", {int(length):,} tokens" if unit == "tokens" else ""))
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
