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
    b = mix.bound
    out = [f"-- canonical form\n{to_sql(b.tree)};", ""]
    for c, row in zip(b.components, e.components):
        epochs = "unlimited" if c.max_epochs is None else c.max_epochs
        out.append(f"-- {c.name}: dataset {c.dataset}, weight {row.weight} (share {c.share}), {c.samples} samples, "
                   f"takes {row.taken} ({row.epochs:.3f} epochs, max {epochs})"
                   + (f", ordered by {row.order}" if row.order else ""))
        out.append(f"{c.sql};")
    limit = f"LIMIT {b.limit}" if b.limit is not None else \
        f"LIMIT {b.token_limit} TOKENS" if b.token_limit is not None else "no LIMIT"
    out.append(f"-- stream: {e.stream.samples} samples in {e.stream.partitions} partitions of "
               f"{e.stream.chunk_size}-sample chunks, ended by {e.stream.limiting} ({limit}, ON EXHAUSTION {b.policy})")
    for seg in b.schedule:
        end = "on" if seg.end is None else f"to {seg.end}"
        shares = ", ".join(f"{n}={v}" for n, v in zip(b.names, seg.begin))
        out.append(f"-- schedule: {seg.kind} from {seg.start} {end}: {shares}"
                   + (f" -> {', '.join(str(v) for v in seg.finish)}" if seg.finish != seg.begin else ""))
    if e.stream.tokens_taken is not None:
        taken = ", ".join(f"{c.name}={n}" for c, n in zip(b.components, e.stream.tokens_taken))
        out.append(f"-- tokens: {e.stream.tokens} in the stream ({b.unit}): {taken}")
    for c in e.components:
        for other, n in c.overlaps:
            out.append(f"-- overlap: {n} samples of {c.name} belong to {other}")
    if e.error:
        out.append("-- error: " + e.error.splitlines()[0])
    return "\n".join(out) + "\n"


def _params(text: str) -> dict:
    """Golden statements bind parameters from a leading ``-- params: {json}`` line."""
    import json

    for line in text.splitlines():
        if line.startswith("-- params:"):
            return json.loads(line.removeprefix("-- params:"))
    return {}


def _connection(request: pytest.FixtureRequest, text: str) -> mixsql.Connection:
    """Golden statements run on the sample catalog; a leading ``-- catalog: tokens`` line asks for the
    one registered with the sample tokenizer."""
    return request.getfixturevalue("tcon" if "-- catalog: tokens" in text else "con")


def _check(expected_path: Path, actual: str) -> None:
    if UPDATE or not expected_path.exists():
        expected_path.write_text(actual, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"wrote missing golden {expected_path.relative_to(ROOT)}; review and commit it")
    assert actual == expected_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", sorted((GOLDEN / "compile").glob("*.mixsql")), ids=lambda p: p.stem)
def test_compile_golden(request: pytest.FixtureRequest, path: Path) -> None:
    con = _connection(request, path.read_text())
    mix = con.load(path.relative_to(ROOT) if Path.cwd() == ROOT else path, params=_params(path.read_text()))
    _check(path.with_suffix(".sql"), compiled(mix))
    tree = parse(path.read_text())
    assert parse(to_sql(tree)) == tree  # formatting keeps the tree


@pytest.mark.parametrize("path", sorted((GOLDEN / "errors").glob("*.mixsql")), ids=lambda p: p.stem)
def test_error_golden(request: pytest.FixtureRequest, path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    text = path.read_text(encoding="utf-8")
    con = _connection(request, text)
    with pytest.raises(MixSQLError) as e:
        con.mix(text, path=rel, params=_params(text))
    assert e.value.line is not None and e.value.col is not None
    _check(path.with_suffix(".err"), e.value.render() + "\n")


def test_every_documented_example_is_a_golden() -> None:
    """Each ```sql block of the language reference is a golden statement, verbatim; the README's parse."""
    import re

    goldens = {p.read_text(encoding="utf-8").replace("-- catalog: tokens\n", "").strip()
               for p in (GOLDEN / "compile").glob("*.mixsql")}
    reference = (ROOT / "grammar" / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", reference, flags=re.S)
    assert len(blocks) >= 10
    for block in blocks:
        assert block.strip() in goldens, f"not a golden file under grammar/golden/compile:\n{block}"
    for block in re.findall(r"```sql\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S):
        if "MIX" in block.upper():
            parse(block)
