"""A cluster: brokers registered in a real ZooKeeper, a controller elected through it.

Real ZooKeeper (Debian's package, started by the fixtures on free ports), three real
kbroker processes per test, the tree read with kazoo, clients from confluent-kafka.
These tests check metadata, leadership and the control plane; what followers do with the
data is tests/test_replication.py's.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka import TopicPartition as CTP
from confluent_kafka.admin import NewPartitions, NewTopic

import kbatch
from cluster import SESSION_TIMEOUT_MS, Cluster, cluster, metadata_v1, zookeeper  # noqa: F401
from conftest import BrokerExited
from kclients import RDKAFKA_LOGGER, admin_error_code, wait_until
from zkserver import Ensemble, ZkNode

NOT_LEADER_OR_FOLLOWER = 6

# Kafka's persistent paths (KafkaZkClient.createTopLevelPaths / ZkData.PersistentZkPaths).
PERSISTENT_PATHS = [
    "/consumers", "/admin/delete_topics", "/brokers/ids", "/brokers/topics",
    "/brokers/seqid", "/config/changes", "/config/clients", "/config/brokers",
    "/config/topics", "/config/users", "/config/ips", "/isr_change_notification",
    "/latest_producer_id_block", "/log_dir_event_notification",
]


def create_topics(c: Cluster, bid: int, topics: list[NewTopic]) -> None:
    fs = c.admin(bid).create_topics(topics, operation_timeout=20, request_timeout=30)
    for name, f in fs.items():
        err = admin_error_code(f, 40)
        assert err is None, f"creating {name} through broker {bid} failed: {KafkaError(err)}"


def produce_to_leaders(c: Cluster, topic: str, n: int = 10) -> int:
    p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "logger": RDKAFKA_LOGGER,
                  "message.timeout.ms": 30000})
    delivered = []
    for i in range(n):
        p.produce(topic, f"v{i}".encode(), on_delivery=lambda e, m: delivered.append(e))
    assert p.flush(40) == 0
    assert delivered and all(e is None for e in delivered), delivered
    return len(delivered)


def code_of(err) -> int | None:
    """The Kafka error code of an AdminClient per-partition result (None, a KafkaError or a
    KafkaException)."""
    if err is None:
        return None
    if isinstance(err, KafkaError):
        return err.code()
    return err.args[0].code()


def zxid_now(c: Cluster) -> int:
    """A zxid marking "now" in the ensemble's history."""
    path = c.zk.create("/kb-test-marker-", b"", sequence=True, ephemeral=True)
    _, stat = c.zk.get(path)
    c.zk.delete(path)
    return stat.czxid


# --- registration ------------------------------------------------------------------


def test_registration_znodes_in_kafkas_layout(cluster):
    c = cluster(3, start=False)
    c.brokers[1].overrides["broker.rack"] = "rack-a"
    c.start()
    assert c.registered() == [1, 2, 3]
    for bid, b in c.brokers.items():
        data, stat = c.zk.get(f"/brokers/ids/{bid}")
        reg = json.loads(data)
        assert stat.ephemeralOwner != 0, "broker registrations are ephemeral"
        assert reg["version"] == 5
        assert reg["host"] == "127.0.0.1" and reg["port"] == b.port
        assert reg["endpoints"] == [f"PLAINTEXT://127.0.0.1:{b.port}"]
        assert reg["listener_security_protocol_map"] == {"PLAINTEXT": "PLAINTEXT"}
        assert reg["jmx_port"] == -1
        assert reg["features"] == {}
        assert abs(int(reg["timestamp"]) - time.time() * 1000) < 600_000
        assert reg.get("rack") == ("rack-a" if bid == 1 else None)
    data, stat = c.zk.get("/controller")
    assert stat.ephemeralOwner != 0
    assert json.loads(data)["brokerid"] in (1, 2, 3)
    assert c.controller_epoch() >= 1
    cluster_id = c.zk_json("/cluster/id")
    assert cluster_id["version"] == "1" and len(cluster_id["id"]) == 22
    for path in PERSISTENT_PATHS:
        assert c.zk.exists(path), f"{path} is created at start"
    for bid, b in c.brokers.items():
        props = dict(line.split("=", 1) for line in
                     (b.log_dir / "meta.properties").read_text().splitlines()
                     if "=" in line and not line.startswith("#"))
        assert props["cluster.id"] == cluster_id["id"] and props["broker.id"] == str(bid)
    # DescribeCluster through each broker: all three and the controller.
    for bid in c.brokers:
        described = c.admin(bid).describe_cluster(request_timeout=20).result(30)
        assert sorted(n.id for n in described.nodes) == [1, 2, 3]
        assert described.controller.id == c.controller_id()
        assert described.cluster_id == cluster_id["id"]


