"""A real single-machine Slurm cluster (slurmctld + two emulated slurmd nodes) for tests.

Facts that matter (measured on Debian 12, slurm-wlm 22.05.8, munge 0.5.15, root, no systemd):
- Everything goes through SLURM_CONF=<dir>/slurm.conf (daemons, clients, jobs); /etc/slurm is never touched.
  Daemons also get ``-f <conf>`` on their command line: that is how a leftover cluster is recognised later.
- Debian's slurmd is built with MULTIPLE_SLURMD: ``slurmd -N n1`` / ``-N n2`` emulate two nodes on one host,
  each with its own Port (6818/6819 preferred; other free ports are chosen when those are held by a live
  cluster). SlurmctldPort is picked free from 20000-29999 (below the kernel's ephemeral range).
- Emulated node names do not resolve: use the NodeAddr (127.0.0.1), never the node name, as MASTER_ADDR.
- munged is shared by every cluster on the machine: a working one is reused and never stopped; one we started
  is stopped only when no other slurm daemon is left. Never restart munged before the old one has exited
  (that once left a slurmd which ignored SIGTERM).
- ``cred_expire=10``: a requeued job waits that long before it restarts (120 s by default).
- No accounting: ``sacct`` fails and submitit prints "Bypassing sacct error" at each poll; results are right.
- Daemons run in the foreground (-D) as children, with PR_SET_PDEATHSIG, so a ``kill -9`` of pytest takes them
  down too. Anything still left over from a dead owner (its ``kamado-cluster.json`` names a dead owner pid, or
  its directory is gone) is killed at the next start. Clusters from ``start DIR`` (CLI) are never reaped.
- The cluster is idle within ~1-2 s of starting; the first trivial job ends ~3 s after submission.

Command line (for humans):
    python tests/slurm_cluster.py start DIR   # prints the `export SLURM_CONF=...` line
    python tests/slurm_cluster.py stop DIR
    python tests/slurm_cluster.py status DIR
"""
from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

MARKER = "# kamado LocalSlurmCluster"
STATE_FILE = "kamado-cluster.json"
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN = Path("/run/munge")
MUNGE_PIDFILE = MUNGE_RUN / "munged.pid"


class SlurmUnavailable(RuntimeError):
    """Slurm or munge binaries (or root rights) are missing: tests should be skipped."""


class SlurmStartError(RuntimeError):
    """A daemon did not come up in time."""


