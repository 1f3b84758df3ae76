"""Replication: followers copy the leader's log, the ISR tracks who is caught up, acks=all
waits for the ISR, and nothing acknowledged is lost when brokers die.

Three real kbroker processes on a real ZooKeeper (tests/cluster.py); producers and consumers
from confluent-kafka (librdkafka 2.16); faults are kill -9, SIGSTOP/SIGCONT and restarts.
Every test reads back what was acknowledged from whichever broker leads afterwards.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka import TopicPartition as CTP
from confluent_kafka.admin import NewTopic

import kbatch
from cluster import Cluster, cluster, zookeeper  # noqa: F401
from kclients import RDKAFKA_LOGGER, admin_error_code, wait_until

NOT_ENOUGH_REPLICAS = 19

# Short lag and fetch waits keep fault detection within a test's patience.
FAST = {
    "replica.lag.time.max.ms": 3000,
    "replica.fetch.wait.max.ms": 200,
    "min.insync.replicas": 2,
    "unclean.leader.election.enable": "false",
}


def create(c: Cluster, name: str, partitions: int = 1, rf: int = 3, assignment=None,
           config: dict | None = None) -> None:
    if assignment is not None:
        t = NewTopic(name, num_partitions=len(assignment), replica_assignment=assignment,
                     config=config or {})
    else:
        t = NewTopic(name, num_partitions=partitions, replication_factor=rf, config=config or {})
    fs = c.admin(1).create_topics([t], operation_timeout=20, request_timeout=30)
    err = admin_error_code(fs[name], 40)
    assert err is None, f"creating {name}: {KafkaError(err)}"
    c.wait_converged([name])


def isr(c: Cluster, topic: str, partition: int = 0) -> list[int]:
    return sorted(c.zk_topic(topic)[partition]["isr"] or [])


def wait_isr(c: Cluster, topic: str, want: list[int], partition: int = 0,
             timeout: float = 60.0) -> None:
    wait_until(lambda: isr(c, topic, partition) == sorted(want), timeout,
               f"{topic}-{partition} ISR == {sorted(want)} (is {isr(c, topic, partition)})")


def producer(c: Cluster, **conf) -> Producer:
    p = {"bootstrap.servers": c.bootstrap(), "acks": "all", "linger.ms": 2,
         "message.timeout.ms": 120000, "retry.backoff.ms": 200, "logger": RDKAFKA_LOGGER}
    p.update(conf)
    return Producer(p)


def produce_acked(c: Cluster, topic: str, values: list[bytes], **conf) -> None:
    p = producer(c, **conf)
    errors = []
    for v in values:
        p.produce(topic, v, on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(120) == 0
    assert not errors, errors[:5]


def read_all(c: Cluster, topic: str, partitions: int = 1, timeout: float = 60.0,
             at_least: int = 0) -> list[bytes]:
    """Every record value of `topic` up to its high watermark, partition by partition."""
    return [v for _, _, v in read_records(c, topic, partitions, timeout, at_least)]


def read_records(c: Cluster, topic: str, partitions: int = 1, timeout: float = 60.0,
                 at_least: int = 0) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of every record of `topic` up to its high watermark, read
    through the current leaders. A new leader's high watermark catches up once its followers
    fetch (as in Kafka): with `at_least`, waits until the high watermarks cover that many."""
    consumer = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": f"read-{time.time()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "logger": RDKAFKA_LOGGER})
    try:
        deadline = time.monotonic() + timeout
        while True:
            ends = {p: high_watermark(consumer, topic, p) for p in range(partitions)}
            if sum(ends.values()) >= at_least or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        consumer.assign([CTP(topic, p, 0) for p in range(partitions)])
        got: dict[int, list[tuple[int, int, bytes]]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + timeout
        while any(len(got[p]) < ends[p] for p in got) and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None or m.error() is not None:
                continue
            got[m.partition()].append((m.partition(), m.offset(), m.value()))
        for p in got:
            assert len(got[p]) == ends[p], f"{topic}-{p}: read {len(got[p])} of {ends[p]}"
        return [r for p in sorted(got) for r in got[p]]
    finally:
        consumer.close()


def high_watermark(consumer: Consumer, topic: str, partition: int, timeout: float = 60.0) -> int:
    """ListOffsets through the leader; retried while metadata still names a former one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(CTP(topic, partition), timeout=10)[1]
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def assert_acked_at_their_offsets(load: "Load", stored: list[tuple[int, int, bytes]]) -> None:
    """Every acknowledged value is stored, at the partition and offset its
    acknowledgement named (a non-idempotent producer may also have stored duplicates)."""
    at: dict[bytes, set[tuple[int, int]]] = {}
    for p, o, v in stored:
        at.setdefault(v, set()).add((p, o))
    missing = [v for v in load.acked if v not in at]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    moved = [v for v, pos in load.positions.items() if pos not in at[v]]
    assert not moved, f"{len(moved)} acknowledged records not at their offsets, e.g. {moved[:5]}"


class Load:
    """A producer thread writing numbered records with acks=all until stopped; remembers
    which were acknowledged."""

    def __init__(self, c: Cluster, topic: str, **conf):
        self.p = producer(c, **conf)
        self.topic = topic
        self.acked: set[bytes] = set()
        # value -> (partition, offset) the acknowledgement named
        self.positions: dict[bytes, tuple[int, int]] = {}
        self.failed = 0
        self.sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, err, msg):
        with self._lock:
            if err is None:
                self.acked.add(msg.value())
                self.positions[msg.value()] = (msg.partition(), msg.offset())
            else:
                self.failed += 1

    def _run(self):
        while not self._stop.is_set():
            try:
                self.p.produce(self.topic, f"r{self.sent:08d}".encode(), on_delivery=self._on_delivery)
                self.sent += 1
            except BufferError:
                pass
            self.p.poll(0.002)

    def __enter__(self):
        self.thread.start()
        return self

    def wait_acked(self, more: int, timeout: float = 60.0) -> None:
        target = len(self.acked) + more
        wait_until(lambda: len(self.acked) >= target, timeout, f"{target} records acknowledged")

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join(30)
        self.p.flush(120)


def test_followers_copy_the_log_and_take_over(cluster):
    c = cluster(3, overrides=FAST)
    create(c, "rep", partitions=3)
    values = [f"v{i}".encode() for i in range(3000)]
    produce_acked(c, "rep", values)
    for p in range(3):
        assert isr(c, "rep", p) == [1, 2, 3]
    # Every replica holds every partition's log; the leaders' are the ones we read.
    before = sorted(read_all(c, "rep", 3))
    assert before == sorted(values)
    # Stop the leaders one after another: whoever is left still has everything.
    for victim in (c.leaders("rep")[0], c.leaders("rep")[1]):
        if not c.brokers[victim].is_running():
            continue
        c.brokers[victim].kill9()
        wait_until(lambda: all(l not in (victim, -1) for l in c.leaders("rep").values()), 60,
                   f"leaders moved off broker {victim}")
        assert sorted(read_all(c, "rep", 3, at_least=len(values))) == sorted(values)
        c.brokers[victim].start()
        for p in range(3):
            wait_isr(c, "rep", [1, 2, 3], p)
    assert sorted(read_all(c, "rep", 3, at_least=len(values))) == sorted(values)


def test_acks_all_survives_leader_and_controller_kill9_under_load(cluster):
    c = cluster(3, overrides=FAST)
    create(c, "load", partitions=2)
    with Load(c, "load") as load:
        load.wait_acked(2000)
        for round_ in range(3):
            # A partition leader, the controller, the other partition's leader.
            victim = c.controller_id() if round_ == 1 else c.leaders("load")[round_ // 2]
            c.brokers[victim].kill9()
            load.wait_acked(1000, timeout=90)
            c.brokers[victim].start()
            load.wait_acked(1000, timeout=90)
    acked = set(load.acked)
    assert len(acked) >= 8000
    for p in range(2):
        wait_isr(c, "load", [1, 2, 3], p, timeout=90)
    assert_acked_at_their_offsets(load, read_records(c, "load", 2, at_least=len(acked)))


def test_min_insync_replicas_refuses_acks_all_when_the_isr_is_too_small(cluster):
    c = cluster(3, overrides=FAST)
    create(c, "mir", assignment=[[1, 2, 3]])
    produce_acked(c, "mir", [b"before"])
    c.brokers[2].kill9()
    wait_isr(c, "mir", [1, 3])
    # Two in sync: acks=all still works.
    err, base, _ = kbatch.produce(c.brokers[1].port, "mir", 0, kbatch.batch([(None, b"two")]), acks=-1)
    assert (err, base) == (0, 1)
    c.brokers[3].kill9()
    wait_isr(c, "mir", [1])
    records = kbatch.batch([(None, b"alone")])
    err, _, _ = kbatch.produce(c.brokers[1].port, "mir", 0, records, acks=-1)
    assert err == NOT_ENOUGH_REPLICAS
    # acks=1 does not ask for the ISR.
    err, base, _ = kbatch.produce(c.brokers[1].port, "mir", 0, records, acks=1)
    assert (err, base) == (0, 2)
    for b in (2, 3):
        c.brokers[b].start()
    wait_isr(c, "mir", [1, 2, 3])
    assert read_all(c, "mir", at_least=3) == [b"before", b"two", b"alone"]


def test_paused_follower_leaves_the_isr_and_returns(cluster):
    c = cluster(3, overrides=FAST)
    create(c, "pause", assignment=[[1, 2, 3]])
    b3 = c.brokers[3]
    with Load(c, "pause") as load:
        load.wait_acked(500)
        os.kill(b3.proc.pid, signal.SIGSTOP)
        try:
            # The leader drops it after replica.lag.time.max.ms; acks=all goes on with two.
            wait_isr(c, "pause", [1, 2], timeout=60)
            load.wait_acked(1000)
        finally:
            os.kill(b3.proc.pid, signal.SIGCONT)
        wait_isr(c, "pause", [1, 2, 3], timeout=90)
        load.wait_acked(500)
    # Broker 3 has everything: make it the only copy left and read.
    c.brokers[1].kill9()
    c.brokers[2].kill9()
    c.brokers[1].start()
    wait_until(lambda: c.leaders("pause")[0] in (1, 3), 60, "a leader is elected")
    assert_acked_at_their_offsets(load, read_records(c, "pause", at_least=len(load.acked)))


def test_zombie_leader_is_fenced_and_truncates(cluster):
    """A leader paused past its ZooKeeper session is replaced; when it wakes up it is a
    follower of the new epoch, and its log matches the new leader's."""
    c = cluster(3, overrides=FAST)
    create(c, "zombie", assignment=[[1, 2, 3]])
    produce_acked(c, "zombie", [f"a{i}".encode() for i in range(100)])
    old = c.brokers[1]
    epoch = c.zk_topic("zombie")[0]["leader_epoch"]
    os.kill(old.proc.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: c.leaders("zombie")[0] in (2, 3), 60, "a new leader")
        # Idempotent: a retry of a request the zombie held (and timed out) is no duplicate.
        produce_acked(c, "zombie", [f"b{i}".encode() for i in range(100)],
                      **{"enable.idempotence": True})
    finally:
        os.kill(old.proc.pid, signal.SIGCONT)
    assert c.zk_topic("zombie")[0]["leader_epoch"] > epoch
    wait_isr(c, "zombie", [1, 2, 3], timeout=90)
    # The old leader's copy is the new leader's: leave it alone with it.
    new = c.leaders("zombie")[0]
    other = ({2, 3} - {new}).pop()
    c.brokers[other].kill9()
    wait_isr(c, "zombie", sorted([1, new]))
    c.brokers[new].kill9()
    wait_until(lambda: c.leaders("zombie")[0] == 1, 60, "broker 1 leads again")
    assert read_all(c, "zombie", at_least=200) == [f"a{i}".encode() for i in range(100)] + \
        [f"b{i}".encode() for i in range(100)]


def test_whole_isr_gone_stays_offline_without_unclean_election(cluster):
    c = cluster(3, overrides=FAST)
    create(c, "gone", assignment=[[2, 3]])
    # The same placement, with the topic-level override that allows an unclean election.
    create(c, "gone-unclean", assignment=[[2, 3]],
           config={"unclean.leader.election.enable": "true"})
    produce_acked(c, "gone", [b"x"])
    produce_acked(c, "gone-unclean", [b"y"])
    c.brokers[3].kill9()
    wait_isr(c, "gone", [2])
    wait_isr(c, "gone-unclean", [2])
    c.brokers[2].kill9()
    wait_until(lambda: c.leaders("gone")[0] == -1, 60, "the partition is offline")
    c.brokers[3].start()
    # The topic that allows it elects broker 3 although it was not in the ISR...
    wait_until(lambda: c.leaders("gone-unclean")[0] == 3, 60, "an unclean leader for gone-unclean")
    # ...the other does not: broker 3 could miss acknowledged records.
    assert c.leaders("gone")[0] == -1
    c.brokers[2].start()
    wait_until(lambda: c.leaders("gone")[0] == 2, 60, "the last in-sync replica leads")
    wait_isr(c, "gone", [2, 3])
    assert read_all(c, "gone") == [b"x"]


def test_group_offsets_survive_the_offsets_leader(cluster):
    c = cluster(3, overrides={**FAST, "offsets.topic.num.partitions": 1,
                              "offsets.topic.replication.factor": 3})
    create(c, "og", assignment=[[1, 2, 3]])
    produce_acked(c, "og", [f"m{i}".encode() for i in range(100)])
    conf = {"bootstrap.servers": c.bootstrap(), "group.id": "og-group",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "logger": RDKAFKA_LOGGER}
    consumer = Consumer(conf)
    try:
        consumer.assign([CTP("og", 0, 0)])
        got = 0
        deadline = time.monotonic() + 60
        while got < 40 and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                got += 1
        assert got == 40
        consumer.commit(offsets=[CTP("og", 0, 40)], asynchronous=False)
    finally:
        consumer.close()
    wait_isr(c, "__consumer_offsets", [1, 2, 3])
    leader = c.leaders("__consumer_offsets")[0]
    c.brokers[leader].kill9()
    wait_until(lambda: c.leaders("__consumer_offsets")[0] not in (leader, -1), 60,
               "offsets partition has a new leader")
    conf["bootstrap.servers"] = c.bootstrap()
    consumer = Consumer(conf)
    try:
        deadline = time.monotonic() + 60
        committed = None
        while time.monotonic() < deadline:
            try:
                committed = consumer.committed([CTP("og", 0)], timeout=10)[0].offset
                if committed == 40:
                    break
            except Exception:
                pass
            time.sleep(0.5)
        assert committed == 40
    finally:
        consumer.close()


def test_group_members_carry_on_when_the_coordinator_is_killed(cluster):
    """As Kafka, a group's record holds its members and their assignments with its
    generation; the broker that takes over the group's `__consumer_offsets` partition loads
    them, so a consumer that keeps its session keeps its membership: its heartbeats and
    commits of the same generation are accepted there, and it is not assigned again."""
    c = cluster(3, overrides={**FAST, "offsets.topic.num.partitions": 1,
                              "offsets.topic.replication.factor": 3,
                              "group.initial.rebalance.delay.ms": 0})
    create(c, "mg", assignment=[[1, 2, 3], [2, 3, 1], [3, 1, 2]])
    produce_acked(c, "mg", [f"a{i}".encode() for i in range(30)])
    assigned: list[list[tuple[str, int]]] = []
    revoked: list[list[tuple[str, int]]] = []
    consumer = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": "mg-group",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         # Longer than the failover, so the client keeps its session.
                         "session.timeout.ms": 45000, "heartbeat.interval.ms": 500,
                         "reconnect.backoff.max.ms": 1000, "logger": RDKAFKA_LOGGER})
    consumer.subscribe(["mg"],
                       on_assign=lambda _c, ps: assigned.append([(p.topic, p.partition) for p in ps]),
                       on_revoke=lambda _c, ps: revoked.append([(p.topic, p.partition) for p in ps]))

    def consume(n: int) -> list[bytes]:
        got: list[bytes] = []
        deadline = time.monotonic() + 90
        while len(got) < n and time.monotonic() < deadline:
            m = consumer.poll(0.2)
            if m is not None and m.error() is None:
                got.append(m.value())
        return got

    def commit_until_accepted() -> None:
        deadline = time.monotonic() + 90
        while True:
            try:
                consumer.commit(asynchronous=False)
                return
            except Exception as e:  # coordinator moving: retried, as an application would
                code = e.args[0].code() if e.args else None
                assert code not in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION), e
                assert time.monotonic() < deadline, f"commit never accepted: {e}"
                time.sleep(0.5)

    try:
        assert len(consume(30)) == 30
        commit_until_accepted()
        member = consumer.memberid()
        assert member and len(assigned) == 1 and len(assigned[0]) == 3
        wait_isr(c, "__consumer_offsets", [1, 2, 3])
        old = c.leaders("__consumer_offsets")[0]
        c.brokers[old].kill9()
        wait_until(lambda: c.leaders("__consumer_offsets")[0] not in (old, -1), 60,
                   "the offsets partition has a new leader")
        new = c.leaders("__consumer_offsets")[0]
        produce_acked(c, "mg", [f"b{i}".encode() for i in range(30)])
        assert sorted(consume(30)) == sorted(f"b{i}".encode() for i in range(30))
        # The commit names the generation and member id the client had: the new
        # coordinator knows both.
        commit_until_accepted()
        assert consumer.memberid() == member
        assert len(assigned) == 1 and not revoked, (assigned, revoked)
        described = c.admin(new).describe_consumer_groups(
            ["mg-group"], request_timeout=15)["mg-group"].result(timeout=30)
        assert described.coordinator.id == new
        assert [m.member_id for m in described.members] == [member]
        assert sorted((p.topic, p.partition)
                      for p in described.members[0].assignment.topic_partitions) == \
            sorted(assigned[0])
    finally:
        consumer.close()