def test_duplicate_broker_id_and_foreign_cluster_refused(cluster, tmp_path):
    c = cluster(2)
    # Same broker.id as a live broker: refused once the other registration outlives a session.
    dup = c.add_broker(99, start=False, overrides={"broker.id": 2})
    with pytest.raises(BrokerExited):
        dup.start(timeout=SESSION_TIMEOUT_MS / 1000 + 30)
    assert dup.exit_codes[-1] == 1
    assert "broker.id=2 is already registered" in dup.log_text()
    assert c.registered() == [1, 2]
    # A log dir of another cluster (Kafka's InconsistentClusterIdException).
    b2 = c.brokers[2]
    b2.stop()
    meta = b2.log_dir / "meta.properties"
    meta.write_text(meta.read_text().replace("cluster.id=", "cluster.id=someOtherCluster0"))
    with pytest.raises(BrokerExited):
        b2.start()
    assert "cluster.id=someOtherCluster0" in b2.log_text()
    assert c.registered() == [1]


# --- the controller ----------------------------------------------------------------


def test_controller_failover_after_kill9(cluster):
    c = cluster(3)
    create_topics(c, 1, [NewTopic("fo", num_partitions=6, replication_factor=3)])
    c.wait_converged(["fo"])
    old, epoch = c.controller_id(), c.controller_epoch()
    c.brokers[old].kill9()
    wait_until(lambda: c.controller_id() not in (None, old), 30, "a new controller")
    assert c.controller_epoch() > epoch
    c.wait_converged(["fo"])
    assert all(l != old for l in c.leaders("fo").values()), "the dead broker leads nothing"
    produce_to_leaders(c, "fo")
    # It comes back (its old session must expire first) as a plain broker.
    new = c.controller_id()
    c.brokers[old].start(timeout=SESSION_TIMEOUT_MS / 1000 + 30)
    c.wait_converged(["fo"])
    assert c.controller_id() == new


def test_paused_controller_is_fenced_and_rejoins(cluster):
    c = cluster(3)
    create_topics(c, 2, [NewTopic("fence", num_partitions=6, replication_factor=3)])
    c.wait_converged(["fence"])
    old, epoch = c.controller_id(), c.controller_epoch()
    paused = c.brokers[old]
    paused.proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: c.controller_id() not in (None, old), 40, "a controller elected past the pause")
        new_epoch = c.controller_epoch()
        assert new_epoch > epoch
        # Leaders on the paused broker move away while it is gone.
        wait_until(lambda: old not in c.registered() and all(l != old for l in c.leaders("fence").values()),
                   30, "leaderships moved off the paused broker")
        marker = zxid_now(c)
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    # Back, it learns its session expired, registers again and follows the new controller.
    wait_until(lambda: old in c.registered(), 40, "the paused broker re-registered")
    c.wait_converged(["fence"])
    assert c.controller_id() != old
    time.sleep(2)
    for p in range(6):
        data, stat = c.zk.get(f"/brokers/topics/fence/partitions/{p}/state")
        if stat.mzxid > marker:
            state = json.loads(data)
            assert state["controller_epoch"] >= new_epoch, \
                f"partition {p} written after the pause by an old controller: {state}"
    assert c.controller_epoch() >= new_epoch
    views = {bid: metadata_v1(b.port)["controller"] for bid, b in c.brokers.items()}
    assert set(views.values()) == {c.controller_id()}, views


def test_paused_broker_reregisters(cluster):
    c = cluster(3)
    create_topics(c, 1, [NewTopic("pause", num_partitions=3, replication_factor=3)])
    c.wait_converged(["pause"])
    victim = next(b for b in (1, 2, 3) if b != c.controller_id())
    _, stat = c.zk.get(f"/brokers/ids/{victim}")
    first_czxid = stat.czxid
    b = c.brokers[victim]
    b.proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: victim not in c.registered(), 40, "the paused broker's registration expired")
        wait_until(lambda: all(l != victim for l in c.leaders("pause").values()), 30,
                   "its leaderships moved")
    finally:
        b.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: victim in c.registered(), 40, "re-registered after the pause")
    _, stat = c.zk.get(f"/brokers/ids/{victim}")
    assert stat.czxid != first_czxid, "a new registration (a new broker epoch)"
    c.wait_converged(["pause"])
    produce_to_leaders(c, "pause")


