"""Dynamic broker configs (`/config/brokers/<default>` and `/config/brokers/<id>`), set with
IncrementalAlterConfigs / AlterConfigs on BROKER resources and with Kafka's own
`kafka-configs --entity-type brokers`: the topic defaults they hold apply at once to every
topic that does not override them, the broker's own layer wins over the cluster-wide one,
DescribeConfigs names the layer a value comes from, they survive a restart, and what
cannot be changed at run time is refused."""

from __future__ import annotations

from confluent_kafka import KafkaError
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

import kbatch as kb
from kclients import admin, admin_error_code, create_topic, wait_until
from test_kafka_tools import tool

MESSAGE_TOO_LARGE = 10
DYNAMIC_BROKER_CONFIG = 2
DYNAMIC_DEFAULT_BROKER_CONFIG = 3


def set_broker(a, name: str, *entries: tuple[str, str | None]) -> int | None:
    """IncrementalAlterConfigs on BROKER `name` ("" = every broker); the error code."""
    ops = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET if v is not None
                       else AlterConfigOpType.DELETE) for k, v in entries]
    res = ConfigResource(ResourceType.BROKER, name, incremental_configs=ops)
    return admin_error_code(a.incremental_alter_configs([res], request_timeout=20)[res])


def describe(a, kind, name: str) -> dict:
    res = ConfigResource(kind, name)
    return a.describe_configs([res], request_timeout=20)[res].result(timeout=30)


def produce_error(b, topic: str, size: int) -> int:
    err, _, _ = kb.produce(b.port, topic, 0, kb.batch([(b"k", b"v" * size)]))
    return err


def test_dynamic_broker_configs_apply_at_once_and_persist(broker):
    b = broker()
    a = admin(b.bootstrap)
    create_topic(a, "plain", 1)
    create_topic(a, "own-limit", 1, {"max.message.bytes": "500000"})
    assert produce_error(b, "plain", 100_000) == 0

    # The cluster-wide layer (Kafka's tool: confluent-kafka cannot name the default
    # resource): every topic without an override takes it at once.
    cfg = ("kafka.admin.ConfigCommand", "--bootstrap-server", b.bootstrap, "--entity-type",
           "brokers", "--entity-default")
    tool(*cfg, "--alter", "--add-config", "message.max.bytes=50000")
    wait_until(lambda: produce_error(b, "plain", 100_000) == MESSAGE_TOO_LARGE, 20,
               "a 100 kB batch refused under message.max.bytes=50000")
    assert produce_error(b, "plain", 10_000) == 0
    assert produce_error(b, "own-limit", 100_000) == 0, "the topic's override wins"
    entry = describe(a, ResourceType.TOPIC, "plain")["max.message.bytes"]
    assert (entry.value, entry.source) == ("50000", DYNAMIC_DEFAULT_BROKER_CONFIG), entry
    out = tool("kafka.admin.ConfigCommand", "--bootstrap-server", b.bootstrap, "--entity-type",
               "topics", "--entity-name", "plain", "--describe", "--all")
    assert "max.message.bytes=50000 sensitive=false synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG:" \
           "message.max.bytes=50000, DEFAULT_CONFIG:message.max.bytes=1048588}" in out, out
    out = tool(*cfg, "--describe")
    assert "Default configs for brokers in the cluster are:\n  message.max.bytes=50000 " \
           "sensitive=false synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG:message.max.bytes=50000}" \
           in out, out

    # The broker's own layer wins over the cluster-wide one.
    assert set_broker(a, "0", ("message.max.bytes", "200000")) is None
    wait_until(lambda: produce_error(b, "plain", 100_000) == 0, 20,
               "the broker's own message.max.bytes=200000 in force")
    mine = describe(a, ResourceType.BROKER, "0")["message.max.bytes"]
    assert (mine.value, mine.source) == ("200000", DYNAMIC_BROKER_CONFIG), mine

    # Refused, and nothing written: a key kbroker does not change at run time, a key no
    # broker changes at run time, a bad value. (Another broker's id: INVALID_REQUEST, in
    # tests/protocol_versions.rs — the admin client would send it to that broker.)
    assert set_broker(a, "0", ("num.io.threads", "4")) == KafkaError.INVALID_CONFIG
    assert set_broker(a, "0", ("broker.id", "3")) == KafkaError.INVALID_CONFIG
    assert set_broker(a, "0", ("log.retention.ms", "soon")) == KafkaError.INVALID_CONFIG
    assert describe(a, ResourceType.BROKER, "0")["message.max.bytes"].value == "200000"

    # Kept in the store: a restart comes back with both layers in force.
    b.restart()
    a = admin(b.bootstrap)
    assert produce_error(b, "plain", 100_000) == 0
    assert produce_error(b, "plain", 300_000) == MESSAGE_TOO_LARGE
    assert set_broker(a, "0", ("message.max.bytes", None)) is None
    wait_until(lambda: produce_error(b, "plain", 100_000) == MESSAGE_TOO_LARGE, 20,
               "the cluster-wide value again once the broker's own is deleted")


def test_kafka_configs_tool_sets_broker_defaults(broker):
    b = broker()
    bs = ("--bootstrap-server", b.bootstrap)
    cfg = ("kafka.admin.ConfigCommand", *bs, "--entity-type", "brokers")
    out = tool(*cfg, "--entity-default", "--alter", "--add-config",
               "log.retention.ms=3600000,log.cleanup.policy=[delete,compact]")
    assert "Completed updating default config for brokers in the cluster" in out, out
    # Brokers apply the change when they see its notification (within a second), as Kafka's.
    out = wait_until(lambda: (lambda o: o if "log.retention.ms" in o else None)(
        tool(*cfg, "--entity-default", "--describe")), 30, "the default layer described")
    assert "log.retention.ms=3600000" in out and "log.cleanup.policy=delete,compact" in out, out
    out = tool(*cfg, "--entity-name", "0", "--describe", "--all")
    assert "log.retention.ms=3600000 sensitive=false " \
           "synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG:log.retention.ms=3600000, " \
           "DEFAULT_CONFIG:log.retention.hours=168}" in out, out
    # A new topic starts with the cluster-wide defaults.
    a = admin(b.bootstrap)
    create_topic(a, "after", 1)
    entries = describe(a, ResourceType.TOPIC, "after")
    assert entries["retention.ms"].value == "3600000"
    assert entries["cleanup.policy"].value == "delete,compact", "as written, as Kafka shows it"
    out = tool(*cfg, "--entity-name", "0", "--alter", "--add-config", "num.io.threads=4",
               check=False)
    assert "kbroker cannot update these configs dynamically" in out, out
