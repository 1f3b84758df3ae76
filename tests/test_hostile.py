"""Hostile and invalid produce requests against the real binary.

Corrupt compressed batches of every codec are refused with CORRUPT_MESSAGE and never
reach the log; requests Kafka refuses (several batches for one partition, a base offset
other than 0, magic < 2 in Produce v3+, zstd before Produce v7, control batches, keyless
records on a compacted topic) get Kafka's error codes; the partition keeps serving and
every record acknowledged before and after reads back end to end with real clients.
"""

from __future__ import annotations

import os
import random
import subprocess

import pytest

import kbatch as kb
import kclients as kc


def good_records(tag: str, n: int) -> list[tuple[bytes, bytes]]:
    return [(f"{tag}-k{i}".encode(), f"{tag}-v{i}".encode() * (1 + i % 5)) for i in range(n)]


def kcat_values(bootstrap: str, topic: str) -> list[bytes]:
    out = subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", topic, "-p", "0", "-o", "beginning", "-e",
         "-f", "%s\\n", "-q"],
        check=True, capture_output=True, timeout=60).stdout
    return [v for v in out.split(b"\n") if v]


def test_corrupt_compressed_batches_are_refused_and_the_partition_stays_readable(broker):
    b = broker()
    kc.create_topic(b.bootstrap, "cc", 1)
    expected: list[bytes] = []
    rng = random.Random(7)
    for name, codec in kb.CODECS.items():
        recs = good_records(name, 20)
        # a valid batch of this codec is accepted, end to end
        err, base, _ = kb.produce(b.port, "cc", 0, kb.batch(recs, codec))
        assert (err, base) == (0, len(expected)), f"valid {name} batch"
        expected += [v for _, v in recs]
        # random bytes flagged as this codec
        junk = bytes(rng.randrange(256) for _ in range(600))
        err, _, msg = kb.produce(b.port, "cc", 0, kb.batch(recs, codec, payload=junk), version=8)
        assert err == kb.CORRUPT_MESSAGE, f"{name} random payload: {err} {msg}"
        assert msg, "the error message says why"
        # a valid stream of this codec whose records are garbage
        garbage = kb.compress(codec, bytes(rng.randrange(256) for _ in range(400)))
        err, _, _ = kb.produce(b.port, "cc", 0, kb.batch(recs, codec, payload=garbage))
        assert err == kb.CORRUPT_MESSAGE, f"{name} garbage records: {err}"
        # the compressed stream cut short
        whole = kb.compress(codec, b"".join(kb.record(i, k, v) for i, (k, v) in enumerate(recs)))
        err, _, _ = kb.produce(b.port, "cc", 0, kb.batch(recs, codec, payload=whole[:len(whole) // 2]))
        assert err == kb.CORRUPT_MESSAGE, f"{name} truncated stream: {err}"
        # more records declared than the stream holds
        err, _, _ = kb.produce(b.port, "cc", 0, kb.batch(recs, codec, count=len(recs) + 5))
        assert err in (kb.CORRUPT_MESSAGE, kb.INVALID_RECORD), f"{name} count mismatch: {err}"
    # uncompressed: a bad CRC, a record whose length lies
    recs = good_records("plain", 5)
    err, _, _ = kb.produce(b.port, "cc", 0, kb.batch(recs, fix_crc=False))
    assert err == kb.CORRUPT_MESSAGE
    lying = kb.record(0, b"k", b"v")
    lying = bytes([lying[0] + 2]) + lying[1:]
    err, _, _ = kb.produce(b.port, "cc", 0, kb.batch([(b"k", b"v")], payload=lying))
    assert err == kb.CORRUPT_MESSAGE
    # a decompression bomb: 300 MB of zeros in one value, a few hundred KB compressed
    big = kb.record(0, None, b"\0" * (300 << 20))
    err, _, _ = kb.produce(b.port, "cc", 0, kb.batch([(None, b"")], kb.ZSTD,
                                                      payload=kb.compress(kb.ZSTD, big)))
    assert err == kb.MESSAGE_TOO_LARGE, f"bomb: {err}"
    # still writable, and exactly the accepted records are there for every client
    err, base, _ = kb.produce(b.port, "cc", 0, kb.batch([(b"last", b"last")], kb.LZ4))
    assert (err, base) == (0, len(expected))
    expected.append(b"last")
    assert kcat_values(b.bootstrap, "cc") == expected
    got = kc.consume(b.bootstrap, "cc", [0])[0]
    assert [r.value for r in got] == expected
    assert b.is_running()


def test_requests_kafka_refuses_get_kafkas_errors(broker):
    b = broker()
    kc.create_topic(b.bootstrap, "rules", 1)
    kc.create_topic(b.bootstrap, "compacted", 1, config={"cleanup.policy": "compact"})
    one = kb.batch(good_records("a", 3))
    # two batches for one partition (Kafka since 2.4)
    assert kb.produce(b.port, "rules", 0, one + one)[0] == kb.INVALID_RECORD
    # a producer must send base offset 0
    assert kb.produce(b.port, "rules", 0, kb.batch(good_records("b", 2), base_offset=5))[0] \
        == kb.INVALID_RECORD
    # control batches come from the broker only
    assert kb.produce(b.port, "rules", 0, kb.batch(good_records("c", 1), attributes_extra=0x20))[0] \
        == kb.INVALID_RECORD
    # a producer id needs a sequence number
    assert kb.produce(b.port, "rules", 0, kb.batch(good_records("d", 1), producer_id=5,
                                                    producer_epoch=0, base_sequence=-1))[0] \
        == kb.INVALID_RECORD
    # producers may not claim LogAppendTime
    assert kb.produce(b.port, "rules", 0, kb.batch(good_records("e", 1), attributes_extra=0x08))[0] \
        == kb.INVALID_TIMESTAMP
    # zstd needs Produce v7
    assert kb.produce(b.port, "rules", 0, kb.batch(good_records("f", 2), kb.ZSTD), version=5)[0] \
        == kb.UNSUPPORTED_COMPRESSION_TYPE
    # magic 1 in Produce v3+
    v2 = bytearray(one)
    v2[16] = 1
    assert kb.produce(b.port, "rules", 0, bytes(v2), version=3)[0] == kb.INVALID_RECORD
    # a compacted topic needs keys
    assert kb.produce(b.port, "compacted", 0, kb.batch([(None, b"no key")]))[0] == kb.INVALID_RECORD
    assert kb.produce(b.port, "compacted", 0, kb.batch([(b"k", b"keyed")]))[0] == 0
    # none of it reached the log
    assert kb.produce(b.port, "rules", 0, one)[:2] == (0, 0)
    assert kcat_values(b.bootstrap, "rules") == [v for _, v in good_records("a", 3)]


def test_a_thousand_batch_produce_on_tiny_indexes(broker):
    """The request that used to trip an index assertion: refused as Kafka refuses it, and
    a thousand single-batch produces on the same settings roll and read back."""
    b = broker()
    kc.create_topic(b.bootstrap, "tiny", 1,
                    config={"segment.index.bytes": "4096", "index.interval.bytes": "0"})
    many = b"".join(kb.batch([(b"k", f"m{i}".encode())]) for i in range(1000))
    assert kb.produce(b.port, "tiny", 0, many)[0] == kb.INVALID_RECORD
    import socket
    with socket.create_connection(("127.0.0.1", b.port)) as s:
        for i in range(1000):
            s.sendall(kb.produce_request(i, "tiny", 0, kb.batch([(b"k", f"v{i}".encode())])))
            err, base, _ = kb.parse_produce_response(kb.kw.read_frame(s), 7)
            assert (err, base) == (0, i)
    segments = [f for f in os.listdir(b.partition_dir("tiny", 0)) if f.endswith(".log")]
    assert len(segments) >= 2, "the full time index rolled the segment"
    assert kcat_values(b.bootstrap, "tiny") == [f"v{i}".encode() for i in range(1000)]
    b.kill9()
    b.start()
    assert kcat_values(b.bootstrap, "tiny") == [f"v{i}".encode() for i in range(1000)]
