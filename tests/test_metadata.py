"""Metadata, topic administration, configs and start-up validation."""

from __future__ import annotations

import json
import subprocess

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import ConfigResource, NewPartitions, NewTopic, ResourceType

from conftest import broker_binary, free_port
from kclients import (Deliveries, admin, admin_error_code, create_topic, producer, wait_for_topic,
                      wait_until)


def kcat_metadata(kcat_bin: str, bootstrap: str, topic: str | None = None) -> dict:
    cmd = [kcat_bin, "-L", "-b", bootstrap, "-J", "-m", "15"]
    if topic:
        cmd += ["-t", topic]
    r = subprocess.run(cmd, capture_output=True, timeout=60)
    assert r.returncode == 0, f"kcat -L failed ({r.returncode}): {r.stderr.decode(errors='replace')}"
    return json.loads(r.stdout)


def kcat_topic(md: dict, name: str) -> dict | None:
    for t in md.get("topics", []):
        if t.get("topic") == name:
            return t
    return None


def test_kcat_lists_broker(broker, kcat_bin):
    b = broker()
    md = kcat_metadata(kcat_bin, b.bootstrap)
    brokers = {x["id"]: x["name"] for x in md["brokers"]}
    assert brokers == {0: f"127.0.0.1:{b.port}"}, f"kcat brokers: {md['brokers']}"
    assert md.get("controllerid") == 0, f"controller id: {md.get('controllerid')}"


def test_broker_id_override(broker, kcat_bin):
    b = broker({"broker.id": 7})
    md = kcat_metadata(kcat_bin, b.bootstrap)
    assert {x["id"]: x["name"] for x in md["brokers"]} == {7: f"127.0.0.1:{b.port}"}
    a = admin(b.bootstrap)
    create_topic(a, "on7", 2)
    t = kcat_topic(kcat_metadata(kcat_bin, b.bootstrap, "on7"), "on7")
    assert t is not None and [p["leader"] for p in t["partitions"]] == [7, 7], t


def test_create_topic_and_metadata(broker, kcat_bin):
    b = broker()
    a = admin(b.bootstrap)
    create_topic(a, "three", 3)

    md = a.list_topics(timeout=10)
    assert "three" in md.topics, f"topics: {sorted(md.topics)}"
    t = md.topics["three"]
    assert t.error is None, t.error
    assert sorted(t.partitions) == [0, 1, 2]
    for p in t.partitions.values():
        assert p.leader == 0, f"partition {p.id} leader {p.leader}"
        assert list(p.replicas) == [0], f"partition {p.id} replicas {p.replicas}"
        assert list(p.isrs) == [0], f"partition {p.id} isr {p.isrs}"
    assert {bid: (bm.host, bm.port) for bid, bm in md.brokers.items()} == {0: ("127.0.0.1", b.port)}

    kt = kcat_topic(kcat_metadata(kcat_bin, b.bootstrap), "three")
    assert kt is not None, "kcat does not list topic 'three'"
    assert sorted(p["partition"] for p in kt["partitions"]) == [0, 1, 2], kt
    assert all(p["leader"] == 0 for p in kt["partitions"]), kt

    # on-disk layout is Kafka's: <log.dirs>/<topic>-<partition>/00000000000000000000.log
    for p in range(3):
        d = b.partition_dir("three", p)
        wait_until(lambda: (d / "00000000000000000000.log").exists(), 10,
                   f"{d}/00000000000000000000.log missing")


def test_auto_create_on_produce(broker, kcat_bin):
    b = broker({"num.partitions": 2})
    p = producer(b.bootstrap)
    dr = Deliveries()
    for i in range(10):
        p.produce("auto-created", f"v{i}".encode(), on_delivery=dr)
    assert p.flush(60) == 0
    assert dr.errors == [] and dr.count == 10, dr.errors
    a = admin(b.bootstrap)
    md = a.list_topics(timeout=10)
    assert "auto-created" in md.topics, f"topics: {sorted(md.topics)}"
    assert len(md.topics["auto-created"].partitions) == 2, "num.partitions=2 not used for auto-creation"
    kt = kcat_topic(kcat_metadata(kcat_bin, b.bootstrap), "auto-created")
    assert kt is not None and len(kt["partitions"]) == 2, kt


def test_auto_create_disabled(broker):
    b = broker({"auto.create.topics.enable": "false"})
    a = admin(b.bootstrap)
    md = a.list_topics("not-auto", timeout=10)
    t = md.topics.get("not-auto")
    assert t is not None and t.error is not None and \
        t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, f"metadata for not-auto: {t and t.error}"
    md = a.list_topics(timeout=10)
    assert "not-auto" not in md.topics