def test_zookeeper_restart(cluster, tmp_path):
    zk = ZkNode(tmp_path / "own-zk").start()
    try:
        c = cluster(3, zk=zk.connect)
        create_topics(c, 3, [NewTopic("zkr", num_partitions=3, replication_factor=2)])
        c.wait_converged(["zkr"])
        c.zk.stop()
        c._zk = None
        zk.stop()
        time.sleep(1.0)
        zk.start()
        c.wait_converged(["zkr"], timeout=60)
        views = {bid: metadata_v1(b.port)["controller"] for bid, b in c.brokers.items()}
        assert len(set(views.values())) == 1, f"exactly one controller: {views}"
        create_topics(c, 1, [NewTopic("zkr2", num_partitions=2, replication_factor=3)])
        c.wait_converged(["zkr", "zkr2"])
        produce_to_leaders(c, "zkr2")
    finally:
        for b in c.brokers.values():
            b.stop()
        zk.stop()


@pytest.mark.timeout_s(400)
def test_ensemble_leader_killed(cluster, tmp_path):
    ens = Ensemble(tmp_path / "ensemble").start()
    try:
        c = cluster(3, zk=ens.connect)
        create_topics(c, 1, [NewTopic("ens", num_partitions=3, replication_factor=3)])
        c.wait_converged(["ens"])
        leader = ens.leader()
        assert leader is not None
        leader.kill9()
        wait_until(lambda: ens.leader() is not None, 60, "the ensemble elected a new leader")
        c.zk.stop()
        c._zk = None
        c.wait_converged(["ens"], timeout=90)
        views = {bid: metadata_v1(b.port)["controller"] for bid, b in c.brokers.items()}
        assert len(set(views.values())) == 1, views
        create_topics(c, 2, [NewTopic("ens2", num_partitions=2, replication_factor=2)])
        c.wait_converged(["ens", "ens2"])
        produce_to_leaders(c, "ens2")
    finally:
        for b in c.brokers.values():
            b.stop()
        ens.stop()


# --- topics from any broker, and from ZooKeeper -----------------------------------------


def test_topics_created_through_every_broker(cluster):
    c = cluster(3)
    for bid in (1, 2, 3):
        create_topics(c, bid, [NewTopic(f"via-{bid}", num_partitions=3, replication_factor=2,
                                        config={"retention.ms": str(3_600_000 * bid)})])
    names = [f"via-{bid}" for bid in (1, 2, 3)]
    c.wait_converged(names)
    for name in names:
        parts = c.zk_topic(name)
        assert all(len(set(s["replicas"])) == 2 for s in parts.values()), parts
        # Kafka's assignment spreads the preferred leaders over the brokers.
        assert len({s["replicas"][0] for s in parts.values()}) == 3, parts
    # DescribeConfigs and CreatePartitions from other brokers than the creator.
    from confluent_kafka.admin import ConfigResource
    for bid in (1, 2, 3):
        res = ConfigResource("topic", "via-1")
        configs = c.admin(bid).describe_configs([res], request_timeout=20)[res].result(30)
        assert configs["retention.ms"].value == "3600000"
    fs = c.admin(2).create_partitions([NewPartitions("via-1", 5)], operation_timeout=20, request_timeout=30)
    assert admin_error_code(fs["via-1"], 40) is None
    c.wait_converged(names)
    assert sorted(c.zk_topic("via-1")) == [0, 1, 2, 3, 4]
    # Deleted through a broker other than the controller.
    other = next(b for b in (1, 2, 3) if b != c.controller_id())
    fs = c.admin(other).delete_topics(["via-3"], operation_timeout=20, request_timeout=30)
    assert admin_error_code(fs["via-3"], 40) is None
    wait_until(lambda: all("via-3" not in metadata_v1(b.port)["topics"] for b in c.brokers.values()),
               30, "via-3 gone from every broker's metadata")
    assert "via-3" not in c.zk_topics()


