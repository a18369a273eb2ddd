"""Ray, for the executors that use it (`--executor ray` of replay and run): connecting, actor
placement and priority, and how an actor died.

Ray is imported only here, and only when --executor ray is asked for. Without --address a
local Ray is started (once per process) and shut down at exit; with --address the driver joins
that cluster and leaves it running.

How an actor died: it writes Python's fatal-signal report (faulthandler) to a file on its node,
which the driver reads after the death, so SIGSEGV / SIGBUS are `crash` and SIGABRT is `oom`
with the local pool's messages (replay.pool.classify_exit). A death without that report
(SIGKILL, a lost node) is `crash` with Ray's reason, unless Ray's memory monitor killed it (`oom`).

Ray starts its workers at niceness 15; an actor puts itself back to 0 where it may (a local
Ray started here runs its workers at 0), so its engine competes for CPU as a local worker does.
"""
from __future__ import annotations

import atexit
import faulthandler
import logging
import os
import signal
import tempfile
import time
from typing import Any, TextIO

from .errors import ConfigError

# faulthandler's names for the fatal signals it reports.
_FATAL = {"Segmentation fault": signal.SIGSEGV, "Aborted": signal.SIGABRT, "Bus error": signal.SIGBUS,
          "Floating-point exception": signal.SIGFPE, "Floating point exception": signal.SIGFPE,
          "Illegal instruction": signal.SIGILL}
_LOCAL_OBJECT_STORE = 512 << 20  # jobs and results are small; a small store keeps each actor's address space small
_started_ray = False             # this process started the Ray it uses (and shuts it down at exit)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs the ray package: pip install ray") from None
    return ray


def ensure_ray(address: str | None = None, num_cpus: int = 1, memory_bytes: int | None = None) -> Any:
    """The ray module, connected: to `address` if given, else to a local Ray started here with
    `num_cpus` CPUs (and, with a memory limit, `num_cpus` workers' worth of the memory resource,
    as the local executor runs -j workers under that limit whatever the machine has). A Ray
    already initialised in this process (a test's, a notebook's) is used as it is."""
    global _started_ray
    ray = import_ray()
    if ray.is_initialized():
        return ray
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            extra = {"_memory": num_cpus * memory_bytes} if memory_bytes else {}
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     object_store_memory=_LOCAL_OBJECT_STORE, _system_config={"worker_niceness": 0}, **quiet, **extra)
            _started_ray = True
            atexit.register(shutdown_ray)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - no cluster there, a version mismatch, ...
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ConfigError(f"--executor ray: could not connect to {where}: {type(exc).__name__}: {exc}"[:400]) from None
    return ray


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A host:port address must answer before ray.init, which otherwise waits minutes for it."""
    import socket

    if address.startswith("ray://"):
        raise ConfigError("--address: Ray client addresses (ray://) are not supported; give the head's host:port")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local": Ray resolves them
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"--executor ray: no Ray cluster answers at {address} ({exc})") from None


def shutdown_ray() -> None:
    """Shut down the Ray this process started (never a cluster it only joined)."""
    global _started_ray
    if _started_ray:
        _started_ray = False
        import ray

        ray.shutdown()


def _address_space() -> int:
    """This process's address space in bytes (VmSize), 0 where /proc does not say."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _normal_priority() -> int:
    """Run at niceness 0, as a local worker does: Ray starts its workers at niceness 15 (its
    `worker_niceness`), which on a busy node gives the engine less CPU than anything else there
    and lengthens every time measured. Lowering it needs the privilege to (CAP_SYS_NICE, or
    root); without it the niceness stays and is reported (pool.info["niceness"])."""
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) > 0:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError:
        pass
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except OSError:
        return 0


def report_dir() -> str:
    """Where actors on this node leave their fatal-signal reports."""
    path = os.path.join(tempfile.gettempdir(), "cdbench-ray")
    os.makedirs(path, exist_ok=True)
    return path


