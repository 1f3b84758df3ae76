"""The Prometheus endpoint (`metrics.port`): request-stage histograms, byte counters and
log gauges move with real traffic (confluent-kafka produce, kafka-python assign/fetch)."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from conftest import BrokerExited, free_port
from kclients import Deliveries, consume, create_topic, producer, produce_all

SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def scrape(port: int) -> dict[str, float]:
    """GET /metrics, checked line by line: {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        m = SERIES.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or family in typed, f"{name} has no # TYPE line before it"
        out[name + labels] = float(value)
    return out


def histogram(metrics: dict[str, float], family: str, request: str) -> tuple[float, list[float]]:
    """(count, cumulative bucket counts in order) of one request's histogram; checks that
    the buckets are cumulative and that _count equals the +Inf bucket."""
    prefix = f'{family}_bucket{{request="{request}",le="'
    buckets = [(k[len(prefix):-2], v) for k, v in metrics.items() if k.startswith(prefix)]
    assert buckets, f"no {family} buckets for request={request}"
    bounds = [float("inf") if le == "+Inf" else float(le) for le, _ in buckets]
    assert bounds == sorted(bounds) and bounds[-1] == float("inf"), bounds
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"{family}{{{request}}} buckets are not cumulative: {counts}"
    count = metrics[f'{family}_count{{request="{request}"}}']
    assert count == counts[-1], f"{family}_count {count} != +Inf bucket {counts[-1]}"
    return count, counts


def produce_and_read(b, topic: str, values: list[bytes], start: int) -> None:
    d = Deliveries()
    p = producer(b.bootstrap, **{"acks": "1"})
    produce_all(p, topic, [(0, None, v, None, None) for v in values], d)
    assert not d.errors, d.errors[:5]
    assert d.offsets[(topic, 0)] == list(range(start, start + len(values)))
    got = consume(b.bootstrap, topic, [0], start={0: start})
    assert [r.value for r in got[0]] == values


@pytest.mark.timeout_s(120)
def test_stage_histograms_counters_and_log_gauges_move_with_traffic(broker):
    port = free_port()
    b = broker({"metrics.port": port})
    assert f"metrics endpoint listening addr=http://127.0.0.1:{port}/metrics" in b.log_text()
    topic = "metered"
    create_topic(b.bootstrap, topic, 1)

    first = [b"first-%05d" % i + b"x" * 100 for i in range(500)]
    produce_and_read(b, topic, first, 0)
    m1 = scrape(port)

    produce1, _ = histogram(m1, "kafka_network_total_time_ms", "Produce")
    fetch1, _ = histogram(m1, "kafka_network_total_time_ms", "FetchConsumer")
    assert produce1 > 0 and fetch1 > 0
    for stage in ("request_queue", "local", "remote", "response_queue", "response_send"):
        count, _ = histogram(m1, f"kafka_network_{stage}_time_ms", "Produce")
        assert count == produce1, f"{stage}: every request is timed in every stage"
    assert m1['kafka_network_requests_total{request="Produce"}'] == produce1
    assert m1['kafka_network_requests_total{request="Metadata"}'] > 0
    assert 'kafka_network_requests_total{request="FetchFollower"}' not in m1
    partition = f'{{topic="{topic}",partition="0"}}'
    assert m1[f"kafka_log_log_end_offset{partition}"] == len(first)
    assert m1[f"kafka_log_high_watermark{partition}"] == len(first)
    assert m1[f"kafka_log_size_bytes{partition}"] > sum(map(len, first))
    value_bytes = sum(map(len, first))
    assert m1["kafka_server_bytes_in_total"] > value_bytes
    assert m1["kbroker_sendfile_bytes_total"] >= value_bytes, "records are read with sendfile"
    assert m1["kafka_server_bytes_out_total"] >= m1["kbroker_sendfile_bytes_total"]
    assert m1["kafka_server_connections"] >= 0
    assert 0.0 <= m1["kafka_network_processor_avg_idle_percent"] <= 1.0
    assert 0.0 <= m1["kafka_server_request_handler_avg_idle_percent"] <= 1.0

    second = [b"second-%05d" % i + b"y" * 1000 for i in range(300)]
    produce_and_read(b, topic, second, len(first))
    m2 = scrape(port)

    produce2, _ = histogram(m2, "kafka_network_total_time_ms", "Produce")
    fetch2, _ = histogram(m2, "kafka_network_total_time_ms", "FetchConsumer")
    assert produce2 > produce1, "Produce total-time count did not move"
    assert fetch2 > fetch1, "FetchConsumer total-time count did not move"
    assert m2['kafka_network_local_time_ms_sum{request="Produce"}'] > \
        m1['kafka_network_local_time_ms_sum{request="Produce"}']
    second_bytes = sum(map(len, second))
    assert m2["kafka_server_bytes_in_total"] - m1["kafka_server_bytes_in_total"] > second_bytes
    assert m2["kbroker_sendfile_bytes_total"] - m1["kbroker_sendfile_bytes_total"] >= second_bytes
    assert m2["kafka_server_bytes_out_total"] > m1["kafka_server_bytes_out_total"]
    assert m2[f"kafka_log_log_end_offset{partition}"] == len(first) + len(second)
    assert m2[f"kafka_log_high_watermark{partition}"] == len(first) + len(second)
    assert m2[f"kafka_log_size_bytes{partition}"] > m1[f"kafka_log_size_bytes{partition}"]

    # Only GET /metrics is served.
    with pytest.raises(urllib.error.HTTPError) as not_found:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    assert not_found.value.code == 404


def test_metrics_port_is_validated_and_off_by_default(broker):
    b = broker(start=False)
    b.overrides["metrics.port"] = "70000"
    with pytest.raises(BrokerExited):
        b.start()
    assert b.exit_codes[-1] == 2
    assert "metrics.port" in b.log_text()

    plain = broker()  # no metrics.port: no endpoint
    assert plain.is_running()
    assert "metrics endpoint listening" not in plain.log_text()