def test_topic_written_to_zookeeper_and_deleted_through_admin_znode(cluster):
    c = cluster(3)
    # What an old tool (kafka-topics.sh --zookeeper) writes: the assignment alone.
    c.zk.create("/brokers/topics/zt", json.dumps(
        {"version": 1, "partitions": {"0": [2, 3], "1": [3, 1], "2": [1, 2]}}).encode())
    c.wait_converged(["zt"])
    parts = c.zk_topic("zt")
    assert {p: s["leader"] for p, s in parts.items()} == {0: 2, 1: 3, 2: 1}
    assert {p: s["isr"] for p, s in parts.items()} == {0: [2, 3], 1: [3, 1], 2: [1, 2]}
    assert all(s["leader_epoch"] == 0 for s in parts.values())
    produce_to_leaders(c, "zt", 30)
    for bid, b in c.brokers.items():
        hosted = [p for p, s in parts.items() if bid in s["replicas"]]
        for p in hosted:
            assert b.partition_dir("zt", p).exists(), f"broker {bid} has a log for zt-{p}"
    # Partitions added by rewriting the assignment (kafka-topics.sh --alter --zookeeper).
    data, stat = c.zk.get("/brokers/topics/zt")
    grown = json.loads(data)
    grown["partitions"]["3"] = [2, 1]
    c.zk.set("/brokers/topics/zt", json.dumps(grown).encode(), version=stat.version)
    c.wait_converged(["zt"])
    assert c.zk_topic("zt")[3]["leader"] == 2
    # Deleted by the admin znode.
    c.zk.create("/admin/delete_topics/zt", b"")
    wait_until(lambda: not c.zk.exists("/brokers/topics/zt") and not c.zk.exists("/admin/delete_topics/zt"),
               30, "the controller deleted zt and its admin znode")
    assert not c.zk.exists("/config/topics/zt")
    wait_until(lambda: all("zt" not in metadata_v1(b.port)["topics"] for b in c.brokers.values()),
               30, "zt gone from every broker's metadata")
    wait_until(lambda: not any(b.partition_dir("zt", p).exists()
                               for b in c.brokers.values() for p in range(4)),
               30, "every replica's log deleted")


def test_produce_fetch_list_offsets_to_a_follower_answer_not_leader(cluster):
    c = cluster(3)
    create_topics(c, 1, [NewTopic("nl", num_partitions=1, replication_factor=3)])
    c.wait_converged(["nl"])
    leader = c.leaders("nl")[0]
    follower = next(b for b in (1, 2, 3) if b != leader)
    records = kbatch.batch([(None, b"x")])
    err, _, _ = kbatch.produce(c.brokers[follower].port, "nl", 0, records)
    assert err == NOT_LEADER_OR_FOLLOWER
    err, base, _ = kbatch.produce(c.brokers[leader].port, "nl", 0, records)
    assert err == 0 and base == 0
    # Fetch and ListOffsets through librdkafka's per-partition leader routing work; a
    # consumer bootstrapped on a follower reads from the leader.
    consumer = Consumer({"bootstrap.servers": c.brokers[follower].bootstrap, "group.id": "nl-g",
                         "auto.offset.reset": "earliest", "logger": RDKAFKA_LOGGER})
    try:
        # acks=1: the high watermark moves once the followers have fetched the record.
        wait_until(lambda: consumer.get_watermark_offsets(CTP("nl", 0), timeout=20) == (0, 1),
                   30, "the record is committed")
    finally:
        consumer.close()
    # A raw ListOffsets v1 to the follower: NOT_LEADER_OR_FOLLOWER.
    import struct

    import kafkawire as kw
    body = struct.pack(">ii", -1, 1) + kw._string("nl") + struct.pack(">iiq", 1, 0, -1)
    with kw.connect(c.brokers[follower].port) as s:
        s.sendall(kw.frame(kw.request_header(2, 1, 9) + body))
        r = kw.Reader(kw.read_frame(s))
    assert r.int32() == 9
    assert r.int32() == 1
    r.take(r.int16())
    assert r.int32() == 1
    assert r.int32() == 0
    assert r.int16() == NOT_LEADER_OR_FOLLOWER


