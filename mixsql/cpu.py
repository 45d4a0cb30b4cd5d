"""NumPy's sort on AMD Zen 4: a process that plans should use NumPy's AVX2 sort there.

NumPy sorts 64-bit keys with x86-simd-sort, whose AVX-512 partition step stores each vector with
``vpcompressq`` to memory; Zen 4 (AMD family 0x19 with AVX-512) runs that instruction in microcode.
Measured on such a machine (bench (c)): ``np.sort`` of 64 Ki uint64 keys takes 35 ns a key with
AVX-512 and 6 ns with AVX2, and planning spends most of its compile time sorting keys within windows.
NumPy picks its code paths once, when it is imported, from ``NPY_DISABLE_CPU_FEATURES``. So the
``mixsql`` command sets that variable before anything imports NumPy; a Python program calls
``prefer_avx2_sort()`` first, or sets the variable itself. The sorted keys are the same either
way (integers), so plans are identical; only the speed changes.

This module imports nothing heavy: it must run before NumPy is imported.
"""

from __future__ import annotations

import os
import sys
import typing as t

# NumPy >= 2.4 names its dispatch targets by x86-64 level; AVX-512 sorts dispatch on these
DISABLE = "X86_V4 AVX512_ICL AVX512_SPR"
KEEP_ENV = "MIXSQL_NUMPY_AVX512"  # set (to anything) to keep NumPy's AVX-512 paths on Zen 4


def slow_compress_store(cpuinfo: str) -> bool:
    """Whether ``cpuinfo`` (the text of /proc/cpuinfo) describes a Zen 4 CPU: AMD, family 25
    (0x19, which Zen 3 shares without AVX-512) and AVX-512. Zen 5 (family 26) runs the store fast."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block says it for all
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return (fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25"
            and "avx512f" in fields.get("flags", "").split())


def _numpy_version() -> tuple[int, ...] | None:
    from importlib import metadata

    try:
        return tuple(int(p) for p in metadata.version("numpy").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return None


def prefer_avx2_sort(environ: t.MutableMapping[str, str] | None = None, modules: t.Container[str] | None = None,
                     cpuinfo: str | None = None, numpy_version: tuple[int, ...] | None = None) -> bool:
    """On Zen 4, set ``NPY_DISABLE_CPU_FEATURES`` so that NumPy, once imported, sorts with AVX2;
    whether it did. Nothing changes where NumPy is already imported, the variable is already set,
    ``MIXSQL_NUMPY_AVX512`` is set, the CPU is another, or NumPy is older than 2.4 (whose
    dispatch targets have other names)."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if "numpy" in modules or "NPY_DISABLE_CPU_FEATURES" in environ or KEEP_ENV in environ:
        return False
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read(1 << 16)
        except OSError:
            return False
    if not slow_compress_store(cpuinfo):
        return False
    version = _numpy_version() if numpy_version is None else numpy_version
    if version is None or version < (2, 4):
        return False
    environ["NPY_DISABLE_CPU_FEATURES"] = DISABLE
    return True
