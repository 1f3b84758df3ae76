"""Multi-broker clusters on a real ZooKeeper, for the cluster tests.

Fixtures (import them into a test module: ``from cluster import zookeeper, cluster``):

- ``zookeeper``: one standalone ZooKeeper for the whole session (tests are isolated by
  chroot: each cluster gets ``/kb-<random>``, as Kafka's ``zookeeper.connect`` allows);
- ``cluster``: factory ``cluster(size=3, overrides=None, zk=None)`` -> :class:`Cluster`, started
  and converged; every broker is stopped by PID at teardown, logs printed on failure.

A :class:`Cluster` reads the znode tree with kazoo (``c.zk``) and each broker's Metadata
with confluent-kafka's AdminClient.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from kazoo.client import KazooClient

import struct

import kafkawire
from conftest import Broker, tail_text
from kclients import RDKAFKA_LOGGER, wait_until
from zkserver import ZkNode

# ZooKeeper here runs with tickTime=500: sessions of 1-10 s.
SESSION_TIMEOUT_MS = 4000


class Cluster:
    def __init__(self, workdir: Path, zk_connect: str, size: int = 3,
                 overrides: dict | None = None, first_id: int = 1):
        self.workdir = Path(workdir)
        self.zk_connect = zk_connect
        self.chroot = f"/kb-{uuid.uuid4().hex[:10]}"
        self.overrides = dict(overrides or {})
        self.brokers: dict[int, Broker] = {}
        for bid in range(first_id, first_id + size):
            self.add_broker(bid, start=False)
        self._zk: KazooClient | None = None
        self._admins: dict = {}

    # -- brokers -----------------------------------------------------------------
    def broker_overrides(self, bid: int) -> dict:
        o = {
            "broker.id": bid,
            "zookeeper.connect": self.zk_connect + self.chroot,
            "zookeeper.session.timeout.ms": SESSION_TIMEOUT_MS,
            "controlled.shutdown.retry.backoff.ms": 500,
        }
        o.update(self.overrides)
        return o

    def add_broker(self, bid: int, start: bool = True, overrides: dict | None = None) -> Broker:
        o = self.broker_overrides(bid)
        o.update(overrides or {})
        b = Broker(self.workdir / f"b{bid}", o, name=f"b{bid}")
        self.brokers[bid] = b
        if start:
            b.start()
        return b

    def start(self) -> "Cluster":
        for b in self.brokers.values():
            b.start()
        self.wait_converged()
        return self

    def running(self) -> dict[int, Broker]:
        return {bid: b for bid, b in self.brokers.items() if b.is_running()}

    def bootstrap(self, bid: int | None = None) -> str:
        if bid is not None:
            return self.brokers[bid].bootstrap
        return ",".join(b.bootstrap for b in self.running().values())

    def stop(self) -> None:
        self._admins.clear()
        for b in self.brokers.values():
            try:
                b.stop()
            except Exception as e:  # never leak a process
                print(f"error stopping {b}: {e!r}")
                if b.proc is not None and b.proc.poll() is None:
                    b.proc.kill()
        if self._zk is not None:
            try:
                self._zk.stop()
                self._zk.close()
            except Exception:
                pass
            self._zk = None

    # -- ZooKeeper ---------------------------------------------------------------
    @property
    def zk(self) -> KazooClient:
        if self._zk is None:
            self._zk = KazooClient(hosts=self.zk_connect + self.chroot, timeout=10.0)
            self._zk.start(timeout=20)
        return self._zk

    def zk_json(self, path: str):
        data, _ = self.zk.get(path)
        return json.loads(data.decode())

    def controller_id(self) -> int | None:
        if not self.zk.exists("/controller"):
            return None
        try:
            return self.zk_json("/controller")["brokerid"]
        except Exception:
            return None

    def controller_epoch(self) -> int:
        data, _ = self.zk.get("/controller_epoch")
        return int(data.decode())

    def registered(self) -> list[int]:
        return sorted(int(c) for c in self.zk.get_children("/brokers/ids"))

    def zk_topic(self, topic: str) -> dict[int, dict]:
        """partition -> {replicas, leader, leader_epoch, isr} as ZooKeeper has it."""
        assignment = self.zk_json(f"/brokers/topics/{topic}")["partitions"]
        out = {}
        for p, replicas in assignment.items():
            path = f"/brokers/topics/{topic}/partitions/{p}/state"
            state = self.zk_json(path) if self.zk.exists(path) else None
            out[int(p)] = {
                "replicas": replicas,
                "leader": state["leader"] if state else None,
                "leader_epoch": state["leader_epoch"] if state else None,
                "isr": state["isr"] if state else None,
            }
        return out

    def zk_topics(self) -> list[str]:
        return sorted(self.zk.get_children("/brokers/topics"))

    # -- Kafka clients ------------------------------------------------------------
    def admin(self, bid: int | None = None) -> AdminClient:
        """An AdminClient bootstrapped on broker `bid` (all running ones if None); kept
        for the cluster's life (a dropped client cancels its pending futures)."""
        key = (bid, self.bootstrap(bid))
        if key not in self._admins:
            self._admins[key] = AdminClient({"bootstrap.servers": key[1], "socket.timeout.ms": 10000,
                                             "logger": RDKAFKA_LOGGER})
        return self._admins[key]

    def metadata_view(self, bid: int) -> dict:
        """Broker `bid`'s own Metadata answer (a raw v1 request on one connection)."""
        b = self.brokers[bid]
        return metadata_v1(b.port, host=b.host)

    def zk_view(self, topics=None) -> dict:
        names = topics if topics is not None else self.zk_topics()
        view = {}
        for t in names:
            view[t] = {p: {"replicas": s["replicas"], "leader": s["leader"] if s["leader"] is not None else -1,
                           "isr": sorted(s["isr"] or [])}
                       for p, s in self.zk_topic(t).items()}
        return {"brokers": self.registered(), "controller": self.controller_id(), "topics": view}

    def converged(self, topics=None) -> bool:
        """Every running broker's Metadata equals ZooKeeper: brokers, controller and
        (for `topics`, default all) every partition's replicas, leader and ISR."""
        try:
            want = self.zk_view(topics)
        except Exception:
            return False
        running = sorted(self.running())
        if want["brokers"] != running or want["controller"] not in running:
            return False
        for t, parts in want["topics"].items():
            if any(s["leader"] < 0 for s in parts.values()):
                return False
        for bid in running:
            try:
                got = self.metadata_view(bid)
            except Exception:
                return False
            if got["brokers"] != want["brokers"] or got["controller"] != want["controller"]:
                return False
            for t, parts in want["topics"].items():
                if got["topics"].get(t) != parts:
                    return False
        return True

    def wait_converged(self, topics=None, timeout: float = 60.0) -> None:
        try:
            wait_until(lambda: self.converged(topics), timeout, "cluster converged")
        except AssertionError as e:
            views = {b: self._safe(self.metadata_view, b) for b in self.running()}
            raise AssertionError(f"{e}: zk={self._safe(self.zk_view, topics)} brokers={views}") from None

    @staticmethod
    def _safe(f, *args):
        try:
            return f(*args)
        except Exception as e:
            return f"<{e!r}>"

    def leaders(self, topic: str) -> dict[int, int]:
        return {p: s["leader"] for p, s in self.zk_topic(topic).items()}

    def __repr__(self) -> str:
        return f"<Cluster {sorted(self.brokers)} zk={self.zk_connect}{self.chroot}>"


