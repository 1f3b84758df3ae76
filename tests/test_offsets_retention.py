"""ListOffsets (earliest / latest / by timestamp), segment layout and retention."""

from __future__ import annotations

import re
import struct
import time
from pathlib import Path

import pytest
from kafka import TopicPartition

from kclients import (Deliveries, consume, create_topic, kp_consumer, offsets_of, producer,
                      produce_all, wait_until)

SEGMENT_NAME = re.compile(r"^(\d{20})\.log$")


def segment_bases(partition_dir: Path) -> list[int]:
    """Base offsets of the live segments (<20 digits>.log) in a partition dir."""
    bases = []
    for f in partition_dir.iterdir():
        m = SEGMENT_NAME.match(f.name)
        if m:
            bases.append(int(m.group(1)))
    return sorted(bases)


def segment_data_bytes(path: Path) -> int:
    """Bytes of complete record batches at the start of a .log file (a preallocated,
    zero-filled tail is not data): batches are int64 base offset, int32 length, body."""
    data = path.read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        if length <= 0 or pos + 12 + length > len(data):
            break
        pos += 12 + length
    return pos


def now_ms() -> int:
    return int(time.time() * 1000)


# --- ListOffsets ------------------------------------------------------------------------


def test_offsets_for_times(broker):
    b = broker()
    topic = "stamped"
    create_topic(b.bootstrap, topic, 1)
    t0 = now_ms() - 200_000
    n = 100

    def rec(i):
        return (0, f"k{i}".encode(), f"value-{i}".encode(), None, t0 + i * 1000)

    # first half: one record per batch; second half: one big batch
    dr = Deliveries()
    p = producer(b.bootstrap, **{"linger.ms": 0})
    for i in range(n // 2):
        produce_all(p, topic, [rec(i)], dr, flush_timeout=30)
    p = producer(b.bootstrap, **{"linger.ms": 1000, "batch.num.messages": 10000})
    produce_all(p, topic, [rec(i) for i in range(n // 2, n)], dr, flush_timeout=30)
    assert dr.errors == [] and dr.offsets.get((topic, 0)) == list(range(n)), dr.errors

    tp = TopicPartition(topic, 0)
    c = kp_consumer(b.bootstrap)
    try:
        c.assign([tp])
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: n}

        cases = {
            t0 - 5000: 0,
            t0: 0,
            t0 + 1: 1,
            t0 + 25_500: 26,
            t0 + 49_000: 49,
            t0 + 49_001: 50,
            t0 + 75_000: 75,
            t0 + 75_999: 76,
            t0 + 99_000: 99,
        }
        for query, want in cases.items():
            res = c.offsets_for_times({tp: query})[tp]
            assert res is not None, f"offsets_for_times(t0+{query - t0}) returned None, want offset {want}"
            assert res.offset == want, f"offsets_for_times(t0+{query - t0}) = {res.offset}, want {want}"
            assert res.timestamp == t0 + want * 1000, \
                f"offsets_for_times(t0+{query - t0}) timestamp {res.timestamp}, want t0+{want * 1000}"
        res = c.offsets_for_times({tp: t0 + 99_001})[tp]
        assert res is None, f"query after the last timestamp returned {res}, want None (offset -1)"

        # seek to the looked-up offset and re-read
        start = c.offsets_for_times({tp: t0 + 25_500})[tp].offset
    finally:
        c.close(autocommit=False)
    got = consume(b.bootstrap, topic, [0], start={0: start}, timeout=60)[0]
    assert [r.offset for r in got] == list(range(start, n))
    assert [r.value for r in got] == [f"value-{i}".encode() for i in range(start, n)]
    assert [r.key for r in got] == [f"k{i}".encode() for i in range(start, n)]
    assert [r.timestamp for r in got] == [t0 + i * 1000 for i in range(start, n)]
    # a fetch starting in the middle of a multi-record batch returns from that offset on
    got = consume(b.bootstrap, topic, [0], start={0: 75}, timeout=60)[0]
    assert [r.offset for r in got] == list(range(75, n))
    assert [r.value for r in got] == [f"value-{i}".encode() for i in range(75, n)]

    # still correct after a restart (offsets and time indexes rebuilt/reloaded from disk)
    b.restart()
    c = kp_consumer(b.bootstrap)
    try:
        c.assign([tp])
        assert c.end_offsets([tp]) == {tp: n}
        assert c.offsets_for_times({tp: t0 + 75_999})[tp].offset == 76
        assert c.offsets_for_times({tp: t0 + 10_000})[tp].offset == 10
    finally:
        c.close(autocommit=False)


def test_segments_roll_and_survive_restart(broker):
    b = broker()
    topic = "rolled"
    create_topic(b.bootstrap, topic, 1, {"segment.bytes": 4096})
    dr = Deliveries()
    p = producer(b.bootstrap, **{"linger.ms": 0, "batch.size": 1000})
    values = [bytes([i % 251]) * 500 for i in range(120)]
    produce_all(p, topic, [(0, None, v, None, None) for v in values], dr, flush_timeout=60)
    assert dr.errors == [] and dr.offsets.get((topic, 0)) == list(range(120)), dr.errors

    d = b.partition_dir(topic, 0)
    bases = segment_bases(d)
    assert bases[0] == 0, f"first segment is not 00000000000000000000.log: {bases}"
    assert len(bases) >= 5, f"segment.bytes=4096 with 60 KB produced gave only {len(bases)} segments"
    assert all(0 <= x < 120 for x in bases), bases
    for f in d.iterdir():
        if f.name.endswith(".log"):
            assert f.stat().st_size <= 4096 + 1100, f"{f.name} is {f.stat().st_size} bytes > segment.bytes"

    b.restart()
    assert segment_bases(d) == bases
    got = consume(b.bootstrap, topic, [0], timeout=60)[0]
    assert [r.value for r in got] == values
    assert [r.offset for r in got] == list(range(120))


def test_segment_ms_rolls_by_time(broker):
    b = broker()
    topic = "timed-roll"
    create_topic(b.bootstrap, topic, 1, {"segment.ms": 1000})
    p = producer(b.bootstrap, **{"linger.ms": 0})
    dr = Deliveries()
    produce_all(p, topic, [(0, None, b"first", None, None)], dr)
    time.sleep(2.5)
    produce_all(p, topic, [(0, None, b"second", None, None)], dr)
    assert dr.errors == [] and dr.offsets.get((topic, 0)) == [0, 1], dr.errors
    bases = wait_until(lambda: segment_bases(b.partition_dir(topic, 0)) if
                       len(segment_bases(b.partition_dir(topic, 0))) >= 2 else None, 10,
                       "segment.ms=1000 did not roll a new segment for a record appended 2.5 s later")
    assert bases == [0, 1], bases


# --- retention ----------------------------------------------------------------------------


@pytest.mark.timeout_s(180)
def test_time_retention_expires_everything(broker):
    """When every record is older than retention.ms, Kafka rolls a new empty active segment,
    deletes all the others and moves the log start offset to the log end; offsets go on."""
    b = broker({"log.retention.check.interval.ms": 300})
    topic = "expiring"
    create_topic(b.bootstrap, topic, 1, {"segment.bytes": 4096, "retention.ms": 2000})
    n = 60
    dr = Deliveries()
    p = producer(b.bootstrap, **{"linger.ms": 0, "batch.size": 1000})
    produce_all(p, topic, [(0, None, f"r{i}-".encode() + b"z" * 500, None, None) for i in range(n)],
                dr, flush_timeout=60)
    assert dr.errors == [] and dr.offsets.get((topic, 0)) == list(range(n)), dr.errors
    assert len(segment_bases(b.partition_dir(topic, 0))) > 1

    wait_until(lambda: offsets_of(b.bootstrap, topic, [0]) == ({0: n}, {0: n}), 30,
               f"after retention.ms=2000 expired everything, want log start == log end == {n}",
               interval=0.5)
    d = b.partition_dir(topic, 0)
    wait_until(lambda: segment_bases(d) == [n], 30,
               f"want only the new empty active segment {n:020d}.log in {d}")

    produce_all(p, topic, [(0, None, b"fresh", None, None)], dr, flush_timeout=30)
    assert dr.offsets[(topic, 0)][-1] == n, f"next offset {dr.offsets[(topic, 0)][-1]}, want {n}"
    got = consume(b.bootstrap, topic, [0], timeout=30)[0]
    assert [(r.offset, r.value) for r in got] == [(n, b"fresh")]


@pytest.mark.timeout_s(180)
def test_time_retention_deletes_old_segments(broker):
    b = broker({"log.retention.check.interval.ms": 300})
    topic = "aging"
    # Kafka's time retention compares the largest record timestamp in a segment with now.
    # Old records carry timestamps an hour old; the newest ones are current, so they are
    # retained for retention.ms (60 s), far longer than this test polls.
    create_topic(b.bootstrap, topic, 1, {"segment.bytes": 4096, "retention.ms": 60000})
    old_ts = now_ms() - 3600_000
    n_old, n_new = 300, 20
    dr = Deliveries()
    p = producer(b.bootstrap, **{"linger.ms": 0, "batch.size": 1000})
    old = [(0, None, f"old-{i}-".encode() + b"o" * 500, None, old_ts + i) for i in range(n_old)]
    produce_all(p, topic, old, dr, flush_timeout=60)
    new = [(0, None, f"new-{i}-".encode() + b"n" * 500, None, None) for i in range(n_new)]
    produce_all(p, topic, new, dr, flush_timeout=60)
    total = n_old + n_new
    assert dr.errors == [] and dr.offsets.get((topic, 0)) == list(range(total)), dr.errors

    d = b.partition_dir(topic, 0)
    # Deletion stops at the first segment holding an unexpired record: the one that contains
    # offset n_old (the first new record). Segments never change once rolled, so that
    # segment's base offset is where the log must end up starting.
    expected = max(x for x in segment_bases(d) if x <= n_old)
    assert expected > 0, f"all {n_old} old records ended up in the first segment: {segment_bases(d)}"

    def state():
        return offsets_of(b.bootstrap, topic, [0])[0][0], segment_bases(d)[0]

    wait_until(lambda: state() == (expected, expected), 30,
               f"want log start offset == first live segment == {expected} "
               f"(segments of expired records deleted, the rest kept)", interval=0.5)
    b_off, e_off = offsets_of(b.bootstrap, topic, [0])
    assert e_off[0] == total, f"end offset {e_off[0]} != {total}"
    got = consume(b.bootstrap, topic, [0], timeout=60)[0]
    assert got and got[0].offset == b_off[0]
    assert [r.offset for r in got] == list(range(b_off[0], total))
    assert [r.value for r in got[-n_new:]] == [v for _, _, v, _, _ in new], "latest records not readable"
    # no record that is still inside retention was deleted
    assert all(r.value.startswith(b"old-") for r in got[:-n_new])


@pytest.mark.timeout_s(180)
@pytest.mark.parametrize("level", ["topic", "broker"])
def test_size_retention_deletes_old_segments(broker, level):
    retention_bytes = 20000
    topic = "sized"
    if level == "topic":
        b = broker({"log.retention.check.interval.ms": 300})
        create_topic(b.bootstrap, topic, 1, {"segment.bytes": 4096, "retention.bytes": retention_bytes})
    else:  # broker-wide defaults apply to a topic created without overrides
        b = broker({"log.retention.check.interval.ms": 300, "log.segment.bytes": 4096,
                    "log.retention.bytes": retention_bytes})
        create_topic(b.bootstrap, topic, 1)
    n = 400
    values = [f"rec-{i}-".encode() + bytes([i % 256]) * 500 for i in range(n)]
    dr = Deliveries()
    p = producer(b.bootstrap, **{"linger.ms": 0, "batch.size": 1000})
    produce_all(p, topic, [(0, None, v, None, None) for v in values], dr, flush_timeout=60)
    assert dr.errors == [] and dr.offsets.get((topic, 0)) == list(range(n)), dr.errors

    d = b.partition_dir(topic, 0)
    # Kafka deletes the oldest segments while what remains stays >= retention.bytes, so
    # the end state is: live bytes >= retention.bytes, and dropping the oldest live
    # segment would go below it. Rolled segments are immutable, which makes this stable.
    def sizes():
        return [segment_data_bytes(d / f"{x:020d}.log") for x in segment_bases(d)]

    def settled():
        sz = sizes()
        return len(sz) > 1 and sum(sz) - sz[0] < retention_bytes

    wait_until(settled, 30, f"oldest segments never deleted down to retention.bytes={retention_bytes}",
               interval=0.5)
    sz = sizes()
    assert sum(sz) >= retention_bytes, f"retention deleted too much: {sum(sz)} bytes left {sz}"
    assert sum(sz) <= retention_bytes + 4096 + 1100, f"{sum(sz)} bytes left {sz}"

    def start_offsets():
        b_off, e_off = offsets_of(b.bootstrap, topic, [0])
        return b_off[0], segment_bases(d)[0], e_off[0]

    start, first_base, end = wait_until(
        lambda: (lambda t: t if t[0] == t[1] else None)(start_offsets()), 20,
        "log start offset never matched the first live segment", interval=0.5)
    assert end == n, f"end offset {end} != {n}"
    assert start > 0, "log start offset still 0 after size-based deletion"
    b_off = {0: start}
    got = consume(b.bootstrap, topic, [0], timeout=60)[0]
    assert [r.offset for r in got] == list(range(b_off[0], n))
    assert [r.value for r in got] == values[b_off[0]:]

    # reading below the log start offset is out of range; kafka-python resets to earliest
    c = kp_consumer(b.bootstrap, auto_offset_reset="earliest")
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 0)
        recs = []
        deadline = time.monotonic() + 30
        while not recs and time.monotonic() < deadline:
            recs = c.poll(timeout_ms=500).get(tp, [])
        assert recs, "no records after an out-of-range seek with auto_offset_reset=earliest"
        assert recs[0].offset == b_off[0], f"reset to {recs[0].offset}, want log start {b_off[0]}"
    finally:
        c.close(autocommit=False)
