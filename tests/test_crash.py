"""Crash recovery: kill -9 under load loses no acknowledged record.

A producer subprocess writes every acknowledged (partition, offset, value) to
a file while the broker is killed with SIGKILL. After a restart on the same
log dir, every acknowledged record must be at its acknowledged offset, offsets
must be contiguous, and new records must continue right after the recovered
log end. Two kill/restart cycles on the same data.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kclients import Deliveries, consume, create_topic, producer, produce_all

TOPIC = "crashy"
PARTITIONS = 2
HERE = Path(__file__).resolve().parent


def read_acks(path: Path) -> list[tuple[int, int, str]]:
    out = []
    if not path.exists():
        return out
    for line in path.read_text().split("\n"):
        parts = line.split(" ")
        if len(parts) != 3:
            continue  # last, partially written line
        try:
            out.append((int(parts[0]), int(parts[1]), parts[2]))
        except ValueError:
            continue
    return out


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def stop_producer(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.timeout_s(300)
def test_kill9_loses_no_acked_record(broker, tmp_path):
    b = broker()
    create_topic(b.bootstrap, TOPIC, PARTITIONS)

    acked: dict[tuple[int, int], str] = {}  # (partition, offset) -> value

    for cycle in range(2):
        ack_file = tmp_path / f"acks.{cycle}.txt"
        prod_log = tmp_path / f"producer.{cycle}.log"
        with open(prod_log, "wb") as plog:
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "crash_producer.py"), b.bootstrap, TOPIC,
                 str(PARTITIONS), f"c{cycle}-", str(ack_file)],
                stdin=subprocess.DEVNULL, stdout=plog, stderr=subprocess.STDOUT)
        try:
            # Let it run ~2 s, and until it has a healthy number of acknowledged records.
            started = time.monotonic()
            deadline = started + 60
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    pytest.fail(f"producer exited early ({proc.returncode}):\n{prod_log.read_text()[-3000:]}")
                if time.monotonic() - started >= 2.0 and count_lines(ack_file) >= 2000:
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"producer acknowledged only {count_lines(ack_file)} records in 60 s")

            b.kill9()
            time.sleep(0.5)
        finally:
            stop_producer(proc)

        acks = read_acks(ack_file)
        assert len(acks) >= 2000, f"cycle {cycle}: only {len(acks)} acks recorded"
        for part, off, value in acks:
            prev = acked.get((part, off))
            assert prev is None, \
                f"cycle {cycle}: offset {part}:{off} acknowledged twice ({prev!r} and {value!r}): offset reuse"
            acked[(part, off)] = value

        b.start()

        got = consume(b.bootstrap, TOPIC, range(PARTITIONS), timeout=150)
        end = {}
        for part in range(PARTITIONS):
            recs = got[part]
            for i, r in enumerate(recs):
                if r.offset != i:
                    pytest.fail(f"cycle {cycle}: partition {part} record #{i} has offset {r.offset} "
                                f"(gap or reorder after recovery)")
            end[part] = len(recs)
            have = {r.offset: r.value for r in recs}
            missing = []
            wrong = []
            for (p, off), value in acked.items():
                if p != part:
                    continue
                if off not in have:
                    missing.append(off)
                elif have[off] != value.encode():
                    wrong.append((off, value, have[off]))
            assert not missing, (
                f"cycle {cycle}: partition {part}: {len(missing)} acknowledged records lost after kill -9, "
                f"offsets {sorted(missing)[:10]}... (log end after recovery {len(recs)})")
            assert not wrong, f"cycle {cycle}: partition {part}: wrong values at acked offsets: {wrong[:5]}"

        # New records continue right after the recovered log end.
        p = producer(b.bootstrap, **{"linger.ms": 0})
        dr = Deliveries()
        extra = [(i % PARTITIONS, None, f"after-{cycle}-{i}".encode(), None, None) for i in range(10)]
        produce_all(p, TOPIC, extra, dr, flush_timeout=60)
        assert dr.errors == [], dr.errors
        for part in range(PARTITIONS):
            offs = dr.offsets.get((TOPIC, part), [])
            assert offs == list(range(end[part], end[part] + 5)), \
                f"cycle {cycle}: partition {part}: new offsets {offs}, expected to start at log end {end[part]}"
        after = consume(b.bootstrap, TOPIC, range(PARTITIONS), start=end, timeout=60)
        for part in range(PARTITIONS):
            vals = [r.value for r in after[part]]
            want = [v for (pp, _, v, _, _) in extra if pp == part]
            assert vals == want, f"cycle {cycle}: partition {part}: read back {vals}, want {want}"
            for i, v in enumerate(want):
                acked[(part, end[part] + i)] = v.decode()
