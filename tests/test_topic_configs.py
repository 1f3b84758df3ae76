"""Kafka 3.9's topic configs: every key accepted with Kafka's rules, described with its
source and synonyms, and acted upon where kbroker has the behaviour — broker-side
recompression (`compression.type`) and CreateTime timestamp bounds
(`message.timestamp.before/after.max.ms`)."""

from __future__ import annotations

import struct
import time

from confluent_kafka import KafkaError, TopicCollection
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                  NewTopic, ResourceType)

import kbatch as kb
from kclients import admin, admin_error_code, consume, create_topic, wait_until

INVALID_TIMESTAMP = 32
KAFKA_39_TOPIC_CONFIGS = 36


def stored_codecs(b, topic: str, partition: int = 0) -> list[int]:
    """The codec bits of every batch in the partition's first segment, read from the file."""
    data = (b.partition_dir(topic, partition) / "00000000000000000000.log").read_bytes()
    codecs, at = [], 0
    while at + 61 <= len(data):
        (length,) = struct.unpack_from(">i", data, at + 8)
        if length <= 0:
            break
        (attributes,) = struct.unpack_from(">h", data, at + 21)
        codecs.append(attributes & 0x07)
        at += 12 + length
    return codecs


def describe(a, topic: str) -> dict:
    res = ConfigResource(ResourceType.TOPIC, topic)
    return a.describe_configs([res], request_timeout=20)[res].result(timeout=30)