def _sweep(directory: str, min_age_s: float = 600.0) -> None:
    """Remove reports nobody read (an actor killed while starting, a driver that died): those of
    processes that no longer run, older than `min_age_s` (a fresh one may be about to be read)."""
    now = time.time()
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        try:
            pid = int(name.split("-", 1)[0])
            if now - os.path.getmtime(path) < min_age_s:
                continue
            os.kill(pid, 0)
        except ProcessLookupError:
            remove_quietly(path)
        except (ValueError, OSError):
            continue


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def take_fatal(path: str, limit: int = 4096) -> str:
    """A file a dead actor left (its fatal-signal report, or its trail), removed once read; "" if none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read(limit)
    except OSError:
        return ""
    remove_quietly(path)
    return text


def fatal_signal(report: str) -> int | None:
    """The signal named in a faulthandler report ("Fatal Python error: Segmentation fault ...")."""
    first = report.strip().splitlines()[0] if report.strip() else ""
    return next((int(sig) for name, sig in _FATAL.items() if name in first), None)


def actor_death_reason(exc: BaseException) -> str:
    """Ray's reason for an actor's death, in one line (its "exit detail" when it gives one)."""
    text = str(exc)
    marker = "Worker exit detail:"
    if marker in text:
        text = text.split(marker, 1)[1]
    elif "The actor is dead because" in text:
        text = text[text.index("The actor is dead because"):]
    return " ".join(text.split())[:200] or type(exc).__name__


class ActorHome:
    """Where an actor runs (node, pid) and its fatal-signal report file, set up in its __init__."""

    def __init__(self) -> None:
        import ray

        ctx = ray.get_runtime_context()
        reports = report_dir()
        _sweep(reports)
        self.where: dict[str, Any] = {
            "node_id": ctx.get_node_id(), "node": ray.util.get_node_ip_address(), "pid": os.getpid(),
            "fatal_path": os.path.join(reports, f"{os.getpid()}-{ctx.get_actor_id()}.fatal")}
        self._fatal: TextIO = open(self.where["fatal_path"], "w")
        faulthandler.enable(file=self._fatal, all_threads=False)
        self.where["niceness"] = _normal_priority()
        self.where["address_space_base"] = _address_space()

    def leave(self) -> None:
        faulthandler.disable()
        self._fatal.close()
        remove_quietly(self.where["fatal_path"])


def kill_actor(ray: Any, actor: Any) -> None:
    """Kill an actor for good (no restart); one already gone is no error."""
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def read_fatal(ray: Any, reader: Any, where: dict[str, Any] | None, key: str = "fatal_path",
               limit: int = 4096) -> str:
    """Read (and remove) the file `where[key]` a dead or killed actor left on its node ("" if none):
    its fatal-signal report by default. `reader` is `ray.remote(num_cpus=0, max_retries=0)(take_fatal)`,
    run on that node."""
    if not where or key not in where:
        return ""
    try:
        if where["node_id"] == ray.get_runtime_context().get_node_id():
            return take_fatal(where[key], limit)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ref = reader.options(scheduling_strategy=NodeAffinitySchedulingStrategy(where["node_id"], soft=False)
                             ).remote(where[key], limit)
        return ray.get(ref, timeout=30)
    except Exception:  # noqa: BLE001 - node gone, or no worker there: no report
        return ""


def death_bucket(ray: Any, exc: BaseException, report: str) -> tuple[str, str]:
    """Bucket and message for an actor that died in a call: its fatal signal if it left a report."""
    from .replay.pool import classify_exit

    if isinstance(exc, StopIteration):
        return classify_exit(None)
    sig = fatal_signal(report)
    if sig is not None:
        return classify_exit(-sig)
    reason = actor_death_reason(exc)
    if isinstance(exc, ray.exceptions.OutOfMemoryError) or "memory monitor" in str(exc).lower():
        return "oom", f"worker killed by Ray's memory monitor (out of memory): {reason}"[:300]
    if isinstance(exc, ray.exceptions.RayTaskError):
        return "exception", f"Ray task error: {reason}"[:300]
    return "crash", f"Ray worker died: {reason}"[:300]


def capacity(ray: Any, memory_bytes: int | None) -> int:
    """How many actors of 1 CPU (and memory_bytes of Ray's memory resource) the live nodes hold."""
    fits = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        n = int(res.get("CPU", 0))
        if memory_bytes:
            n = min(n, int(res.get("memory", 0) // memory_bytes))
        fits += n
    return fits
