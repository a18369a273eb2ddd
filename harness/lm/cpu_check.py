"""Before the first case: can this machine run the installed llama.cpp build at all?

A llama.cpp compiled for another CPU (pip's default -march=native on a Xeon with AVX-512 and
AMX, say) loads fine and dies with SIGILL at the first forward pass, taking the whole process
with it. `check_llama_runs` first evaluates one token in a child interpreter (a fresh process,
not a fork: llama.cpp's OpenMP pool does not survive a fork); a child killed by a signal
becomes one ConfigError line with the cause and the reinstall command (exit 2).
Checked once per process and model.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from ..errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
REINSTALL = f"python3 {REPO_ROOT / 'install.py'}"
PROBE_TIMEOUT_S = 120.0
# The child: load the model with a tiny context and push one token through it.
PROBE_CODE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=16, n_batch=1, n_threads=1, verbose=False)
bos = llama_cpp.llama_vocab_bos(llm._model.vocab)
llm.eval([bos if bos >= 0 else 0])
"""
_checked: set[str] = set()


def crash_message(model_path: str, sig: str) -> str:
    cause = {
        "SIGILL": "the llama.cpp build uses instructions this CPU does not allow "
                  "(it was compiled for another CPU, e.g. -march=native with AVX-512 or AMX)",
        "SIGSEGV": "the llama.cpp build or the model file does not work on this machine "
                   "(a build for another CPU can also fault this way)",
    }.get(sig, "the llama.cpp build does not work on this machine")
    return (f"llama.cpp died with {sig} evaluating one token of {model_path}: {cause}; "
            f"reinstall the portable build with: {REINSTALL}")


def check_llama_runs(model_path: str) -> None:
    """Raise a one-line ConfigError if evaluating one token kills the process."""
    key = str(Path(model_path).resolve())
    if key in _checked:
        return
    try:
        proc = subprocess.run([sys.executable, "-c", PROBE_CODE, model_path], capture_output=True,
                              timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"llama.cpp did not evaluate one token of {model_path} within {PROBE_TIMEOUT_S:g} s") from None
    if proc.returncode < 0:
        raise ConfigError(crash_message(model_path, signal.Signals(-proc.returncode).name))
    # Any other failure (an exception while loading) is left to the real load, which names it.
    _checked.add(key)
