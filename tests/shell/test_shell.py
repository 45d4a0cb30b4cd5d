"""The shell: a real pseudo-terminal session (pexpect), and script / pipe mode."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from tests.conftest import ROOT


def _shell(catalog: Path, history: Path) -> pexpect.spawn:
    env = {"TERM": "xterm-256color", "PATH": "/usr/bin:/bin", "HOME": str(history.parent),
           "PROMPT_TOOLKIT_NO_CPR": "1", "PYTHONPATH": str(ROOT)}
    child = pexpect.spawn(sys.executable, ["-m", "mixsql", "--catalog", str(catalog), "shell", "--history",
                                           str(history)], env=env, cwd=str(ROOT), encoding="utf-8", timeout=60,
                          dimensions=(50, 200))
    child.expect("mixsql>")
    return child


def test_terminal_session(sample_catalog: Path, tmp_path: Path) -> None:
    history = tmp_path / "history"
    child = _shell(sample_catalog, history)
    child.send("SELECT qual")  # completion offers the column
    child.send("\t")
    child.expect("ity")
    child.send(" FROM corpus LIMIT 1;\r")
    child.expect("1 row")
    child.send("SELECT count(*)\r")  # a statement over two lines
    child.expect(r"\.\.\.>")
    child.send("FROM corpus;\r")
    child.expect("4200")
    child.send("SELECT bogus FROM corpus;\r")  # an error: caret, and the session goes on
    child.expect(r"\^~~~~")
    child.expect("mixsql>")
    child.send("MIX 1 AS pyth WHERE language = 'python', 1 AS cee WHERE language = 'c' FROM corpus;\r")
    child.expect("compiled SQL")
    child.send("SELECT cee")  # component names complete after a MIX statement
    child.send("\t")
    child.expect("ee")
    child.send("\x15")  # clear the line
    child.send("SELECT count(*) FROM corpus a, corpus b, corpus c;\r")  # Ctrl-C cancels, the shell stays
    time.sleep(1.5)
    child.sendintr()
    child.expect("cancelled")
    child.send("SELECT 6 * 7 AS answer;\r")
    child.expect(r"answer.*42.*mixsql>")
    child.sendeof()  # Ctrl-D leaves
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "SELECT 6 * 7 AS answer;" in history.read_text()

    again = _shell(sample_catalog, history)  # history persists across sessions
    again.send("\x1b[A")  # up arrow: the last statement comes back
    again.expect("answer")
    again.send("\x15")  # clear the line: Ctrl-D leaves from an empty one
    again.sendeof()
    again.expect(pexpect.EOF)


def _run(catalog: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mixsql", "--catalog", str(catalog), "shell", *args],
                          input=stdin, capture_output=True, text=True, cwd=ROOT)


def test_script_from_a_pipe(sample_catalog: Path, tmp_path: Path) -> None:
    script = """-- a script
SELECT domain, count(*) AS n FROM corpus
GROUP BY ALL ORDER BY n DESC LIMIT 2;
.format csv
SELECT 'a;b' AS s;   -- a ';' inside a string does not end the statement
.describe corpus
HEAD 2 MIX 1 AS code WHERE domain = 'code' FROM corpus;
EXPLAIN MIX 1 AS code WHERE domain = 'code', 1 AS docs WHERE domain = 'docs' FROM corpus;
"""
    out = _run(sample_catalog, stdin=script)
    assert out.returncode == 0, out.stderr
    assert "manual  1816" in out.stdout and "s\na;b\n" in out.stdout
    assert "quality,DOUBLE," in out.stdout and "\x1b[" not in out.stdout  # plain output
    assert out.stdout.count("\ncode,") == 2 and "compiled SQL" in out.stdout


def test_script_stops_at_the_first_error(sample_catalog: Path) -> None:
    out = _run(sample_catalog, stdin="SELECT 1 AS one;\nSELECT nope FROM corpus;\nSELECT 2 AS two;\n")
    assert out.returncode == 2
    assert "one" in out.stdout and "two" not in out.stdout
    assert "nope" in out.stderr and "^~~~" in out.stderr
    bad_mix = _run(sample_catalog, "-c", "MIX 1 AS a WHERE qualty > 1 FROM corpus;")
    assert bad_mix.returncode == 2 and "did you mean 'quality'" in bad_mix.stderr


def test_c_runs_meta_commands_and_statements(sample_catalog: Path, tmp_path: Path) -> None:
    (tmp_path / "m.mixsql").write_text("MIX 1 AS a WHERE quality > :q FROM corpus")
    (tmp_path / "s.sql").write_text("SELECT 7 AS seven;\n")
    out = _run(sample_catalog, "-c", f".datasets\n.load {tmp_path / 'm.mixsql'} q=0.5\n.read {tmp_path / 's.sql'}\n"
                                      ".help")
    assert out.returncode == 0, out.stderr
    assert "corpus_jsonl" in out.stdout and "compiled SQL" in out.stdout and "seven" in out.stdout
    assert ".describe NAME" in out.stdout
    unknown = _run(sample_catalog, "-c", ".frobnicate")
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr


def test_register_from_the_shell(tmp_path: Path) -> None:
    glob = str(ROOT / "sample_data" / "parquet" / "*.parquet")
    out = _run(tmp_path / "cat", "-c", f".register corpus '{glob}'\nSELECT count(*) AS n FROM corpus;")
    assert out.returncode == 0, out.stderr
    assert "registered corpus: 4,200 samples" in out.stdout and "4200" in out.stdout


@pytest.mark.parametrize("statement", ["WITH x AS (SELECT 1 AS v) SELECT v FROM x;",
                                       "WITH good AS (quality > 0.5) MIX 1 AS a WHERE good FROM corpus;"])
def test_with_is_sql_or_mix(sample_catalog: Path, statement: str) -> None:
    out = _run(sample_catalog, "-c", statement)
    assert out.returncode == 0, out.stderr
    assert ("compiled SQL" in out.stdout) == ("MIX" in statement)