def test_preferred_leader_returns_after_the_broker_rejoins(cluster):
    c = cluster(3, overrides={**FAST, "leader.imbalance.check.interval.seconds": 2,
                              "leader.imbalance.per.broker.percentage": 0})
    create(c, "pref", assignment=[[1, 2, 3], [2, 3, 1], [3, 1, 2]])
    produce_acked(c, "pref", [b"p"] * 30)
    c.brokers[2].kill9()
    wait_until(lambda: c.leaders("pref")[1] in (3, 1), 60, "partition 1 led elsewhere")
    produce_acked(c, "pref", [b"q"] * 30)
    c.brokers[2].start()
    # Back in the ISR, then the controller's rebalance hands partition 1 back to broker 2.
    wait_isr(c, "pref", [1, 2, 3], partition=1, timeout=90)
    wait_until(lambda: c.leaders("pref") == {0: 1, 1: 2, 2: 3}, 60, "preferred leaders")
    c.wait_converged(["pref"])
    assert len(read_all(c, "pref", 3, at_least=60)) == 60


def test_reassignment_moves_a_partition_to_a_new_broker(cluster):
    """Kafka's Admin client (Java) moves a partition from brokers 1,2,3 to 2,3,4 under load,
    then a write of /admin/reassign_partitions (the old tools' way) moves it to 4 alone:
    the data reaches the new replicas before the old ones are removed, nothing is lost."""
    import subprocess
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    lib = os.environ.get("KBROKER_JAVA_LIB", str(repo / ".tools/java-lib"))
    c = cluster(4, overrides={**FAST, "min.insync.replicas": 1})
    create(c, "move", assignment=[[1, 2, 3]])
    produce_acked(c, "move", [f"m{i}".encode() for i in range(2000)])
    with Load(c, "move") as load:
        load.wait_acked(500)
        out = subprocess.run(["java", "-cp", f"{lib}/*", str(repo / "tests/java/Reassign.java"),
                              c.bootstrap(), "move", "0", "2,3,4"],
                             capture_output=True, text=True, timeout=240)
        assert out.stdout.strip().endswith("OK"), out.stdout + out.stderr[-3000:]
        load.wait_acked(500)
    state = c.zk_topic("move")[0]
    assert state["replicas"] == [2, 3, 4]
    assert sorted(state["isr"]) == [2, 3, 4] and state["leader"] in (2, 3, 4)
    assigned = c.zk_json("/brokers/topics/move")
    assert assigned["adding_replicas"] == {} and assigned["removing_replicas"] == {}
    wait_until(lambda: not c.brokers[1].partition_dir("move", 0).exists(), 30,
               "the removed replica's log is deleted")
    c.wait_converged(["move"])
    # The old tools' way: the znode, removed by the controller once done.
    import json as _json
    c.zk.create("/admin/reassign_partitions", _json.dumps(
        {"version": 1, "partitions": [{"topic": "move", "partition": 0, "replicas": [4]}]}).encode())
    wait_until(lambda: c.zk_topic("move")[0]["replicas"] == [4], 60, "moved to broker 4")
    wait_until(lambda: not c.zk.exists("/admin/reassign_partitions"), 60, "the znode is removed")
    assert c.zk_topic("move")[0]["leader"] == 4
    for b in (1, 2, 3):
        c.brokers[b].kill9()
    stored = read_all(c, "move", at_least=2000 + len(load.acked))
    assert set(f"m{i}".encode() for i in range(2000)) <= set(stored)
    assert load.acked <= set(stored), f"{len(load.acked - set(stored))} acknowledged records lost"


