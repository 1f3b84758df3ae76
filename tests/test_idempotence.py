"""The idempotent producer: InitProducerId, per-partition producer state, retries answered
with their original offsets, Kafka's sequence and epoch errors, state that survives clean
restarts (snapshots) and kill -9 (rebuilt from the log), DescribeProducers — and the
default producers of the Java client, kafka-python, aiokafka, KafkaJS and confluent-kafka
with enable.idempotence=true, each read back exactly once and in order.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

import kbatch as kb
import kclients as kc

REPO = Path(__file__).resolve().parent.parent


def values_of(bootstrap: str, topic: str, partitions) -> dict[int, list[bytes]]:
    got = kc.consume(bootstrap, topic, partitions)
    return {p: [r.value for r in recs] for p, recs in got.items()}


def idempotent_batch(pid: int, epoch: int, seq: int, n: int, tag: str) -> bytes:
    recs = [(None, f"{tag}-{seq + i}".encode()) for i in range(n)]
    return kb.batch(recs, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def test_init_producer_id_versions_and_errors(broker):
    b = broker()
    ids = set()
    for version in range(0, 5):
        err, pid, epoch = kb.init_producer_id(b.port, version=version)
        assert (err, epoch) == (0, 0), f"v{version}"
        assert pid >= 0 and pid not in ids
        ids.add(pid)
    # v3+: exactly one of producer id / epoch set is an invalid request
    assert kb.init_producer_id(b.port, version=3, producer_id=5, epoch=-1)[0] == kb.INVALID_REQUEST
    # both set (KIP-360 bump request of a non-transactional producer): a fresh id, epoch 0
    err, pid, epoch = kb.init_producer_id(b.port, version=4, producer_id=max(ids), epoch=3)
    assert err == 0 and epoch == 0 and pid not in ids
    # no transaction coordinator
    assert kb.init_producer_id(b.port, version=1, transactional_id="tx")[0] \
        == kb.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    # ids stay unique across restarts (a block is claimed per start)
    b.restart()
    err, pid, _ = kb.init_producer_id(b.port)
    assert err == 0 and pid not in ids and pid > max(ids)


def test_retries_sequences_and_epochs_on_the_wire(broker):
    b = broker()
    kc.create_topic(b.bootstrap, "idem", 1)
    _, pid, epoch = kb.init_producer_id(b.port)
    first = idempotent_batch(pid, epoch, 0, 3, "a")
    assert kb.produce(b.port, "idem", 0, first)[:2] == (0, 0)
    second = idempotent_batch(pid, epoch, 3, 2, "a")
    assert kb.produce(b.port, "idem", 0, second)[:2] == (0, 3)
    # the same batch again (a retry after a lost response): the same offsets, not appended
    assert kb.produce(b.port, "idem", 0, first)[:2] == (0, 0)
    assert kb.produce(b.port, "idem", 0, second)[:2] == (0, 3)
    # a skipped sequence number; an epoch older than the producer's
    err, base, msg = kb.produce(b.port, "idem", 0, idempotent_batch(pid, epoch, 6, 1, "a"), version=8)
    assert (err, base, msg) == (kb.OUT_OF_ORDER_SEQUENCE_NUMBER, -1, None)
    # the Java client's own epoch bump: same id, epoch + 1, sequence 0
    assert kb.produce(b.port, "idem", 0, idempotent_batch(pid, epoch + 1, 0, 1, "b"))[:2] == (0, 5)
    assert kb.produce(b.port, "idem", 0, idempotent_batch(pid, epoch, 5, 1, "a"))[0] \
        == kb.INVALID_PRODUCER_EPOCH
    assert kb.produce(b.port, "idem", 0, idempotent_batch(pid, epoch + 2, 3, 1, "c"))[0] \
        == kb.OUT_OF_ORDER_SEQUENCE_NUMBER, "a new epoch starts at sequence 0"
    expected = [b"a-0", b"a-1", b"a-2", b"a-3", b"a-4", b"b-0"]
    assert values_of(b.bootstrap, "idem", [0])[0] == expected
    err, producers = kb.describe_producers(b.port, "idem", 0)
    assert err == 0 and len(producers) == 1
    assert producers[0]["producer_id"] == pid and producers[0]["epoch"] == epoch + 1
    assert producers[0]["last_sequence"] == 0

    # the state survives a clean restart (snapshot) and kill -9 (rebuilt from the log)
    for restart in (b.restart, lambda: (b.kill9(), b.start())):
        restart()
        last = idempotent_batch(pid, epoch + 1, 0, 1, "b")
        assert kb.produce(b.port, "idem", 0, last)[:2] == (0, 5), "the retry is recognised"
        assert kb.produce(b.port, "idem", 0, idempotent_batch(pid, epoch + 1, 2, 1, "b"))[0] \
            == kb.OUT_OF_ORDER_SEQUENCE_NUMBER
    nxt = idempotent_batch(pid, epoch + 1, 1, 1, "b")
    assert kb.produce(b.port, "idem", 0, nxt)[:2] == (0, 6)
    assert values_of(b.bootstrap, "idem", [0])[0] == expected + [b"b-1"]
    assert list(b.partition_dir("idem", 0).glob("*.snapshot")), "Kafka's .snapshot files"


def test_confluent_idempotent_producer_survives_kill9_exactly_once(broker):
    """confluent-kafka with enable.idempotence=true, 3 partitions, the broker killed (-9)
    and restarted twice while producing: every value exactly once and in order."""
    b = broker({"num.partitions": 3})
    kc.create_topic(b.bootstrap, "exactly", 3)
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True,
                  "linger.ms": 5, "message.timeout.ms": 120000, "retry.backoff.ms": 100,
                  "reconnect.backoff.max.ms": 500, "logger": kc.RDKAFKA_LOGGER})
    delivered: dict[int, list[int]] = {0: [], 1: [], 2: []}
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered[msg.partition()].append(int(msg.value()))

    total = 30_000
    sent = 0
    sent_at_kill = []

    def killer():
        for _ in range(2):
            time.sleep(1.5)
            sent_at_kill.append(sent)
            b.kill9()
            time.sleep(0.5)
            b.start()

    t = threading.Thread(target=killer)
    t.start()
    while sent < total:
        try:
            p.produce("exactly", value=str(sent).encode(), partition=sent % 3,
                      on_delivery=on_delivery)
            sent += 1
        except BufferError:
            p.poll(0.05)
        if sent % 500 == 0:
            p.poll(0)
            time.sleep(0.1)  # spread the records over the restarts (about 6 s in all)
    t.join()
    assert p.flush(120) == 0, "every record delivered"
    assert errors == [], errors[:5]
    assert len(b.log_files) == 3, "killed and restarted twice"
    assert all(0 < n < total for n in sent_at_kill), f"killed while producing: {sent_at_kill}"
    got = values_of(b.bootstrap, "exactly", [0, 1, 2])
    for part in range(3):
        want = list(range(part, total, 3))
        values = [int(v) for v in got[part]]
        assert len(values) == len(set(values)), f"partition {part}: duplicates"
        assert values == want, f"partition {part}: not every value exactly once and in order"
        assert sorted(delivered[part]) == want


def test_kafka_python_default_producer(broker):
    """kafka-python 3.x's KafkaProducer defaults to enable_idempotence=True."""
    b = broker()
    kc.create_topic(b.bootstrap, "kp-idem", 1)
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=b.bootstrap)
    assert p.config.get("enable_idempotence") is True
    futures = [p.send("kp-idem", value=f"v{i}".encode(), partition=0) for i in range(500)]
    p.flush(60)
    offsets = [f.get(timeout=30).offset for f in futures]
    p.close()
    assert offsets == list(range(500))
    assert values_of(b.bootstrap, "kp-idem", [0])[0] == [f"v{i}".encode() for i in range(500)]
    err, producers = kb.describe_producers(b.port, "kp-idem", 0)
    assert err == 0 and len(producers) == 1 and producers[0]["last_sequence"] == 499


