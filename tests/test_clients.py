"""Clients from other ecosystems, unmodified, at the newest protocol versions they speak.

@platformatic/kafka implements only the newest, flexible versions (before kbroker
advertised Kafka 3.9's ranges it could not create a topic); the Java client 3.9 fetches by
topic id (Fetch v17) once Metadata v12 gives ids, and batches OffsetFetch and
FindCoordinator; franz-go and sarama (set to its newest protocol version) are Go's two
clients; KafkaJS is the other Node client. Each produces, consumes in a group, commits, resumes from the commits,
and uses its admin API; the programs exit non-zero with the reason when a check fails.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import free_port
from test_metrics import scrape

REPO = Path(__file__).resolve().parent.parent
NODE_MODULES = os.environ.get("KBROKER_NODE_MODULES", str(REPO / ".tools/node/node_modules"))
JAVA_LIB = os.environ.get("KBROKER_JAVA_LIB", str(REPO / ".tools/java-lib"))
GO_CLIENTS = os.environ.get("KBROKER_GO_CLIENTS", str(REPO / ".tools/go/kbroker-go-clients"))


def test_platformatic_kafka_group_resumes_from_commits(broker):
    assert Path(NODE_MODULES, "@platformatic/kafka").is_dir(), "scripts/test installs it"
    b = broker()
    out = subprocess.run(["node", str(REPO / "tests/node/platformatic.mjs"), b.bootstrap,
                          "pk-topic", "300", "50"], capture_output=True, text=True, timeout=240,
                         env=dict(os.environ, KBROKER_NODE_MODULES=NODE_MODULES))
    assert out.returncode == 0 and out.stdout.strip().endswith("OK 300 50"), \
        out.stdout + out.stderr[-3000:]
    assert "unsupported version" not in b.log_text()


def incremental_fetches(port: int) -> float:
    """Fetches the broker served as incremental fetches of a session (KIP-227)."""
    return scrape(port)["kbroker_fetch_incremental_total"]


def test_java_client_group_by_topic_id(broker):
    assert list(Path(JAVA_LIB).glob("kafka-clients-*.jar")), "scripts/test fetches kafka-clients"
    port = free_port()
    b = broker({"metrics.port": port})
    out = subprocess.run(["java", "-cp", f"{JAVA_LIB}/*", str(REPO / "tests/java/ConsumerGroup.java"),
                          b.bootstrap, "java-group", "600", "90"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "OK 600 90" in out.stdout, out.stdout + out.stderr[-3000:]
    assert "unsupported version" not in b.log_text()
    # The Java consumer fetched through incremental fetch sessions (and still read every
    # record: the program checks them).
    assert incremental_fetches(port) > 0


@pytest.mark.parametrize("client", ["franz", "sarama"])
def test_go_client_group_resumes_from_commits(broker, client):
    assert Path(GO_CLIENTS).is_file(), "scripts/test builds tests/go"
    port = free_port()
    b = broker({"metrics.port": port})
    out = subprocess.run([GO_CLIENTS, client, b.bootstrap, f"go-{client}", "500", "70"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK 500 70"), \
        out.stdout + out.stderr[-3000:]
    assert "unsupported version" not in b.log_text()
    if client == "franz":  # franz-go uses fetch sessions; sarama does not
        assert incremental_fetches(port) > 0


def test_kafkajs_group_resumes_from_commits(broker):
    assert Path(NODE_MODULES, "kafkajs").is_dir(), "scripts/test installs kafkajs"
    b = broker()
    out = subprocess.run(["node", str(REPO / "tests/node/kafkajs_group.js"), b.bootstrap,
                          "js-group", "400", "60"], capture_output=True, text=True, timeout=240,
                         env=dict(os.environ, NODE_PATH=NODE_MODULES,
                                  KAFKAJS_NO_PARTITIONER_WARNING="1"))
    assert out.returncode == 0 and out.stdout.strip().startswith("OK 400 60"), \
        out.stdout + out.stderr[-3000:]
