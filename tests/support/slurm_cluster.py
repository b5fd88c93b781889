"""A real single-node Slurm on this machine for tests: munge + slurmctld + slurmd, fake GPUs as gres.

Debian's packages (slurmctld, slurmd, munge, slurm-client) are installed when missing and we are root.
Configuration goes to /etc/slurm (job steps read it from there, not from SLURM_CONF); whatever was there
before is restored on stop, and every daemon started here is stopped by its own pid.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "munge", "slurm-client"]
BINARIES = ["slurmctld", "slurmd", "munged", "sbatch", "squeue", "sinfo", "scontrol"]
ETC = Path("/etc/slurm")
CONF_FILES = ["slurm.conf", "gres.conf", "cgroup.conf"]


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def ensure_installed(timeout_s: int = 900) -> str | None:
    """Install Slurm when missing; return None when usable, else the reason it is not (for pytest.skip)."""
    if not missing_binaries():
        return None
    if os.geteuid() != 0:
        return f"Slurm is not installed ({', '.join(missing_binaries())} missing) and installing it needs root"
    if shutil.which("apt-get") is None:
        return "Slurm is not installed and there is no apt-get to install it with"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-500:]}"
    return None if not missing_binaries() else f"still missing after install: {missing_binaries()}"


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class SlurmCluster:
    """One node (this host) in ``partition`` (the default, no limits) and in each of ``limited`` (name -> Slurm
    partition limits, e.g. ``MaxTime=10 MaxMemPerNode=1000 MaxCPUsPerNode=1``: a serial-like partition), with
    ``gpus`` fake GPU devices exposed as gres ``gpu``."""

    state_dir: Path
    partition: str
    cpus: int
    mem_mb: int
    gpus: int = 2
    limited: dict[str, str] = field(default_factory=dict)
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _backup: Path | None = None
    _devices: list[Path] = field(default_factory=list)

    @property
    def gpu_files(self) -> list[Path]:
        return [Path(f"/dev/nvidia{i}") for i in range(self.gpus)]

    def slurm_conf(self) -> str:
        s = self.state_dir
        return "\n".join(
            [
                "ClusterName=emflowtest",
                f"SlurmctldHost={self.node}(127.0.0.1)",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                f"StateSaveLocation={s}/ctld",
                f"SlurmdSpoolDir={s}/d",
                f"SlurmctldPidFile={s}/slurmctld.pid",
                f"SlurmdPidFile={s}/slurmd.pid",
                f"SlurmctldLogFile={s}/slurmctld.log",
                f"SlurmdLogFile={s}/slurmd.log",
                "SlurmctldDebug=info",
                "SlurmdDebug=info",
                # No cgroups in a container: track processes by pid, no task confinement.
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "SchedulerType=sched/backfill",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "GresTypes=gpu",
                "ReturnToService=2",
                # squeue is the status source without accounting: keep finished jobs visible for a while.
                "MinJobAge=600",
                "MpiDefault=none",
                "SchedulerParameters=sched_interval=2",
                f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.mem_mb}"
                f" Gres=gpu:{self.gpus} State=UNKNOWN",
                f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP"
                " OverSubscribe=NO",
                *(
                    f"PartitionName={name} Nodes={self.node} Default=NO {limits} State=UP OverSubscribe=NO"
                    for name, limits in self.limited.items()
                ),
                "",
            ]
        )

    def gres_conf(self) -> str:
        files = ",".join(str(p) for p in self.gpu_files)
        return f"NodeName={self.node} Name=gpu File={files}\n"

    def start(self, timeout_s: float = 60) -> None:
        for sub in ("ctld", "d"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        self._install_conf()
        for dev in self.gpu_files:  # fake GPUs: slurmd only needs the device paths to exist
            if not dev.exists():
                dev.touch()
                self._devices.append(dev)
        munge_dir = self.state_dir / "munge"
        munge_dir.mkdir(exist_ok=True)
        self._spawn(
            [
                _sbin("munged"),
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--pid-file={munge_dir}/munged.pid",
                f"--seed-file={munge_dir}/munged.seed",
                f"--log-file={munge_dir}/munged.log",
            ],
            "munged",
        )
        self._wait(lambda: Path(self.munge_socket).exists(), timeout_s, "munged socket")
        self._spawn([_sbin("slurmctld"), "-D", "-i"], "slurmctld")
        self._wait(lambda: self._ok(["scontrol", "ping"]), timeout_s, "slurmctld")
        self._spawn([_sbin("slurmd"), "-D"], "slurmd")
        self._wait(self._node_idle, timeout_s, f"node {self.node} idle")

    @property
    def munge_socket(self) -> str:
        # Slurm's auth/munge plugin talks to munge's default socket.
        return "/run/munge/munge.socket.2"

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self._procs.clear()
        for dev in self._devices:
            dev.unlink(missing_ok=True)
        self._devices.clear()
        self._restore_conf()

    def log_tail(self, n: int = 40) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            p = self.state_dir / name
            if p.exists():
                out.append(f"--- {name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-n:]))
        return "\n".join(out)

    def _install_conf(self) -> None:
        ETC.mkdir(parents=True, exist_ok=True)
        self._backup = self.state_dir / "etc-backup"
        self._backup.mkdir(exist_ok=True)
        for name in CONF_FILES:
            if (ETC / name).exists():
                shutil.copy2(ETC / name, self._backup / name)
        (ETC / "slurm.conf").write_text(self.slurm_conf())
        (ETC / "gres.conf").write_text(self.gres_conf())
        (ETC / "cgroup.conf").unlink(missing_ok=True)  # 22.05 autodetects; a stale one can break slurmd
        Path("/run/munge").mkdir(parents=True, exist_ok=True)

    def _restore_conf(self) -> None:
        if self._backup is None:
            return
        for name in CONF_FILES:
            saved = self._backup / name
            if saved.exists():
                shutil.copy2(saved, ETC / name)
            else:
                (ETC / name).unlink(missing_ok=True)
        self._backup = None

    def _spawn(self, cmd: list[str], name: str) -> None:
        log = open(self.state_dir / f"{name}.stdout", "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._procs.append(proc)
        time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {proc.returncode}: {(self.state_dir / f'{name}.stdout').read_text()}"
                f"\n{self.log_tail()}"
            )

    @staticmethod
    def _ok(cmd: list[str]) -> bool:
        return subprocess.run(cmd, capture_output=True, text=True).returncode == 0

    def _node_idle(self) -> bool:
        done = subprocess.run(["sinfo", "-h", "-n", self.node, "-o", "%t"], capture_output=True, text=True)
        return done.returncode == 0 and done.stdout.strip() == "idle"

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} died while waiting for {what}\n{self.log_tail()}")
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{self.log_tail()}")
