"""Consumer-group helpers for test_groups.py / test_compaction.py.

* group members for confluent-kafka (:class:`CKMember`), kafka-python and aiokafka are driven
  from the test thread; helpers check the "every partition owned by exactly one member" rule
  on the members' own view of their assignment;
* :class:`ProcMember` runs a confluent-kafka member in a child process (this module's
  ``__main__``) so that the test can ``kill -9`` it; :class:`KcatMember` runs
  ``kcat -G``; :class:`Procs` kills whatever is still running;
* ``meta_*`` read the broker's metadata tree with ``kbroker metadata ...``.

Running this file as a script is the child side of :class:`ProcMember`.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

if __name__ != "__main__":
    from kclients import RDKAFKA_LOGGER

# Broker settings that keep group tests fast: no initial rebalance delay, short session
# timeouts allowed (members can be expired quickly after kill -9), a light offsets topic.
FAST_GROUPS = {
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 1000,
    "offsets.topic.num.partitions": 5,
}


def tp_set(tps) -> set:
    """{(topic, partition)} from confluent-kafka / kafka-python / aiokafka TopicPartitions."""
    return {(tp.topic, tp.partition) for tp in tps}


def exclusive_cover(assignments: list, expected: set) -> str | None:
    """None if every assignment is non-empty, they do not overlap and their union is exactly
    `expected`; else a description of what is wrong."""
    if any(not a for a in assignments):
        return f"some member has no partitions: {assignments}"
    union = set().union(*assignments)
    if sum(len(a) for a in assignments) != len(union):
        return f"overlapping assignments: {assignments}"
    if union != expected:
        return f"union {sorted(union)} != expected {sorted(expected)}: {assignments}"
    return None


def wait_exclusive(poll_all, get_assignments, expected: set, timeout: float, what: str,
                   settle: float = 1.0):
    """Poll (calling `poll_all()` between checks) until `exclusive_cover(get_assignments())`
    holds, and still holds after `settle` more seconds of polling. Returns the assignments."""
    deadline = time.monotonic() + timeout
    last = None
    ok_since = None
    while True:
        poll_all()
        a = get_assignments()
        last = exclusive_cover(a, expected)
        now = time.monotonic()
        if last is None:
            ok_since = ok_since or now
            if now - ok_since >= settle:
                return a
        else:
            ok_since = None
        if now > deadline:
            raise AssertionError(f"{what}: not true after {timeout}s; last: {last}")


# --- confluent-kafka members ------------------------------------------------------------


def ck_conf(bootstrap: str, group: str, **conf) -> dict:
    c = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 500,
        "socket.timeout.ms": 15000,
        "topic.metadata.refresh.interval.ms": 5000,
    }
    if __name__ != "__main__":
        c["logger"] = RDKAFKA_LOGGER
    c.update(conf)
    return c


class CKMember:
    """A confluent-kafka Consumer subscribed to `topics`, recording callbacks and records."""

    def __init__(self, bootstrap: str, group: str, topics: list, name: str = "ck", **conf):
        from confluent_kafka import Consumer
        self.name = name
        conf.setdefault("client.id", name)
        self.stats: list[dict] = []
        if "statistics.interval.ms" in conf:
            conf["stats_cb"] = lambda s: self.stats.append(json.loads(s))
        self.c = Consumer(ck_conf(bootstrap, group, **conf))
        self.assigned_events: list[set] = []
        self.revoked_events: list[set] = []
        self.lost_events: list[set] = []
        self.records: list[tuple] = []   # (topic, partition, offset, key, value)
        self.errors: list = []
        self.closed = False
        self.c.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                         on_lost=self._on_lost)

    def _on_assign(self, c, parts):
        self.assigned_events.append(tp_set(parts))

    def _on_revoke(self, c, parts):
        self.revoked_events.append(tp_set(parts))

    def _on_lost(self, c, parts):
        self.lost_events.append(tp_set(parts))

    def poll(self, timeout: float = 0.1, max_msgs: int = 500) -> None:
        if self.closed:
            return
        msgs = self.c.consume(max_msgs, timeout)
        for m in msgs:
            if m.error():
                self.errors.append(m.error())
            else:
                self.records.append((m.topic(), m.partition(), m.offset(), m.key(), m.value()))

    def assignment(self) -> set:
        return set() if self.closed else tp_set(self.c.assignment())

    def member_id(self) -> str:
        return self.c.memberid()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.c.close()


def poll_members(members, timeout: float = 0.1):
    def run():
        for m in members:
            m.poll(timeout)
    return run


def assignments_of(members):
    return lambda: [m.assignment() for m in members]


# --- kafka-python members ----------------------------------------------------------------


class KPMember:
    """A kafka-python KafkaConsumer (group_id, subscribe) polled by its own thread.

    One thread per consumer, polling continuously: kafka-python 3.0.12 sends a fresh
    JoinGroup when its previous join/sync task completed while no poll() was waiting for it,
    so consumers polled round-robin from one thread keep restarting rebalances under load."""

    def __init__(self, bootstrap: str, group: str, topics: list, name: str, **conf):
        from kafka import KafkaConsumer
        self.name = name
        kw = dict(bootstrap_servers=bootstrap, group_id=group, client_id=name,
                  auto_offset_reset="earliest", enable_auto_commit=False,
                  session_timeout_ms=10000, heartbeat_interval_ms=500, request_timeout_ms=30000)
        kw.update(conf)
        self.c = KafkaConsumer(*topics, **kw)
        self.lock = threading.Lock()
        self.records: list[tuple] = []   # (topic, partition, offset, key, value)
        self._assignment: set = set()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"kp-{name}", daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                batches = self.c.poll(timeout_ms=300)
                with self.lock:
                    for _tp, recs in batches.items():
                        self.records.extend((r.topic, r.partition, r.offset, r.key, r.value)
                                            for r in recs)
                    self._assignment = tp_set(self.c.assignment())
        except BaseException as e:  # noqa: BLE001 - reported by assignment()
            self.error = e
        finally:
            self._assignment = set()
            try:
                self.c.close(autocommit=False)
            except Exception:  # noqa: BLE001
                pass

    def poll(self, timeout: float = 0.1) -> None:
        time.sleep(timeout)

    def assignment(self) -> set:
        if self.error is not None:
            raise AssertionError(f"{self.name}: poll() raised {self.error!r}")
        with self.lock:
            return set(self._assignment)

    def snapshot(self) -> list[tuple]:
        with self.lock:
            return list(self.records)

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)


# --- child processes ------------------------------------------------------------------


class Procs:
    """Child processes of a test: each in its own session, all killed by `kill_all()`."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd, **kw) -> subprocess.Popen:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass


