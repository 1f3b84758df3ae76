"""Client-side helpers shared by the tests (confluent-kafka, kafka-python, kcat)."""

from __future__ import annotations

import logging
import time
from typing import Callable

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, TopicPartition

# --- polling ----------------------------------------------------------------------


def wait_until(pred: Callable[[], object], timeout: float, message: str,
               interval: float = 0.2):
    """Poll `pred` until it returns something truthy (returned) or fail after `timeout` s.

    Exceptions raised by `pred` count as "not yet" (the last one is reported)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = pred()
            if v:
                return v
            last = v
        except Exception as e:  # noqa: BLE001 - reported below
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} (not true after {timeout}s; last: {last!r})")
        time.sleep(interval)


# --- confluent-kafka -----------------------------------------------------------------

# librdkafka logs go through Python logging (pytest captures them per test) instead of
# being written straight to fd 2, where reconnect noise of dead brokers would clutter output.
RDKAFKA_LOGGER = logging.getLogger("rdkafka")


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 15000,
                        "logger": RDKAFKA_LOGGER})


def admin_error_code(future, timeout: float = 30.0):
    """Resolve an admin future; None on success, else the KafkaError code."""
    try:
        future.result(timeout=timeout)
        return None
    except KafkaException as e:
        return e.args[0].code()


def create_topic(bootstrap_or_admin, name: str, partitions: int, config: dict | None = None,
                 timeout: float = 30.0) -> None:
    a = admin(bootstrap_or_admin) if isinstance(bootstrap_or_admin, str) else bootstrap_or_admin
    fs = a.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1,
                  config={k: str(v) for k, v in (config or {}).items()})],
        operation_timeout=10, request_timeout=20)
    err = admin_error_code(fs[name], timeout)
    assert err is None, f"create_topics({name!r}, {partitions}) failed: {KafkaError(err)}"
    wait_for_topic(a, name, partitions)


def wait_for_topic(a: AdminClient, name: str, partitions: int, timeout: float = 20.0):
    def ready():
        md = a.list_topics(name, timeout=5)
        t = md.topics.get(name)
        if t is None or t.error is not None or len(t.partitions) != partitions:
            return False
        return all(p.leader >= 0 for p in t.partitions.values())
    wait_until(ready, timeout, f"topic {name} with {partitions} partitions never became ready")


def producer(bootstrap: str, **conf) -> Producer:
    c = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "enable.idempotence": False,
        "message.timeout.ms": 60000,
        "queue.buffering.max.messages": 500000,
        "logger": RDKAFKA_LOGGER,
    }
    c.update(conf)
    return Producer(c)


class Deliveries:
    """Delivery-report bookkeeping: per-partition offsets, errors."""

    def __init__(self):
        self.errors: list[str] = []
        self.offsets: dict[tuple[str, int], list[int]] = {}
        self.count = 0

    def __call__(self, err, msg):
        self.count += 1
        if err is not None:
            if len(self.errors) < 20:
                self.errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")
            else:
                self.errors.append("...")
            return
        self.offsets.setdefault((msg.topic(), msg.partition()), []).append(msg.offset())


def produce_all(p: Producer, topic: str, records, on_delivery, poll_every: int = 2000,
                flush_timeout: float = 120.0) -> int:
    """records: iterable of (partition, key, value, headers, timestamp_ms_or_None)."""
    n = 0
    for partition, key, value, headers, ts in records:
        kwargs = {"partition": partition, "on_delivery": on_delivery}
        if key is not None:
            kwargs["key"] = key
        if headers:
            kwargs["headers"] = headers
        if ts is not None:
            kwargs["timestamp"] = ts
        while True:
            try:
                p.produce(topic, value, **kwargs)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        if n % poll_every == 0:
            p.poll(0)
    left = p.flush(flush_timeout)
    assert left == 0, f"{left} messages still undelivered after flush({flush_timeout})"
    return n


# --- kafka-python ----------------------------------------------------------------------


def kp_consumer(bootstrap: str, **kw) -> KafkaConsumer:
    conf = dict(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=100000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        request_timeout_ms=30000,
        client_id="kbroker-tests",
    )
    conf.update(kw)
    return KafkaConsumer(**conf)


def consume(bootstrap: str, topic: str, partitions, start=None, end=None,
            timeout: float = 120.0, consumer: KafkaConsumer | None = None):
    """Read [start, end) of each partition with kafka-python (no group).

    start: dict partition->offset (default: beginning offsets)
    end:   dict partition->offset (default: end offsets at call time)
    Returns {partition: [ConsumerRecord, ...]} in the order received.
    """
    own = consumer is None
    c = consumer or kp_consumer(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        c.assign(tps)
        if end is None:
            end_tp = c.end_offsets(tps)
            end = {tp.partition: off for tp, off in end_tp.items()}
        if start is None:
            c.seek_to_beginning(*tps)
        else:
            for tp in tps:
                c.seek(tp, start[tp.partition])
        out = {p: [] for p in partitions}
        pending = {tp for tp in tps if c.position(tp) < end[tp.partition]}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                got = {p: len(v) for p, v in out.items()}
                raise AssertionError(
                    f"consume {topic}: timed out after {timeout}s; got {got}, want end {end}, "
                    f"positions {[(tp.partition, c.position(tp)) for tp in tps]}")
            batches = c.poll(timeout_ms=500)
            for tp, recs in batches.items():
                lim = end[tp.partition]
                out[tp.partition].extend(r for r in recs if r.offset < lim)
            for tp in list(pending):
                if c.position(tp) >= end[tp.partition]:
                    pending.discard(tp)
                    c.pause(tp)
        return out
    finally:
        if own:
            c.close(autocommit=False)


def offsets_of(bootstrap: str, topic: str, partitions):
    """(beginning_offsets, end_offsets) as {partition: offset} dicts."""
    c = kp_consumer(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        b = c.beginning_offsets(tps)
        e = c.end_offsets(tps)
        return ({tp.partition: o for tp, o in b.items()},
                {tp.partition: o for tp, o in e.items()})
    finally:
        c.close(autocommit=False)


def headers_of(rec) -> list:
    return [(k, v) for k, v in (rec.headers or [])]
