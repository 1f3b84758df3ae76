"""Kafka's own command-line tools (3.9, the published jars) against kbroker.

`kafka-dump-log` (DumpLogSegments) reads kbroker's segment, index, time index and producer
snapshot files after a clean stop — deep iteration, index verification and the index sanity
check: the proof that the on-disk format is Kafka's. The admin tools (`kafka-topics`,
`kafka-configs`, `kafka-consumer-groups`, `kafka-log-dirs`, `kafka-delete-records`, the
console producer and consumer, the perf tests, `kafka-broker-api-versions`) run as users
run them, and their output is checked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from confluent_kafka import Producer

REPO = Path(__file__).resolve().parent.parent
KAFKA_LIB = os.environ.get("KBROKER_KAFKA_LIB", str(REPO / ".tools/kafka-lib"))


def tool(main_class: str, *args: str, stdin: str | None = None, timeout: float = 120,
         check: bool = True) -> str:
    """Runs one of Kafka's tools; returns its output (stdout and stderr), fails on exit != 0
    unless `check` is false."""
    assert list(Path(KAFKA_LIB).glob("kafka_2.13-*.jar")), "scripts/test fetches Kafka's tools"
    cmd = ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{KAFKA_LIB}/*",
           "-Dlog4j.configuration=file:/dev/null", main_class, *args]
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    text = "\n".join(line for line in (out.stdout + out.stderr).splitlines()
                     if not line.startswith(("SLF4J", "log4j")))
    assert out.returncode == 0 or not check, \
        f"{main_class} {' '.join(args)} exited {out.returncode}:\n{text}"
    return text


def test_dump_log_reads_kbrokers_files_as_kafkas(broker):
    # Small segments and a dense index: several rolled segments, many index entries.
    b = broker({"log.segment.bytes": 65536, "log.index.interval.bytes": 512})
    total = 0
    for codec in ["none", "lz4", "zstd", "gzip"]:
        # Batches well under segment.bytes (a larger one is refused, as by Kafka).
        p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True,
                      "compression.type": codec, "linger.ms": 5, "batch.size": 16384})
        failed = []
        for i in range(1500):
            p.produce("dumped", key=f"k{i}".encode(), value=f"{codec}-{i}".encode() * 8,
                      partition=0, on_delivery=lambda e, m: e and failed.append(e))
            if i % 500 == 0:
                p.poll(0)
        assert p.flush(60) == 0 and not failed, failed[:3]
        total += 1500
    del p  # no client left reconnecting to the stopped broker
    assert b.stop() == 0
    d = b.partition_dir("dumped", 0)
    logs = sorted(d.glob("*.log"))
    assert len(logs) >= 3, f"several segments: {logs}"

    offsets: list[int] = []
    for log in logs:
        out = tool("kafka.tools.DumpLogSegments", "--files", str(log), "--deep-iteration")
        assert "Exception" not in out and "isvalid: false" not in out, out[-2000:]
        assert "isvalid: true" in out
        offsets += [int(m) for m in re.findall(r"^\| offset: (\d+)", out, re.M)]
    assert offsets == list(range(total)), "every record once, in order, across the segments"

    indexes = [str(f) for f in sorted(d.glob("*.index")) + sorted(d.glob("*.timeindex"))]
    out = tool("kafka.tools.DumpLogSegments", "--files", ",".join(indexes), "--verify-index-only")
    for problem in ("Mismatches", "mismatch", "out of order", "Exception"):
        assert problem not in out, out[-3000:]
    out = tool("kafka.tools.DumpLogSegments", "--files", ",".join(indexes), "--index-sanity-check")
    assert out.count("passed sanity check") == len(indexes), out[-3000:]
    # Producer state: the idempotent producers' snapshot, read by Kafka's reader.
    snapshots = sorted(d.glob("*.snapshot"))
    assert snapshots, "a producer snapshot at the clean stop"
    out = tool("kafka.tools.DumpLogSegments", "--files", str(snapshots[-1]))
    assert out.count("producerId:") == 4, out[-2000:]


def test_admin_tools(broker):
    b = broker()
    bs = ("--bootstrap-server", b.bootstrap)
    out = tool("org.apache.kafka.tools.TopicCommand", *bs, "--create", "--topic", "tooled",
               "--partitions", "3", "--replication-factor", "1", "--config", "compression.type=lz4")
    assert "Created topic tooled." in out
    out = tool("org.apache.kafka.tools.TopicCommand", *bs, "--describe", "--topic", "tooled")
    assert "PartitionCount: 3" in out and "compression.type=lz4" in out, out
    assert re.search(r"TopicId: [A-Za-z0-9_-]{22}", out), out
    assert "tooled" in tool("org.apache.kafka.tools.TopicCommand", *bs, "--list").split()

    cfg = ("kafka.admin.ConfigCommand", *bs, "--entity-type", "topics", "--entity-name", "tooled")
    assert "Completed updating config" in tool(*cfg, "--alter", "--add-config",
                                               "retention.ms=123456,max.message.bytes=2000000")
    out = tool(*cfg, "--describe")
    assert "retention.ms=123456" in out and "DEFAULT_CONFIG:log.retention.hours=168" in out, out
    tool(*cfg, "--alter", "--delete-config", "retention.ms")
    assert "retention.ms" not in tool(*cfg, "--describe")

    lines = "".join(f"line-{i}\n" for i in range(200))
    tool("kafka.tools.ConsoleProducer", *bs, "--topic", "tooled", stdin=lines)
    out = tool("org.apache.kafka.tools.consumer.ConsoleConsumer", *bs, "--topic", "tooled",
               "--group", "tool-group", "--from-beginning", "--max-messages", "200")
    assert sorted(l for l in out.splitlines() if l.startswith("line-")) == \
        sorted(f"line-{i}" for i in range(200))
    groups = ("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", *bs, "--group",
              "tool-group")
    out = tool(*groups, "--describe")
    rows = [l.split() for l in out.splitlines() if l.startswith("tool-group")]
    assert len(rows) == 3 and all(r[5] == "0" for r in rows), out  # LAG 0 everywhere
    assert sum(int(r[3]) for r in rows) == 200, out  # CURRENT-OFFSET
    tool(*groups, "--topic", "tooled", "--reset-offsets", "--to-earliest", "--execute")
    rows = [l.split() for l in tool(*groups, "--describe").splitlines()
            if l.startswith("tool-group")]
    assert sum(int(r[5]) for r in rows) == 200, rows  # the whole topic is lag again

    full = max(rows, key=lambda r: int(r[4]))
    partition, end = int(full[2]), int(full[4])
    spec = REPO / f".tools/delete-records-{os.getpid()}.json"
    spec.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "tooled", "partition": partition, "offset": end // 2}]}))
    try:
        out = tool("org.apache.kafka.tools.DeleteRecordsCommand", *bs, "--offset-json-file",
                   str(spec))
    finally:
        spec.unlink()
    assert f"low_watermark: {end // 2}" in out, out

    out = tool("org.apache.kafka.tools.LogDirsCommand", *bs, "--describe", "--topic-list", "tooled")
    report = json.loads(out.splitlines()[-1])
    dirs = report["brokers"][0]["logDirs"]
    assert [d["logDir"] for d in dirs] == [str(b.log_dir.resolve())] and dirs[0]["error"] is None
    assert sorted(p["partition"] for p in dirs[0]["partitions"]) == \
        [f"tooled-{i}" for i in range(3)]
    assert sum(p["size"] for p in dirs[0]["partitions"]) > 0

    out = tool("org.apache.kafka.tools.ProducerPerformance", "--topic", "tooled", "--num-records",
               "20000", "--record-size", "100", "--throughput", "-1", "--producer-props",
               f"bootstrap.servers={b.bootstrap}")
    assert "20000 records sent" in out, out[-1000:]
    out = tool("org.apache.kafka.tools.ConsumerPerformance", *bs, "--topic", "tooled",
               "--messages", "20000", "--timeout", "60000")
    assert re.search(r", 2\d{4}, ", out), out[-1000:]  # data.consumed.in.nMsg >= 20000

    out = tool("kafka.admin.BrokerApiVersionsCommand", *bs)
    assert "Fetch(1): 4 to 17" in out and "Metadata(3): 0 to 12" in out, out
