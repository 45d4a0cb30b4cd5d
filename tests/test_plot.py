"""explain --plot: a PNG of the schedule and the realised shares that follows the statement."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import ROOT

STAGED = """MIX 0.5 AS code WHERE domain = 'code', 0.5 AS docs WHERE domain = 'docs' FROM corpus
ORDER BY CURRICULUM (STAGE UNTIL {until} SAMPLES (docs = 0)) CHUNK SIZE 32"""


def _plot(catalog: Path, tmp: Path, text: str, name: str) -> Path:
    f = tmp / f"{name}.mixsql"
    f.write_text(text)
    out = tmp / f"{name}.png"
    subprocess.run([sys.executable, "-m", "mixsql", "--catalog", str(catalog), "explain", str(f), "--plot", str(out)],
                   check=True, capture_output=True, cwd=ROOT)
    return out


def test_plot_is_a_png_that_changes_with_the_schedule(sample_catalog: Path, tmp_path: Path) -> None:
    import matplotlib.image

    early = _plot(sample_catalog, tmp_path, STAGED.format(until=100), "early")
    late = _plot(sample_catalog, tmp_path, STAGED.format(until=900), "late")
    for png in (early, late):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    a, b = matplotlib.image.imread(early), matplotlib.image.imread(late)
    assert a.shape == b.shape and a.shape[0] > 400 and a.shape[1] > 600
    assert (np.abs(a - b).sum(axis=2) > 0.1).mean() > 0.02  # the pictures differ where the stage ends


def test_a_token_mixture_is_plotted_in_tokens(token_catalog: Path, tmp_path: Path) -> None:
    import matplotlib.image

    text = ("MIX BY TOKENS 0.5 AS code WHERE domain = 'code', 0.5 AS docs WHERE domain <> 'code' FROM corpus "
            "ORDER BY CURRICULUM (STAGE UNTIL {until} TOKENS (docs = 0)) LIMIT 300000 TOKENS")
    early = _plot(token_catalog, tmp_path, text.format(until=50000), "early")
    late = _plot(token_catalog, tmp_path, text.format(until=120000), "late")
    a, b = matplotlib.image.imread(early), matplotlib.image.imread(late)
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_a_sample_mixture_with_a_token_budget_is_plotted_from_its_plan(token_catalog: Path, tmp_path: Path) -> None:
    """A stream merged for a token budget has no chunk table: its sample shares come from the plan."""
    import matplotlib.image

    text = ("MIX 0.5 AS code WHERE domain = 'code', 0.5 AS docs WHERE domain <> 'code' FROM corpus "
            "ORDER BY CURRICULUM (STAGE UNTIL {until} SAMPLES (docs = 0)) LIMIT 200000 TOKENS")
    early = _plot(token_catalog, tmp_path, text.format(until=300), "early")
    late = _plot(token_catalog, tmp_path, text.format(until=900), "late")
    a, b = matplotlib.image.imread(early), matplotlib.image.imread(late)
    assert a.shape == b.shape and not np.array_equal(a, b)
