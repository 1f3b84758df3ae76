"""A tiny raw Kafka wire-protocol helper for frame-level tests.

Only what the tests need: ApiVersions requests (v0..v3 and arbitrary
versions) and decoding of ApiVersions responses, plus socket helpers.
"""

from __future__ import annotations

import socket
import struct
import time

API_VERSIONS = 18


def _string(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _compact_string(s: str) -> bytes:
    b = s.encode()
    return _uvarint(len(b) + 1) + b


def frame(payload: bytes) -> bytes:
    """Prefix a payload with its int32 size."""
    return struct.pack(">i", len(payload)) + payload


def request_header(api_key: int, api_version: int, correlation_id: int,
                   client_id: str | None = "kbroker-test", flexible: bool = False) -> bytes:
    """Request header v1 (or v2 with an empty tagged-field section when flexible)."""
    h = struct.pack(">hhi", api_key, api_version, correlation_id) + _string(client_id)
    if flexible:
        h += _uvarint(0)
    return h


def api_versions_request(correlation_id: int, version: int = 0,
                         client_id: str | None = "kbroker-test") -> bytes:
    """A complete (size-prefixed) ApiVersions request frame.

    v0-v2 have an empty body and header v1; v3+ use header v2 and a body of
    client_software_name, client_software_version (compact strings) and tags.
    """
    if version >= 3:
        body = _compact_string("kbroker-tests") + _compact_string("1.0") + _uvarint(0)
        return frame(request_header(API_VERSIONS, version, correlation_id, client_id, True) + body)
    return frame(request_header(API_VERSIONS, version, correlation_id, client_id))


def connect(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(timeout)
    return s


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_frame(sock: socket.socket, max_size: int = 64 * 1024 * 1024) -> bytes:
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    assert 0 <= size <= max_size, f"implausible response size {size}"
    return recv_exact(sock, size)


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"response truncated: need {n} bytes at {self.pos}, have {len(self.data)}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self) -> int:
        shift = 0
        result = 0
        while True:
            b = self.take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 35:
                raise ValueError("varint too long")

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.take(self.uvarint())

    def remaining(self) -> int:
        return len(self.data) - self.pos


def parse_api_versions_response(payload: bytes, version: int):
    """Decode an ApiVersions response payload (response header v0 + body).

    Returns (correlation_id, error_code, {api_key: (min, max)}, throttle_ms).
    """
    r = Reader(payload)
    corr = r.int32()
    err = r.int16()
    apis = {}
    throttle = None
    if version >= 3:
        n = r.uvarint() - 1
        for _ in range(max(n, 0)):
            k, lo, hi = r.int16(), r.int16(), r.int16()
            r.skip_tags()
            apis[k] = (lo, hi)
        throttle = r.int32()
        r.skip_tags()
    else:
        n = r.int32()
        for _ in range(max(n, 0)):
            k, lo, hi = r.int16(), r.int16(), r.int16()
            apis[k] = (lo, hi)
        if version >= 1:
            throttle = r.int32()
    return corr, err, apis, throttle


def api_versions(sock: socket.socket, correlation_id: int, version: int = 0):
    sock.sendall(api_versions_request(correlation_id, version))
    return parse_api_versions_response(read_frame(sock), version)


def wait_closed(sock: socket.socket, timeout: float = 10.0):
    """Wait for the peer to close the connection.

    Returns (closed, how, bytes_received). `closed` is True when recv returned
    b'' or the connection was reset within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    received = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, "timeout", bytes(received)
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return False, "timeout", bytes(received)
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as e:
            return True, type(e).__name__, bytes(received)
        if not chunk:
            return True, "eof", bytes(received)
        received += chunk