def test_a_reassignment_throttle_holds_the_copy_to_its_rate(cluster, tmp_path):
    """Kafka's `kafka-reassign-partitions --execute --throttle` sets the brokers'
    leader/follower.replication.throttled.rate and the topic's throttled replicas (the
    sources on the leader side, the new replica on the follower side): the new replica
    copies at about that rate, so at 30 kB/s a 3 MB partition is still moving seconds
    later while the throttles count and hold back its fetches. Raised (the tool again, with
    --additional), the copy completes; --verify then clears every throttle, and the new
    replica holds every record."""
    import json
    from conftest import free_port
    from test_kafka_tools import tool
    from test_metrics import scrape
    c = cluster(3, overrides={**FAST, "min.insync.replicas": 1,
                              "replica.fetch.max.bytes": 16384}, start=False)
    ports = {bid: free_port() for bid in c.brokers}
    for bid, b in c.brokers.items():
        b.overrides["metrics.port"] = str(ports[bid])
    c.start()
    create(c, "slow", assignment=[[1, 2]])
    values = [f"{i:06}".encode() + os.urandom(994) for i in range(3000)]
    produce_acked(c, "slow", values, **{"batch.size": 8192, "linger.ms": 1})
    bs = ("--bootstrap-server", c.bootstrap())
    plan = tmp_path / "reassign.json"
    plan.write_text(json.dumps(
        {"version": 1, "partitions": [{"topic": "slow", "partition": 0, "replicas": [2, 3]}]}))
    reassign = ("org.apache.kafka.tools.reassign.ReassignPartitionsCommand", *bs,
                "--reassignment-json-file", str(plan))
    out = tool(*reassign, "--execute", "--throttle", "30000")
    assert "The inter-broker throttle limit was set to 30000 B/s" in out, out
    topic_config = c.zk_json("/config/topics/slow")["config"]
    assert topic_config["leader.replication.throttled.replicas"] == "0:1,0:2", topic_config
    assert topic_config["follower.replication.throttled.replicas"] == "0:3", topic_config
    assert c.zk_json("/config/brokers/3")["config"]["follower.replication.throttled.rate"] == \
        "30000"
    # At 30 kB/s the copy takes about 100 s; a few seconds in, it is still going (a slow
    # machine only makes it later), and the throttles have been holding it back.
    time.sleep(6)
    assert "is still in progress" in tool(*reassign, "--verify", "--preserve-throttles")
    assert 3 not in (c.zk_topic("slow")[0]["isr"] or [])
    leader = c.leaders("slow")[0]
    lm, fm = scrape(ports[leader]), scrape(ports[3])
    held = (lm.get("kbroker_leader_replication_throttled_total", 0)
            + fm.get("kbroker_follower_replication_throttled_total", 0))
    assert held > 0, (lm, fm)
    copied = fm.get("kbroker_follower_replication_throttled_bytes_total", 0)
    assert 0 < copied < len(values) * 1000 / 2, copied
    # Raised, the copy completes; --verify clears the throttles it set.
    out = tool(*reassign, "--execute", "--additional", "--throttle", "100000000")
    assert "The inter-broker throttle limit was set to 100000000 B/s" in out, out
    wait_until(lambda: "Reassignment of partition slow-0 is completed" in tool(*reassign, "--verify"),
               120, "the reassignment completes")
    assert c.zk_topic("slow")[0]["replicas"] == [2, 3]
    topic_config = c.zk_json("/config/topics/slow")["config"]
    assert not any("throttled" in k for k in topic_config), topic_config
    for b in (1, 2, 3):
        assert not any("throttled" in k for k in c.zk_json(f"/config/brokers/{b}")["config"])
    wait_until(lambda: sorted(c.zk_topic("slow")[0]["isr"]) == [2, 3], 60, "3 in the ISR")
    c.brokers[2].kill9()
    wait_until(lambda: c.leaders("slow")[0] == 3, 60, "broker 3 leads")
    assert read_all(c, "slow", at_least=len(values)) == values