class ProcMember:
    """A confluent-kafka group member in a child process (this file run as a script). Its
    stdout lines ("ASSIGNED t:p,t:p" / "REVOKED ..." / "MEMBER id") are collected by a
    reader thread."""

    def __init__(self, procs: Procs, bootstrap: str, group: str, topic: str, name: str,
                 session_timeout_ms: int = 3000, instance_id: str | None = None):
        cmd = [sys.executable, str(Path(__file__).resolve()), bootstrap, group, topic, name,
               str(session_timeout_ms), instance_id or ""]
        self.proc = procs.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, bufsize=1)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self._assignment: set = set()
        self.member_id: str | None = None
        self.history: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def drain(self) -> None:
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            self.history.append(line)
            kind, _, rest = line.partition(" ")
            if kind == "MEMBER":
                self.member_id = rest
            elif kind == "REVOKED":
                self._assignment = set()
            elif kind == "ASSIGNED":
                parts = set()
                for item in filter(None, rest.split(",")):
                    t, _, p = item.rpartition(":")
                    parts.add((t, int(p)))
                self._assignment = parts

    def poll(self, timeout: float = 0.0) -> None:
        if timeout:
            time.sleep(timeout)
        self.drain()

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.drain()
        self._assignment = set()

    def assignment(self) -> set:
        self.drain()
        return set(self._assignment)