def test_create_topic_errors(broker):
    b = broker()
    a = admin(b.bootstrap)
    create_topic(a, "exists", 1)

    def err_of(topic: NewTopic):
        fs = a.create_topics([topic], operation_timeout=10, request_timeout=20)
        return admin_error_code(fs[topic.topic])

    code = err_of(NewTopic("exists", num_partitions=1, replication_factor=1))
    assert code == KafkaError.TOPIC_ALREADY_EXISTS, f"re-create: {KafkaError(code) if code else None}"

    for bad in ["a b", ".", "..", "a" * 250, "bad/name", "bad\u00e9"]:
        code = err_of(NewTopic(bad, num_partitions=1, replication_factor=1))
        assert code == KafkaError.TOPIC_EXCEPTION, \
            f"topic name {bad[:20]!r}: expected INVALID_TOPIC_EXCEPTION, got {KafkaError(code) if code else None}"

    ok249 = "b" * 249
    assert err_of(NewTopic(ok249, num_partitions=1, replication_factor=1)) is None, "249-char name rejected"

    code = err_of(NewTopic("zero-parts", num_partitions=0, replication_factor=1))
    assert code == KafkaError.INVALID_PARTITIONS, f"num_partitions=0: {KafkaError(code) if code else None}"

    code = err_of(NewTopic("rf3", num_partitions=1, replication_factor=3))
    assert code == KafkaError.INVALID_REPLICATION_FACTOR, \
        f"replication_factor=3: {KafkaError(code) if code else None}"

    for name, cfg in [("bad-cfg-key", {"no.such.config": "1"}),
                      ("bad-cfg-value", {"retention.ms": "abc"})]:
        code = err_of(NewTopic(name, num_partitions=1, replication_factor=1, config=cfg))
        assert code == KafkaError.INVALID_CONFIG, f"config {cfg}: {KafkaError(code) if code else None}"

    md = a.list_topics(timeout=10)
    for name in ["zero-parts", "rf3", "a b", ".", "bad-cfg-key", "bad-cfg-value"]:
        assert name not in md.topics, f"{name!r} was created despite the error"
    assert ok249 in md.topics


def test_create_partitions(broker, kcat_bin):
    b = broker()
    a = admin(b.bootstrap)
    create_topic(a, "grow", 3)
    fs = a.create_partitions([NewPartitions("grow", 5)], operation_timeout=10, request_timeout=20)
    code = admin_error_code(fs["grow"])
    assert code is None, f"create_partitions: {KafkaError(code)}"
    wait_for_topic(a, "grow", 5)
    kt = kcat_topic(kcat_metadata(kcat_bin, b.bootstrap, "grow"), "grow")
    assert sorted(p["partition"] for p in kt["partitions"]) == [0, 1, 2, 3, 4], kt

    # shrinking is invalid
    fs = a.create_partitions([NewPartitions("grow", 2)], operation_timeout=10, request_timeout=20)
    code = admin_error_code(fs["grow"])
    assert code == KafkaError.INVALID_PARTITIONS, f"shrink 5->2: {KafkaError(code) if code else None}"

    # the new partitions are usable
    p = producer(b.bootstrap)
    dr = Deliveries()
    for part in range(5):
        p.produce("grow", b"x", partition=part, on_delivery=dr)
    assert p.flush(60) == 0 and dr.errors == [], dr.errors
    assert sorted(part for (_, part) in dr.offsets) == [0, 1, 2, 3, 4]


def test_delete_topic(broker):
    b = broker()
    a = admin(b.bootstrap)
    create_topic(a, "doomed", 2)
    p = producer(b.bootstrap)
    dr = Deliveries()
    for i in range(100):
        p.produce("doomed", b"x" * 100, partition=i % 2, on_delivery=dr)
    assert p.flush(60) == 0 and dr.errors == [], dr.errors
    del p  # a live producer's metadata refresh could auto-create the topic again
    for part in range(2):
        assert b.partition_dir("doomed", part).is_dir()

    fs = a.delete_topics(["doomed"], operation_timeout=10, request_timeout=20)
    code = admin_error_code(fs["doomed"])
    assert code is None, f"delete_topics: {KafkaError(code)}"

    wait_until(lambda: "doomed" not in a.list_topics(timeout=5).topics, 15,
               "deleted topic still listed in metadata")
    # Kafka renames a deleted partition dir to <topic>-<p>.<uuid>-delete and removes it
    # later; what must go away is the live <topic>-<p> directory.
    wait_until(lambda: not any(b.partition_dir("doomed", part).exists() for part in range(2)), 30,
               f"partition dirs of deleted topic still in {b.log_dir}")

    fs = a.delete_topics(["never-existed"], operation_timeout=10, request_timeout=20)
    code = admin_error_code(fs["never-existed"])
    assert code == KafkaError.UNKNOWN_TOPIC_OR_PART, \
        f"delete unknown topic: {KafkaError(code) if code else None}"

    # the name can be reused
    create_topic(a, "doomed", 1)


