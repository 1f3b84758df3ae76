"""Shared fixtures for the kbroker end-to-end suite.

The `broker` fixture is a factory: ``b = broker({"num.partitions": 3})`` starts
``target/release/kbroker`` (or ``$KBROKER_BIN``) on a free 127.0.0.1 port with a
fresh log dir under the test's tmp dir, waits until the port accepts
connections and returns a :class:`Broker`.  Every broker a test started is
stopped by PID on teardown (SIGTERM, then SIGKILL after 20 s), whether the test
passed or not; on failure the tail of each broker's log is printed.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

DEFAULT_TEST_TIMEOUT_S = 300
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0


def broker_binary() -> Path:
    env = os.environ.get("KBROKER_BIN")
    if env:
        return Path(env).resolve()
    return REPO_ROOT / "target" / "release" / "kbroker"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail_text(path: Path, max_lines: int = 80, max_bytes: int = 256 * 1024) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return "<no log file>"
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-max_lines:])


_LIVE: "set[subprocess.Popen]" = set()


@atexit.register
def _kill_leftovers() -> None:
    # Last resort if pytest itself is interrupted before fixture teardown.
    for p in list(_LIVE):
        if p.poll() is None:
            p.kill()


class BrokerExited(RuntimeError):
    pass


class Broker:
    """One kbroker process (and its restarts) on a fixed port and log dir."""

    def __init__(self, workdir: Path, overrides: dict | None = None, name: str = "broker",
                 port: int | None = None, config_file: Path | None = None):
        self.name = name
        # extra environment of the next start (e.g. KBROKER_FAILPOINTS)
        self.env: dict[str, str] = {}
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.workdir / "data"
        self.port = port or free_port()
        self.config_file = config_file
        # Where it listens, and the network namespace it runs in (tests/netns.py), if any.
        self.host = "127.0.0.1"
        self.netns: str | None = None
        self.overrides = {
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "log.dirs": str(self.log_dir),
        }
        for k, v in (overrides or {}).items():
            self.overrides[k] = str(v)
        self.proc: subprocess.Popen | None = None
        self.log_files: list[Path] = []
        self.exit_codes: list[int] = []

    # -- properties ------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def place(self, host: str, netns: str | None) -> None:
        """Listen on `host` inside network namespace `netns` from the next start."""
        self.host, self.netns = host, netns
        self.overrides["listeners"] = f"PLAINTEXT://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def log_file(self) -> Path:
        return self.log_files[-1]

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        # `ip netns exec` execs the broker: the PID is still the broker's.
        cmd = ["ip", "netns", "exec", self.netns] if self.netns else []
        cmd.append(str(broker_binary()))
        if self.config_file:
            cmd.append(str(self.config_file))
        for k, v in self.overrides.items():
            cmd += ["--override", f"{k}={v}"]
        return cmd

    # -- lifecycle -------------------------------------------------------------
    def start(self, timeout: float = READY_TIMEOUT_S) -> "Broker":
        assert not self.is_running(), "broker already running"
        binary = broker_binary()
        if not binary.exists():
            raise FileNotFoundError(
                f"broker binary {binary} not found; build it with "
                "`cargo build --release` or set KBROKER_BIN")
        logf = self.workdir / f"{self.name}.{len(self.log_files)}.log"
        self.log_files.append(logf)
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.env)
        with open(logf, "wb") as out:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=str(self.workdir), env=env,
                start_new_session=True)
        _LIVE.add(self.proc)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.exit_codes.append(rc)
                raise BrokerExited(
                    f"{self.name} exited with code {rc} before accepting connections; "
                    f"log tail:\n{self.tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    return
            except OSError as e:
                last_err = e
                time.sleep(0.05)
        raise TimeoutError(
            f"{self.name} did not accept connections on {self.bootstrap} within "
            f"{timeout}s (last error: {last_err}); log tail:\n{self.tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code
        (negative signal number if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        rc = self.proc.returncode
        self.exit_codes.append(rc)
        _LIVE.discard(self.proc)
        self.proc = None
        return rc

    def wait_exit(self, timeout: float) -> int:
        """Waits for the process to exit by itself; returns its exit code."""
        assert self.proc is not None, "broker not running"
        rc = self.proc.wait(timeout)
        self.exit_codes.append(rc)
        _LIVE.discard(self.proc)
        self.proc = None
        return rc

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "broker not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.exit_codes.append(self.proc.returncode)
        _LIVE.discard(self.proc)
        self.proc = None

    def restart(self, timeout: float = READY_TIMEOUT_S) -> "Broker":
        if self.is_running():
            self.stop()
        return self.start(timeout)

    # -- logs --------------------------------------------------------------------
    def log_text(self, index: int = -1) -> str:
        return self.log_files[index].read_text("utf-8", "replace")

    def tail(self, lines: int = 80, index: int = -1) -> str:
        if not self.log_files:
            return "<never started>"
        return tail_text(self.log_files[index], lines)

    def sendfile_bytes(self, index: int = -1) -> int:
        """The `sendfile_bytes=<N>` the broker reported when it shut down."""
        found = re.findall(r"sendfile_bytes=(\d+)", self.log_text(index))
        assert found, (f"{self.name}: no 'sendfile_bytes=' in its log after shutdown; "
                       f"log tail:\n{self.tail(30, index)}")
        return int(found[-1])

    def partition_dir(self, topic: str, partition: int) -> Path:
        return self.log_dir / f"{topic}-{partition}"

    def __repr__(self) -> str:
        return f"<Broker {self.name} {self.bootstrap} pid={self.pid}>"


# --- hooks ------------------------------------------------------------------------

def pytest_configure(config):
    # kafka-python 3.0 loads its protocol schemas with deprecated importlib.resources calls
    config.addinivalue_line(
        "filterwarnings", r"ignore:.*is deprecated\. Use files\(\) instead:DeprecationWarning")
    config.addinivalue_line(
        "markers", "timeout_s(seconds): fail the test if it runs longer than this "
        f"(default {DEFAULT_TEST_TIMEOUT_S}s)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class TestTimeout(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """A hard per-test time limit (SIGALRM), so a hung client can't hang the suite."""
    marker = item.get_closest_marker("timeout_s")
    limit = int(marker.args[0]) if marker else DEFAULT_TEST_TIMEOUT_S

    def on_alarm(signum, frame):
        raise TestTimeout(f"test exceeded its {limit}s limit")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --- fixtures ---------------------------------------------------------------------

@pytest.fixture
def broker(request, tmp_path):
    """Factory: broker(overrides=None, name=None, start=True) -> Broker."""
    started: list[Broker] = []

    def make(overrides: dict | None = None, name: str | None = None, start: bool = True,
             config_file: Path | None = None) -> Broker:
        name = name or f"broker{len(started)}"
        b = Broker(tmp_path / name, overrides, name=name, config_file=config_file)
        started.append(b)
        if start:
            b.start()
        return b

    yield make

    for b in started:
        try:
            b.stop()
        except Exception as e:  # never leak a process
            print(f"error stopping {b}: {e!r}")
            if b.proc is not None and b.proc.poll() is None:
                b.proc.kill()
    rep = getattr(request.node, "rep_call", None)
    failed = rep is None or rep.failed
    for b in started:
        if failed:
            for i, lf in enumerate(b.log_files):
                print(f"\n----- {b.name} log #{i} ({lf}) tail -----\n{tail_text(lf)}")
        elif b.log_dir.exists():
            # keep /tmp small: data of passing tests is not needed
            shutil.rmtree(b.log_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kcat_bin() -> str:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if not path:
        pytest.fail("kcat is not installed (scripts/test installs it with apt-get)")
    return path