def test_follower_fetches_are_counted_apart_in_the_metrics(cluster):
    """The Fetch handler marks a follower's fetch on the request itself; the metrics count
    it as Kafka's FetchFollower, and consumer fetches as FetchConsumer. Followers fetch in
    incremental fetch sessions, which the leader's FetchSessionCache gauges count."""
    from conftest import free_port
    from test_metrics import scrape
    c = cluster(3, overrides=FAST, start=False)
    ports = {bid: free_port() for bid in c.brokers}
    for bid, b in c.brokers.items():
        b.overrides["metrics.port"] = str(ports[bid])
    c.start()
    create(c, "metered", partitions=1)
    values = [f"m{i}".encode() for i in range(500)]
    produce_acked(c, "metered", values)
    assert sorted(read_all(c, "metered", 1)) == sorted(values)
    leader = c.leaders("metered")[0]
    m = scrape(ports[leader])
    key = 'kafka_network_requests_total{request="%s"}'
    assert m.get(key % "FetchFollower", 0) > 0, "the followers' fetches"
    assert m.get(key % "FetchConsumer", 0) > 0, "the consumer's fetches"
    # The followers fetch in incremental sessions (KIP-227), one per fetcher thread, each
    # holding the partition (librdkafka's consumer uses none).
    sessions = m.get("kafka_server_fetch_session_cache_num_incremental_fetch_sessions", 0)
    cached = m.get("kafka_server_fetch_session_cache_num_incremental_fetch_partitions_cached", 0)
    assert sessions >= 2 and cached >= 2, (sessions, cached)
    # And what they copy in them is the log: the followers serve it once the leader is gone.
    more = [f"n{i}".encode() for i in range(500)]
    produce_acked(c, "metered", more)
    c.brokers[leader].kill9()
    wait_until(lambda: c.leaders("metered")[0] not in (leader, -1), 60, "a new leader")
    assert sorted(read_all(c, "metered", 1, at_least=1000)) == sorted(values + more)