def test_every_kafka_topic_config_is_accepted_and_described(broker):
    b = broker()
    a = admin(b.bootstrap)
    configs = {
        "compression.type": "zstd",
        "compression.zstd.level": "7",
        "message.timestamp.before.max.ms": "3600000",
        "preallocate": "true",
        "unclean.leader.election.enable": "false",
        "max.compaction.lag.ms": "600000",
        "segment.jitter.ms": "1000",
        "leader.replication.throttled.replicas": "0:0",
        "message.format.version": "3.0-IV1",
        "min.cleanable.dirty.ratio": "0.2",
    }
    create_topic(a, "all-configs", 1, configs)
    entries = describe(a, "all-configs")
    assert len(entries) == KAFKA_39_TOPIC_CONFIGS, sorted(entries)
    for k, v in configs.items():
        assert entries[k].value == v, (k, entries[k])
        assert entries[k].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, (k, entries[k])
    # Not overridden: Kafka's defaults, named by their broker synonym among the synonyms.
    assert entries["compression.lz4.level"].value == "9"
    assert entries["message.downconversion.enable"].value == "true"
    assert entries["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    # Synonyms (librdkafka asks for them): the override, then the broker key's default.
    synonyms = entries["message.timestamp.before.max.ms"].synonyms
    assert set(synonyms) == {"message.timestamp.before.max.ms",
                             "log.message.timestamp.before.max.ms"}, synonyms
    assert synonyms["log.message.timestamp.before.max.ms"].source == \
        ConfigSource.DEFAULT_CONFIG.value


def test_bad_topic_configs_are_refused_with_invalid_config(broker):
    b = broker()
    a = admin(b.bootstrap)
    for key, value in [("compression.type", "brotli"), ("compression.gzip.level", "0"),
                       ("remote.storage.enable", "true"), ("no.such.config", "1"),
                       ("min.cleanable.dirty.ratio", "1.5"), ("segment.bytes", "13"),
                       ("message.format.version", "9.9")]:
        fs = a.create_topics([NewTopic(f"bad-{key.replace('.', '-')}", 1, 1, config={key: value})],
                             request_timeout=20)
        code = admin_error_code(list(fs.values())[0])
        assert code == KafkaError.INVALID_CONFIG, (key, value, KafkaError(code) if code else None)


def test_compression_type_recompresses_what_producers_send(broker):
    b = broker()
    a = admin(b.bootstrap)
    create_topic(a, "to-zstd", 1, {"compression.type": "zstd"})
    create_topic(a, "to-plain", 1, {"compression.type": "uncompressed"})
    create_topic(a, "as-sent", 1)
    records = [(f"k{i}".encode(), f"value-{i}".encode() * 20) for i in range(50)]
    for topic in ["to-zstd", "to-plain", "as-sent"]:
        for codec in [kb.NONE, kb.GZIP, kb.LZ4]:
            err, _, msg = kb.produce(b.port, topic, 0, kb.batch(records, codec=codec))
            assert err == 0, (topic, codec, err, msg)
    assert stored_codecs(b, "to-zstd") == [kb.ZSTD] * 3
    assert stored_codecs(b, "to-plain") == [kb.NONE] * 3
    assert stored_codecs(b, "as-sent") == [kb.NONE, kb.GZIP, kb.LZ4]
    expected = [v for _, v in records] * 3
    for topic in ["to-zstd", "to-plain", "as-sent"]:
        got = consume(b.bootstrap, topic, [0])
        assert [r.value for r in got[0]] == expected, topic


def test_broker_compression_type_is_every_topics_default(broker):
    b = broker({"compression.type": "gzip"})
    a = admin(b.bootstrap)
    create_topic(a, "broker-gzip", 1)
    entries = describe(a, "broker-gzip")
    assert entries["compression.type"].value == "gzip"
    assert entries["compression.type"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    err, _, msg = kb.produce(b.port, "broker-gzip", 0, kb.batch([(b"k", b"v")], codec=kb.NONE))
    assert err == 0, msg
    assert stored_codecs(b, "broker-gzip") == [kb.GZIP]


def test_timestamps_outside_the_topic_bounds_are_refused(broker):
    b = broker()
    a = admin(b.bootstrap)
    create_topic(a, "bounded", 1, {"message.timestamp.before.max.ms": "3600000",
                                   "message.timestamp.after.max.ms": "60000"})
    create_topic(a, "bounded-by-difference", 1, {"message.timestamp.difference.max.ms": "3600000"})
    create_topic(a, "log-append", 1, {"message.timestamp.before.max.ms": "3600000",
                                      "message.timestamp.type": "LogAppendTime"})
    now = int(time.time() * 1000)
    two_hours_ago, in_ten_minutes = now - 7_200_000, now + 600_000
    one = [(b"k", b"v")]
    for topic in ["bounded", "bounded-by-difference"]:
        err, _, msg = kb.produce(b.port, topic, 0, kb.batch(one, timestamp=two_hours_ago), version=8)
        assert err == INVALID_TIMESTAMP and msg and "out of range" in msg, (topic, err, msg)
        err, _, msg = kb.produce(b.port, topic, 0, kb.batch(one, timestamp=now), version=8)
        assert err == 0, (topic, msg)
    err, _, msg = kb.produce(b.port, "bounded", 0, kb.batch(one, timestamp=in_ten_minutes))
    assert err == INVALID_TIMESTAMP, (err, msg)
    # LogAppendTime topics take any producer timestamp (the broker stamps the batch).
    err, _, msg = kb.produce(b.port, "log-append", 0, kb.batch(one, timestamp=two_hours_ago))
    assert err == 0, msg
    assert [r.value for r in consume(b.bootstrap, "bounded", [0])[0]] == [b"v"]


def test_partition_metadata_names_the_topic_id(broker):
    """Each partition directory holds Kafka's partition.metadata with the topic id; a
    directory naming another id (an older topic of the same name) is refused, not served."""
    b = broker()
    a = admin(b.bootstrap)
    create_topic(a, "with-id", 2)
    desc = a.describe_topics(TopicCollection(["with-id"]))["with-id"].result(30)
    # librdkafka prints ids in standard base64; Kafka's Uuid.toString (and the file) is
    # base64url.
    topic_id = str(desc.topic_id).replace("+", "-").replace("/", "_")
    want = f"version: 0\ntopic_id: {topic_id}"
    files = [b.partition_dir("with-id", p) / "partition.metadata" for p in range(2)]
    wait_until(lambda: all(f.exists() for f in files), 20, "partition.metadata written")
    assert [f.read_text() for f in files] == [want, want]

    b.stop()
    files[1].write_text("version: 0\ntopic_id: AAAAAAAAAAAAAAAAAAAAAQ")
    b.start()
    wait_until(lambda: "refusing the partition" in b.log_text(), 30,
               "the mismatching partition is refused")
    assert files[1].read_text() == "version: 0\ntopic_id: AAAAAAAAAAAAAAAAAAAAAQ"
    err, _, _ = kb.produce(b.port, "with-id", 0, kb.batch([(b"k", b"v")]))
    assert err == 0, "the other partition serves"
    err, _, _ = kb.produce(b.port, "with-id", 1, kb.batch([(b"k", b"v")]))
    assert err != 0, "the refused partition takes no records"


def test_incremental_alter_configs_changes_a_topic(broker):
    b = broker()
    a = admin(b.bootstrap)
    create_topic(a, "altered", 1, {"retention.ms": "3600000"})

    def alter(*entries, topic="altered", kind=ResourceType.TOPIC):
        res = ConfigResource(kind, topic, incremental_configs=list(entries))
        return admin_error_code(a.incremental_alter_configs([res], request_timeout=20)[res])

    assert alter(ConfigEntry("compression.type", "gzip",
                             incremental_operation=AlterConfigOpType.SET),
                 ConfigEntry("retention.ms", None,
                             incremental_operation=AlterConfigOpType.DELETE),
                 ConfigEntry("cleanup.policy", "compact",
                             incremental_operation=AlterConfigOpType.APPEND)) is None
    entries = describe(a, "altered")
    assert entries["compression.type"].value == "gzip"
    assert entries["cleanup.policy"].value == "delete,compact", "the default, then the appended"
    assert entries["retention.ms"].value == "604800000"
    assert entries["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert alter(ConfigEntry("cleanup.policy", "compact",
                             incremental_operation=AlterConfigOpType.SUBTRACT)) is None
    assert describe(a, "altered")["cleanup.policy"].value == "delete"

    # The log acts on it once the change notification is applied (within a second).
    def stored_gzip():
        err, _, msg = kb.produce(b.port, "altered", 0, kb.batch([(b"k", b"v" * 100)]))
        assert err == 0, msg
        return stored_codecs(b, "altered")[-1] == kb.GZIP
    wait_until(stored_gzip, 20, "batches stored gzip after the change")

    # Errors, per resource, as Kafka answers them.
    bad = ConfigEntry("compression.type", "brotli", incremental_operation=AlterConfigOpType.SET)
    assert alter(bad) == KafkaError.INVALID_CONFIG
    assert alter(ConfigEntry("retention.ms", "5", incremental_operation=AlterConfigOpType.APPEND)) \
        == KafkaError.INVALID_CONFIG
    assert alter(ConfigEntry("retention.ms", "5", incremental_operation=AlterConfigOpType.SET),
                 topic="no-such-topic") == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert alter(ConfigEntry("num.io.threads", "5", incremental_operation=AlterConfigOpType.SET),
                 topic="0", kind=ResourceType.BROKER) == KafkaError.INVALID_CONFIG
    assert describe(a, "altered")["compression.type"].value == "gzip", "a refused change writes nothing"