def test_consumer_group_coordinated_by_the_offsets_partition_leader(cluster):
    c = cluster(3, overrides={"offsets.topic.num.partitions": 6})
    create_topics(c, 1, [NewTopic("grp", num_partitions=3, replication_factor=1)])
    c.wait_converged(["grp"])
    produce_to_leaders(c, "grp", 30)
    consumer = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": "g-cluster",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "logger": RDKAFKA_LOGGER})
    got = 0
    try:
        consumer.subscribe(["grp"])
        deadline = time.monotonic() + 60
        while got < 30 and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                got += 1
        assert got == 30
        consumer.commit(asynchronous=False)
        ends = {p: consumer.get_watermark_offsets(CTP("grp", p), timeout=20)[1] for p in range(3)}
        assert sum(ends.values()) == 30
        committed = consumer.committed([CTP("grp", p) for p in range(3)], timeout=20)
        # Partitions that got records are committed at their end (the others: no offset).
        assert {tp.partition: tp.offset for tp in committed if ends[tp.partition] > 0} == \
            {p: e for p, e in ends.items() if e > 0}
    finally:
        consumer.close()
    # The coordinator is the leader of partition abs(hash(group)) % 6 of __consumer_offsets.
    h = 0
    for ch in "g-cluster":
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    h = h - (1 << 32) if h >= 1 << 31 else h
    partition = (abs(h) if h != -(1 << 31) else 0) % 6
    offsets_leader = c.leaders("__consumer_offsets")[partition]
    assert c.brokers[offsets_leader].partition_dir("__consumer_offsets", partition).exists()
    c.wait_converged(["__consumer_offsets", "grp"])


# --- leadership moves ----------------------------------------------------------------


def test_controlled_shutdown_moves_leaderships_before_exit(cluster):
    c = cluster(3)
    create_topics(c, 1, [NewTopic("cs", num_partitions=6, replication_factor=3)])
    c.wait_converged(["cs"])
    for victim in (next(b for b in (1, 2, 3) if b != c.controller_id()), c.controller_id()):
        before = c.zk_topic("cs")
        led = [p for p, s in before.items() if s["leader"] == victim]
        assert led, f"broker {victim} leads something: {before}"
        rc = c.brokers[victim].stop()
        assert rc == 0
        log = c.brokers[victim].log_text()
        assert "controlled shutdown succeeded" in log, log[-3000:]
        after = c.zk_topic("cs")
        for p in led:
            assert after[p]["leader"] != victim and after[p]["leader"] >= 0, after
            assert after[p]["leader_epoch"] > before[p]["leader_epoch"]
        # Out of every ISR by the time it exits: the controller took it out, and a fetch of
        # it still in flight (from the old leader epoch) does not put it back.
        assert all(victim not in s["isr"] for s in after.values()), after
        c.wait_converged(["cs"])
        produce_to_leaders(c, "cs")


def test_elect_leaders_api_and_preferred_replica_election_znode(cluster):
    """ElectLeaders as `kafka-leader-election.sh` / AdminClient.electLeaders send it (to the
    controller): preferred election where the preferred replica leads or is out of the ISR,
    and unclean election of a partition whose in-sync replicas are all gone. (Preferred
    leaders regaining leadership once caught up needs followers that catch up:
    tests/test_replication.py.)"""
    from confluent_kafka import ElectionType
    # confluent-kafka 2.16.1's elect_leaders() raises SystemError ("more argument specifiers
    # than keyword list entries") when given request_timeout or operation_timeout: its C
    # argument parser lists one format unit more than keywords. Called without them.
    c = cluster(3)
    fs = c.admin(1).create_topics([NewTopic("el", num_partitions=2, replica_assignment=[[2, 3], [3, 1]])],
                                  operation_timeout=20, request_timeout=30)
    assert admin_error_code(fs["el"], 40) is None
    c.wait_converged(["el"])
    assert c.leaders("el") == {0: 2, 1: 3}
    f = c.admin().elect_leaders(ElectionType.PREFERRED, [CTP("el", 0), CTP("el", 1)])
    results = f.result(40)
    assert {tp.partition: code_of(e) for tp, e in results.items()} == \
        {0: KafkaError.ELECTION_NOT_NEEDED, 1: KafkaError.ELECTION_NOT_NEEDED}
    # Broker 2 dies: el-0 goes to 3 with ISR [3]; then 3 dies too: el-0 and el-1 offline.
    c.brokers[2].kill9()
    wait_until(lambda: c.leaders("el") == {0: 3, 1: 3}, 40, "el-0 led by 3")
    assert c.zk_topic("el")[0]["isr"] == [3]
    c.brokers[3].kill9()
    wait_until(lambda: c.leaders("el") == {0: -1, 1: 1}, 40, "el-0 offline, el-1 led by 1")
    assert c.zk_topic("el")[0]["isr"] == [3], "the last in-sync replica is remembered"
    c.brokers[2].start(timeout=SESSION_TIMEOUT_MS / 1000 + 30)
    wait_until(lambda: 2 in c.registered(), 30, "broker 2 back")
    time.sleep(1)
    assert c.leaders("el")[0] == -1, "2 is not in sync: no clean leader (unclean election off)"
    # Preferred election of el-1: its preferred replica 3 is dead.
    f = c.admin().elect_leaders(ElectionType.PREFERRED, [CTP("el", 1)])
    (err,) = f.result(40).values()
    assert code_of(err) == KafkaError.PREFERRED_LEADER_NOT_AVAILABLE
    # Unclean election of el-0: broker 2 leads, alone in the ISR.
    f = c.admin().elect_leaders(ElectionType.UNCLEAN, [CTP("el", 0)])
    (err,) = f.result(40).values()
    assert err is None, err
    wait_until(lambda: c.leaders("el")[0] == 2, 20, "el-0 led by 2")
    assert c.zk_topic("el")[0]["isr"] == [2]
    # A request for a partition that does not exist.
    f = c.admin().elect_leaders(ElectionType.PREFERRED, [CTP("el", 7)])
    (err,) = f.result(40).values()
    assert code_of(err) == KafkaError.UNKNOWN_TOPIC_OR_PART
    # The znode an old kafka-preferred-replica-election.sh writes is consumed.
    c.zk.create("/admin/preferred_replica_election", json.dumps(
        {"version": 1, "partitions": [{"topic": "el", "partition": 0}]}).encode())
    wait_until(lambda: not c.zk.exists("/admin/preferred_replica_election"), 20, "znode consumed")
    assert c.leaders("el") == {0: 2, 1: 1}


