#!/usr/bin/env python3
"""Install cdbench into a virtual environment with a llama.cpp build that runs on any CPU.

The one place that decides how llama.cpp is compiled. The README's install command,
.ci/run and tox all call this script.

llama-cpp-python builds llama.cpp from source, and its default (GGML_NATIVE=ON) compiles with
-march=native: a library built on an Intel Xeon with AVX-512 and AMX dies with SIGILL on a
machine (or a container) that does not grant those instructions. The default here is a
portable build for any x86-64 CPU with AVX2 (Haswell, 2013, and every AMD EPYC). `--native`
opts into a build for this CPU only.

pip's wheel cache keys a wheel built from an sdist by the sdist alone, not by CMAKE_ARGS, so a
native wheel built once would be handed to every later install. This script never builds or
installs llama-cpp-python through that cache: it builds the wheel with --no-cache-dir into a
store of its own, keyed by version and build flags (and, for native builds, by the CPU's
flags), then installs that file.

    python3 install.py                   # .venv, portable llama.cpp, cdbench with test extras
    python3 install.py --native          # opt-in: llama.cpp for this CPU only
    python3 install.py --python PY       # install into an existing interpreter (tox)
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))
from harness.environment import compiled_features, cpu_flags  # noqa: E402 - stdlib only, before any install

CONSTRAINTS = REPO / "constraints.txt"

# Portable x86-64 build: AVX2 level, nothing newer (no AVX-512, no AMX).
PORTABLE_X86 = [
    "-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON",
    "-DGGML_F16C=ON", "-DGGML_BMI2=ON", "-DGGML_AVX512=OFF",
]
PORTABLE_OTHER = ["-DGGML_NATIVE=OFF"]
NATIVE = ["-DGGML_NATIVE=ON"]
# Instructions a portable build must not use, as llama.cpp's system-info line names them.
NOT_PORTABLE = re.compile(r"^(AVX512\w*|AMX\w*)$")


def cmake_args(native: bool) -> list[str]:
    if native:
        return NATIVE
    return PORTABLE_X86 if platform.machine() in ("x86_64", "AMD64") else PORTABLE_OTHER


def non_portable(system_info: str) -> list[str]:
    """The compiled-in features of a system-info line that a portable build must not have."""
    return [f for f in compiled_features(system_info) if NOT_PORTABLE.match(f)]


def pinned(name: str) -> str:
    for line in CONSTRAINTS.read_text().splitlines():
        m = re.match(rf"^{re.escape(name)}==(\S+)", line.strip())
        if m:
            return m.group(1)
    raise SystemExit(f"install.py: {CONSTRAINTS}: no pin for {name}")


def build_key(version: str, args: list[str], native: bool) -> str:
    """Directory name of a wheel in the store: what the wheel's machine code depends on."""
    parts = [version, sys.version, platform.machine(), " ".join(args)]
    if native:
        parts.append(" ".join(cpu_flags()) or platform.processor())
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return f"{version}-{'native' if native else 'portable'}-{digest}"


def store_dir() -> Path:
    base = os.environ.get("CDBENCH_WHEEL_STORE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cdbench", "wheels")
    return Path(base)


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def llama_wheel(python: str, native: bool) -> Path:
    """The llama-cpp-python wheel for these flags: from the store, else built into it."""
    version = pinned("llama-cpp-python")
    args = cmake_args(native)
    target = store_dir() / build_key(version, args, native)
    wheels = sorted(target.glob("llama_cpp_python-*.whl"))
    if wheels:
        print(f"install.py: llama-cpp-python {version} ({target.name}) from the wheel store", flush=True)
        return wheels[0]
    target.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CMAKE_ARGS=" ".join(args), FORCE_CMAKE="1")
    print(f"install.py: building llama-cpp-python {version} with CMAKE_ARGS={env['CMAKE_ARGS']!r} "
          "(7-12 minutes on 2 cores)", flush=True)
    start = time.monotonic()
    partial = target / "partial"
    run([python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--no-binary", "llama-cpp-python",
         "-w", str(partial), f"llama-cpp-python=={version}"], env=env)
    built = sorted(partial.glob("llama_cpp_python-*.whl"))
    if not built:
        raise SystemExit(f"install.py: pip wheel produced no llama-cpp-python wheel in {partial}")
    final = target / built[0].name
    built[0].rename(final)  # only a finished build enters the store
    (target / "CMAKE_ARGS").write_text(env["CMAKE_ARGS"] + "\n")
    print(f"install.py: built in {time.monotonic() - start:.0f} s -> {final}", flush=True)
    return final


def check_build(python: str, native: bool) -> None:
    """Read the compiled-in CPU features back from llama.cpp and refuse a non-portable build."""
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
    info = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    print(f"install.py: llama.cpp system info: {info}", flush=True)
    bad = non_portable(info)
    if bad and not native:
        raise SystemExit(f"install.py: the installed llama.cpp uses {', '.join(bad)}: not a portable build")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", default=str(REPO / ".venv"), help="virtual environment to create or reuse")
    ap.add_argument("--python", help="install into this interpreter instead of --venv (tox)")
    ap.add_argument("--native", action="store_true",
                    help="build llama.cpp for this CPU only (faster here, SIGILL on other CPUs)")
    ap.add_argument("--extras", default="test,ray,frontends,transformers",
                    help="cdbench extras to install (default: test,ray,frontends,transformers: the test tools, Ray "
                         "for --executor ray, the frontends' libraries and the transformers LM backend)")
    opts = ap.parse_args(argv)
    python = opts.python
    if not python:
        venv = Path(opts.venv)
        if not (venv / "bin" / "python").exists():
            run([sys.executable, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
    wheel = llama_wheel(python, opts.native)
    run([python, "-m", "pip", "install", "--force-reinstall", "--no-deps", str(wheel)])
    target = f"{REPO}[{opts.extras}]" if opts.extras else str(REPO)
    run([python, "-m", "pip", "install", "-c", str(CONSTRAINTS), "-e", target])
    check_build(python, opts.native)
    return 0


if __name__ == "__main__":
    sys.exit(main())
