"""Real ZooKeeper servers for the cluster tests: Debian's `zookeeper` package (3.8) run
with the machine's Java, standalone or as a 3-node ensemble, on free 127.0.0.1 ports, data
under the test's tmp dir, stopped by PID.

``tickTime=500`` lets tests use short sessions (ZooKeeper allows 2..20 ticks: 1-10 s).
Readiness is the `srvr` four-letter word answering with a mode.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from conftest import _LIVE, free_port, tail_text

ZK_JAR = Path("/usr/share/java/zookeeper.jar")
TICK_MS = 500


def _classpath() -> str:
    # Debian's zookeeper.jar names its dependencies in its manifest's Class-Path.
    return str(ZK_JAR)


def four_letter(port: int, word: str = "srvr", timeout: float = 1.0,
                host: str = "127.0.0.1") -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(word.encode())
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
    return out.decode("utf-8", "replace")


class ZkNode:
    """One ZooKeeper server process (standalone, or member `myid` of an ensemble)."""

    def __init__(self, workdir: Path, myid: int = 0, port: int | None = None,
                 peers: list[tuple[int, int, int]] | None = None, host: str = "127.0.0.1"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.myid = myid
        self.host = host
        self.port = port or free_port()
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.peers = peers  # [(myid, quorum_port, election_port)]
        self.proc: subprocess.Popen | None = None
        self.log_files: list[Path] = []
        cfg = [
            f"tickTime={TICK_MS}",
            "initLimit=20",
            "syncLimit=10",
            f"dataDir={self.data_dir}",
            f"clientPort={self.port}",
            f"clientPortAddress={host}",
            "admin.enableServer=false",
            "4lw.commands.whitelist=srvr,ruok,mntr",
            "maxClientCnxns=200",
        ]
        if peers:
            (self.data_dir / "myid").write_text(f"{myid}\n")
            for pid, quorum, election in peers:
                cfg.append(f"server.{pid}=127.0.0.1:{quorum}:{election}")
        self.config_file = self.workdir / "zoo.cfg"
        self.config_file.write_text("\n".join(cfg) + "\n")

    @property
    def connect(self) -> str:
        return f"{self.host}:{self.port}"

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: bool = True, timeout: float = 60.0) -> "ZkNode":
        assert not self.is_running()
        logf = self.workdir / f"zookeeper.{len(self.log_files)}.log"
        self.log_files.append(logf)
        env = dict(os.environ)
        env.setdefault("JVMFLAGS", "")
        cmd = ["java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               "-Dzookeeper.log.dir=" + str(self.workdir), "-cp", _classpath(),
               "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(self.config_file)]
        with open(logf, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=str(self.workdir),
                                         env=env, start_new_session=True)
        _LIVE.add(self.proc)
        if wait:
            self.wait_serving(timeout)
        return self

    def mode(self) -> str | None:
        """'standalone', 'leader', 'follower', or None if not serving."""
        try:
            text = four_letter(self.port, host=self.host)
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return None

    def wait_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"zookeeper exited with {self.proc.returncode}:\n"
                                   f"{tail_text(self.log_files[-1])}")
            if self.mode() is not None:
                return
            time.sleep(0.2)
        raise TimeoutError(f"zookeeper on {self.connect} not serving after {timeout}s:\n"
                           f"{tail_text(self.log_files[-1])}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        _LIVE.discard(self.proc)
        self.proc = None

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)


class Ensemble:
    """Three ZooKeeper servers forming one ensemble."""

    def __init__(self, workdir: Path, size: int = 3):
        peers = [(i + 1, free_port(), free_port()) for i in range(size)]
        self.nodes = [ZkNode(Path(workdir) / f"zk{i + 1}", myid=i + 1, peers=peers)
                      for i in range(size)]

    @property
    def connect(self) -> str:
        return ",".join(n.connect for n in self.nodes)

    def start(self, timeout: float = 90.0) -> "Ensemble":
        for n in self.nodes:
            n.start(wait=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            modes = [n.mode() for n in self.nodes]
            if modes.count("leader") == 1 and modes.count("follower") == len(self.nodes) - 1:
                return self
            time.sleep(0.3)
        raise TimeoutError(f"ensemble did not form: modes {[n.mode() for n in self.nodes]}")

    def leader(self) -> ZkNode | None:
        for n in self.nodes:
            if n.mode() == "leader":
                return n
        return None

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
