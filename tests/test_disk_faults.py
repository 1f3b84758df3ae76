"""Full and failing disks under the real binary (the tests run as root: they mount a small
tmpfs, and an ext4 image on a loop device whose file system they make fail).

- Full disk: produce answers KAFKA_STORAGE_ERROR (no SIGBUS), the broker keeps serving
  reads and metadata, deleting a topic frees space and writes resume by themselves; the
  broker restarts on the full disk (clean stop and kill -9) and still lets the operator
  delete a topic; no acknowledged record is lost or changed across all of it.
- Failed dir: with two log dirs, the one whose file system fails goes offline — its
  partitions answer KAFKA_STORAGE_ERROR — while the other keeps serving, also after a restart.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import kbatch as kb
import kclients as kc

NOT_LEADER_OR_FOLLOWER = 6


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def unmount(path: Path) -> None:
    for _ in range(20):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.25)
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt))
    try:
        yield mnt
    finally:
        unmount(mnt)


@pytest.fixture
def failing_ext4(tmp_path):
    """An ext4 file system on a loop device; `fail()` makes the kernel abort it (EROFS)."""
    img = tmp_path / "ext4.img"
    mnt = tmp_path / "ext4"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(96 << 20)
    run("mkfs.ext4", "-q", "-F", str(img))
    run("mount", "-o", "loop,errors=remount-ro", str(img), str(mnt))
    dev = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mnt)], capture_output=True,
                         text=True, check=True).stdout.strip()
    name = os.path.basename(dev)

    class Disk:
        path = mnt

        @staticmethod
        def fail():
            Path(f"/sys/fs/ext4/{name}/trigger_fs_error").write_text("1")

    try:
        yield Disk
    finally:
        unmount(mnt)
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def produce_until_error(port: int, topic: str, value_bytes: int, limit: int = 10_000,
                        first_offset: int = 0):
    """Raw produces of one big record each until one fails; returns (acked values, error)."""
    acked = []
    not_yet_led = 0
    for i in range(limit):
        value = f"{topic}-{i}-".encode() + os.urandom(value_bytes)
        err, base, _ = kb.produce(port, topic, 0, kb.batch([(b"k", value)]))
        if err == NOT_LEADER_OR_FOLLOWER and not acked and not_yet_led < 50:
            # A new topic's LeaderAndIsr may land just after CreateTopics answered (as on
            # Kafka): clients retry, and so does this.
            not_yet_led += 1
            time.sleep(0.1)
            continue
        if err:
            return acked, err
        assert base == first_offset + len(acked)
        acked.append(value)
    raise AssertionError(f"{topic}: no error after {limit} produces")


def delete_topic(bootstrap: str, topic: str):
    a = kc.admin(bootstrap)
    return kc.admin_error_code(a.delete_topics([topic], operation_timeout=20)[topic])


def delete_records(bootstrap: str, topic: str, offset: int) -> int:
    """DeleteRecords through the admin client; returns the new low watermark."""
    from confluent_kafka import TopicPartition
    a = kc.admin(bootstrap)
    fut = a.delete_records([TopicPartition(topic, 0, offset)], operation_timeout=20)
    result = list(fut.values())[0].result(timeout=30)
    return result.low_watermark


def values_of(bootstrap: str, topic: str) -> list[bytes]:
    return [r.value for r in kc.consume(bootstrap, topic, [0])[0]]


def test_full_disk_keeps_serving_recovers_and_restarts(broker, small_tmpfs):
    b = broker({"log.dirs": str(small_tmpfs / "data"), "log.segment.bytes": str(4 << 20),
                "log.retention.check.interval.ms": "1000"})
    try:
        kc.create_topic(b.bootstrap, "keep", 1)
        kc.create_topic(b.bootstrap, "filler", 1)
        keep = []
        for i in range(200):
            value = f"keep-{i}".encode()
            assert kb.produce(b.port, "keep", 0, kb.batch([(b"k", value)]))[:2] == (0, i)
            keep.append(value)

        filler, err = produce_until_error(b.port, "filler", 200_000)
        assert err == kb.KAFKA_STORAGE_ERROR, f"a full disk answers KAFKA_STORAGE_ERROR, got {err}"
        assert len(filler) > 20, "the disk filled up with records first"
        # "keep" still writes into the blocks reserved ahead of it; then it fails too
        more, err = produce_until_error(b.port, "keep", 50_000, first_offset=len(keep))
        assert err == kb.KAFKA_STORAGE_ERROR
        keep += more
        assert b.is_running(), "no SIGBUS"
        # reads and metadata still work on the full disk
        assert values_of(b.bootstrap, "keep") == keep
        assert values_of(b.bootstrap, "filler") == filler
        md = kc.admin(b.bootstrap).list_topics(timeout=10)
        assert {"keep", "filler"} <= set(md.topics)
        assert "writes to partition" in b.log_text() and "fail" in b.log_text()

        # an operator deletes a topic: the space comes back and writes resume by themselves
        assert delete_topic(b.bootstrap, "filler") is None
        kc.wait_until(lambda: not (small_tmpfs / "data" / "filler-0").exists(), 30,
                      "filler's log is deleted")
        for i in range(50):
            value = f"after-{i}".encode()
            err, base, _ = kb.produce(b.port, "keep", 0, kb.batch([(b"k", value)]))
            assert (err, base) == (0, len(keep)), f"writes resumed ({err})"
            keep.append(value)
        assert "resumed" in b.log_text()

        # full again, then restart on the full disk: clean stop, then kill -9
        kc.create_topic(b.bootstrap, "filler2", 1)
        filler2, err = produce_until_error(b.port, "filler2", 200_000)
        assert err == kb.KAFKA_STORAGE_ERROR
        assert b.stop() == 0, "a clean stop on a full disk"
        b.start()
        assert values_of(b.bootstrap, "keep") == keep
        b.kill9()
        b.start()
        assert values_of(b.bootstrap, "keep") == keep
        # whatever the restarts freed (trimmed preallocation) fills up again
        _, err = produce_until_error(b.port, "filler2", 200_000, first_offset=len(filler2))
        assert err == kb.KAFKA_STORAGE_ERROR

        # the operator can still delete a topic on the full disk after the restarts
        assert delete_topic(b.bootstrap, "filler2") is None
        kc.wait_until(lambda: not (small_tmpfs / "data" / "filler2-0").exists(), 30,
                      "filler2's log is deleted")
        value = b"final"
        err, base, _ = kb.produce(b.port, "keep", 0, kb.batch([(b"k", value)]))
        assert (err, base) == (0, len(keep))
        keep.append(value)

        # full once more; this time DeleteRecords on the filler makes the room
        kc.create_topic(b.bootstrap, "filler3", 1)
        filler3, err = produce_until_error(b.port, "filler3", 200_000)
        assert err == kb.KAFKA_STORAGE_ERROR
        low = delete_records(b.bootstrap, "filler3", len(filler3))
        assert low == len(filler3), "the log start moved to the high watermark"
        value = b"after delete-records"
        err, base, _ = kb.produce(b.port, "keep", 0, kb.batch([(b"k", value)]))
        assert (err, base) == (0, len(keep)), f"writes resumed after DeleteRecords ({err})"
        keep.append(value)
        b.stop()
        b.start()
        assert values_of(b.bootstrap, "keep") == keep, "nothing acknowledged lost or changed"
    finally:
        b.stop()


def test_a_failed_log_dir_goes_offline_and_the_other_serves(broker, tmp_path, failing_ext4):
    good_dir = tmp_path / "good"
    bad_dir = failing_ext4.path / "data"
    b = broker({"log.dirs": f"{good_dir},{bad_dir}", "num.partitions": "1"})
    try:
        # partitions go to the dir holding fewest: create until both dirs hold one
        names = [f"t{i}" for i in range(4)]
        for n in names:
            kc.create_topic(b.bootstrap, n, 1)
        on_bad = [n for n in names if (bad_dir / f"{n}-0").exists()]
        on_good = [n for n in names if (good_dir / f"{n}-0").exists()]
        assert on_bad and on_good, (on_bad, on_good)
        acked = {}
        for n in names:
            acked[n] = [f"{n}-{i}".encode() for i in range(20)]
            for i, v in enumerate(acked[n]):
                assert kb.produce(b.port, n, 0, kb.batch([(b"k", v)]))[:2] == (0, i)

        failing_ext4.fail()
        # the failure is noticed at the next write to that dir; the dir then goes offline
        for n in on_bad:
            err, _, _ = kb.produce(b.port, n, 0, kb.batch([(b"k", b"late")]))
            assert err == kb.KAFKA_STORAGE_ERROR
        kc.wait_until(lambda: "is offline" in b.log_text(), 10, "the dir is reported offline")
        for n in on_bad:
            assert kb.produce(b.port, n, 0, kb.batch([(b"k", b"late")]))[0] == kb.KAFKA_STORAGE_ERROR
        for n in on_good:
            err, base, _ = kb.produce(b.port, n, 0, kb.batch([(b"k", b"more")]))
            assert (err, base) == (0, 20), "the other dir keeps serving"
            acked[n].append(b"more")
            assert values_of(b.bootstrap, n) == acked[n]
        assert b.is_running()

        # a restart with the dir still failed: the broker starts, the good dir serves, the
        # bad dir's partitions stay offline (never recreated empty elsewhere)
        b.stop()
        b.start()
        for n in on_good:
            assert values_of(b.bootstrap, n) == acked[n]
        for n in on_bad:
            assert kb.produce(b.port, n, 0, kb.batch([(b"k", b"x")]))[0] == kb.KAFKA_STORAGE_ERROR
            assert not (good_dir / f"{n}-0").exists()
    finally:
        b.stop()