def test_aiokafka_idempotent_producer(broker):
    b = broker()
    kc.create_topic(b.bootstrap, "aio-idem", 1)
    from aiokafka import AIOKafkaProducer

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=b.bootstrap, enable_idempotence=True)
        await p.start()
        try:
            for i in range(300):
                md = await p.send_and_wait("aio-idem", f"a{i}".encode(), partition=0)
                assert md.offset == i
        finally:
            await p.stop()

    asyncio.run(run())
    assert values_of(b.bootstrap, "aio-idem", [0])[0] == [f"a{i}".encode() for i in range(300)]
    assert len(kb.describe_producers(b.port, "aio-idem", 0)[1]) == 1


def test_kafkajs_idempotent_producer(broker):
    node_modules = os.environ.get("KBROKER_NODE_MODULES", str(REPO / ".tools/node/node_modules"))
    assert Path(node_modules, "kafkajs").is_dir(), "scripts/test installs kafkajs"
    b = broker()
    kc.create_topic(b.bootstrap, "js-idem", 1)
    out = subprocess.run(["node", str(REPO / "tests/node/kafkajs_idempotent.js"), b.bootstrap,
                          "js-idem", "400"], capture_output=True, text=True, timeout=180,
                         env=dict(os.environ, NODE_PATH=node_modules))
    assert out.stdout.strip().endswith("OK 400"), out.stdout + out.stderr
    err, producers = kb.describe_producers(b.port, "js-idem", 0)
    assert err == 0 and len(producers) == 1 and producers[0]["last_sequence"] == 399


def test_java_client_default_producer(broker):
    lib = os.environ.get("KBROKER_JAVA_LIB", str(REPO / ".tools/java-lib"))
    assert list(Path(lib).glob("kafka-clients-*.jar")), "scripts/test fetches kafka-clients"
    b = broker()
    kc.create_topic(b.bootstrap, "java-idem", 3)
    out = subprocess.run(["java", "-cp", f"{lib}/*", str(REPO / "tests/java/IdempotentProducer.java"),
                          b.bootstrap, "java-idem", "3000"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "OK 3000" in out.stdout, out.stdout + out.stderr[-3000:]
    assert "unsupported version" not in b.log_text()


def test_kcat_idempotent_producer(broker, kcat_bin):
    """librdkafka 2.0 (Debian's kcat) with enable.idempotence=true."""
    b = broker()
    kc.create_topic(b.bootstrap, "kcat-idem", 1)
    lines = "".join(f"line-{i}\n" for i in range(1000))
    subprocess.run([kcat_bin, "-P", "-b", b.bootstrap, "-t", "kcat-idem", "-p", "0",
                    "-X", "enable.idempotence=true"], input=lines.encode(), check=True,
                   timeout=60)
    assert values_of(b.bootstrap, "kcat-idem", [0])[0] == [f"line-{i}".encode() for i in range(1000)]
    err, producers = kb.describe_producers(b.port, "kcat-idem", 0)
    assert err == 0 and len(producers) == 1 and producers[0]["last_sequence"] == 999