def metadata_v1(port: int, topics: list[str] | None = None, host: str = "127.0.0.1") -> dict:
    """Metadata v1 from the broker on `port`: {brokers, controller, topics: {name:
    {partition: {replicas, leader, isr}}}} (topics with an error are left out)."""
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(kafkawire._string(t) for t in topics)
    with kafkawire.connect(port, host=host) as s:
        s.sendall(kafkawire.frame(kafkawire.request_header(3, 1, 1) + body))
        r = kafkawire.Reader(kafkawire.read_frame(s))
    assert r.int32() == 1, "correlation id"

    def string():
        n = r.int16()
        return None if n < 0 else r.take(n).decode()

    def int32s():
        return [r.int32() for _ in range(r.int32())]

    brokers = []
    for _ in range(r.int32()):
        node = r.int32()
        string()
        r.int32()
        string()
        brokers.append(node)
    controller = r.int32()
    out = {}
    for _ in range(r.int32()):
        err = r.int16()
        name = string()
        r.take(1)
        parts = {}
        for _ in range(r.int32()):
            r.int16()
            index = r.int32()
            leader = r.int32()
            replicas = int32s()
            isr = int32s()
            parts[index] = {"replicas": replicas, "leader": leader, "isr": sorted(isr)}
        if err == 0:
            out[name] = parts
    return {"brokers": sorted(brokers), "controller": controller, "topics": out}


@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory):
    """One standalone ZooKeeper for the session; clusters use their own chroot."""
    node = ZkNode(tmp_path_factory.mktemp("zookeeper"))
    node.start()
    yield node
    node.stop()


@pytest.fixture
def cluster(request, tmp_path, zookeeper):
    """Factory: cluster(size=3, overrides=None, zk=None, start=True) -> Cluster."""
    made: list[Cluster] = []

    def make(size: int = 3, overrides: dict | None = None, zk: str | None = None,
             start: bool = True) -> Cluster:
        c = Cluster(tmp_path / f"cluster{len(made)}", zk or zookeeper.connect, size, overrides)
        made.append(c)
        if start:
            c.start()
        return c

    yield make

    for c in made:
        c.stop()
    rep = getattr(request.node, "rep_call", None)
    failed = rep is None or rep.failed
    for c in made:
        for b in c.brokers.values():
            if failed:
                for i, lf in enumerate(b.log_files):
                    print(f"\n----- {b.name} log #{i} ({lf}) tail -----\n{tail_text(lf, 120)}")
            elif b.log_dir.exists():
                shutil.rmtree(b.log_dir, ignore_errors=True)
