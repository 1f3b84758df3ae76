"""Producer subprocess for test_crash.py.

Produces numbered records (acks=all) to a topic as fast as it can and appends
every *acknowledged* record as "<partition> <offset> <value>" to an ack file,
flushing after each poll. Stops (without flushing the producer) on SIGTERM.

usage: python crash_producer.py BOOTSTRAP TOPIC PARTITIONS PREFIX ACK_FILE
"""

from __future__ import annotations

import os
import signal
import sys

from confluent_kafka import Producer


def main() -> None:
    bootstrap, topic, partitions, prefix, ack_path = sys.argv[1:6]
    partitions = int(partitions)
    stop = False

    def on_term(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    p = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 2,
        "enable.idempotence": False,
        "message.timeout.ms": 600000,
        "queue.buffering.max.messages": 20000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 200,
    })
    ack = open(ack_path, "w", buffering=1024 * 1024)
    errors = 0

    def on_delivery(err, msg):
        nonlocal errors
        if err is None:
            ack.write(f"{msg.partition()} {msg.offset()} {msg.value().decode()}\n")
        else:
            errors += 1

    n = 0
    while not stop:
        value = f"{prefix}{n}".encode()
        try:
            p.produce(topic, value, partition=n % partitions, on_delivery=on_delivery)
            n += 1
        except BufferError:
            p.poll(0.05)
            ack.flush()
            continue
        if n % 500 == 0:
            p.poll(0)
            ack.flush()
    p.poll(0)
    ack.flush()
    os.fsync(ack.fileno())
    ack.close()
    sys.stderr.write(f"crash_producer: produced {n}, delivery errors {errors}\n")
    sys.stderr.flush()
    # Don't wait for undeliverable messages: exit without destroying the producer.
    os._exit(0)


if __name__ == "__main__":
    main()