def test_topic_config_altered_through_one_broker_applies_on_every_broker(cluster):
    """IncrementalAlterConfigs through broker 1 writes /config/topics/<t> and a version 2
    /config/changes notification; each partition leader (one per broker) then recompresses;
    an old tool's direct ZooKeeper write with a version 1 notification is applied too."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    c = cluster(3)
    create_topics(c, 1, [NewTopic("alt", num_partitions=3, replica_assignment=[[1], [2], [3]])])
    c.wait_converged(["alt"])
    res = ConfigResource("topic", "alt", incremental_configs=[
        ConfigEntry("compression.type", "zstd", incremental_operation=AlterConfigOpType.SET)])
    assert admin_error_code(c.admin(1).incremental_alter_configs([res], request_timeout=20)[res]) is None
    assert c.zk_json("/config/topics/alt")["config"] == {"compression.type": "zstd"}
    notes = [json.loads(c.zk.get(f"/config/changes/{n}")[0]) for n in c.zk.get_children("/config/changes")]
    assert {"version": 2, "entity_path": "topics/alt"} in notes, notes

    def last_stored_codec(p: int) -> int | None:
        leader = c.leaders("alt")[p]
        err, _, msg = kbatch.produce(c.brokers[leader].port, "alt", p,
                                     kbatch.batch([(b"k", b"v" * 100)]))
        assert err == 0, msg
        data = (c.brokers[leader].partition_dir("alt", p) / "00000000000000000000.log").read_bytes()
        at, codec = 0, None
        while at + 61 <= len(data):
            length = int.from_bytes(data[at + 8:at + 12], "big", signed=True)
            if length <= 0:
                break
            codec = int.from_bytes(data[at + 21:at + 23], "big") & 0x07
            at += 12 + length
        return codec

    for p in range(3):
        wait_until(lambda: last_stored_codec(p) == kbatch.ZSTD, 20, f"alt-{p} stored zstd")
    # Kafka's ZooKeeper-era tools: the config znode, then a version 1 notification.
    c.zk.set("/config/topics/alt", json.dumps(
        {"version": 1, "config": {"compression.type": "gzip"}}).encode())
    c.zk.create("/config/changes/config_change_", json.dumps(
        {"version": 1, "entity_type": "topics", "entity_name": "alt"}).encode(), sequence=True)
    for p in range(3):
        wait_until(lambda: last_stored_codec(p) == kbatch.GZIP, 20, f"alt-{p} stored gzip")
    # Dynamic broker configs: broker 2's own layer (the admin client sends it to broker 2)
    # limits only broker 2; the cluster-wide layer, written as Kafka's ZooKeeper-era tools
    # write it, reaches every broker.
    res = ConfigResource("broker", "2", incremental_configs=[
        ConfigEntry("message.max.bytes", "300", incremental_operation=AlterConfigOpType.SET)])
    assert admin_error_code(c.admin(1).incremental_alter_configs([res], request_timeout=20)[res]) is None
    assert c.zk_json("/config/brokers/2")["config"] == {"message.max.bytes": "300"}

    def produce_code(p: int) -> int:
        leader = c.leaders("alt")[p]
        err, _, _ = kbatch.produce(c.brokers[leader].port, "alt", p,
                                   kbatch.batch([(b"k", b"v" * 1000)]))
        return err
    led_by_2 = [p for p, leader in c.leaders("alt").items() if leader == 2]
    others = [p for p, leader in c.leaders("alt").items() if leader != 2]
    assert led_by_2 and others
    wait_until(lambda: produce_code(led_by_2[0]) == 10, 20, "broker 2 refuses a 1 kB batch")
    assert all(produce_code(p) == 0 for p in others)
    c.zk.create("/config/brokers/<default>", json.dumps(
        {"version": 1, "config": {"message.max.bytes": "400"}}).encode(), makepath=True)
    c.zk.create("/config/changes/config_change_", json.dumps(
        {"version": 2, "entity_path": "brokers/<default>"}).encode(), sequence=True)
    for p in others:
        wait_until(lambda: produce_code(p) == 10, 20, f"the leader of alt-{p} refuses it too")


def test_kafka_reassign_and_leader_election_tools(cluster, tmp_path):
    """Kafka's own `kafka-reassign-partitions` (--execute, --verify, --list) moves a
    partition from brokers 1,2 to 2,3, and `kafka-leader-election` (preferred, one partition
    and --all-topic-partitions) runs against the controller, from the published jars."""
    from test_kafka_tools import tool
    c = cluster(3)
    create_topics(c, 1, [NewTopic("tl", num_partitions=1, replica_assignment=[[1, 2]])])
    c.wait_converged(["tl"])
    for i in range(20):
        err, _, msg = kbatch.produce(c.brokers[c.leaders("tl")[0]].port, "tl", 0,
                                     kbatch.batch([(b"k", f"v{i}".encode())]))
        assert err == 0, msg
    bs = ("--bootstrap-server", c.bootstrap())
    plan = tmp_path / "reassign.json"
    plan.write_text(json.dumps(
        {"version": 1, "partitions": [{"topic": "tl", "partition": 0, "replicas": [2, 3]}]}))
    reassign = ("org.apache.kafka.tools.reassign.ReassignPartitionsCommand", *bs,
                "--reassignment-json-file", str(plan))
    out = tool(*reassign, "--execute")
    assert "Successfully started partition reassignment for tl-0" in out, out
    wait_until(lambda: "Reassignment of partition tl-0 is completed" in tool(*reassign, "--verify"),
               90, "the reassignment completes")
    assert c.zk_topic("tl")[0]["replicas"] == [2, 3]
    assert "No partition reassignments found" in tool(
        "org.apache.kafka.tools.reassign.ReassignPartitionsCommand", *bs, "--list")
    c.wait_converged(["tl"])
    # A controlled shutdown of broker 2 hands tl-0 to 3; back in the ISR, 2 is preferred
    # again and the tool's preferred election moves the leadership back.
    c.brokers[2].stop()
    wait_until(lambda: c.leaders("tl")[0] == 3, 30, "tl-0 led by 3")
    c.brokers[2].start()
    wait_until(lambda: sorted(c.zk_topic("tl")[0]["isr"]) == [2, 3], 60, "2 back in the ISR")
    election = ("org.apache.kafka.tools.LeaderElectionCommand", *bs, "--election-type",
                "preferred")
    out = tool(*election, "--topic", "tl", "--partition", "0")
    assert "Successfully completed leader election (PREFERRED) for partitions tl-0" in out, out
    wait_until(lambda: c.leaders("tl")[0] == 2, 30, "tl-0 led by 2 again")
    out = tool(*election, "--topic", "tl", "--partition", "0")
    assert "Valid replica already elected for partitions tl-0" in out, out
    # Every partition: nothing needed, nothing printed, exit 0.
    assert "tl-0" not in tool(*election, "--all-topic-partitions")
