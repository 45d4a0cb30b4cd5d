"""BENCHMARKS.md in sections: each benchmark script replaces its own sections and keeps the others."""

from __future__ import annotations

import re
from pathlib import Path

_HEADING = re.compile(r"^## \(([a-z])\)", re.M)


def splice(path: Path, preamble: str | None, sections: dict[str, str]) -> None:
    """Replace the sections ``## (x) ...`` named by ``sections`` (keyed by letter; each text starts with
    its heading), keep every other section, and put them in letter order; ``preamble`` replaces the
    text before the first section when given."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    marks = list(_HEADING.finditer(text))
    head = text[: marks[0].start()] if marks else text
    kept = {m.group(1): text[m.start(): marks[i + 1].start() if i + 1 < len(marks) else len(text)]
            for i, m in enumerate(marks)}
    kept.update({letter: body.rstrip("\n") + "\n\n" for letter, body in sections.items()})
    out = (preamble.rstrip("\n") + "\n\n" if preamble is not None else head) + "".join(kept[k] for k in sorted(kept))
    path.write_text(out.rstrip("\n") + "\n", encoding="utf-8")
