"""Bulk produce (confluent-kafka) / consume (kafka-python, kcat) round trips.

1,000,000 records in total over the parametrized cases below (950,000) and the
kcat case (50,000). Data is generated from seeded RNGs, so every run produces
the same records; each case checks every delivery report, then reads every
partition back and compares offsets, keys, values and headers byte for byte.
After a SIGTERM the broker must report sendfile_bytes= at least the number of
value bytes that were read back (consumer reads go through sendfile).
"""

from __future__ import annotations

import random
import subprocess
import threading
import time

import pytest

from conftest import free_port
from kclients import Deliveries, consume, create_topic, headers_of, producer, produce_all
from test_metrics import scrape

# (codec, partitions, records, P(key), P(headers))
CASES = [
    ("none", 4, 200_000, 0.5, 0.3),
    ("gzip", 3, 150_000, 0.0, 0.0),
    ("snappy", 3, 200_000, 1.0, 0.0),
    ("lz4", 3, 200_000, 0.0, 0.5),
    ("zstd", 4, 200_000, 0.3, 0.3),
]
KCAT_RECORDS = 50_000
assert sum(c[2] for c in CASES) + KCAT_RECORDS == 1_000_000


def gen_records(seed: int, n: int, partitions: int, p_key: float, p_headers: float):
    """Deterministic records: (partition, key, value, headers, None)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        part = rng.randrange(partitions)
        key = None
        if rng.random() < p_key:
            key = rng.randbytes(rng.randint(0, 24)) if rng.random() < 0.5 else f"key-{i % 997}".encode()
        value = rng.randbytes(rng.randint(10, 200))
        headers = None
        if rng.random() < p_headers:
            headers = [(f"h{j}", rng.randbytes(rng.randint(0, 16))) for j in range(rng.randint(1, 3))]
        out.append((part, key, value, headers, None))
    return out


def expected_by_partition(records, partitions):
    exp = {p: [] for p in range(partitions)}
    for part, key, value, headers, _ in records:
        exp[part].append((key, value, headers or []))
    return exp


def check_partition(topic, part, got, want):
    assert len(got) == len(want), \
        f"{topic}[{part}]: consumed {len(got)} records, produced {len(want)}"
    for i, (rec, (key, value, headers)) in enumerate(zip(got, want)):
        if rec.offset != i:
            pytest.fail(f"{topic}[{part}]: record #{i} has offset {rec.offset} (offsets must be 0..n-1)")
        if rec.key != key or rec.value != value or headers_of(rec) != headers:
            pytest.fail(
                f"{topic}[{part}] offset {i}: mismatch\n"
                f"  key     got {rec.key!r:.80} want {key!r:.80}\n"
                f"  value   got {rec.value!r:.80} want {value!r:.80}\n"
                f"  headers got {headers_of(rec)!r:.120} want {headers!r:.120}")


@pytest.mark.timeout_s(300)
@pytest.mark.parametrize("codec,partitions,n,p_key,p_headers", CASES, ids=[c[0] for c in CASES])
def test_bulk_roundtrip(broker, codec, partitions, n, p_key, p_headers):
    b = broker()
    topic = f"bulk-{codec}"
    create_topic(b.bootstrap, topic, partitions)

    seed = 1000 + [c[0] for c in CASES].index(codec)
    records = gen_records(seed, n, partitions, p_key, p_headers)
    want = expected_by_partition(records, partitions)

    p = producer(b.bootstrap, **{"compression.type": codec, "linger.ms": 5, "acks": "all"})
    dr = Deliveries()
    produce_all(p, topic, records, dr)
    del records
    assert dr.errors == [], f"{len(dr.errors)} delivery errors, first: {dr.errors[:5]}"
    assert dr.count == n
    for part in range(partitions):
        offs = dr.offsets.get((topic, part), [])
        assert offs == list(range(len(want[part]))), \
            f"{topic}[{part}]: delivery-report offsets not 0..{len(want[part]) - 1} in order " \
            f"(first bad at #{next((i for i, o in enumerate(offs) if o != i), len(offs))})"

    got = consume(b.bootstrap, topic, range(partitions), timeout=150)
    value_bytes = 0
    for part in range(partitions):
        check_partition(topic, part, got[part], want[part])
        value_bytes += sum(len(r.value) for r in got[part])
    del got

    rc = b.stop()
    assert rc == 0, f"broker exit code after SIGTERM: {rc}"
    sent = b.sendfile_bytes()
    assert sent > value_bytes, \
        f"sendfile_bytes={sent} but consumers read {value_bytes} value bytes: fetches not served by sendfile?"


@pytest.mark.timeout_s(240)
def test_kcat_consume(broker, kcat_bin, tmp_path):
    b = broker()
    topic = "kcat-text"
    partitions = 3
    create_topic(b.bootstrap, topic, partitions)

    rng = random.Random(4242)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.:,;!?"
    records = []
    for i in range(KCAT_RECORDS):
        key = f"k{i}".encode() if rng.random() < 0.5 else None
        value = "".join(rng.choices(alphabet, k=rng.randint(10, 120))).encode()
        records.append((rng.randrange(partitions), key, value, None, None))
    want = expected_by_partition(records, partitions)

    p = producer(b.bootstrap)
    dr = Deliveries()
    produce_all(p, topic, records, dr)
    assert dr.errors == [] and dr.count == KCAT_RECORDS, dr.errors[:5]

    out = tmp_path / "kcat.out"
    err = tmp_path / "kcat.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        r = subprocess.run(
            [kcat_bin, "-C", "-b", b.bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
             "-f", "%p\t%o\t%k\t%S\t%s\n"],
            stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, timeout=180)
    assert r.returncode == 0, f"kcat exit {r.returncode}: {err.read_text()[-2000:]}"

    got = {part: [] for part in range(partitions)}
    for line in out.read_bytes().split(b"\n"):
        if not line:
            continue
        part, off, key, size, value = line.split(b"\t", 4)
        got[int(part)].append((int(off), key, int(size), value))
    total = 0
    for part in range(partitions):
        g, w = got[part], want[part]
        assert len(g) == len(w), f"kcat read {len(g)} records from partition {part}, produced {len(w)}"
        for i, ((off, key, size, value), (wkey, wvalue, _)) in enumerate(zip(g, w)):
            assert off == i, f"partition {part}: record #{i} at offset {off}"
            assert key == (wkey or b""), f"partition {part} offset {i}: key {key!r} != {wkey!r}"
            assert size == len(wvalue) and value == wvalue, \
                f"partition {part} offset {i}: value {value!r} != {wvalue!r}"
            total += len(wvalue)

    rc = b.stop()
    assert rc == 0, f"broker exit code after SIGTERM: {rc}"
    sent = b.sendfile_bytes()
    assert sent > total, f"sendfile_bytes={sent} but kcat read {total} value bytes"


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks_modes(broker, acks):
    b = broker()
    topic = f"acks-{acks}"
    create_topic(b.bootstrap, topic, 2)
    p = producer(b.bootstrap, acks=acks, **{"linger.ms": 2})
    dr = Deliveries()
    records = [(i % 2, None, f"{acks}-{i}".encode(), None, None) for i in range(2000)]
    produce_all(p, topic, records, dr)
    assert dr.errors == [] and dr.count == 2000, dr.errors[:5]
    if acks != "0":  # with acks=0 the client never learns offsets
        for part in range(2):
            assert dr.offsets.get((topic, part)) == list(range(1000)), f"partition {part} offsets"
    got = consume(b.bootstrap, topic, range(2), timeout=60)
    for part in range(2):
        want = [v for pp, _, v, _, _ in records if pp == part]
        assert [r.value for r in got[part]] == want, f"acks={acks}: partition {part} content differs"
        assert [r.offset for r in got[part]] == list(range(1000))


def test_edge_case_records(broker):
    b = broker()
    topic = "edges"
    create_topic(b.bootstrap, topic, 1)
    ts = 1_700_000_000_123
    big = random.Random(7).randbytes(900_000)
    records = [
        (0, b"tombstone-key", None, None, ts),              # null value
        (0, b"", b"", None, ts + 1),                        # empty key and value
        (0, None, b"v", [("dup", b"1"), ("dup", b"2")], ts + 2),  # repeated header key
        (0, None, b"v", [("nullhdr", None)], ts + 3),       # null header value
        (0, None, b"v", [("\u00fcnicode-\u2603", b"\x00\xff")], ts + 4),
        (0, b"big", big, None, ts + 5),                     # ~900 KB value
        (0, None, b"after-big", None, ts + 6),
    ]
    p = producer(b.bootstrap, **{"linger.ms": 0})
    dr = Deliveries()
    for rec in records:  # one record per request
        produce_all(p, topic, [rec], dr, flush_timeout=30)
    assert dr.errors == [] and dr.offsets.get((topic, 0)) == list(range(len(records))), dr.errors

    got = consume(b.bootstrap, topic, [0], timeout=60)[0]
    assert len(got) == len(records)
    for i, (r, (_, key, value, headers, t)) in enumerate(zip(got, records)):
        assert r.offset == i
        assert r.key == key, f"offset {i}: key {r.key!r:.60} != {key!r:.60}"
        assert r.value == value, f"offset {i}: value {r.value!r:.60} != {value!r:.60}"
        assert headers_of(r) == (headers or []), f"offset {i}: headers {headers_of(r)} != {headers}"
        assert r.timestamp == t, f"offset {i}: timestamp {r.timestamp} != {t}"


def test_message_too_large(broker):
    from confluent_kafka import KafkaError

    b = broker({"message.max.bytes": 10000})
    create_topic(b.bootstrap, "dflt", 1)
    create_topic(b.bootstrap, "small", 1, {"max.message.bytes": 5000})
    p = producer(b.bootstrap, **{"linger.ms": 0, "message.max.bytes": 1000000, "retries": 0})

    def send(topic, size):
        errs = []
        p.produce(topic, b"x" * size, partition=0, on_delivery=lambda err, msg: errs.append(err))
        assert p.flush(30) == 0
        return errs[0]

    assert send("dflt", 8000) is None
    err = send("dflt", 20000)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, \
        f"20000-byte record with message.max.bytes=10000: {err}"
    assert send("small", 3000) is None
    err = send("small", 8000)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, \
        f"8000-byte record with topic max.message.bytes=5000: {err}"
    # only the accepted records are in the logs
    assert [len(r.value) for r in consume(b.bootstrap, "dflt", [0], timeout=30)[0]] == [8000]
    assert [len(r.value) for r in consume(b.bootstrap, "small", [0], timeout=30)[0]] == [3000]


def test_consumer_at_end_gets_new_records(broker):
    from kafka import TopicPartition

    from kclients import kp_consumer

    b = broker()
    topic = "tail"
    create_topic(b.bootstrap, topic, 1)
    p = producer(b.bootstrap, **{"linger.ms": 0})
    dr = Deliveries()
    produce_all(p, topic, [(0, None, b"old", None, None)], dr)

    c = kp_consumer(b.bootstrap, fetch_max_wait_ms=2000)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_end(tp)
        assert c.position(tp) == 1
        assert c.poll(timeout_ms=1000).get(tp, []) == [], "records returned past the end"
        produce_all(p, topic, [(0, None, f"new-{i}".encode(), None, None) for i in range(3)], dr)
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:
            got += c.poll(timeout_ms=500).get(tp, [])
        assert [(r.offset, r.value) for r in got] == [(1, b"new-0"), (2, b"new-1"), (3, b"new-2")]
    finally:
        c.close(autocommit=False)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kafka_python_producer_kcat_consumer(broker, kcat_bin, tmp_path, codec):
    """The other direction: kafka-python builds the batches, librdkafka (kcat) reads them."""
    from kafka import KafkaProducer

    b = broker()
    topic = f"kp-{codec}"
    create_topic(b.bootstrap, topic, 2)
    rng = random.Random(99)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    records = [(i % 2, f"key{i}".encode() if i % 3 else None,
                "".join(rng.choices(alphabet, k=rng.randint(1, 80))).encode()) for i in range(20000)]
    # no idempotence: the broker has no InitProducerId yet
    kp = KafkaProducer(bootstrap_servers=b.bootstrap, acks="all", linger_ms=5,
                       enable_idempotence=False, client_id="kbroker-tests",
                       compression_type=None if codec == "none" else codec)
    try:
        futures = [kp.send(topic, value=v, key=k, partition=part) for part, k, v in records]
        kp.flush(60)
        metas = [f.get(timeout=60) for f in futures]
    finally:
        kp.close(timeout=10)
    per_part = {0: 0, 1: 0}
    for (part, _, _), md in zip(records, metas):
        assert (md.partition, md.offset) == (part, per_part[part]), f"unexpected offset {md}"
        per_part[part] += 1

    out = tmp_path / "kcat.out"
    with open(out, "wb") as fo:
        r = subprocess.run([kcat_bin, "-C", "-b", b.bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
                            "-f", "%p %o %k %s\n"], stdin=subprocess.DEVNULL, stdout=fo,
                           stderr=subprocess.PIPE, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = {0: [], 1: []}
    for line in out.read_bytes().splitlines():
        part, off, key, value = line.split(b" ")
        got[int(part)].append((int(off), key, value))
    for part in range(2):
        want = [(k or b"", v) for pp, k, v in records if pp == part]
        assert [o for o, _, _ in got[part]] == list(range(len(want))), f"partition {part} offsets"
        assert [(k, v) for _, k, v in got[part]] == want, f"partition {part} content differs"


def test_fetch_limits_smaller_than_a_record(broker):
    """KIP-74: a fetch returns at least one whole batch even if it exceeds the fetch limits."""
    b = broker()
    topic = "big-records"
    create_topic(b.bootstrap, topic, 1)
    values = [bytes([i]) * 50_000 for i in range(10)]
    p = producer(b.bootstrap, **{"linger.ms": 0})
    dr = Deliveries()
    produce_all(p, topic, [(0, None, v, None, None) for v in values], dr)
    assert dr.errors == [], dr.errors
    from kclients import kp_consumer
    c = kp_consumer(b.bootstrap, max_partition_fetch_bytes=1024, fetch_max_bytes=1024)
    got = consume(b.bootstrap, topic, [0], timeout=60, consumer=c)[0]
    c.close(autocommit=False)
    assert [r.value for r in got] == values


def kcat_offsets_keys_sizes(kcat_bin, bootstrap, topic, partitions):
    """The whole topic read by kcat (old librdkafka, default fetch sizes):
    {partition: [(offset, key, value size), ...]} in the order received."""
    r = subprocess.run([kcat_bin, "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e",
                        "-q", "-f", "%p\t%o\t%k\t%S\n"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    seen = {part: [] for part in range(partitions)}
    for line in r.stdout.split(b"\n"):
        if line:
            part, off, key, size = line.split(b"\t")
            seen[int(part)].append((int(off), key, int(size)))
    return seen


def test_reads_across_rolled_segments_while_producing(broker, kcat_bin, tmp_path):
    """Fetches in rolled segments read their batch headers after the partition's lock is
    released (while producers append to the same partition): every record comes back once,
    in order, through small bounded fetches (kafka-python) and default ones (kcat)."""
    b = broker({"log.segment.bytes": 32768, "log.index.interval.bytes": 1024})
    topic = "rolled-reads"
    partitions = 2
    create_topic(b.bootstrap, topic, partitions)
    rng = random.Random(777)

    def batch_of(n, tag):
        return [(i % partitions, f"{tag}{i}".encode(), bytes([65 + i % 26]) * rng.randint(50, 400),
                 None, None) for i in range(n)]

    first = batch_of(6000, "a")
    p = producer(b.bootstrap, **{"linger.ms": 2, "batch.size": 4096})
    dr = Deliveries()
    produce_all(p, topic, first, dr)
    assert dr.errors == [] and dr.count == len(first), dr.errors[:3]
    for part in range(partitions):
        logs = list((b.log_dir / f"{topic}-{part}").glob("*.log"))
        assert len(logs) > 5, f"partition {part} has {len(logs)} segments"

    # More appends to the same partitions while the first records are read back.
    second = batch_of(3000, "b")
    dr2 = Deliveries()
    writer = threading.Thread(target=produce_all, args=(p, topic, second, dr2))
    writer.start()
    try:
        from kclients import kp_consumer
        c = kp_consumer(b.bootstrap, max_partition_fetch_bytes=3000, fetch_max_bytes=6000)
        end = {part: sum(1 for r in first if r[0] == part) for part in range(partitions)}
        got = consume(b.bootstrap, topic, list(range(partitions)), end=end, timeout=120,
                      consumer=c)
        c.close(autocommit=False)
    finally:
        writer.join(timeout=120)
    assert dr2.errors == [] and dr2.count == len(second), dr2.errors[:3]
    want = expected_by_partition(first, partitions)
    for part in range(partitions):
        assert [r.offset for r in got[part]] == list(range(end[part])), f"partition {part}"
        assert [(r.key, r.value) for r in got[part]] == [(k, v) for k, v, _ in want[part]]

    # Everything, with kcat (old librdkafka, default fetch sizes).
    want = expected_by_partition(first + second, partitions)
    seen = kcat_offsets_keys_sizes(kcat_bin, b.bootstrap, topic, partitions)
    for part in range(partitions):
        assert [(o, k) for o, k, _ in seen[part]] == [(i, k) for i, (k, _, _) in enumerate(want[part])], \
            f"partition {part}"


@pytest.mark.timeout_s(300)
def test_pages_dropped_behind_the_writer_read_back_after_kill9(broker, kcat_bin, tmp_path):
    """log.segment.drop.behind.bytes=0: each active segment's written pages are written back
    and dropped from the page cache as soon as the writer leaves their window (4 MiB
    windows here, so ~48 MB per partition crosses a dozen). Every record reads back in
    order from disk — with kafka-python, with kcat (old librdkafka), and after kill -9 and
    recovery — and the metrics show the pages were dropped."""
    port = free_port()
    b = broker({"log.segment.drop.behind.bytes": 0, "log.segment.map.window.bytes": 4 << 20,
                "metrics.port": port})
    topic = "dropped-behind"
    partitions = 2
    create_topic(b.bootstrap, topic, partitions)
    rng = random.Random(4242)
    records = [(i % partitions, f"k{i}".encode(), bytes([65 + i % 26]) * rng.randint(2000, 8000),
                None, None) for i in range(20_000)]
    p = producer(b.bootstrap, **{"linger.ms": 5, "batch.size": 262144})
    dr = Deliveries()
    produce_all(p, topic, records, dr)
    assert dr.errors == [] and dr.count == len(records), dr.errors[:3]
    m = scrape(port)
    written = sum(len(v) for _, _, v, _, _ in records)
    dropped = m["kbroker_segment_dropped_behind_bytes_total"]
    # Each partition writes ~50 MB; all but its last window (and alignment) is dropped.
    assert dropped >= written - partitions * (12 << 20), (dropped, written)

    want = expected_by_partition(records, partitions)

    def check(got, what):
        for part in range(partitions):
            assert [r.offset for r in got[part]] == list(range(len(want[part]))), f"{what}: partition {part}"
            assert [(r.key, r.value) for r in got[part]] == [(k, v) for k, v, _ in want[part]], \
                f"{what}: partition {part}"

    check(consume(b.bootstrap, topic, list(range(partitions)), timeout=120), "before the kill")
    seen = kcat_offsets_keys_sizes(kcat_bin, b.bootstrap, topic, partitions)
    for part in range(partitions):
        assert seen[part] == [(i, k, len(v)) for i, (k, v, _) in enumerate(want[part])], \
            f"kcat: partition {part}"

    b.kill9()
    b.start()
    check(consume(b.bootstrap, topic, list(range(partitions)), timeout=120), "after kill -9")