def test_consumers_read_from_a_follower_in_their_rack(cluster):
    """KIP-392: with replica.selector.class=RackAwareReplicaSelector and each broker in its
    own rack, a consumer with client.rack=rack-2 is sent (preferred_read_replica) to broker 2,
    a follower, and reads every record from it; one without client.rack stays on the leader."""
    from conftest import free_port
    from test_metrics import scrape
    selector = "org.apache.kafka.common.replica.RackAwareReplicaSelector"
    c = cluster(3, overrides={**FAST, "replica.selector.class": selector}, start=False)
    ports = {bid: free_port() for bid in c.brokers}
    for bid, b in c.brokers.items():
        b.overrides["metrics.port"] = str(ports[bid])
        b.overrides["broker.rack"] = f"rack-{bid}"
    c.start()
    create(c, "racked", assignment=[[1, 2, 3]])
    values = [f"r{i}".encode() for i in range(300)]
    produce_acked(c, "racked", values)
    key = 'kafka_network_requests_total{request="FetchConsumer"}'
    before = scrape(ports[2]).get(key, 0)

    def consume(**conf) -> list[bytes]:
        consumer = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": f"rk-{time.time()}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False,
                             "logger": RDKAFKA_LOGGER, **conf})
        got: list[bytes] = []
        try:
            consumer.assign([CTP("racked", 0, 0)])
            deadline = time.monotonic() + 60
            while len(got) < len(values) and time.monotonic() < deadline:
                m = consumer.poll(0.5)
                if m is not None and m.error() is None:
                    got.append(m.value())
        finally:
            consumer.close()
        return got

    assert consume(**{"client.rack": "rack-2"}) == values
    served = scrape(ports[2]).get(key, 0) - before
    assert served > 0, "broker 2 (a follower in the consumer's rack) served its fetches"
    assert c.leaders("racked")[0] == 1
    before = scrape(ports[2]).get(key, 0)
    assert consume() == values
    assert scrape(ports[2]).get(key, 0) == before, "without client.rack: the leader only"