def test_describe_configs(broker):
    b = broker({"num.partitions": 2, "log.retention.ms": 86400000})
    a = admin(b.bootstrap)
    create_topic(a, "configured", 1, {"retention.ms": 123456, "segment.bytes": 1048576})

    res = ConfigResource(ResourceType.TOPIC, "configured")
    entries = a.describe_configs([res], request_timeout=20)[res].result(timeout=30)
    assert "retention.ms" in entries and "segment.bytes" in entries, sorted(entries)
    assert entries["retention.ms"].value == "123456", entries["retention.ms"]
    assert entries["segment.bytes"].value == "1048576", entries["segment.bytes"]

    res = ConfigResource(ResourceType.BROKER, "0")
    entries = a.describe_configs([res], request_timeout=20)[res].result(timeout=30)
    assert entries, "no broker config entries"
    assert "log.retention.ms" in entries or "num.partitions" in entries, sorted(entries)
    if "num.partitions" in entries:
        assert entries["num.partitions"].value == "2", entries["num.partitions"]
    if "log.retention.ms" in entries:
        assert entries["log.retention.ms"].value == "86400000", entries["log.retention.ms"]


def test_describe_cluster(broker):
    b = broker()
    a = admin(b.bootstrap)
    desc = a.describe_cluster(request_timeout=20).result(timeout=30)
    assert desc.cluster_id, f"empty cluster id: {desc.cluster_id!r}"
    nodes = {(n.id, n.host, n.port) for n in desc.nodes}
    assert nodes == {(0, "127.0.0.1", b.port)}, nodes
    assert desc.controller is not None and desc.controller.id == 0, desc.controller

    # The cluster id survives a restart (it is stored in log.dirs/meta.properties in Kafka).
    first = desc.cluster_id
    b.restart()
    a2 = admin(b.bootstrap)  # keep a reference: a collected client cancels its futures
    desc = a2.describe_cluster(request_timeout=20).result(timeout=30)
    assert desc.cluster_id == first, f"cluster id changed across restart: {first} -> {desc.cluster_id}"


@pytest.mark.parametrize("key,value", [
    ("no.such.key", "1"),
    ("num.io.threads", "abc"),
    ("num.partitions", "-3x"),
    ("log.segment.bytes", "lots"),
    ("compression.type", "brotli"),
    ("log.message.timestamp.before.max.ms", "-1"),
    ("log.segment.drop.behind.bytes", "-2"),
])
def test_bad_config_exits(tmp_path, key, value):
    port = free_port()
    cmd = [str(broker_binary()),
           "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
           "--override", f"log.dirs={tmp_path / 'data'}",
           "--override", f"{key}={value}"]
    logf = tmp_path / "broker.log"
    with open(logf, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out)
        try:
            rc = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            pytest.fail(f"broker kept running with --override {key}={value}")
    err = logf.read_text("utf-8", "replace")
    assert rc != 0, f"exit code 0 with --override {key}={value}; stderr:\n{err}"
    assert key in err, f"stderr does not name {key!r}:\n{err}"


def test_properties_file(broker, tmp_path, kcat_bin):
    """The positional server.properties file is read; --override wins over it."""
    props = tmp_path / "server.properties"
    props.write_text("# comment\nbroker.id=3\nnum.partitions=4\n\nauto.create.topics.enable=true\n")
    b = broker({"num.partitions": 5}, config_file=props)
    md = kcat_metadata(kcat_bin, b.bootstrap)
    assert [x["id"] for x in md["brokers"]] == [3], md["brokers"]
    p = producer(b.bootstrap)
    p.produce("from-file", b"x")
    assert p.flush(30) == 0
    a = admin(b.bootstrap)
    wait_for_topic(a, "from-file", 5)


def test_topics_survive_restart(broker, kcat_bin):
    b = broker()
    a = admin(b.bootstrap)
    create_topic(a, "keep", 3, {"retention.ms": 123456})
    create_topic(a, "gone", 1)
    assert admin_error_code(a.create_partitions([NewPartitions("keep", 4)])["keep"]) is None
    wait_for_topic(a, "keep", 4)
    assert admin_error_code(a.delete_topics(["gone"], operation_timeout=10)["gone"]) is None
    wait_until(lambda: "gone" not in a.list_topics(timeout=5).topics, 15, "'gone' still listed")
    del a

    rc = b.stop()
    assert rc == 0, f"exit code {rc} after SIGTERM"
    b.start()

    a = admin(b.bootstrap)
    md = a.list_topics(timeout=10)
    assert "gone" not in md.topics, "deleted topic came back after restart"
    assert "keep" in md.topics, f"topic lost across restart: {sorted(md.topics)}"
    assert len(md.topics["keep"].partitions) == 4, "partition count not persisted"
    res = ConfigResource(ResourceType.TOPIC, "keep")
    entries = a.describe_configs([res], request_timeout=20)[res].result(timeout=30)
    assert entries["retention.ms"].value == "123456", f"topic config lost: {entries.get('retention.ms')}"
