"""Network partitions: each broker in its own network namespace (tests/netns.py), joined by
veth pairs to a bridge where ZooKeeper listens; links are cut while an acks=all producer
keeps writing, and afterwards every acknowledged record is read back at its offset and the
cut-off broker is back in the ISR.

- a leader cut off from everyone (its followers and ZooKeeper): its session expires, a new
  leader is elected from the ISR, and the old one cannot acknowledge acks=all writes (its
  followers no longer fetch from it, and its ISR changes are fenced); healed, it truncates
  and follows;
- a follower cut off from its leader only (both directions), still talking to ZooKeeper:
  the leader drops it from the ISR after replica.lag.time.max.ms; healed, it catches up
  and is added back.
"""

from __future__ import annotations

import pytest

from cluster import Cluster
from conftest import tail_text
from kclients import wait_until
from netns import Net, available
from test_replication import (FAST, Load, assert_acked_at_their_offsets, create, read_records,
                              wait_isr)
from zkserver import ZkNode

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


@pytest.fixture
def ns_cluster(request, tmp_path):
    """Three brokers, each in its own namespace, and a ZooKeeper on the bridge."""
    net = Net()
    zk = None
    c = None
    try:
        zk = ZkNode(tmp_path / "zk", host=net.gateway)
        zk.start()
        c = Cluster(tmp_path / "cluster", zk.connect, 3, FAST)
        for bid, b in c.brokers.items():
            b.place(net.add(f"b{bid}"), net.ns(f"b{bid}"))
        c.start()
        yield c, net
    finally:
        failed = getattr(request.node, "rep_call", None)
        if c is not None:
            c.stop()
            if failed is None or failed.failed:
                for b in c.brokers.values():
                    for lf in b.log_files:
                        print(f"\n----- {b.name} ({lf}) tail -----\n{tail_text(lf, 120)}")
        if zk is not None:
            zk.stop()
        net.close()


def test_leader_cut_off_from_followers_and_zookeeper(ns_cluster):
    c, net = ns_cluster
    create(c, "iso", assignment=[[1, 2, 3]])
    epoch = c.zk_topic("iso")[0]["leader_epoch"]
    with Load(c, "iso") as load:
        load.wait_acked(500)
        net.isolate("b1")
        try:
            wait_until(lambda: c.leaders("iso")[0] in (2, 3), 60, "a leader on the majority side")
            assert c.zk_topic("iso")[0]["leader_epoch"] > epoch
            load.wait_acked(1000, timeout=90)
        finally:
            net.rejoin("b1")
        wait_isr(c, "iso", [1, 2, 3], timeout=120)
        load.wait_acked(500, timeout=90)
    assert_acked_at_their_offsets(load, read_records(c, "iso", at_least=len(load.acked)))
    assert "session expired" in c.brokers[1].log_text().lower()


def test_follower_cut_off_from_its_leader(ns_cluster):
    c, net = ns_cluster
    create(c, "cut", assignment=[[1, 2, 3]])
    with Load(c, "cut") as load:
        load.wait_acked(500)
        net.cut("b1", "b3")
        try:
            # Broker 3 still reaches ZooKeeper (it stays registered); the leader drops it.
            wait_isr(c, "cut", [1, 2], timeout=60)
            assert c.registered() == [1, 2, 3]
            load.wait_acked(1000, timeout=90)
        finally:
            net.uncut("b1", "b3")
        wait_isr(c, "cut", [1, 2, 3], timeout=90)
        load.wait_acked(500, timeout=90)
    assert c.leaders("cut")[0] == 1
    assert_acked_at_their_offsets(load, read_records(c, "cut", at_least=len(load.acked)))
