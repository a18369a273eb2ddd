"""A llama.cpp build that faults on this CPU is one clear line and exit 2, never a core dump."""
from __future__ import annotations

import importlib.util
import signal
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.lm import cpu_check

REPO = Path(__file__).resolve().parents[1]


def _dies_with(sig: int) -> str:
    """Child code that dies the way an illegal AMX instruction kills the process."""
    return f"import resource, os; resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); os.kill(os.getpid(), {int(sig)})"


@pytest.fixture
def fake_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 64)
    return path


@pytest.mark.parametrize("sig", [signal.SIGILL, signal.SIGSEGV])
def test_child_killed_by_signal_is_one_line_error(sig, fake_gguf, monkeypatch):
    monkeypatch.setattr(cpu_check, "_checked", set())
    monkeypatch.setattr(cpu_check, "PROBE_CODE", _dies_with(sig))
    with pytest.raises(ConfigError) as err:
        cpu_check.check_llama_runs(str(fake_gguf))
    msg = str(err.value)
    assert "\n" not in msg
    assert signal.Signals(sig).name in msg and str(fake_gguf) in msg
    assert f"python3 {REPO / 'install.py'}" in msg
    assert not list(Path.cwd().glob("core*")), "the probe must not leave a core file"


def test_cli_run_exits_2_with_one_line_on_sigill(fake_gguf, monkeypatch, capsys, tmp_path):
    from harness import cli

    monkeypatch.setattr(cpu_check, "_checked", set())
    monkeypatch.setattr(cpu_check, "PROBE_CODE", _dies_with(signal.SIGILL))
    code = cli.main(["run", "--model", str(fake_gguf), "--engines", "llguidance", "--limit", "1",
                     "--reports-dir", str(tmp_path / "reports"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("cdbench: error: llama.cpp died with SIGILL")
    assert "instructions this CPU does not allow" in err[0] and "install.py" in err[0]
    assert not (tmp_path / "reports").exists(), "nothing may be written before the check passes"


def test_fidelity_checks_too(fake_gguf, monkeypatch, capsys, tmp_path):
    from harness import cli

    monkeypatch.setattr(cpu_check, "_checked", set())
    monkeypatch.setattr(cpu_check, "PROBE_CODE", _dies_with(signal.SIGILL))
    code = cli.main(["fidelity", "--model", str(fake_gguf), "--tasks", "binary_skewed", "--reports-dir", str(tmp_path)])
    assert code == 2
    assert "SIGILL" in capsys.readouterr().err


def test_healthy_child_passes_once(fake_gguf, monkeypatch, tmp_path):
    marker = tmp_path / "probed"
    monkeypatch.setattr(cpu_check, "_checked", set())
    monkeypatch.setattr(cpu_check, "PROBE_CODE", f"import sys, pathlib; pathlib.Path({str(marker)!r}).write_text(sys.argv[1])")
    cpu_check.check_llama_runs(str(fake_gguf))
    assert marker.read_text() == str(fake_gguf)  # the probe really ran, in a child
    monkeypatch.setattr(cpu_check, "PROBE_CODE", _dies_with(signal.SIGILL))
    cpu_check.check_llama_runs(str(fake_gguf))  # once per process: not run again


@pytest.mark.model
def test_real_build_evaluates_one_token(gemma_path, monkeypatch):
    monkeypatch.setattr(cpu_check, "_checked", set())
    cpu_check.check_llama_runs(gemma_path)  # raises if this machine cannot run the build
    assert str(Path(gemma_path).resolve()) in cpu_check._checked


def _install_module():
    spec = importlib.util.spec_from_file_location("cdbench_install", REPO / "install.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_install_keys_wheels_by_build_flags_and_cpu(monkeypatch):
    inst = _install_module()
    portable = inst.build_key("0.3.36", inst.cmake_args(False), native=False)
    native = inst.build_key("0.3.36", inst.cmake_args(True), native=True)
    assert portable != native and "portable" in portable and "native" in native
    monkeypatch.setattr(inst, "cpu_flags", lambda: ["amx_tile", "avx2", "avx512f"])
    assert inst.build_key("0.3.36", inst.cmake_args(True), native=True) != native  # another CPU, another wheel
    assert inst.build_key("0.3.36", inst.cmake_args(False), native=False) == portable  # portable: one wheel


def test_install_refuses_non_portable_features():
    inst = _install_module()
    native_line = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 |"
    portable_line = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 |"
    assert inst.non_portable(native_line) == ["AMX_INT8", "AVX512", "AVX512_VNNI"]
    assert inst.non_portable(portable_line) == []
    assert "-DGGML_NATIVE=OFF" in inst.cmake_args(False)
