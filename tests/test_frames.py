"""Frame-level robustness with raw sockets.

Malformed requests must get their own connection closed, without affecting
other connections or later clients.
"""

from __future__ import annotations

import random
import socket
import struct
import time

import pytest

import kafkawire as kw
from kclients import Deliveries, consume, create_topic, producer, produce_all

MAX_REQ = 1048576


def check_api_versions(sock, corr, version=0):
    got_corr, err, apis, _ = kw.api_versions(sock, corr, version)
    assert got_corr == corr, f"correlation id {got_corr} != {corr}"
    assert err == 0, f"ApiVersions v{version} error_code {err}"
    for key, need in [(0, 9), (1, 12), (3, 11), (18, 3), (2, 6), (19, 7), (20, 6), (32, 4), (37, 3), (60, 0)]:
        assert key in apis, f"api key {key} missing from ApiVersions v{version}: {sorted(apis)}"
        lo, hi = apis[key]
        assert lo <= need <= hi, f"api key {key}: advertised {lo}-{hi}, expected to include v{need}"
    return apis


def bad_inputs():
    rng = random.Random(12345)
    garbage = bytearray(rng.randbytes(64))
    garbage[0:2] = b"\xde\xad"  # api key -8531: no such API
    header = kw.request_header(18, 0, 77, "x")
    return [
        ("garbage", struct.pack(">i", 64) + bytes(garbage), False),
        ("oversized", struct.pack(">i", 2 * 1024 * 1024) + b"\x00" * 64, False),
        ("negative-size", struct.pack(">i", -5) + b"\x00" * 16, False),
        ("unknown-api-key", kw.frame(kw.request_header(999, 0, 5, "kbroker-test")), False),
        # client id string claims 30000 bytes in a 20-byte frame
        ("bad-client-id-length", kw.frame(struct.pack(">hhih", 18, 0, 6, 30000) + b"abcdefghij"), False),
        ("truncated+shut-wr", struct.pack(">i", 100) + header, True),
    ]


@pytest.mark.timeout_s(180)
def test_malformed_frames_close_only_their_connection(broker):
    b = broker({"socket.request.max.bytes": MAX_REQ})
    healthy = kw.connect(b.port)
    corr = 1
    check_api_versions(healthy, corr)

    for name, data, shut_wr in bad_inputs():
        s = kw.connect(b.port)
        try:
            try:
                s.sendall(data)
                if shut_wr:
                    s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # already closed by the broker: fine
            closed, how, received = kw.wait_closed(s, timeout=10)
            assert closed, f"{name}: broker did not close the connection within 10 s"
        finally:
            s.close()
        corr += 1
        check_api_versions(healthy, corr)  # the healthy connection is unaffected

    # a fresh connection works too
    with kw.connect(b.port) as s:
        check_api_versions(s, 1000)
    healthy.close()

    # and real clients still produce and consume
    create_topic(b.bootstrap, "after-garbage", 1)
    p = producer(b.bootstrap)
    dr = Deliveries()
    recs = [(0, f"k{i}".encode(), f"v{i}".encode(), [("h", b"1")], None) for i in range(100)]
    produce_all(p, "after-garbage", recs, dr)
    assert dr.errors == [] and dr.offsets.get(("after-garbage", 0)) == list(range(100)), dr.errors
    got = consume(b.bootstrap, "after-garbage", [0], timeout=60)[0]
    assert [(r.key, r.value) for r in got] == [(k, v) for _, k, v, _, _ in recs]


def test_api_versions_v0_to_v3(broker):
    b = broker()
    with kw.connect(b.port) as s:
        for v in range(4):
            apis = check_api_versions(s, 100 + v, v)
            assert apis[18][0] == 0, apis[18]


def test_unsupported_api_versions_version(broker):
    b = broker()
    with kw.connect(b.port) as s:
        s.sendall(kw.api_versions_request(4242, version=99))
        payload = kw.read_frame(s)
        corr, err, apis, _ = kw.parse_api_versions_response(payload, 0)
        assert corr == 4242, f"correlation id {corr}"
        assert err == 35, f"error_code {err}, expected 35 (UNSUPPORTED_VERSION)"
        assert apis, "UNSUPPORTED_VERSION response must still list the supported APIs"
        assert 18 in apis and apis[18][0] == 0, apis.get(18)
        # the connection stays usable: clients retry with a supported version
        check_api_versions(s, 4243, 0)


def test_pipelined_requests_answered_in_order(broker):
    b = broker()
    with kw.connect(b.port) as s:
        reqs = b"".join(kw.api_versions_request(500 + i, version=i % 4) for i in range(20))
        s.sendall(reqs)
        for i in range(20):
            corr, err, apis, _ = kw.parse_api_versions_response(kw.read_frame(s), i % 4)
            assert (corr, err) == (500 + i, 0), f"response #{i}: correlation {corr}, error {err}"
            assert 18 in apis


def test_byte_by_byte_request(broker):
    b = broker()
    with kw.connect(b.port) as s:
        for byte in kw.api_versions_request(77, version=3):
            s.send(bytes([byte]))
            time.sleep(0.002)
        corr, err, apis, _ = kw.parse_api_versions_response(kw.read_frame(s), 3)
        assert (corr, err) == (77, 0)
        assert 18 in apis


def test_many_connections(broker):
    b = broker()
    socks = [kw.connect(b.port) for _ in range(200)]
    try:
        for i, s in enumerate(socks):
            s.sendall(kw.api_versions_request(i, 0))
        for i, s in enumerate(socks):
            corr, err, _, _ = kw.parse_api_versions_response(kw.read_frame(s), 0)
            assert (corr, err) == (i, 0)
    finally:
        for s in socks:
            s.close()
    with kw.connect(b.port) as s:
        check_api_versions(s, 1)


def test_idle_connections_are_closed(broker):
    b = broker({"connections.max.idle.ms": 1000})
    with kw.connect(b.port) as s:
        check_api_versions(s, 1)
        closed, how, _ = kw.wait_closed(s, timeout=20)
        assert closed, "idle connection not closed with connections.max.idle.ms=1000"
    with kw.connect(b.port) as s:
        check_api_versions(s, 2)