# --------------------------------------------------------------------------------------------- helpers
def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/local/sbin", "/sbin") if (p := Path(d) / name).exists()), None
    )


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"  ({path} unreadable or missing)"
    return "\n".join("  " + ln for ln in lines[-n:]) or f"  ({path} is empty)"


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # zombies count as dead


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _procs(name: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == name and _alive(int(d.name)):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def _kill_and_wait(pids, timeout: float = 15.0) -> None:
    """SIGTERM, wait, SIGKILL, wait; works for children (reaped via Popen) and strangers alike."""
    pids = [p for p in pids if _alive(p)]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for p in pids:  # reap our own children so they do not linger as zombies
                try:
                    os.waitpid(p, os.WNOHANG)
                except ChildProcessError:
                    pass
            pids = [p for p in pids if _alive(p)]
            if not pids:
                return
            time.sleep(0.1)


def _port_free(port: int) -> bool:
    for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(fam, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def _free_ports(n: int, avoid=(), lo: int = 20000, hi: int = 29999) -> list[int]:
    start, got = random.randint(lo, hi), []
    for i in range(hi - lo + 1):
        p = lo + (start - lo + i) % (hi - lo + 1)
        if p not in avoid and _port_free(p):
            got.append(p)
            if len(got) == n:
                return got
    raise SlurmStartError(f"no {n} free TCP ports in {lo}-{hi}")


def _pdeathsig():
    """preexec_fn: the daemon gets SIGTERM when the process that started it dies (e.g. pytest killed -9)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _mem_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 2048


# --------------------------------------------------------------------------------------------- munge
def munge_works(timeout: float = 5.0) -> bool:
    try:
        m = subprocess.run(["munge", "-n"], capture_output=True, timeout=timeout)
        if m.returncode:
            return False
        u = subprocess.run(["unmunge"], input=m.stdout, capture_output=True, timeout=timeout)
        return u.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_munged(timeout: float = 20.0) -> int | None:
    """Make sure a working munged runs. Returns its pid if we started it, None if one was reused."""
    if munge_works():
        return None
    munged = _which("munged")
    if not munged or not _which("munge") or not _which("unmunge"):
        raise SlurmUnavailable("munge is not installed (apt-get install -y munge)")
    # A munged that exists but does not answer is stale: stop it and wait until it is gone before starting anew.
    _kill_and_wait(_procs("munged"), timeout=10)
    if not MUNGE_KEY.exists() or MUNGE_KEY.stat().st_size == 0:
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        MUNGE_KEY.unlink(missing_ok=True)
        mk = _which("mungekey")
        if mk:
            subprocess.run([mk, "-c", "-k", str(MUNGE_KEY)], check=True, capture_output=True)
        else:
            MUNGE_KEY.write_bytes(os.urandom(1024))
        shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_KEY.chmod(0o400)
    for d in (MUNGE_RUN, Path("/var/log/munge"), Path("/var/lib/munge")):
        d.mkdir(parents=True, exist_ok=True)
        shutil.chown(d, "munge", "munge")
    # --force: remove a stale socket left by a munged that died uncleanly (none is running at this point).
    cmd = [munged, "--force"]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "munge", "--"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)  # forks into the background
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if munge_works():
            try:
                return int(MUNGE_PIDFILE.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return (_procs("munged") or [None])[0]
        time.sleep(0.2)
    raise SlurmStartError(
        f"munged did not come up within {timeout:.0f}s (rc={r.returncode}).\n"
        f"stderr: {r.stderr.strip()}\nlast lines of /var/log/munge/munged.log:\n{_tail(Path('/var/log/munge/munged.log'))}"
    )


# --------------------------------------------------------------------------------------------- leftovers
def _conf_of(pid: int) -> str | None:
    args = _cmdline(pid)
    if "-f" in args[:-1]:
        return args[args.index("-f") + 1]
    return None


def reap_leftovers(keep_dir: Path | None = None) -> list[int]:
    """Kill slurmctld/slurmd processes of LocalSlurmClusters whose owner process has died (or whose
    directory is gone). Returns the pids killed. Clusters started from the CLI are left alone."""
    victims = []
    for name in ("slurmctld", "slurmd"):
        for pid in _procs(name):
            conf = _conf_of(pid)
            if not conf or Path(conf).name != "slurm.conf":
                continue
            d = Path(conf).parent
            if keep_dir is not None and d.resolve() == keep_dir.resolve():
                continue
            state = d / STATE_FILE
            if not d.exists():
                victims.append(pid)  # its temp dir was deleted: certainly a leftover
                continue
            try:
                if MARKER not in Path(conf).read_text():
                    continue  # not one of ours
                info = json.loads(state.read_text())
            except (OSError, ValueError):
                continue
            owner = info.get("owner_pid")
            if owner is None:
                continue  # CLI cluster: a human owns it
            if not _alive(owner) or _start_time(owner) != info.get("owner_start"):
                victims.append(pid)
    if victims:
        _kill_and_wait(victims, timeout=10)
    return victims


# --------------------------------------------------------------------------------------------- cluster
class LocalSlurmCluster:
    """slurmctld + ``slurmd -N n1`` + ``slurmd -N n2`` on this machine, all state under ``base_dir``.

    >>> with LocalSlurmCluster(tmp) as c:
    ...     subprocess.run(["sinfo"], env={**os.environ, **c.env})
    """

    def __init__(
        self,
        base_dir,
        nodes=("n1", "n2"),
        slurmd_ports=(6818, 6819),
        cpus_per_node: int = 1,
        partition: str = "debug",
        timeout: float = 30.0,
        persistent: bool = False,
    ):
        self.base_dir = Path(base_dir).resolve()
        self.nodes = tuple(nodes)
        self.preferred_ports = tuple(slurmd_ports)
        self.cpus_per_node = cpus_per_node
        self.partition = partition
        self.timeout = timeout
        self.persistent = persistent  # CLI: daemons outlive this process and are never reaped automatically
        self.conf_path = self.base_dir / "slurm.conf"
        self.log_dir = self.base_dir / "log"
        self.hostname = socket.gethostname()
        self.env = {"SLURM_CONF": str(self.conf_path)}
        self._procs: dict[str, subprocess.Popen] = {}
        self._munged_pid: int | None = None
        self._reaped: list[int] = []
        self.startup_s: float | None = None
        self.ctld_port: int | None = None
        self.node_ports: dict[str, int] = {}

    # ------------------------------------------------------------------ public
    def start(self) -> "LocalSlurmCluster":
        self._check_available()
        t0 = time.monotonic()
        self._reaped = reap_leftovers()
        self._stop_same_dir()  # a previous cluster in the same directory (e.g. CLI start twice)
        self._munged_pid = ensure_munged(timeout=self.timeout)
        self._choose_ports()
        self._write_conf()
        try:
            self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.conf_path)])
            self._wait(lambda: self._run(["scontrol", "ping"]).stdout.count("is UP") > 0, "slurmctld", ["slurmctld"])
            for n in self.nodes:
                self._spawn(f"slurmd-{n}", ["slurmd", "-D", "-c", "-N", n, "-f", str(self.conf_path)])
            self._wait(self._all_idle, "slurmd", [f"slurmd-{n}" for n in self.nodes], what="nodes idle")
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def stop(self) -> None:
        pids = {name: p.pid for name, p in self._procs.items()}
        if not pids:  # not started by this object (CLI stop): take the pids from the state file
            pids = self._read_state().get("pids", {})
        if pids and self.conf_path.exists() and any(_alive(p) for p in pids.values()):
            try:  # cancel jobs so their slurmstepd processes do not outlive the cluster
                jobs = self._run(["squeue", "-h", "-o", "%i"], timeout=5).stdout.split()
                if jobs:
                    self._run(["scancel", *jobs], timeout=5)
                    time.sleep(1)
            except (OSError, subprocess.TimeoutExpired):
                pass
        slurmds = [p for n, p in pids.items() if n.startswith("slurmd")]
        _kill_and_wait(slurmds)
        _kill_and_wait([p for n, p in pids.items() if n == "slurmctld"])
        for p in self._procs.values():
            try:
                p.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        self._procs.clear()
        munged = self._munged_pid or self._read_state().get("munged_pid")
        if munged and not _procs("slurmctld") and not _procs("slurmd"):
            _kill_and_wait([munged])  # we started it and nobody else uses it any more
        self._munged_pid = None
        try:
            (self.base_dir / STATE_FILE).unlink()
        except OSError:
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def sinfo(self) -> list[tuple[str, str, str]]:
        """[(node, state, partition), ...]"""
        out = self._run(["sinfo", "-h", "-N", "-o", "%N %t %P"]).stdout
        return [tuple(line.split()[:3]) for line in out.splitlines() if len(line.split()) >= 3]

    def run(self, args, **kw) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster."""
        return self._run(args, **kw)

    # ------------------------------------------------------------------ internals
    def _check_available(self):
        missing = [b for b in ("slurmctld", "slurmd", "sinfo", "scontrol", "munged", "munge") if not _which(b)]
        if missing:
            raise SlurmUnavailable(
                f"Slurm/munge binaries missing: {', '.join(missing)} (apt-get install -y slurm-wlm munge)"
            )
        if os.geteuid() != 0:
            raise SlurmUnavailable("LocalSlurmCluster needs root (slurmd runs as SlurmdUser=root); run as root")

    def _run(self, args, timeout: float = 10, **kw) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env, **kw.pop("env", {})}
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, **kw)

    def _choose_ports(self):
        held = [p for p in self.preferred_ports if not _port_free(p)]
        if held and self._reaped:  # a leftover we just killed may still be releasing them
            deadline = time.monotonic() + 3
            while held and time.monotonic() < deadline:
                time.sleep(0.2)
                held = [p for p in self.preferred_ports if not _port_free(p)]
        if len(self.preferred_ports) >= len(self.nodes) and not held:
            node_ports = list(self.preferred_ports[: len(self.nodes)])
        else:
            node_ports = _free_ports(len(self.nodes))
        self.node_ports = dict(zip(self.nodes, node_ports))
        self.ctld_port = _free_ports(1, avoid=node_ports)[0]

    def _write_conf(self):
        d = self.base_dir
        for sub in ("state", "spool", "run", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for pidfile in (d / "run").glob("*.pid"):
            pidfile.unlink()  # stale pid files from an earlier cluster in this dir
        mem = max(256, int(_mem_mb() * 0.8) // len(self.nodes))
        node_lines = "\n".join(
            f"NodeName={n} NodeHostname={self.hostname} NodeAddr=127.0.0.1 Port={self.node_ports[n]} "
            f"CPUs={self.cpus_per_node} RealMemory={mem} State=UNKNOWN"
            for n in self.nodes
        )
        self.conf_path.write_text(
            f"""{MARKER} (tests/slurm_cluster.py) -- generated, do not edit
ClusterName=kamado
SlurmctldHost={self.hostname}
SlurmctldPort={self.ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd-%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
{node_lines}
PartitionName={self.partition} Nodes={",".join(self.nodes)} Default=YES State=UP MaxTime=INFINITE
"""
        )

    def _spawn(self, name: str, args: list[str]):
        out = open(self.log_dir / f"{name}.out", "ab")
        try:
            self._procs[name] = subprocess.Popen(
                args,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal must not hit the daemons directly
                preexec_fn=None if self.persistent else _pdeathsig,
            )
        finally:
            out.close()
        self._write_state()

    def _write_state(self):
        me = os.getpid()
        state = {
            "owner_pid": None if self.persistent else me,
            "owner_start": None if self.persistent else _start_time(me),
            "pids": {n: p.pid for n, p in self._procs.items()},
            "munged_pid": self._munged_pid,
            "slurmctld_port": self.ctld_port,
            "slurmd_ports": self.node_ports,
        }
        (self.base_dir / STATE_FILE).write_text(json.dumps(state, indent=1))

    def _read_state(self) -> dict:
        try:
            return json.loads((self.base_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _stop_same_dir(self):
        pids = [p for n in ("slurmctld", "slurmd") for p in _procs(n) if _conf_of(p) == str(self.conf_path)]
        _kill_and_wait(pids, timeout=10)

    def _all_idle(self) -> bool:
        states = {n: s for n, s, _ in self.sinfo()}
        return all(states.get(n) == "idle" for n in self.nodes)

    def _wait(self, ready, daemon: str, names: list[str], what: str = "ready"):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for n in names:
                p = self._procs[n]
                if p.poll() is not None:
                    raise SlurmStartError(
                        f"{n} exited with code {p.returncode} during startup.\n{self._logs(n)}"
                    )
            try:
                if ready():
                    return
            except (OSError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.2)
        try:
            info = self._run(["sinfo", "-N", "-l"]).stdout
        except Exception as e:  # noqa: BLE001
            info = repr(e)
        raise SlurmStartError(
            f"{daemon} not {what} within {self.timeout:.0f}s (conf {self.conf_path}).\nsinfo:\n{info}\n"
            + "\n".join(self._logs(n) for n in names)
        )

    def _logs(self, name: str) -> str:
        log = self.log_dir / (f"{name}.log")
        return (
            f"last lines of {log}:\n{_tail(log)}\n"
            f"last lines of {self.log_dir / (name + '.out')}:\n{_tail(self.log_dir / (name + '.out'))}"
        )


# --------------------------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Start/stop a local single-machine Slurm cluster for testing.")
    ap.add_argument("action", choices=["start", "stop", "status"])
    ap.add_argument("dir", help="directory for slurm.conf, state, spool, pid and log files")
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args(argv)
    c = LocalSlurmCluster(a.dir, timeout=a.timeout, persistent=True)
    if a.action == "start":
        c.start()
        print(f"cluster up in {c.startup_s:.1f}s: slurmctld port {c.ctld_port}, slurmd ports {c.node_ports}")
        print(f"export SLURM_CONF={c.conf_path}")
        return 0
    if a.action == "stop":
        c.stop()
        print("stopped")
        return 0
    st = c._read_state()
    alive = {n: (p, _alive(p)) for n, p in st.get("pids", {}).items()}
    print(json.dumps({"state": st, "alive": alive}, indent=1))
    if any(v for _, v in alive.values()) and c.conf_path.exists():
        print(c.run(["sinfo", "-N", "-l"]).stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
