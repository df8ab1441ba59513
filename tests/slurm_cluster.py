"""A throwaway single-node Slurm cluster on loopback, for tests: munged, slurmctld and slurmd started by hand
(no systemd) with every file under one temporary directory, and stopped by PID afterwards.

    with slurm_cluster() as env:                      # env: os.environ plus SLURM_CONF and the fake sacct on PATH
        subprocess.run(["sbatch", ...], env=env)

Accounting: there is no slurmdbd. submitit polls ``sacct -o JobID,State,NodeList --parsable2 -j <id>`` for the state
of a job that has not written its result; without accounting the real ``sacct`` fails, submitit reads the state as
UNKNOWN forever and a job killed before its result hangs the launcher. The cluster puts a small ``sacct`` first on
PATH that answers that query from slurmctld's own job table (``squeue --states=all``), which holds finished jobs for
``MinJobAge`` seconds -- longer than any test. slurmdbd would need a MariaDB server, a third daemon with its own munge
and file-mode setup, and seconds of start-up on a 2-core machine, to answer the same query.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
CPUS = 2
MEM_PER_CPU_MB = 1000

SLURM_CONF = """\
ClusterName=mmaltest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket={root}/munge.socket,cred_expire=5
StateSaveLocation={root}/ctld
SlurmdSpoolDir={root}/slurmd
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
# no cgroups in a container: track job processes by parent PID, bind no CPUs
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={mem_per_cpu}
SlurmdParameters=config_overrides
JobRequeue=1
# finished jobs stay in slurmctld's table (and in the fake sacct's answers) this long
MinJobAge=3600
# a requeued or cancelled job gets SIGTERM, which submitit ignores, and SIGKILL ~5 s later (also with 0)
KillWait=5
# look at pending jobs every second: a requeued job becomes eligible cred_expire seconds after its requeue
SchedulerParameters=sched_interval=1,bf_interval=1
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

# submitit's only sacct query, answered from slurmctld: array tasks print as 12_0, pending ranges as 12_[1-3%2].
SACCT = """\
#!/bin/sh
ids=""
while [ $# -gt 0 ]; do
  case "$1" in -j) ids="$ids${ids:+,}$2"; shift 2 ;; *) shift ;; esac
done
echo "JobID|State|NodeList"
exec squeue --noheader --states=all --jobs="$ids" --format="%i|%T|%N"
"""


def _which(name: str) -> str | None:
    """``name`` on PATH or in the sbin directories, where Debian puts the daemons (often not on a user's PATH)."""
    return shutil.which(name, path=f"{os.environ.get('PATH', os.defpath)}:/usr/local/sbin:/usr/sbin:/sbin")


def unavailable() -> str | None:
    """Why this machine cannot run the test cluster (programs missing, not root), or None when it can."""
    missing = [name for name in DAEMONS + CLIENTS if _which(name) is None]
    if missing:
        return (f"the test Slurm cluster needs {', '.join(missing)} (Debian: apt-get install slurmctld slurmd munge; "
                ".ci/run installs them)")
    if os.geteuid() != 0:
        return "the test Slurm cluster runs slurmd as root (it starts jobs as their user); run the test as root"
    return None


def _free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def _wait(check, what: str, logs: list[Path], timeout: float = 30.0) -> None:
    """Poll ``check()`` until it is true; fail with the daemons' logs after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:] if p.exists() else '(none)'}" for p in logs)
            raise RuntimeError(f"test Slurm cluster: {what} did not happen within {timeout:.0f} s\n{tails}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM one daemon we started, SIGKILL it if it is still there after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def slurm_cluster() -> Iterator[dict[str, str]]:
    """Start the cluster, wait until its node is idle, yield the environment for clients (sbatch, squeue, submitit),
    then cancel every job and stop every daemon it started, by PID, whatever happened in between."""
    # A short root: the MUNGE socket path must fit in a sockaddr_un (108 bytes); mkdtemp makes it mode 700.
    root = Path(tempfile.mkdtemp(prefix="mmal-slurm-"))
    for sub in ("ctld", "slurmd", "bin"):
        (root / sub).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = root / "slurm.conf"
    ctld_port, slurmd_port = _free_ports(2)
    conf.write_text(SLURM_CONF.format(root=root, ctld_port=ctld_port, slurmd_port=slurmd_port, cpus=CPUS,
                                      mem_per_cpu=MEM_PER_CPU_MB, memory=CPUS * MEM_PER_CPU_MB))
    sacct = root / "bin" / "sacct"
    sacct.write_text(SACCT)
    sacct.chmod(0o755)
    # No SLURM_* of an outer cluster (a test run inside a Slurm job must not look like one of ours to submitit).
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(SLURM_CONF=str(conf), PATH=f"{root / 'bin'}:{os.environ.get('PATH', os.defpath)}")

    logs = [root / f"{name}{ext}" for name in DAEMONS for ext in (".log", ".out")]
    daemons: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        # -F/-D: in the foreground, so the PID we hold is the daemon's own
        with open(root / f"{name}.out", "wb") as out:
            daemons.append(subprocess.Popen([_which(name), *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                            cwd=root))

    try:
        start("munged", "-F", "--force", f"--key-file={key}", f"--socket={root}/munge.socket",
              f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munged.seed")
        _wait(lambda: (root / "munge.socket").exists(), "munged start-up", logs)
        start("slurmctld", "-D", "-f", str(conf))
        start("slurmd", "-D", "-N", "localhost", "-f", str(conf))
        _wait(lambda: _node_state(env) == "idle", "node localhost idle in sinfo", logs)
        yield env
    finally:
        try:
            if len(daemons) == 3 and all(p.poll() is None for p in daemons):
                _cancel_all(env)
        finally:
            for proc in reversed(daemons):
                _stop(proc)
            shutil.rmtree(root, ignore_errors=True)


def _node_state(env: dict[str, str]) -> str:
    result = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%t"], env=env, capture_output=True,
                            text=True, timeout=10)
    return result.stdout.strip()


def _cancel_all(env: dict[str, str]) -> None:
    """Cancel every job of the cluster and wait until the node has killed their processes (slurmstepd and the job
    run outside slurmd's process, so stopping slurmd alone would leave them running)."""
    subprocess.run(["scancel", "--full", f"--user={os.getuid()}"], env=env, capture_output=True, timeout=30)

    def drained() -> bool:
        out = subprocess.run(["squeue", "--noheader", "--format=%i"], env=env, capture_output=True, text=True,
                             timeout=10).stdout
        return not out.strip()

    with contextlib.suppress(RuntimeError):
        _wait(drained, "cancelling all jobs", [], timeout=30)
