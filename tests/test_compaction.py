"""Log compaction (cleanup.policy=compact): the cleaner keeps the latest record per key at its
original offset, removes tombstones after delete.retention.ms, and keeps __consumer_offsets
from growing without bound while committed offsets survive restarts."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions
from confluent_kafka import TopicPartition as CKTopicPartition

from kclients import (RDKAFKA_LOGGER, Deliveries, admin, consume, create_topic, offsets_of,
                      producer, produce_all, wait_until)

SEGMENT_LOG = re.compile(r"^\d{20}\.log$")


def log_bytes(partition_dir: Path) -> int:
    """Total size of the live segment files (<20 digits>.log) of a partition."""
    total = 0
    for f in partition_dir.iterdir():
        if SEGMENT_LOG.match(f.name):
            try:
                total += f.stat().st_size
            except FileNotFoundError:   # swapped by the cleaner meanwhile
                pass
    return total


def segment_count(partition_dir: Path) -> int:
    return sum(1 for f in partition_dir.iterdir() if SEGMENT_LOG.match(f.name))


class KeyedLog:
    """What was produced to one partition: offset -> (key, value) from delivery reports."""

    def __init__(self, bootstrap: str, topic: str, **producer_conf):
        self.topic = topic
        conf = {"linger.ms": 0, "batch.num.messages": 20}
        conf.update(producer_conf)
        self.p = producer(bootstrap, **conf)
        self.by_offset: dict[int, tuple[bytes, bytes | None]] = {}

    def produce(self, items) -> None:
        """items: [(key bytes, value bytes or None)]; waits for every delivery."""
        dr = Deliveries()
        pending = {}

        def on_delivery(err, msg):
            dr(err, msg)
            if err is None:
                pending[msg.offset()] = (msg.key(), msg.value())
        produce_all(self.p, self.topic, [(0, k, v, None, None) for k, v in items], on_delivery,
                    flush_timeout=60)
        # what was acknowledged is recorded even if the rest failed (crash tests)
        self.by_offset.update(pending)
        assert dr.errors == [] and len(pending) == len(items), dr.errors[:5]

    def latest(self) -> dict[bytes, bytes | None]:
        """key -> the value of its highest-offset record (None for a tombstone)."""
        out = {}
        for off in sorted(self.by_offset):
            k, v = self.by_offset[off]
            out[k] = v
        return out

    def end(self) -> int:
        return max(self.by_offset) + 1


def read_log(bootstrap: str, topic: str) -> list:
    """Every record of partition 0 from the beginning to the current end (kafka-python)."""
    return consume(bootstrap, topic, [0], timeout=60)[0]


def check_compacted_view(records, log: KeyedLog, absent_keys=frozenset()) -> dict:
    """The invariants of a compacted log, read from the beginning:
    offsets strictly increase; every record is the one produced at that offset; every live
    key is present and its last record is the latest value produced for it (at that offset);
    `absent_keys` do not appear at all. Returns key -> last value read."""
    offsets = [r.offset for r in records]
    assert offsets == sorted(set(offsets)), "offsets do not strictly increase"
    for r in records:
        want = log.by_offset.get(r.offset)
        assert want is not None, f"offset {r.offset} was never produced"
        assert (r.key, r.value) == want, \
            f"offset {r.offset}: read {(r.key, r.value)}, produced {want}"
    last_seen: dict = {}
    last_off: dict = {}
    for r in records:
        last_seen[r.key] = r.value
        last_off[r.key] = r.offset
    latest = log.latest()
    latest_off = {}
    for off in sorted(log.by_offset):
        latest_off[log.by_offset[off][0]] = off
    for k, v in latest.items():
        if k in absent_keys:
            assert k not in last_seen, \
                f"key {k!r}: deleted (tombstone) but still in the log at offset {last_off[k]}"
            continue
        assert k in last_seen, f"key {k!r} vanished from the compacted log"
        assert last_seen[k] == v and last_off[k] == latest_off[k], \
            (f"key {k!r}: last record read is {last_seen[k]!r} at {last_off[k]}, "
             f"latest produced is {v!r} at {latest_off[k]}")
    return last_seen


@pytest.mark.timeout_s(300)
def test_compaction_keeps_latest_per_key_and_drops_tombstones(broker):
    b = broker({"log.cleaner.backoff.ms": 300})
    topic = "compacted"
    create_topic(b.bootstrap, topic, 1, {"cleanup.policy": "compact", "segment.bytes": 2048,
                                         "delete.retention.ms": 500,
                                         "min.cleanable.dirty.ratio": 0.01})
    keys = [f"key-{i:02d}".encode() for i in range(50)]
    log = KeyedLog(b.bootstrap, topic)
    rounds = 40
    for rnd in range(rounds):
        log.produce([(k, f"{k.decode()}-round-{rnd:02d}-".encode() + b"x" * 8) for k in keys])
    produced = rounds * len(keys)
    assert log.end() == produced
    d = b.partition_dir(topic, 0)
    # (the cleaner may already be at work: only a lower bound of what was written)
    payload = sum(len(k) + len(v) for k, v in log.by_offset.values())

    # the cleaner shrinks the log to (about) one record per key plus the active segment, in
    # records read and in bytes on disk (it works pass by pass: both are waited for)
    def compacted():
        recs = read_log(b.bootstrap, topic)
        return recs if len(recs) <= produced // 4 and log_bytes(d) < payload // 4 else None
    recs = wait_until(compacted, 90, f"{produced} records ({len(keys)} keys, {payload} bytes of "
                      f"keys+values) were never compacted below {produced // 4} records and "
                      f"{payload // 4} bytes on disk", interval=1.0)
    check_compacted_view(recs, log)
    assert offsets_of(b.bootstrap, topic, [0])[1] == {0: produced}, "the log end moved"
    assert segment_count(d) >= 1

    # new writes go on at the next offset
    log.produce([(keys[0], b"after-compaction")])
    assert log.end() == produced + 1

    # tombstones: delete 10 keys; keep writing the others so segments roll and get cleaned.
    # After delete.retention.ms both the old values and the tombstones go.
    deleted = set(keys[:10])
    log.produce([(k, None) for k in sorted(deleted)])
    rnd = rounds

    def tombstones_gone():
        nonlocal rnd
        recs = read_log(b.bootstrap, topic)
        if any(r.key in deleted for r in recs):
            log.produce([(k, f"{k.decode()}-round-{rnd:02d}-".encode() + b"y" * 8)
                         for k in keys[10:]])
            rnd += 1
            return None
        return recs
    recs = wait_until(tombstones_gone, 120, "tombstoned keys (and their tombstones) are still in "
                      "the log after delete.retention.ms=500 and many cleaner passes",
                      interval=0.5)
    check_compacted_view(recs, log, absent_keys=deleted)

    # the compacted log survives a restart unchanged
    b.restart()
    after = read_log(b.bootstrap, topic)
    assert len(after) <= len(recs) + 2 * len(keys)
    check_compacted_view(after, log, absent_keys=deleted)


@pytest.mark.timeout_s(300)
def test_compaction_with_compressed_batches_is_correct(broker):
    """The same invariants with lz4 batches. (This broker keeps compressed batches verbatim —
    a documented limit — so only correctness is checked here; the plain topic in the same
    broker shows that cleaner passes did run.)"""
    b = broker({"log.cleaner.backoff.ms": 300})
    cfg = {"cleanup.policy": "compact", "segment.bytes": 2048, "delete.retention.ms": 500,
           "min.cleanable.dirty.ratio": 0.01}
    create_topic(b.bootstrap, "cz-lz4", 1, cfg)
    create_topic(b.bootstrap, "cz-plain", 1, cfg)
    keys = [f"ck-{i:02d}".encode() for i in range(30)]
    zlog = KeyedLog(b.bootstrap, "cz-lz4", **{"compression.type": "lz4"})
    # every third round goes to the lz4 topic uncompressed: compressed and plain batches mix
    zplain = KeyedLog(b.bootstrap, "cz-lz4")
    zplain.by_offset = zlog.by_offset
    plog = KeyedLog(b.bootstrap, "cz-plain")
    for rnd in range(30):
        items = [(k, f"{k.decode()}-r{rnd:02d}-".encode() + b"z" * 8) for k in keys]
        (zplain if rnd % 3 == 0 else zlog).produce(items)
        plog.produce(items)
    produced = 30 * len(keys)
    wait_until(lambda: len(read_log(b.bootstrap, "cz-plain")) <= produced // 4, 90,
               "the uncompressed topic was never compacted", interval=1.0)
    time.sleep(1.0)   # a few more cleaner passes (backoff 300 ms) over the lz4 topic
    check_compacted_view(read_log(b.bootstrap, "cz-lz4"), zlog)
    check_compacted_view(read_log(b.bootstrap, "cz-plain"), plog)
    b.restart()
    check_compacted_view(read_log(b.bootstrap, "cz-lz4"), zlog)


# --- __consumer_offsets ------------------------------------------------------------------------


def committed(a, group: str, tps) -> dict:
    req = [ConsumerGroupTopicPartitions(group, [CKTopicPartition(t, p) for t, p in tps])]
    res = a.list_consumer_group_offsets(req, request_timeout=15)[group].result(timeout=30)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, tp
        out[(tp.topic, tp.partition)] = tp.offset
    return out


@pytest.mark.timeout_s(400)
def test_consumer_offsets_topic_is_compacted(broker):
    seg = 16384
    b = broker({"offsets.topic.num.partitions": 1, "offsets.topic.segment.bytes": seg,
                "log.cleaner.backoff.ms": 300, "group.initial.rebalance.delay.ms": 0})
    topic, group = "tracked", "g-many-commits"
    create_topic(b.bootstrap, topic, 3)
    tps = [(topic, p) for p in range(3)]
    d = b.partition_dir("__consumer_offsets", 0)
    bound = 10 * seg

    def commit_many(first: int, n: int) -> int:
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                      "enable.auto.commit": False, "logger": RDKAFKA_LOGGER})
        try:
            for i in range(first, first + n):
                res = c.commit(offsets=[CKTopicPartition(t, p, i * 10 + p) for t, p in tps],
                               asynchronous=False)
                assert all(tp.error is None for tp in res), res
        finally:
            c.close()
        return first + n - 1

    def want(last: int) -> dict:
        return {(t, p): last * 10 + p for t, p in tps}

    last = commit_many(1, 3000)
    # every commit appended records (the cleaner may already have removed old ones)
    written = offsets_of(b.bootstrap, "__consumer_offsets", [0])[1][0]
    assert written >= 3000 * len(tps), f"__consumer_offsets-0 ends at offset {written}"
    grown = log_bytes(d)
    a = admin(b.bootstrap)
    assert committed(a, group, tps) == want(last)

    def bounded():
        size = log_bytes(d)
        return size < bound and committed(a, group, tps) == want(last) and size
    wait_until(bounded, 90, f"__consumer_offsets-0 never shrank below {bound} bytes "
               f"({grown} right after {written} records were written; committed offsets must "
               f"stay {want(last)})", interval=1.0)

    # a clean restart loads the latest offsets from the compacted log
    assert b.stop() == 0
    b.start()
    a = admin(b.bootstrap)
    assert committed(a, group, tps) == want(last), "committed offsets after a clean restart"
    assert log_bytes(d) < bound

    # more commits, then kill -9: still the latest ones, still bounded after cleaning
    last = commit_many(last + 1, 1500)
    assert committed(a, group, tps) == want(last)
    b.kill9()
    b.start()
    a = admin(b.bootstrap)
    assert committed(a, group, tps) == want(last), "committed offsets after kill -9 + restart"
    wait_until(bounded, 90, f"__consumer_offsets-0 not below {bound} bytes after the restart",
               interval=1.0)
    # a consumer of the group starts at the committed offsets
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group, "enable.auto.commit": False,
                  "logger": RDKAFKA_LOGGER})
    try:
        got = c.committed([CKTopicPartition(t, p) for t, p in tps], timeout=30)
        assert {(tp.topic, tp.partition): tp.offset for tp in got} == want(last)
    finally:
        c.close()


@pytest.mark.timeout_s(300)
def test_dirty_ratio_and_compaction_lags_decide_when_the_cleaner_runs(broker):
    """Three compacted topics get the same rewrites of the same keys, with the cleaner
    passing every 300 ms: `ratio-only` (min.cleanable.dirty.ratio=1.0: no log is ever that
    dirty) stays whole; `max-lag` (the same ratio, max.compaction.lag.ms=2000) is compacted
    once its records are two seconds old; `young` (ratio 0.01, min.compaction.lag.ms one
    hour) stays whole until IncrementalAlterConfigs drops the lag, then is compacted."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    from kclients import admin_error_code
    b = broker({"log.cleaner.backoff.ms": 300})
    a = admin(b.bootstrap)
    base = {"cleanup.policy": "compact", "segment.bytes": 2048}
    topics = {
        "ratio-only": {"min.cleanable.dirty.ratio": "1.0"},
        "max-lag": {"min.cleanable.dirty.ratio": "1.0", "max.compaction.lag.ms": "2000"},
        "young": {"min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "3600000"},
    }
    keys = [f"key-{i:02d}".encode() for i in range(20)]
    logs = {}
    for topic, cfg in topics.items():
        create_topic(a, topic, 1, {**base, **cfg})
        logs[topic] = KeyedLog(b.bootstrap, topic)
        for rnd in range(20):
            logs[topic].produce([(k, f"{topic}-{rnd:02d}-".encode() + b"x" * 16) for k in keys])
    produced = 20 * len(keys)

    def compacted(topic):
        recs = read_log(b.bootstrap, topic)
        return recs if len(recs) <= produced // 2 else None
    recs = wait_until(lambda: compacted("max-lag"), 90,
                      "max.compaction.lag.ms=2000 never made the cleaner compact the topic",
                      interval=1.0)
    check_compacted_view(recs, logs["max-lag"])
    # By now the cleaner has looked at the other two many times.
    for topic in ("ratio-only", "young"):
        recs = read_log(b.bootstrap, topic)
        assert len(recs) == produced, f"{topic}: compacted although its config forbids it"
        check_compacted_view(recs, logs[topic])

    res = ConfigResource(ResourceType.TOPIC, "young", incremental_configs=[
        ConfigEntry("min.compaction.lag.ms", "0", incremental_operation=AlterConfigOpType.SET)])
    assert admin_error_code(a.incremental_alter_configs([res], request_timeout=20)[res]) is None
    recs = wait_until(lambda: compacted("young"), 90,
                      "young was not compacted after min.compaction.lag.ms was set to 0",
                      interval=1.0)
    check_compacted_view(recs, logs["young"])
    assert len(read_log(b.bootstrap, "ratio-only")) == produced
