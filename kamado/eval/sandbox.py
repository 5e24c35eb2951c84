"""Run model-written code (JHumanEval) where it can do little harm: a fresh `python -I` subprocess in an empty
temporary folder, with a CPU-time, memory, file-size and process-count limit (resource.setrlimit), a wall-clock
timeout, a minimal environment, and no network: in a new network namespace (`unshare -n`, or `unshare -rn`
as a normal user) where the kernel allows it, and in any case with socket creation replaced by an error
inside the interpreter. This is a guard against accidents (an endless loop, a huge allocation, a stray
download), not a security boundary against hostile code: run untrusted models in a container as well.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache

# Runs before the program: every way to open a socket fails (a second line of defence after the namespace).
_GUARD = """\
import socket as _s
def _no_network(*a, **k):
    raise OSError("network access is disabled in the kamado evaluation sandbox")
_s.socket = _no_network; _s.create_connection = _no_network; _s.socketpair = _no_network
del _s
"""


@dataclass
class RunResult:
    passed: bool
    status: str  # passed | failed | timeout
    detail: str  # the last lines of stderr on failure


@lru_cache(maxsize=1)
def network_isolation() -> list[str]:
    """The command prefix that puts a process in an empty network namespace here, or [] when none works."""
    tool = shutil.which("unshare")
    if not tool:
        return []
    for prefix in ([tool, "-n"], [tool, "-rn"]):
        try:
            if subprocess.run(prefix + ["true"], capture_output=True, timeout=10).returncode == 0:
                return prefix
        except (OSError, subprocess.TimeoutExpired):
            continue
    return []


def _limits(cpu_seconds: int, memory_bytes: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))  # no file over 16 MiB
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.setsid()  # its own process group, so a timeout kills whatever it started
    return apply


def run_program(program: str, timeout: float = 10.0, memory_mb: int = 1024) -> RunResult:
    """Run `program` (prompt + completion + test + check call) and report whether it exited with status 0."""
    with tempfile.TemporaryDirectory(prefix="kamado-sandbox-") as tmp:
        script = os.path.join(tmp, "program.py")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(_GUARD + "\n" + program + "\n")
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        cmd = network_isolation() + [sys.executable, "-I", "-B", script]
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, preexec_fn=_limits(int(timeout) + 1, memory_mb << 20))
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.communicate()
            return RunResult(False, "timeout", f"no result within {timeout:g}s")
    detail = err.decode("utf-8", "replace").strip().splitlines()[-3:] if proc.returncode else []
    return RunResult(proc.returncode == 0, "passed" if proc.returncode == 0 else "failed", "\n".join(detail))