def _child_main(argv):
    from confluent_kafka import Consumer
    bootstrap, group, topic, name, session_ms, instance_id = argv
    conf = ck_conf(bootstrap, group, **{"client.id": name, "session.timeout.ms": int(session_ms)})
    if instance_id:
        conf["group.instance.id"] = instance_id
    c = Consumer(conf)

    def fmt(parts):
        return ",".join(f"{p.topic}:{p.partition}" for p in parts)

    def on_assign(consumer, parts):
        print(f"MEMBER {consumer.memberid()}", flush=True)
        print(f"ASSIGNED {fmt(parts)}", flush=True)

    def on_revoke(consumer, parts):
        print(f"REVOKED {fmt(parts)}", flush=True)

    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    signal.signal(signal.SIGTERM, lambda *a: (c.close(), sys.exit(0)))
    while True:
        c.poll(0.2)


# --- kcat balanced consumers -------------------------------------------------------------


class KcatMember:
    """`kcat -G group topic` writing "partition offset key value" lines to a file."""

    def __init__(self, procs: Procs, kcat: str, bootstrap: str, group: str, topic: str,
                 name: str, workdir: Path, session_timeout_ms: int = 6000):
        self.name = name
        self.out = Path(workdir) / f"{name}.out"
        self.err = Path(workdir) / f"{name}.err"
        cmd = [kcat, "-b", bootstrap, "-G", group, "-u", "-q",
               "-X", f"client.id={name}",
               "-X", "auto.offset.reset=earliest",
               "-X", f"session.timeout.ms={session_timeout_ms}",
               "-X", "heartbeat.interval.ms=500",
               "-f", "%p %o %k %s\n", topic]
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = procs.start(cmd, stdout=o, stderr=e)

    def records(self) -> list[tuple[int, int, str, str]]:
        out = []
        for line in self.out.read_text("utf-8", "replace").splitlines():
            parts = line.split(" ", 3)
            if len(parts) == 4:
                out.append((int(parts[0]), int(parts[1]), parts[2], parts[3]))
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (kcat closes its consumer and leaves the group), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


# --- the metadata tree ---------------------------------------------------------------------


def _meta(b, *args) -> subprocess.CompletedProcess:
    from conftest import broker_binary
    return subprocess.run([str(broker_binary()), "metadata", *args, "--log-dir", str(b.log_dir)],
                          capture_output=True, text=True, timeout=30)


def meta_ls(b, path: str) -> list[str] | None:
    """Children of `path` (None if the node does not exist)."""
    r = _meta(b, "ls", path)
    if r.returncode == 1:
        return None
    assert r.returncode == 0, \
        f"kbroker metadata ls {path} exited {r.returncode}: {r.stdout[-500:]}{r.stderr[-1000:]}"
    return [line for line in r.stdout.splitlines() if line]


def meta_get(b, path: str) -> str | None:
    """Data of `path` (None if the node does not exist)."""
    r = _meta(b, "get", path)
    if r.returncode == 1:
        return None
    assert r.returncode == 0, \
        f"kbroker metadata get {path} exited {r.returncode}: {r.stdout[-500:]}{r.stderr[-1000:]}"
    return r.stdout.rstrip("\n")


def meta_dump(b) -> dict[str, tuple[str, str]]:
    """{path: (E|P, data)}"""
    r = _meta(b, "dump")
    assert r.returncode == 0, f"kbroker metadata dump exited {r.returncode}: {r.stderr[-1000:]}"
    out = {}
    for line in r.stdout.splitlines():
        path, kind, data = (line.split("\t", 2) + ["", ""])[:3]
        out[path] = (kind, data)
    return out


if __name__ == "__main__":
    _child_main(sys.argv[1:])
