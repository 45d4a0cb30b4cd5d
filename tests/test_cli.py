"""The command line, run as a real subprocess: output, exit codes, errors, and concurrent access."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mixsql
from tests.conftest import JSONL_GLOB, PARQUET_GLOB, ROOT, SAMPLE


def run(*args: str, catalog: Path | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mixsql"] + (["--catalog", str(catalog)] if catalog else []) + list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize("command", [[], ["register"], ["drop"], ["datasets"], ["sql"], ["explain"], ["fmt"]])
def test_help(command: list[str]) -> None:
    out = run(*command, "--help").stdout
    assert "Usage: mixsql" in out


def test_register_sql_explain_fmt(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    out = run("register", "corpus", PARQUET_GLOB, catalog=cat).stdout
    assert "registered corpus: 4,200 samples from 4 files" in out
    out = run("register", "j", JSONL_GLOB, "--content", "text", catalog=cat).stdout
    assert "4,200 samples from 3 files" in out
    again = run("register", "corpus", PARQUET_GLOB, catalog=cat, ok=False)
    assert again.returncode == 2 and "already registered" in again.stderr and "--replace" in again.stderr
    run("register", "corpus", PARQUET_GLOB, "--replace", catalog=cat)

    out = run("sql", "SELECT domain, count(*) AS n FROM corpus GROUP BY ALL ORDER BY domain", catalog=cat).stdout
    assert out.splitlines()[0].split() == ["domain", "n"] and "code" in out and "(4 rows)" in out
    out = run("sql", "SELECT domain FROM corpus ORDER BY domain LIMIT 2", "--format", "json", catalog=cat).stdout
    assert [json.loads(line) for line in out.splitlines()] == [{"domain": "code"}, {"domain": "code"}]
    out = run("sql", "SELECT 1 AS a, 'x,y' AS b", "--format", "csv", catalog=cat).stdout
    assert out.splitlines() == ["a,b", '1,"x,y"']
    out = run("datasets", catalog=cat).stdout
    assert "corpus" in out and "4200" in out

    out = run("explain", str(SAMPLE / "pretrain.mixsql"), catalog=cat).stdout
    assert "manuals" in out and "runs out first" in out and "compiled SQL" in out
    data = json.loads(run("explain", "sample_data/pretrain.mixsql", "--json", "--seed", "3", "--chunk-size", "32",
                          catalog=cat).stdout)
    assert data["seed"] == 3 and data["chunk_size"] == 32
    assert [c["name"] for c in data["components"]] == ["manuals", "code", "docs"]

    out = run("fmt", "grammar/golden/compile/core.mixsql").stdout
    assert mixsql.parse(out) == mixsql.parse((ROOT / "grammar/golden/compile/core.mixsql").read_text())
    run("drop", "j", catalog=cat)
    assert "j\n" not in run("datasets", catalog=cat).stdout


def test_statement_errors_print_file_line_col_and_caret(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    run("register", "corpus", PARQUET_GLOB, catalog=cat)
    bad = tmp_path / "bad.mixsql"
    bad.write_text("MIX 1 AS a WHERE domain = 'code',\n    1 AS b WHERE qualty > 0.5\nFROM corpus\n")
    proc = run("explain", str(bad), catalog=cat, ok=False)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0] == f"{bad}:2:18: error: unknown column 'qualty' in the WHERE of component 'b' (dataset 'corpus')"
    assert lines[1] == "      1 AS b WHERE qualty > 0.5"
    assert lines[2] == "  " + " " * 17 + "^~~~~~"
    assert lines[3] == "  hint: did you mean 'quality'?"
    proc = run("fmt", str(bad).replace("bad", "missing"), ok=False)
    assert proc.returncode == 2
    bad.write_text("MIX 1 AS a WHERE (x FROM corpus")
    proc = run("fmt", str(bad), ok=False)
    assert proc.returncode == 2 and f"{bad}:1:21: error: expecting )" in proc.stderr


def test_sql_refuses_writes_with_status_2(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    run("register", "corpus", PARQUET_GLOB, catalog=cat)
    proc = run("sql", "DROP VIEW corpus", catalog=cat, ok=False)
    assert proc.returncode == 2 and "only read-only statements" in proc.stderr
    proc = run("sql", "SELECT * FROM read_csv('/etc/passwd')", catalog=cat, ok=False)
    assert proc.returncode == 2 and "Permission" in proc.stderr
    proc = run("explain", "x.mixsql", catalog=tmp_path / "nowhere", ok=False)
    assert proc.returncode == 2 and "no mixsql catalog" in proc.stderr


def test_cli_reads_and_registers_while_a_python_session_holds_the_catalog(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    con = mixsql.connect(cat)
    con.register("corpus", [PARQUET_GLOB])
    mix = con.load(SAMPLE / "pretrain.mixsql")  # the session has a live DuckDB over the catalog
    assert con.sql("SELECT count(*) AS n FROM corpus").to_pylist() == [{"n": 4200}]
    out = run("sql", "SELECT count(*) AS n FROM corpus", catalog=cat).stdout
    assert "4200" in out
    run("register", "more", JSONL_GLOB, catalog=cat)  # a writer elsewhere does not wait for readers
    assert con.datasets() == ["corpus", "more"]
    assert len(mix) > 0 and "manuals" in mix.explain()


def test_concurrent_registrations_serialise(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    mixsql.connect(cat)
    procs = [subprocess.Popen([sys.executable, "-m", "mixsql", "--catalog", str(cat), "register", f"d{i}",
                               PARQUET_GLOB], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert mixsql.connect(cat).datasets() == ["d0", "d1", "d2"]


def test_tokens_from_the_command_line(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    tok = str(SAMPLE / "tokenizer.json")
    out = run("register", "corpus", PARQUET_GLOB, "--tokenizer", tok, catalog=cat).stdout
    total = mixsql.connect(cat).sql("SELECT sum(n_tokens)::BIGINT AS n FROM corpus").column("n")[0].as_py()
    assert f"{total:,} tokens" in out and "fingerprint" in out
    out = run("head", "sample_data/pretrain.mixsql", "-n", "2", "--seq-len", "64", catalog=cat).stdout
    assert out.startswith("[0] ") and "[1] " in out and "tokens: " in out
    lines = run("head", "sample_data/pretrain.mixsql", "-n", "3", "--seq-len", "64", "--json", catalog=cat).stdout
    seqs = [json.loads(line) for line in lines.splitlines()]
    assert len(seqs) == 3 and all(len(s["input_ids"]) == 64 and s["labels"][:-1] == s["input_ids"][1:] for s in seqs)
    out = run("lineage", "sample_data/pretrain.mixsql", "--step", "1", "--batch-size", "2", "--seq-len", "64",
              "--format", "json", catalog=cat).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["sequence"] for r in rows} == {2, 3}
    assert sum(r["token_stop"] - r["token_start"] for r in rows) == 2 * 64
    out = run("head", "sample_data/tokens.mixsql", "-n", "4", "--seq-len", "64", "--pack", "component",
              catalog=cat).stdout
    assert out.count("tokens: ") == 4 and all(line.count("=") == 1 for line in out.splitlines() if "tokens: " in line)
    out = run("explain", "sample_data/tokens.mixsql", "--seq-len", "512", "--pack", "component", catalog=cat).stdout
    assert "packed (component):" in out and "sequence share" in out and "dropped:" in out
    report = json.loads(run("explain", "sample_data/tokens.mixsql", "--seq-len", "512", "--json",
                            catalog=cat).stdout)["packing"]
    mix = mixsql.connect(cat).load("sample_data/tokens.mixsql")
    assert report["sequences"] == len(mix.packed(512)) and report["dropped_tokens"] == mix.packed(512).dropped_tokens
    bad = run("register", "x", PARQUET_GLOB, "--tokenizer", str(tmp_path / "none.json"), catalog=cat, ok=False)
    assert bad.returncode == 2 and "no tokenizer file" in bad.stderr
    bad = run("head", "sample_data/pretrain.mixsql", "--seq-len", "1", catalog=cat, ok=False)
    assert bad.returncode == 2 and "seq_len must be an integer from 2" in bad.stderr


def test_tokenize_from_the_command_line(tmp_path) -> None:
    from click.testing import CliRunner

    from mixsql.cli import main
    from tests.conftest import PARQUET_GLOB, TOKENIZER

    cat = str(tmp_path / "cat")
    runner = CliRunner()
    r = runner.invoke(main, ["--catalog", cat, "register", "d", PARQUET_GLOB, "--tokenizer", str(TOKENIZER)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["--catalog", cat, "tokenize", "d", "--tokenizer", str(TOKENIZER), "-o",
                             str(tmp_path / "shards")])
    assert r.exit_code == 0, r.output
    assert "tokenized d: 627,400 tokens of 4,200 samples" in r.output
    r = runner.invoke(main, ["--catalog", cat, "register", "ids", str(tmp_path / "shards"), "--tokenizer",
                             str(TOKENIZER), "--tokens", "token_ids", "--content", "text"])
    assert r.exit_code == 0 and "627,400 tokens" in r.output, r.output


def test_register_append_adds_files_and_says_how_fast(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    files = sorted(str(p) for p in Path(PARQUET_GLOB).parent.glob("*.parquet"))
    out = run("register", "corpus", *files[:3], catalog=cat).stdout
    assert "registered corpus: " in out and " samples/s)" in out
    out = run("register", "corpus", files[3], "--append", catalog=cat).stdout
    assert "added to corpus: " in out and "from 1 file " in out and "4,200 in all" in out
