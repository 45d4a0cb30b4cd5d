"""Golden files of the language (grammar/golden): statement → compiled SQL per component, or the error.

Regenerate after an intended change with `make golden-update` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mixsql
from mixsql.errors import MixSQLError
from mixsql.parse import parse, to_sql
from tests.conftest import ROOT

GOLDEN = ROOT / "grammar" / "golden"
UPDATE = os.environ.get("MIXSQL_GOLDEN_UPDATE") == "1"


def compiled(mix: mixsql.Mix) -> str:
    e = mix.explanation()
    out = [f"-- canonical form\n{to_sql(mix.bound.tree)};", ""]
    for c, row in zip(mix.bound.components, e.components):
        out.append(f"-- {c.name}: dataset {c.dataset}, weight {row.weight} (share {c.share}), {c.samples} samples")
        out.append(f"{c.sql};")
    out.append(f"-- stream: {e.stream.samples} samples in {e.stream.partitions} partitions of "
               f"{e.stream.chunk_size}-sample chunks, limited by {e.stream.limiting}")
    for c in e.components:
        for other, n in c.overlaps:
            out.append(f"-- overlap: {n} samples of {c.name} belong to {other}")
    return "\n".join(out) + "\n"


def _check(expected_path: Path, actual: str) -> None:
    if UPDATE or not expected_path.exists():
        expected_path.write_text(actual, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"wrote missing golden {expected_path.relative_to(ROOT)}; review and commit it")
    assert actual == expected_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", sorted((GOLDEN / "compile").glob("*.mixsql")), ids=lambda p: p.stem)
def test_compile_golden(con: mixsql.Connection, path: Path) -> None:
    mix = con.load(path.relative_to(ROOT) if Path.cwd() == ROOT else path)
    _check(path.with_suffix(".sql"), compiled(mix))
    tree = parse(path.read_text())
    assert parse(to_sql(tree)) == tree  # formatting keeps the tree


@pytest.mark.parametrize("path", sorted((GOLDEN / "errors").glob("*.mixsql")), ids=lambda p: p.stem)
def test_error_golden(con: mixsql.Connection, path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    with pytest.raises(MixSQLError) as e:
        con.mix(path.read_text(encoding="utf-8"), path=rel)
    assert e.value.line is not None and e.value.col is not None
    _check(path.with_suffix(".err"), e.value.render() + "\n")


def test_every_documented_example_is_a_golden() -> None:
    """Each ```sql block in the READMEs that starts with MIX parses (the grammar cannot drift)."""
    import re

    for doc in (ROOT / "README.md", ROOT / "grammar" / "README.md"):
        for block in re.findall(r"```sql\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S):
            if block.lstrip().upper().startswith(("MIX", "--")) and "MIX" in block.upper():
                parse(block)
