"""A real single-node SLURM cluster on this machine, for ``make test-slurm``.

    python tests/slurm/slurm_cluster.py run [--timeout SECONDS] [--keep] -- COMMAND [ARG...]

As root: installs ``slurm-wlm`` and ``munge`` with apt-get if they are missing; writes a
munge key and a ``slurm.conf`` into a fresh scratch directory (nothing under ``/etc`` is
used or changed); starts ``munged``, ``slurmctld`` and ``slurmd`` as children of this
process; waits until ``sinfo`` shows the node idle; runs COMMAND with ``SLURM_CONF`` set (so
``sbatch``, ``srun``, ``squeue``, ``scontrol`` and submitit talk to this cluster); then cancels
every job, stops the daemons by the pids it started and checks that no process of the
cluster is left. The cluster is stopped on every way out: COMMAND failing, COMMAND running
past ``--timeout`` (its process group is killed), SIGINT/SIGTERM/SIGHUP to this script, and
(through ``PR_SET_PDEATHSIG``) this script being killed outright.

The configuration is the one that runs here (Debian 12, SLURM 22.05, no systemd, no
cgroups): ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``, one node with the
CPUs and sockets ``slurmd -C`` reports and the memory available now minus a margin, one
default partition. Two settings differ from SLURM's defaults to keep the tests short:
``cred_expire=10`` (a requeued job waits ``cred_expire`` + 1 s before it may start again,
120 + 1 s by default) and ``KillWait=10``. There is no accounting daemon (``slurmdbd``), so
``sacct`` answers "accounting storage is disabled" and submitit, which polls it, falls back
to the result files its jobs write (it logs "Bypassing sacct error" as it does so).

Exit status: COMMAND's; 124 when it ran past ``--timeout``; 3 when the cluster could not be
started or stopped cleanly (the message says why and where the daemons' logs are).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

#: Set in COMMAND's environment: the scratch directory of the running cluster.
CLUSTER_ENV = "BZ_SLURM_CLUSTER"
#: What the cluster needs, and the Debian packages that bring it.
TOOLS = ("munged", "munge", "slurmctld", "slurmd", "sinfo", "sbatch", "srun", "squeue", "scontrol", "scancel")
PACKAGES = ("slurm-wlm", "munge")
PARTITION = "bz"
START_TIMEOUT_S = 60
INSTALL_TIMEOUT_S = 600
# Memory left to the machine itself (and what it runs beside the cluster).
MEMORY_MARGIN_MB = 1024


class ClusterError(RuntimeError):
    """The cluster could not be installed, started or stopped cleanly."""


class Interrupted(BaseException):
    """A signal asked this script to stop: unwind, stopping the cluster on the way."""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="slurm_cluster.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="start a cluster, run COMMAND against it, stop the cluster")
    run.add_argument("--timeout", type=float, default=None, help="kill COMMAND after this many seconds")
    run.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, state) afterwards")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("run: give the command to run after --")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        ensure_installed()
        with cluster(keep=args.keep) as env:
            return run_command(command, env, args.timeout)
    except ClusterError as err:
        print(f"slurm cluster: {err}", file=sys.stderr, flush=True)
        return 3
    except Interrupted as stop:
        print(f"slurm cluster: stopped by {signal.Signals(stop.args[0]).name}", file=sys.stderr, flush=True)
        return 128 + int(stop.args[0])


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def _say(message: str) -> None:
    print(f"slurm cluster: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ install
def ensure_installed() -> None:
    """Install slurm-wlm and munge with apt-get when a tool is missing (needs root)."""
    if os.geteuid() != 0:
        raise ClusterError("must run as root: slurmd starts jobs as their users and SlurmUser=root here "
                           "(run `make test-slurm` as root, as CI does)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise ClusterError(f"{', '.join(missing)} not installed and no apt-get to install {' '.join(PACKAGES)}")
    _say(f"{', '.join(missing)} not found: apt-get install -y {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    for step in (["apt-get", "update", "-q"], install):
        try:
            proc = subprocess.run(step, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"`{' '.join(step)}` did not finish in {INSTALL_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            raise ClusterError(f"`{' '.join(step)}` failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    still = [tool for tool in TOOLS if shutil.which(tool) is None]
    if still:
        raise ClusterError(f"installed {' '.join(PACKAGES)} but {', '.join(still)} still not on PATH")


# ------------------------------------------------------------------------------ config
def node_line(hostname: str) -> str:
    """``NodeName=...`` as ``slurmd -C`` sees this machine (CPUs, boards, sockets, cores,
    threads), with ``RealMemory`` lowered to what is available now minus a margin: a node
    configured with more than it has would be drained."""
    proc = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30)
    fields = dict(f.split("=", 1) for f in proc.stdout.split("\n", 1)[0].split() if "=" in f)
    if proc.returncode != 0 or "CPUs" not in fields:
        raise ClusterError(f"`slurmd -C` could not describe this machine: {proc.stdout}{proc.stderr}")
    available = _meminfo_mb("MemAvailable")
    fields["RealMemory"] = str(max(512, min(int(fields.get("RealMemory", available)), available - MEMORY_MARGIN_MB)))
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return " ".join([f"NodeName={hostname}", "NodeAddr=127.0.0.1", *(f"{k}={fields[k]}" for k in keys if k in fields)])


def _meminfo_mb(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0]) // 1024
    raise ClusterError(f"no {key} in /proc/meminfo")


def slurm_conf(scratch: Path, hostname: str, ports: tuple[int, int]) -> str:
    """The cluster's ``slurm.conf``: every path in ``scratch``, one node, one partition."""
    return "\n".join([
        "ClusterName=bz",
        f"SlurmctldHost={hostname}(127.0.0.1)",
        f"SlurmctldPort={ports[0]}",
        f"SlurmdPort={ports[1]}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # Our own munged; cred_expire also sets how long a requeued job waits (+1 s).
        f"AuthInfo=socket={scratch / 'munge.socket'},cred_expire=10",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "KillWait=10",
        # The main scheduler every second, not every 60: a requeued job starts as soon as
        # its cred_expire wait is over.
        "SchedulerParameters=sched_interval=1",
        "MailProg=/bin/true",
        f"StateSaveLocation={scratch / 'state'}",
        f"SlurmdSpoolDir={scratch / 'spool'}",
        f"SlurmctldPidFile={scratch / 'slurmctld.pid'}",
        f"SlurmdPidFile={scratch / 'slurmd.pid'}",
        f"SlurmctldLogFile={scratch / 'slurmctld.log'}",
        f"SlurmdLogFile={scratch / 'slurmd.log'}",
        f"{node_line(hostname)} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={hostname} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _free_ports() -> tuple[int, int]:
    """Two ports nothing listens on now: slurmctld's and slurmd's, so a SLURM already
    running on this machine (on 6817/6818) is neither disturbed nor reached."""
    first, second = socket.socket(), socket.socket()
    try:
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        return first.getsockname()[1], second.getsockname()[1]
    finally:
        first.close()
        second.close()


def _hostname() -> str:
    """This machine's short name, which slurmd registers as and jobs see in SLURM_NODELIST
    (Lightning resolves it to reach rank 0): it must resolve."""
    name = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(name)
    except OSError as err:
        raise ClusterError(f"this machine's hostname {name!r} does not resolve ({err}); "
                           f"add it to /etc/hosts (e.g. `127.0.0.1 {name}`)") from None
    return name


# ------------------------------------------------------------------------------ daemons
def _die_with_parent() -> None:
    """In a daemon child: SIGTERM when this script dies, however it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Daemons:
    """The processes this script started, by pid, and what stopping them takes."""

    def __init__(self, scratch: Path, env: dict[str, str]) -> None:
        self.scratch = scratch
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str]) -> None:
        with open(self.scratch / f"{name}.out", "wb") as out:
            self.procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True, preexec_fn=_die_with_parent,
            )

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited with status {proc.returncode}\n{self.logs(name)}")

    def logs(self, *names: str) -> str:
        parts = []
        for name in names or tuple(self.procs):
            for path in (self.scratch / f"{name}.out", self.scratch / f"{name}.log"):
                if path.is_file():
                    tail = path.read_text(errors="replace").splitlines()[-15:]
                    parts.append(f"--- {path} (last lines)\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self) -> list[str]:
        """Stop every daemon, last started first: SIGTERM, then SIGKILL after 15 s. Returns
        what did not stop on SIGTERM."""
        stubborn = []
        for name, proc in reversed(self.procs.items()):
            if proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                stubborn.append(f"{name} (pid {proc.pid})")
                proc.kill()
                proc.wait(timeout=15)
        return stubborn


def _run_quiet(argv: list[str], env: dict[str, str], timeout: float = 15) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout} s")


def _wait_for(what: str, ready: Callable[[], tuple[bool, str]], daemons: Daemons,
              timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        daemons.check_alive()
        ok, last = ready()
        if ok:
            return
        time.sleep(0.5)
    raise ClusterError(f"{what} not ready after {timeout:.0f} s (last answer: {last.strip() or 'none'})\n{daemons.logs()}")


@contextlib.contextmanager
def cluster(keep: bool = False) -> Iterator[dict[str, str]]:
    """Start the cluster; yield the environment that reaches it; stop it on the way out."""
    scratch = Path(tempfile.mkdtemp(prefix="bz-slurm-"))
    scratch.chmod(0o755)  # munged refuses a socket directory others may write to
    for sub in ("state", "spool"):
        (scratch / sub).mkdir()
    hostname = _hostname()
    conf = scratch / "slurm.conf"
    conf.write_text(slurm_conf(scratch, hostname, _free_ports()))
    key = scratch / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    socket_path = scratch / "munge.socket"
    # Every process of the cluster, and every job (sbatch exports the submitter's
    # environment), carries these: how stop() finds what was left behind.
    env = {**os.environ, "SLURM_CONF": str(conf), CLUSTER_ENV: str(scratch)}
    daemons = Daemons(scratch, env)
    clean = False
    try:
        daemons.start("munged", ["munged", "--foreground", f"--key-file={key}", f"--socket={socket_path}",
                                 f"--pid-file={scratch / 'munged.pid'}", f"--seed-file={scratch / 'munged.seed'}",
                                 f"--log-file={scratch / 'munged.log'}"])
        _wait_for("munged", lambda: _munge_works(socket_path, env), daemons)
        daemons.start("slurmctld", ["slurmctld", "-D", "-f", str(conf)])
        daemons.start("slurmd", ["slurmd", "-D", "-f", str(conf), "-N", hostname])
        _wait_for(f"node {hostname} idle in sinfo", lambda: _node_idle(env), daemons)
        _say(f"up: node {hostname}, partition {PARTITION}, SLURM_CONF={conf} "
             f"(munged {daemons.procs['munged'].pid}, slurmctld {daemons.procs['slurmctld'].pid}, "
             f"slurmd {daemons.procs['slurmd'].pid})")
        yield env
        clean = True
    finally:
        problems = stop_cluster(daemons, env)
        if problems:
            _say("stopped, but:\n  " + "\n  ".join(problems))
        else:
            _say("stopped: no job and no process of the cluster left")
        if keep or problems or not clean:
            _say(f"logs and state kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
        if problems and clean:
            raise ClusterError("the cluster did not stop cleanly (see above)")


def _munge_works(socket_path: Path, env: dict[str, str]) -> tuple[bool, str]:
    if not socket_path.exists():
        return False, "no socket yet"
    encode = subprocess.run(["munge", "-n", "-S", str(socket_path)], env=env, capture_output=True, timeout=15)
    return encode.returncode == 0, encode.stderr.decode(errors="replace")


def _node_idle(env: dict[str, str]) -> tuple[bool, str]:
    proc = _run_quiet(["sinfo", "-h", "-N", "-o", "%t"], env)
    return proc.returncode == 0 and proc.stdout.split() == ["idle"], proc.stdout + proc.stderr


def stop_cluster(daemons: Daemons, env: dict[str, str]) -> list[str]:
    """Cancel every job, stop the daemons, then kill (by pid, and say so) any process still
    carrying this cluster's marker: a job step or ``slurmstepd`` that outlived its daemon."""
    problems = []
    if "slurmctld" in daemons.procs and daemons.procs["slurmctld"].poll() is None:
        listed = _run_quiet(["squeue", "-h", "-o", "%i %T"], env).stdout.splitlines()
        jobs = [line.split()[0] for line in listed if not line.endswith(" COMPLETING")]
        if jobs:
            _say(f"cancelling {len(jobs)} job(s) still queued or running: {' '.join(jobs)}")
            _run_quiet(["scancel", *jobs], env)
        # Until every job, completing ones included, has ended: KillWait (10 s) and some.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _run_quiet(["squeue", "-h", "-o", "%i"], env).stdout.split():
            time.sleep(0.5)
    problems += [f"{name} ignored SIGTERM and was killed" for name in daemons.stop()]
    marker = f"{CLUSTER_ENV}={daemons.scratch}".encode()
    leftover = _pids_with(marker)
    for pid in leftover:
        problems.append(f"process {pid} ({_cmdline(pid)}) outlived the cluster: killed")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while leftover and time.monotonic() < deadline:
        leftover = [pid for pid in leftover if _alive(pid)]
        time.sleep(0.2)
    problems += [f"process {pid} ({_cmdline(pid)}) still alive after SIGKILL" for pid in leftover]
    return problems


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its parent does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _pids_with(marker: bytes) -> list[int]:
    """Processes other than this one whose environment holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


# ------------------------------------------------------------------------------ command
def run_command(command: list[str], env: dict[str, str], timeout: float | None) -> int:
    """Run ``command`` in its own process group; past ``timeout`` (or on a signal to this
    script) kill the whole group. Returns its exit status (124 on timeout)."""
    proc = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _say(f"`{' '.join(command)}` still running after {timeout:.0f} s: killed")
        _kill_group(proc)
        return 124
    except BaseException:
        _kill_group(proc)
        raise


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
