"""Progress bars: on a terminal after the delay, never in a pipe, never with --quiet."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pexpect

from mixsql.progress import bar
from tests.conftest import PARQUET_GLOB, ROOT


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_draws_only_on_a_terminal_after_the_delay(monkeypatch) -> None:
    monkeypatch.setenv("MIXSQL_PROGRESS_AFTER", "0")
    tty = _Tty()
    with bar("registering x", stream=tty) as update:
        for k in range(3):
            update(k, 3, f"file {k}")
    assert "registering x" in tty.getvalue()
    pipe = io.StringIO()
    with bar("registering x", stream=pipe) as update:
        update(1, 3, "file")
    assert pipe.getvalue() == ""
    monkeypatch.setenv("MIXSQL_PROGRESS_AFTER", "3600")
    slow = _Tty()
    with bar("registering x", stream=slow) as update:
        update(1, 3, "file")
    assert slow.getvalue() == ""  # quick work draws nothing


def _register(tmp_path: Path, *flags: str) -> pexpect.spawn:
    env = {**os.environ, "MIXSQL_PROGRESS_AFTER": "0", "TERM": "xterm-256color", "COLUMNS": "120"}
    return pexpect.spawn(sys.executable, ["-m", "mixsql", "--catalog", str(tmp_path / "cat"), *flags, "register",
                                          "corpus", PARQUET_GLOB], env=env, cwd=str(ROOT), encoding="utf-8",
                         timeout=60)


def test_register_shows_a_bar_on_a_terminal_and_not_with_quiet(tmp_path: Path) -> None:
    child = _register(tmp_path)
    child.expect("registering corpus")
    child.expect("registered corpus")
    child.expect(pexpect.EOF)
    quiet = _register(tmp_path / "q", "--quiet")
    quiet.expect(pexpect.EOF)
    assert "registering corpus" not in quiet.before and "registered corpus" in quiet.before
    env = {**os.environ, "MIXSQL_PROGRESS_AFTER": "0"}
    piped = subprocess.run([sys.executable, "-m", "mixsql", "--catalog", str(tmp_path / "p"), "register", "corpus",
                            PARQUET_GLOB], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert piped.stderr == "" and piped.stdout.startswith("registered corpus")
