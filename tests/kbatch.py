"""Record batches v2 and raw Produce requests, built by hand for hostile-input tests.

`batch(records, codec=...)` encodes Kafka's record batch format (magic 2, CRC32C) with
any codec the Python clients ship (gzip, snappy in xerial framing, lz4 frame, zstd), and
lets a test break it on purpose: `payload=` replaces the (compressed) records section,
`fix_crc=False` leaves a stale CRC. `produce(sock, ...)` sends a non-flexible Produce
(v3-v8) with one partition and returns `(error_code, base_offset, error_message)`.
"""

from __future__ import annotations

import gzip
import struct
import time

import crc32c as _crc32c
import lz4.frame
import snappy
import zstandard

import kafkawire as kw

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
CODECS = {"gzip": GZIP, "snappy": SNAPPY, "lz4": LZ4, "zstd": ZSTD}

PRODUCE = 0
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
INVALID_TIMESTAMP = 32
KAFKA_STORAGE_ERROR = 56
UNSUPPORTED_COMPRESSION_TYPE = 76
INVALID_RECORD = 87


def varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _bytes(b: bytes | None) -> bytes:
    return varint(-1) if b is None else varint(len(b)) + b


def record(i: int, key: bytes | None, value: bytes | None, ts_delta: int = 0,
           headers=()) -> bytes:
    body = bytes([0]) + varint(ts_delta) + varint(i) + _bytes(key) + _bytes(value)
    body += varint(len(headers))
    for hk, hv in headers:
        body += _bytes(hk) + _bytes(hv)
    return varint(len(body)) + body


def xerial_snappy(data: bytes) -> bytes:
    out = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    for i in range(0, len(data), 32 * 1024):
        block = snappy.compress(data[i:i + 32 * 1024])
        out += struct.pack(">i", len(block)) + block
    return out


def compress(codec: int, data: bytes) -> bytes:
    if codec == NONE:
        return data
    if codec == GZIP:
        return gzip.compress(data)
    if codec == SNAPPY:
        return xerial_snappy(data)
    if codec == LZ4:
        return lz4.frame.compress(data)
    if codec == ZSTD:
        return zstandard.ZstdCompressor().compress(data)
    raise ValueError(codec)


def batch(records: list[tuple[bytes | None, bytes | None]], codec: int = NONE,
          base_offset: int = 0, timestamp: int | None = None, payload: bytes | None = None,
          fix_crc: bool = True, count: int | None = None, attributes_extra: int = 0,
          producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1) -> bytes:
    """One record batch v2 holding `records` (key, value) pairs (timestamps: now)."""
    if timestamp is None:
        timestamp = int(time.time() * 1000)
    raw = b"".join(record(i, k, v, ts_delta=i) for i, (k, v) in enumerate(records))
    data = compress(codec, raw) if payload is None else payload
    n = len(records) if count is None else count
    attributes = codec | attributes_extra
    after_crc = struct.pack(">hiqqqhii", attributes, n - 1, timestamp,
                            timestamp + max(len(records) - 1, 0), producer_id, producer_epoch,
                            base_sequence, n) + data
    crc = _crc32c.crc32c(after_crc) if fix_crc else 0
    body = struct.pack(">ibI", 0, 2, crc) + after_crc  # leader epoch, magic, crc
    return struct.pack(">qi", base_offset, len(body)) + body


def produce_request(correlation_id: int, topic: str, partition: int, records: bytes,
                    version: int = 7, acks: int = 1, timeout_ms: int = 10_000) -> bytes:
    body = kw._string(None) + struct.pack(">hi", acks, timeout_ms)
    body += struct.pack(">i", 1) + kw._string(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", partition)
    body += struct.pack(">i", len(records)) + records
    return kw.frame(kw.request_header(PRODUCE, version, correlation_id) + body)


def parse_produce_response(payload: bytes, version: int) -> tuple[int, int, str | None]:
    r = kw.Reader(payload)
    r.int32()  # correlation id
    assert r.int32() == 1, "one topic"
    r.take(r.int16())
    assert r.int32() == 1, "one partition"
    r.int32()  # index
    error = r.int16()
    base_offset = struct.unpack(">q", r.take(8))[0]
    message = None
    if version >= 2:
        r.take(8)  # log append time
    if version >= 5:
        r.take(8)  # log start offset
    if version >= 8:
        n = r.int32()
        for _ in range(max(n, 0)):
            r.int32()
            ln = r.int16()
            if ln > 0:
                r.take(ln)
        ln = r.int16()
        if ln >= 0:
            message = r.take(ln).decode()
    return error, base_offset, message


def produce(port: int, topic: str, partition: int, records: bytes, version: int = 7,
            acks: int = 1) -> tuple[int, int, str | None]:
    with kw.connect(port) as s:
        s.sendall(produce_request(1, topic, partition, records, version=version, acks=acks))
        return parse_produce_response(kw.read_frame(s), version)


INIT_PRODUCER_ID = 22
DESCRIBE_PRODUCERS = 61
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
INVALID_REQUEST = 42


def init_producer_id(port: int, version: int = 1, transactional_id: str | None = None,
                     producer_id: int = -1, epoch: int = -1) -> tuple[int, int, int]:
    """InitProducerId (non-flexible v0-1, flexible v2+); returns (error, producer id, epoch)."""
    flexible = version >= 2
    if flexible:
        tid = kw._uvarint(0) if transactional_id is None else kw._compact_string(transactional_id)
    else:
        tid = kw._string(transactional_id)
    body = tid + struct.pack(">i", 60_000)
    if version >= 3:
        body += struct.pack(">qh", producer_id, epoch)
    if flexible:
        body += kw._uvarint(0)
    header = kw.request_header(INIT_PRODUCER_ID, version, 5, flexible=flexible)
    with kw.connect(port) as s:
        s.sendall(kw.frame(header + body))
        r = kw.Reader(kw.read_frame(s))
    r.int32()  # correlation id
    if flexible:
        r.skip_tags()
    r.int32()  # throttle
    error = r.int16()
    pid = struct.unpack(">q", r.take(8))[0]
    return error, pid, r.int16()


def describe_producers(port: int, topic: str, partition: int) -> tuple[int, list[dict]]:
    """DescribeProducers v0 (flexible) for one partition: (error, [producer state])."""
    body = kw._uvarint(2) + kw._compact_string(topic) + kw._uvarint(2)
    body += struct.pack(">i", partition) + kw._uvarint(0) + kw._uvarint(0)
    header = kw.request_header(DESCRIBE_PRODUCERS, 0, 6, flexible=True)
    with kw.connect(port) as s:
        s.sendall(kw.frame(header + body))
        r = kw.Reader(kw.read_frame(s))
    r.int32()
    r.skip_tags()
    r.int32()  # throttle
    assert r.uvarint() == 2, "one topic"
    r.take(r.uvarint() - 1)
    assert r.uvarint() == 2, "one partition"
    r.int32()
    error = r.int16()
    n = r.uvarint()  # error message: compact nullable string
    if n > 0:
        r.take(n - 1)
    producers = []
    for _ in range(r.uvarint() - 1):
        pid, epoch, seq, ts, coord, txn = struct.unpack(">qiiqiq", r.take(36))
        r.skip_tags()
        producers.append({"producer_id": pid, "epoch": epoch, "last_sequence": seq,
                          "last_timestamp": ts, "coordinator_epoch": coord,
                          "current_txn_start_offset": txn})
    return error, producers
