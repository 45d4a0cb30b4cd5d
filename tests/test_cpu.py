"""mixsql.cpu: NumPy's AVX2 sort preferred on Zen 4, set before NumPy is imported, plans unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mixsql import cpu

ROOT = Path(__file__).resolve().parents[1]


def _cpuinfo(vendor: str, family: int, flags: str) -> str:
    block = f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: 17\nflags\t\t: {flags}\n"
    return block + "\n" + block.replace("processor\t: 0", "processor\t: 1")


ZEN4 = _cpuinfo("AuthenticAMD", 25, "fpu sse2 avx2 avx512f avx512dq avx512vl")


@pytest.mark.parametrize("text, slow", [
    (ZEN4, True),
    (_cpuinfo("AuthenticAMD", 25, "fpu sse2 avx2"), False),  # Zen 3: the same family, no AVX-512
    (_cpuinfo("AuthenticAMD", 26, "fpu avx2 avx512f"), False),  # Zen 5 stores fast
    (_cpuinfo("GenuineIntel", 6, "fpu avx2 avx512f"), False),
    ("", False),
    ("garbage without fields\n", False),
])
def test_zen4_is_told_by_vendor_family_and_avx512(text: str, slow: bool) -> None:
    assert cpu.slow_compress_store(text) is slow


def test_the_variable_is_set_on_zen4_before_numpy_only() -> None:
    env: dict[str, str] = {}
    assert cpu.prefer_avx2_sort(env, modules=set(), cpuinfo=ZEN4, numpy_version=(2, 4))
    assert env == {"NPY_DISABLE_CPU_FEATURES": cpu.DISABLE}
    for environ, modules, info, version in [
        ({}, {"numpy"}, ZEN4, (2, 4)),  # too late: NumPy chose its code paths when imported
        ({"NPY_DISABLE_CPU_FEATURES": "AVX512_SPR"}, set(), ZEN4, (2, 4)),  # the user's own choice
        ({cpu.KEEP_ENV: "1"}, set(), ZEN4, (2, 4)),  # asked to keep AVX-512
        ({}, set(), _cpuinfo("GenuineIntel", 6, "avx512f"), (2, 4)),
        ({}, set(), ZEN4, (2, 3)),  # older NumPy names its targets otherwise
    ]:
        before = dict(environ)
        assert not cpu.prefer_avx2_sort(environ, modules=modules, cpuinfo=info, numpy_version=version)
        assert environ == before


def test_the_command_asks_before_numpy_is_imported() -> None:
    code = ("import sys, mixsql.cpu as c\n"
            "seen = []\n"
            "c.prefer_avx2_sort = lambda *a, **k: seen.append('numpy' in sys.modules)\n"
            "import mixsql.cli\n"
            "assert 'numpy' in sys.modules\n"
            "print(seen)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[False]"


PLAN_DIGEST = r"""
import hashlib, json, sys
from pathlib import Path
import numpy as np
import mixsql
con = mixsql.connect(sys.argv[1], create=False)
plan = con.mix(Path(sys.argv[2]).read_text()).plan()
digest = hashlib.sha256()
for f in sorted(Path(plan.directory).glob("*.npy")):
    digest.update(f.name.encode() + np.load(f).tobytes())
print(json.dumps({"digest": digest.hexdigest(),
                  "x86_v4": np._core._multiarray_umath.__cpu_features__.get("X86_V4")}))
"""


def test_a_plan_is_the_same_whichever_sort_numpy_uses(sample_catalog: Path, tmp_path: Path) -> None:
    digests = []
    for n, disable in enumerate(("", cpu.DISABLE)):
        catalog = tmp_path / f"cat{n}"
        shutil.copytree(sample_catalog, catalog, ignore=shutil.ignore_patterns("plans", "counts", "*.lock"))
        env = {k: v for k, v in os.environ.items() if k not in ("NPY_DISABLE_CPU_FEATURES", cpu.KEEP_ENV)}
        if disable:
            env["NPY_DISABLE_CPU_FEATURES"] = disable
        out = subprocess.run([sys.executable, "-c", PLAN_DIGEST, str(catalog), str(ROOT / "sample_data" /
                                                                                     "pretrain.mixsql")],
                             capture_output=True, text=True, check=True, env=env)
        digests.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert digests[0]["digest"] == digests[1]["digest"]
    assert not digests[1]["x86_v4"]  # the variable took effect (where the CPU has AVX-512 at all)
