"""Crash points of the log cleaner's segment swap, proved by stopping the real process
between each pair of steps (failpoints, see storage/src/failpoint.rs) and recovering.

At every point the restarted broker serves a valid compacted log: offsets increase, every
record is the one produced at its offset, every key's latest value is there — and it keeps
compacting and accepting writes."""

from __future__ import annotations

import pytest

from test_compaction import KeyedLog, check_compacted_view, read_log
from kclients import create_topic

POINTS = ["cleaner.after_write_cleaned", "cleaner.after_rename_to_swap",
          "cleaner.after_delete_indexes", "cleaner.after_replace_log"]


@pytest.mark.parametrize("point", POINTS)
def test_cleaner_swap_survives_a_crash_at(broker, point):
    b = broker({"log.cleaner.backoff.ms": 200}, start=False)
    b.env = {"KBROKER_FAILPOINTS": point}
    b.start()
    topic = "swap"
    create_topic(b.bootstrap, topic, 1, {"cleanup.policy": "compact", "segment.bytes": 2048,
                                         "min.cleanable.dirty.ratio": 0.01})
    keys = [f"key-{i:02d}".encode() for i in range(20)]
    log = KeyedLog(b.bootstrap, topic)
    try:
        # keys written once stay in the rolled segments, so the cleaner rewrites (swaps)
        # segments instead of only deleting emptied ones
        log.produce([(f"once-{i:03d}".encode(), b"o" * 40) for i in range(60)])
        for rnd in range(10):
            log.produce([(k, f"{k.decode()}-{rnd}-".encode() + b"x" * 16) for k in keys])
    except Exception:
        pass  # the failpoint may fire while producing; what was acknowledged is in `log`
    rc = b.wait_exit(60)
    assert rc == -9, f"the broker was killed at {point} (exit {rc})"
    assert f"failpoint {point} reached" in b.log_text()

    b.env = {}
    b.start()
    check_compacted_view(read_log(b.bootstrap, topic), log)
    d = b.partition_dir(topic, 0)
    leftovers = [f.name for f in d.iterdir() if f.name.endswith((".swap", ".cleaned"))]
    assert leftovers == [], f"recovery finished or undid the swap: {leftovers}"
    # it keeps working: more writes, another compaction pass, still a valid view
    log.produce([(k, f"{k.decode()}-after".encode()) for k in keys])
    check_compacted_view(read_log(b.bootstrap, topic), log)
