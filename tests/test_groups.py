"""Consumer groups end to end: rebalancing (confluent-kafka, kafka-python, aiokafka, kcat),
static membership, commit/resume across broker restarts and kill -9, the admin APIs and the
/consumers/... znodes mirrored into the metadata tree.

The "exactly one owner" checks use each member's own view of its assignment: every member
non-empty, no partition in two members, the union is every partition of the topic (held for
a second of polling, so a check does not pass on a transient view)."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest
from confluent_kafka import (ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError,
                             KafkaException)
from confluent_kafka import TopicPartition as CKTopicPartition
from kafka import TopicPartition as KPTopicPartition
from kafka.admin import KafkaAdminClient

from groupkit import (FAST_GROUPS, CKMember, KcatMember, KPMember, ProcMember, Procs,
                      assignments_of, exclusive_cover, meta_dump, meta_get, meta_ls, poll_members,
                      tp_set, wait_exclusive)
from kclients import (Deliveries, admin, admin_error_code, create_topic, producer, produce_all,
                      wait_until)


def produce_numbered(bootstrap: str, topic: str, partitions: int, n: int, start: int = 0,
                     prefix: str = "r") -> dict:
    """Produce records key=f"{prefix}{i}" round-robin over partitions; returns
    {(partition, offset): key}."""
    dr = Deliveries()
    p = producer(bootstrap, **{"linger.ms": 2})
    recs = [(i % partitions, f"{prefix}{i}".encode(), f"value-{prefix}{i}".encode(), None, None)
            for i in range(start, start + n)]
    produce_all(p, topic, recs, dr, flush_timeout=60)
    assert dr.errors == [] and dr.count == n, dr.errors[:5]
    # map back: produce order per partition == offset order
    out = {}
    per_part: dict[int, list] = {}
    for part, key, _v, _h, _t in recs:
        per_part.setdefault(part, []).append(key.decode())
    for (t, part), offs in dr.offsets.items():
        assert len(offs) == len(per_part[part])
        for off, key in zip(sorted(offs), per_part[part]):
            out[(part, off)] = key
    return out


def describe(a, group: str, timeout: float = 20.0):
    return a.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=timeout)


def describe_assignments(a, group: str) -> dict:
    """{client_id: {(topic, partition)}} from DescribeGroups, only when the group is Stable."""
    d = describe(a, group)
    if d.state != ConsumerGroupState.STABLE:
        return {}
    return {m.client_id: tp_set(m.assignment.topic_partitions) for m in d.members}


def committed(a, group: str, tps: list, with_metadata: bool = False) -> dict:
    """{(topic, partition): offset} (or (offset, metadata)) from
    AdminClient.list_consumer_group_offsets."""
    req = [ConsumerGroupTopicPartitions(group, [CKTopicPartition(t, p) for t, p in tps])]
    res = a.list_consumer_group_offsets(req, request_timeout=15)[group].result(timeout=30)
    assert res.group_id == group
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, f"list_consumer_group_offsets({group}) {tp}: {tp.error}"
        out[(tp.topic, tp.partition)] = (tp.offset, tp.metadata) if with_metadata else tp.offset
    return out


# --- 1. confluent-kafka: join, leave, expire, join -------------------------------------------


@pytest.mark.timeout_s(300)
def test_confluent_group_rebalances(broker):
    b = broker(FAST_GROUPS)
    topic, group = "rebal", "g-rebal"
    create_topic(b.bootstrap, topic, 6)
    all6 = {(topic, p) for p in range(6)}
    a = admin(b.bootstrap)
    procs = Procs()
    members: list[CKMember] = []
    try:
        # session.timeout.ms=45 s: the group can only shrink before that through LeaveGroup
        members = [CKMember(b.bootstrap, group, [topic], name=f"m{i}",
                            **{"session.timeout.ms": 45000}) for i in range(3)]
        wait_exclusive(poll_members(members), assignments_of(members), all6, 60,
                       "3 confluent-kafka members never split 6 partitions exclusively")
        # the broker's view (DescribeGroups) is the members' view
        want = {m.name: m.assignment() for m in members}
        wait_until(lambda: (poll_members(members)(), describe_assignments(a, group) == want)[1], 30,
                   f"DescribeGroups does not show the assignment {want}")

        # records produced now are read by exactly one member each, by the partition's owner
        produced = produce_numbered(b.bootstrap, topic, 6, 600)
        owner = {tp: m for m in members for tp in m.assignment()}

        def all_read():
            poll_members(members)()
            return sum(len(m.records) for m in members) >= len(produced)
        wait_until(all_read, 60, "the 3 members did not read the 600 records produced")
        poll_members(members, 0.5)()
        got = [(p, o, k.decode()) for m in members for (_t, p, o, k, _v) in m.records]
        assert len(got) == len(set(got)), "a record was delivered twice in a stable group"
        assert {(p, o): k for p, o, k in got} == produced
        for m in members:
            for (t, p, _o, _k, _v) in m.records:
                assert owner[(t, p)] is m, f"{m.name} read partition {p} owned by {owner[(t, p)].name}"

        # LeaveGroup: the remaining two take over well before the 45 s session timeout
        leaver = members.pop()
        leaver.close()
        wait_exclusive(poll_members(members), assignments_of(members), all6, 30,
                       "after one member closed (LeaveGroup) the other two do not own all 6 "
                       "partitions (within 30 s, session.timeout.ms is 45 s)")

        # a member that is killed -9 is expired after its session timeout (3 s)
        child = ProcMember(procs, b.bootstrap, group, topic, "child", session_timeout_ms=3000)
        everyone = members + [child]
        wait_exclusive(poll_members(everyone), assignments_of(everyone), all6, 60,
                       "the child process member never got its share of partitions")
        child.kill9()
        wait_exclusive(poll_members(members), assignments_of(members), all6, 60,
                       "after kill -9 of a member the survivors do not own all 6 partitions")
        assert sorted(m.client_id for m in describe(a, group).members) == ["m0", "m1"]

        # a new member gets partitions
        members.append(CKMember(b.bootstrap, group, [topic], name="m3",
                                **{"session.timeout.ms": 45000}))
        wait_exclusive(poll_members(members), assignments_of(members), all6, 60,
                       "a member that joined later got no partitions")
        d = describe(a, group)
        assert d.state == ConsumerGroupState.STABLE
        assert sorted(m.client_id for m in d.members) == ["m0", "m1", "m3"]
    finally:
        procs.kill_all()
        for m in members:
            m.close()


# --- 2. other clients: kafka-python, aiokafka, kcat -----------------------------------------


@pytest.mark.timeout_s(240)
def test_kafka_python_group(broker):
    b = broker(FAST_GROUPS)
    topic, group = "kp-group", "g-kp"
    create_topic(b.bootstrap, topic, 6)
    all6 = {(topic, p) for p in range(6)}
    members: list[KPMember] = []
    try:
        members = [KPMember(b.bootstrap, group, [topic], f"kp{i}") for i in range(3)]
        got = wait_exclusive(poll_members(members), assignments_of(members), all6, 90,
                             "3 kafka-python members never split 6 partitions exclusively")
        produced = produce_numbered(b.bootstrap, topic, 6, 300)
        wait_until(lambda: sum(len(m.snapshot()) for m in members) >= 300, 60,
                   "the kafka-python members did not read the 300 records")
        time.sleep(0.5)
        assert [m.assignment() for m in members] == got, "the group rebalanced while nothing changed"
        flat = [(p, o, k.decode()) for m in members for (_t, p, o, k, _v) in m.snapshot()]
        assert len(flat) == len(set(flat)), "a record was delivered twice in a stable group"
        assert {(p, o): k for p, o, k in flat} == produced
        for m, owned in zip(members, got):
            assert {(t, p) for t, p, *_ in m.snapshot()} <= owned, \
                f"{m.name} read partitions it does not own"

        # one leaves (LeaveGroup on close); the other two take over
        members.pop().close()
        wait_exclusive(poll_members(members), assignments_of(members), all6, 60,
                       "after a kafka-python member closed the other two do not own all partitions")
    finally:
        for m in members:
            m.close()


@pytest.mark.timeout_s(240)
def test_aiokafka_group(broker):
    from aiokafka import AIOKafkaConsumer

    b = broker(FAST_GROUPS)
    topic, group = "aio-group", "g-aio"
    create_topic(b.bootstrap, topic, 6)
    all6 = {(topic, p) for p in range(6)}

    async def main():
        consumers = []
        records: dict[int, list] = {}
        stop = asyncio.Event()

        async def run(i, c):
            while not stop.is_set():
                batches = await c.getmany(timeout_ms=200)
                for tp, recs in batches.items():
                    records[i].extend((r.partition, r.offset, r.key.decode()) for r in recs)

        async def wait_cover(members, timeout, what):
            deadline = time.monotonic() + timeout
            ok_since, last = None, None
            while True:
                a = [tp_set(c.assignment()) for c in members]
                last = exclusive_cover(a, all6)
                now = time.monotonic()
                if last is None:
                    ok_since = ok_since or now
                    if now - ok_since >= 1.0:
                        return a
                else:
                    ok_since = None
                if now > deadline:
                    raise AssertionError(f"{what}: not true after {timeout}s; last: {last}")
                await asyncio.sleep(0.1)

        tasks = []
        try:
            for i in range(3):
                c = AIOKafkaConsumer(topic, bootstrap_servers=b.bootstrap, group_id=group,
                                     client_id=f"aio{i}", auto_offset_reset="earliest",
                                     enable_auto_commit=False, session_timeout_ms=10000,
                                     heartbeat_interval_ms=500)
                await c.start()
                consumers.append(c)
                records[i] = []
                tasks.append(asyncio.create_task(run(i, c)))
            got = await wait_cover(consumers, 90, "3 aiokafka members never split 6 partitions")
            produced = await asyncio.to_thread(produce_numbered, b.bootstrap, topic, 6, 300)
            deadline = time.monotonic() + 60
            while sum(map(len, records.values())) < 300:
                assert time.monotonic() < deadline, "the aiokafka members did not read 300 records"
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)
            assert [tp_set(c.assignment()) for c in consumers] == got
            flat = [r for rs in records.values() for r in rs]
            assert len(flat) == len(set(flat)), "a record was delivered twice in a stable group"
            assert {(p, o): k for p, o, k in flat} == produced
            for i, rs in records.items():
                assert {(topic, p) for p, _o, _k in rs} <= got[i]

            # one leaves (LeaveGroup on stop); the two others take over
            stop_one = consumers.pop()
            tasks.pop().cancel()
            await stop_one.stop()
            await wait_cover(consumers, 60, "after an aiokafka member stopped the other two do "
                             "not own all partitions")
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            for c in consumers:
                await c.stop()

    asyncio.run(main())


@pytest.mark.timeout_s(240)
def test_kcat_balanced_consumers(broker, kcat_bin, tmp_path):
    b = broker(FAST_GROUPS)
    topic, group = "kcat-group", "g-kcat"
    create_topic(b.bootstrap, topic, 6)
    all6 = {(topic, p) for p in range(6)}
    a = admin(b.bootstrap)
    procs = Procs()
    try:
        kcats = [KcatMember(procs, kcat_bin, b.bootstrap, group, topic, f"kcat{i}", tmp_path)
                 for i in range(3)]

        def stable_cover():
            for k in kcats:
                assert k.alive(), f"{k.name} exited: {k.err.read_text()[-1000:]}"
            got = describe_assignments(a, group)
            if sorted(got) != ["kcat0", "kcat1", "kcat2"]:
                return None
            return got if exclusive_cover(list(got.values()), all6) is None else None

        owners = wait_until(stable_cover, 90, "3 kcat -G consumers never formed a stable group "
                            "owning 6 partitions exclusively (DescribeGroups)", interval=0.5)
        produced = produce_numbered(b.bootstrap, topic, 6, 600, prefix="k")

        def read_all():
            return sum(len(k.records()) for k in kcats) >= len(produced)
        wait_until(read_all, 60, "the kcat consumers did not read every produced record",
                   interval=0.5)
        time.sleep(0.5)
        assert stable_cover() == owners, "the kcat group rebalanced while nothing changed"
        seen = {}
        for k in kcats:
            for p, o, key, value in k.records():
                assert value == f"value-{key}", (k.name, p, o, key, value)
                assert (topic, p) in owners[k.name], \
                    f"{k.name} read partition {p}, which DescribeGroups assigns to another member"
                assert (p, o) not in seen, f"record {p}/{o} delivered twice ({seen[(p, o)]}, {k.name})"
                seen[(p, o)] = k.name
        assert {(p, o): key for k in kcats for p, o, key, _v in k.records()} == produced

        # SIGTERM one kcat: it leaves, the other two take over its partitions
        all_kcats = list(kcats)
        kcats[2].stop()
        kcats = kcats[:2]

        def two_cover():
            got = describe_assignments(a, group)
            return sorted(got) == ["kcat0", "kcat1"] and \
                exclusive_cover(list(got.values()), all6) is None
        wait_until(two_cover, 60, "after one kcat left, the other two do not own all partitions",
                   interval=0.5)

        # kcat commits what it read when it closes (from a Stable group: the last one is
        # stopped after it took over everything): the group's offsets end at the log ends
        assert kcats[0].stop() == 0, f"kcat0: {kcats[0].err.read_text()[-1000:]}"

        def one_cover():
            got = describe_assignments(a, group)
            return sorted(got) == ["kcat1"] and got["kcat1"] == all6
        wait_until(one_cover, 60, "after kcat0 left, kcat1 does not own all partitions",
                   interval=0.5)
        # one more record per partition (offset 100): once kcat1 printed all six, it has
        # consumed everything (per partition in order)
        produce_numbered(b.bootstrap, topic, 6, 6, start=600, prefix="k")
        wait_until(lambda: {(p, o) for p, o, _k, _v in kcats[1].records() if o == 100} ==
                   {(p, 100) for p in range(6)}, 60, "kcat1 did not read offset 100 of every "
                   "partition", interval=0.5)
        assert kcats[1].stop() == 0, f"kcat1: {kcats[1].err.read_text()[-1000:]}"
        wait_until(lambda: describe(a, group).state == ConsumerGroupState.EMPTY, 30,
                   "the kcat group is not EMPTY after every member stopped")
        got = committed(a, group, sorted(all6))
        if got != {tp: 101 for tp in all6}:
            detail = {k.name: sorted(collections.Counter(p for p, *_ in k.records()).items())
                      for k in all_kcats}
            raise AssertionError(f"committed offsets of the kcat group {got}, want 101 each; "
                                 f"owners before the leave {owners}; records per partition "
                                 f"read by each kcat {detail}")
    finally:
        procs.kill_all()


@pytest.mark.timeout_s(180)
def test_commit_accepted_while_group_prepares_rebalance(broker):
    """Kafka accepts an OffsetCommit with the current generation while the group is in
    PreparingRebalance (GroupCoordinator: "During PreparingRebalance phase, we still allow a
    commit request"). Eager clients rely on it: librdkafka commits what it consumed when its
    partitions are revoked, before it rejoins; a refused commit means the next owner reads
    those records again."""
    b = broker(FAST_GROUPS)
    topic, group = "prep", "g-prep"
    create_topic(b.bootstrap, topic, 2)
    a = admin(b.bootstrap)
    ma = mb = None
    try:
        ma = CKMember(b.bootstrap, group, [topic], name="pa", **{"session.timeout.ms": 30000})
        wait_exclusive(poll_members([ma]), assignments_of([ma]), {(topic, 0), (topic, 1)}, 60,
                       "a lone member did not get both partitions")
        res = ma.c.commit(offsets=[CKTopicPartition(topic, 0, 5)], asynchronous=False)
        assert all(tp.error is None for tp in res)
        # a second member joins; the first is not polled, so it cannot rejoin (its revoke
        # callback is pending) and the group stays in PreparingRebalance
        mb = CKMember(b.bootstrap, group, [topic], name="pb", **{"session.timeout.ms": 30000})
        wait_until(lambda: (mb.poll(0.1),
                            describe(a, group).state == ConsumerGroupState.PREPARING_REBALANCING)[1],
                   30, "the group did not enter PreparingRebalance when a second member joined")
        err = None
        try:
            res = ma.c.commit(offsets=[CKTopicPartition(topic, 0, 7),
                                       CKTopicPartition(topic, 1, 9)], asynchronous=False)
            errs = [(tp.partition, tp.error) for tp in res if tp.error is not None]
        except Exception as e:  # noqa: BLE001 - reported
            err = e
            errs = None
        assert err is None and not errs, \
            (f"OffsetCommit with the current generation during PreparingRebalance was refused: "
             f"{err or errs} (Kafka accepts it)")
        assert committed(a, group, [(topic, 0), (topic, 1)]) == {(topic, 0): 7, (topic, 1): 9}
        # the rebalance then completes normally
        wait_exclusive(poll_members([ma, mb]), assignments_of([ma, mb]),
                       {(topic, 0), (topic, 1)}, 60, "the two members never split the partitions")
    finally:
        for m in (ma, mb):
            if m:
                m.close()


@pytest.mark.timeout_s(120)
def test_session_timeout_below_broker_minimum_is_refused(broker):
    """JoinGroup with session.timeout.ms below group.min.session.timeout.ms (default 6000)
    fails with INVALID_SESSION_TIMEOUT; the member never gets partitions."""
    b = broker({"group.initial.rebalance.delay.ms": 0, "offsets.topic.num.partitions": 5})
    topic = "short-session"
    create_topic(b.bootstrap, topic, 1)
    m = CKMember(b.bootstrap, "g-short", [topic], name="short",
                 **{"session.timeout.ms": 3000, "heartbeat.interval.ms": 500})
    try:
        wait_until(lambda: (m.poll(0.2),
                            any(e.code() == KafkaError.INVALID_SESSION_TIMEOUT for e in m.errors))[1],
                   30, "no INVALID_SESSION_TIMEOUT error for session.timeout.ms=3000 < 6000")
        assert m.assignment() == set()
    finally:
        m.close()


# --- 3. static membership ---------------------------------------------------------------------


@pytest.mark.timeout_s(240)
def test_static_membership_rejoin_keeps_assignment(broker):
    b = broker(FAST_GROUPS)
    topic, group = "static", "g-static"
    create_topic(b.bootstrap, topic, 4)
    all4 = {(topic, p) for p in range(4)}
    a = admin(b.bootstrap)
    session = 10000
    static = {"session.timeout.ms": session, "statistics.interval.ms": 500}
    ma = mb = mb2 = None
    try:
        ma = CKMember(b.bootstrap, group, [topic], name="sa", **{"group.instance.id": "inst-a"}, **static)
        mb = CKMember(b.bootstrap, group, [topic], name="sb", **{"group.instance.id": "inst-b"}, **static)
        wait_exclusive(poll_members([ma, mb]), assignments_of([ma, mb]), all4, 60,
                       "two static members never split the partitions", settle=2.0)
        d = describe(a, group)
        assert d.state == ConsumerGroupState.STABLE
        assert sorted(m.group_instance_id for m in d.members) == ["inst-a", "inst-b"]
        a_parts, b_parts = ma.assignment(), mb.assignment()
        a_revokes, a_assigns = len(ma.revoked_events), len(ma.assigned_events)
        wait_until(lambda: (ma.poll(0.2), ma.stats)[1], 10, "no statistics from librdkafka")
        a_rebalances = ma.stats[-1]["cgrp"]["rebalance_cnt"]
        old_b_member = mb.member_id()

        # close without LeaveGroup (static member) and come back with the same instance id
        mb.close()
        mb2 = CKMember(b.bootstrap, group, [topic], name="sb2", **{"group.instance.id": "inst-b"},
                       **static)
        wait_until(lambda: (poll_members([ma, mb2])(), mb2.assignment())[1], 30,
                   "the restarted static member got no assignment")
        end = time.monotonic() + 4   # give a (wrong) rebalance time to show up
        while time.monotonic() < end:
            poll_members([ma, mb2])()
        assert mb2.assignment() == b_parts, \
            f"static member rejoined with {mb2.assignment()}, had {b_parts}"
        assert ma.assignment() == a_parts
        assert len(ma.revoked_events) == a_revokes and len(ma.assigned_events) == a_assigns, \
            ("the other member was rebalanced when a static member rejoined: "
             f"revoked {ma.revoked_events[a_revokes:]} assigned {ma.assigned_events[a_assigns:]}")
        assert ma.stats[-1]["cgrp"]["rebalance_cnt"] == a_rebalances, \
            "librdkafka counted a rebalance of the other member"
        d = describe(a, group)
        assert d.state == ConsumerGroupState.STABLE
        by_instance = {m.group_instance_id: m for m in d.members}
        assert sorted(by_instance) == ["inst-a", "inst-b"]
        assert by_instance["inst-b"].member_id == mb2.member_id() != old_b_member
        assert tp_set(by_instance["inst-b"].assignment.topic_partitions) == b_parts

        # gone for good: expired after session.timeout.ms, the other member takes over
        mb2.close()
        wait_exclusive(poll_members([ma]), assignments_of([ma]), all4, 60,
                       "after the static member stayed away past its session timeout the other "
                       "member does not own every partition")
        d = describe(a, group)
        assert [m.group_instance_id for m in d.members] == ["inst-a"]
    finally:
        for m in (ma, mb, mb2):
            if m:
                m.close()


# --- 4. broadcast -------------------------------------------------------------------------------


@pytest.mark.timeout_s(180)
def test_two_groups_each_get_every_record(broker):
    # the default group.initial.rebalance.delay.ms (3000): members that join an empty group
    # within the delay all land in its first generation, so nobody is assigned twice
    b = broker({"offsets.topic.num.partitions": 5})
    topic = "broadcast"
    create_topic(b.bootstrap, topic, 3)
    all3 = {(topic, p) for p in range(3)}
    produced = produce_numbered(b.bootstrap, topic, 3, 150, prefix="a")
    ga = gb = []
    try:
        ga = [CKMember(b.bootstrap, "g-one", [topic], name="one0")]
        # one0 is alone in g-one for a second (without the delay it would be assigned every
        # partition now and have them revoked when one1 joins)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            ga[0].poll(0.1)
        ga.append(CKMember(b.bootstrap, "g-one", [topic], name="one1"))
        gb = [CKMember(b.bootstrap, "g-two", [topic], name="two0")]
        everyone = ga + gb
        wait_exclusive(poll_members(everyone), assignments_of(ga), all3, 60,
                       "group g-one never split the partitions")
        wait_exclusive(poll_members(everyone), assignments_of(gb), all3, 60,
                       "group g-two's only member does not own every partition")
        for m in everyone:
            assert len(m.assigned_events) == 1 and m.revoked_events == [], \
                (f"{m.name}: assigned {m.assigned_events}, revoked {m.revoked_events}: with the "
                 "initial rebalance delay the members should have joined one generation")
        produced.update(produce_numbered(b.bootstrap, topic, 3, 150, start=150, prefix="a"))

        def keys(members):
            return {(p, o): k.decode() for m in members for (_t, p, o, k, _v) in m.records}
        wait_until(lambda: (poll_members(everyone)(), keys(ga) == produced and keys(gb) == produced)[1],
                   60, "each group should receive every record")
        # g-two never rebalanced after its single member joined: no duplicates there
        assert len(gb[0].records) == len(produced)
    finally:
        for m in ga + gb:
            m.close()


# --- 5. commit and resume across broker restarts ---------------------------------------------


def first_records(members_or_member, want_total: int, timeout: float = 60.0) -> dict:
    m = members_or_member
    wait_until(lambda: (m.poll(0.2), len(m.records) >= want_total)[1], timeout,
               f"{m.name} did not read {want_total} records")
    m.poll(0.5)
    by_part: dict[int, list[int]] = {}
    for _t, p, o, _k, _v in m.records:
        by_part.setdefault(p, []).append(o)
    return by_part


@pytest.mark.timeout_s(240)
@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_commit_resume_across_restart(broker, how):
    b = broker(FAST_GROUPS)
    topic, group = "resume", "g-resume"
    create_topic(b.bootstrap, topic, 3)
    tps = [(topic, p) for p in range(3)]
    produce_numbered(b.bootstrap, topic, 3, 150)            # 50 per partition
    a = admin(b.bootstrap)

    def restart():
        if how == "sigterm":
            assert b.stop() == 0
        else:
            b.kill9()
        b.start()

    # round 1: read everything, commit chosen offsets (explicit, synchronous), close
    m = CKMember(b.bootstrap, group, [topic], name="c1")
    try:
        by_part = first_records(m, 150)
        assert {p: sorted(v) for p, v in by_part.items()} == {p: list(range(50)) for p in range(3)}
        want1 = {0: 17, 1: 33, 2: 50}
        res = m.c.commit(offsets=[CKTopicPartition(topic, p, o, metadata=f"meta-{p}-{o}")
                                  for p, o in want1.items()], asynchronous=False)
        assert all(tp.error is None for tp in res), res
        want_meta = {(topic, p): (o, f"meta-{p}-{o}") for p, o in want1.items()}
        assert committed(a, group, tps, with_metadata=True) == want_meta
    finally:
        m.close()

    restart()
    a = admin(b.bootstrap)
    assert committed(a, group, tps, with_metadata=True) == want_meta, \
        f"committed offsets (and their metadata) after broker {how} + restart"
    produce_numbered(b.bootstrap, topic, 3, 15, start=150)  # 5 more per partition: offsets 50..54
    m = CKMember(b.bootstrap, group, [topic], name="c2")
    try:
        want_n = sum(55 - o for o in want1.values())
        by_part = first_records(m, want_n)
        for p, start in want1.items():
            assert by_part.get(p, [None])[0] == start, \
                f"partition {p}: first record after resume at {by_part.get(p)}, committed {start}"
            assert by_part[p] == list(range(start, 55)), f"partition {p}: {by_part[p]}"
        # round 2: commit from a group member (generation + member id), then stop the broker
        want2 = {0: 40, 1: 55, 2: 52}
        res = m.c.commit(offsets=[CKTopicPartition(topic, p, o) for p, o in want2.items()],
                         asynchronous=False)
        assert all(tp.error is None for tp in res), res
    finally:
        m.close()

    restart()
    a = admin(b.bootstrap)
    assert committed(a, group, tps) == {(topic, p): o for p, o in want2.items()}, \
        f"committed offsets after a second broker {how} + restart"
    produce_numbered(b.bootstrap, topic, 3, 15, start=165)  # offsets 55..59
    m = CKMember(b.bootstrap, group, [topic], name="c3")
    try:
        by_part = first_records(m, sum(60 - o for o in want2.values()))
        for p, start in want2.items():
            assert by_part[p] == list(range(start, 60)), \
                f"partition {p}: read {by_part[p]} after resume, committed {start}"
    finally:
        m.close()


# --- 6. admin APIs ------------------------------------------------------------------------------


@pytest.mark.timeout_s(240)
def test_admin_group_apis(broker):
    b = broker(FAST_GROUPS)
    topic, group = "adm", "g-admin"
    create_topic(b.bootstrap, topic, 4)
    tps = [(topic, p) for p in range(4)]
    all4 = set(tps)
    a = admin(b.bootstrap)
    produce_numbered(b.bootstrap, topic, 4, 40)

    # a group nobody ever used: OffsetFetch answers -1 (OFFSET_INVALID, -1001 in librdkafka)
    assert committed(a, "g-never", tps) == {tp: -1001 for tp in tps}
    kp = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=30000)
    members = []
    try:
        res = kp.list_group_offsets({"g-never": [KPTopicPartition(t, p) for t, p in tps]})
        assert {(tp.topic, tp.partition): om.offset for tp, om in res["g-never"].items()} == \
            {tp: -1 for tp in tps}
        # all committed offsets of a group (OffsetFetch with null topics): none
        assert kp.list_group_offsets("g-never") == {"g-never": {}}

        members = [CKMember(b.bootstrap, group, [topic], name=f"adm{i}") for i in range(2)]
        wait_exclusive(poll_members(members), assignments_of(members), all4, 60,
                       "two members never split 4 partitions")

        listed = a.list_consumer_groups(request_timeout=15).result(timeout=30)
        assert listed.errors == []
        by_id = {g.group_id: g for g in listed.valid}
        assert group in by_id, f"list_consumer_groups: {sorted(by_id)}"
        assert by_id[group].state == ConsumerGroupState.STABLE
        assert not by_id[group].is_simple_consumer_group

        d = describe(a, group)
        assert d.group_id == group and d.state == ConsumerGroupState.STABLE
        assert not d.is_simple_consumer_group
        assert d.partition_assignor in ("range", "roundrobin"), d.partition_assignor
        assert d.coordinator.port == b.port
        want = {m.member_id(): m.assignment() for m in members}
        got = {m.member_id: tp_set(m.assignment.topic_partitions) for m in d.members}
        assert got == want, f"DescribeGroups {got} vs members' own view {want}"
        assert sorted(m.client_id for m in d.members) == ["adm0", "adm1"]

        # active group that never committed: -1001; then commit, fetch
        assert committed(a, group, tps) == {tp: -1001 for tp in tps}
        res = members[0].c.commit(offsets=[CKTopicPartition(t, p, 3) for t, p in
                                           sorted(members[0].assignment())], asynchronous=False)
        assert all(tp.error is None for tp in res)
        want_off = {tp: (3 if tp in members[0].assignment() else -1001) for tp in tps}
        assert committed(a, group, tps) == want_off
        got_kp = kp.list_group_offsets({group: None})[group]
        assert {(tp.topic, tp.partition): om.offset for tp, om in got_kp.items()} == \
            {tp: 3 for tp in members[0].assignment()}

        # deleting an active group fails with NON_EMPTY_GROUP
        err = admin_error_code(a.delete_consumer_groups([group], request_timeout=15)[group])
        assert err == KafkaError.NON_EMPTY_GROUP, f"delete of an active group: {KafkaError(err)}"
        # altering offsets of an active group (OffsetCommit without member id / generation)
        # fails (the exact code: test_simple_commit_to_active_group_unknown_member)
        assert alter_error_codes(a, group, [(topic, 0, 7)]), \
            "alter_consumer_group_offsets on an active group succeeded"
        assert committed(a, group, tps) == want_off

        for m in members:
            m.close()

        def empty():
            d = describe(a, group)
            return d.state == ConsumerGroupState.EMPTY and not d.members
        wait_until(empty, 30, "group not EMPTY after its members closed")
        listed = {g.group_id: g for g in a.list_consumer_groups(request_timeout=15).result(30).valid}
        assert listed[group].state == ConsumerGroupState.EMPTY
        # committed offsets outlive the members
        assert committed(a, group, tps) == want_off

        # alter offsets of an empty group (OffsetCommit with generation -1)
        r = a.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [CKTopicPartition(topic, 0, 7),
                                                  CKTopicPartition(topic, 1, 9)])])[group].result(30)
        assert all(tp.error is None for tp in r.topic_partitions), r.topic_partitions
        want_off[(topic, 0)], want_off[(topic, 1)] = 7, 9
        assert committed(a, group, tps) == want_off

        # OffsetDelete (kafka-python): the group has no members, so this is allowed
        res = kp.delete_group_offsets(group, [KPTopicPartition(topic, 0)])
        assert {(tp.topic, tp.partition): e.__name__ for tp, e in res.items()} == \
            {(topic, 0): "NoError"}, res
        want_off[(topic, 0)] = -1001
        assert committed(a, group, tps) == want_off

        # delete the empty group: gone from the listing, its offsets too
        assert admin_error_code(a.delete_consumer_groups([group], request_timeout=15)[group]) is None
        listed = {g.group_id for g in a.list_consumer_groups(request_timeout=15).result(30).valid}
        assert group not in listed
        assert committed(a, group, tps) == {tp: -1001 for tp in tps}
        err = admin_error_code(a.delete_consumer_groups([group], request_timeout=15)[group])
        assert err == KafkaError.GROUP_ID_NOT_FOUND, f"second delete: {KafkaError(err)}"
    finally:
        for m in members:
            m.close()
        kp.close()


def alter_error_codes(a, group: str, offsets) -> list:
    """Error codes of AdminClient.alter_consumer_group_offsets (empty on success)."""
    fut = a.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [CKTopicPartition(t, p, o) for t, p, o in offsets])],
        request_timeout=15)[group]
    try:
        r = fut.result(timeout=30)
        return [tp.error.code() for tp in r.topic_partitions if tp.error is not None]
    except KafkaException as e:
        return [e.args[0].code()]


@pytest.mark.timeout_s(120)
def test_simple_commit_to_active_group_unknown_member(broker):
    """OffsetCommit with no member id and generation -1 (a "simple" commit, as AdminClient's
    alter_consumer_group_offsets sends) is refused once the group has members: Kafka's
    GroupCoordinator answers UNKNOWN_MEMBER_ID (the committer is not a member)."""
    b = broker(FAST_GROUPS)
    topic, group = "simple", "g-simple"
    create_topic(b.bootstrap, topic, 1)
    a = admin(b.bootstrap)
    assert alter_error_codes(a, group, [(topic, 0, 3)]) == []   # no group yet: fine
    m = CKMember(b.bootstrap, group, [topic], name="s0")
    try:
        wait_exclusive(poll_members([m]), assignments_of([m]), {(topic, 0)}, 60,
                       "the member got no partition")
        codes = alter_error_codes(a, group, [(topic, 0, 7)])
        assert codes == [KafkaError.UNKNOWN_MEMBER_ID], \
            (f"simple OffsetCommit to a Stable group answered "
             f"{[KafkaError(c).name() for c in codes] or 'success'}, want UNKNOWN_MEMBER_ID")
        assert committed(a, group, [(topic, 0)]) == {(topic, 0): 3}
    finally:
        m.close()


# --- 7. the /consumers znodes ------------------------------------------------------------------


@pytest.mark.timeout_s(240)
def test_consumers_znodes_mirror_the_group(broker):
    b = broker(FAST_GROUPS)
    topic, group = "zk", "g-zk"
    create_topic(b.bootstrap, topic, 4)
    all4 = {(topic, p) for p in range(4)}
    a = admin(b.bootstrap)
    produce_numbered(b.bootstrap, topic, 4, 40)
    members = []
    try:
        members = [CKMember(b.bootstrap, group, [topic], name=f"zk{i}") for i in range(2)]
        wait_exclusive(poll_members(members), assignments_of(members), all4, 60,
                       "two members never split 4 partitions")
        ids = sorted(m.member_id() for m in members)
        d = describe(a, group)
        assert sorted(m.member_id for m in d.members) == ids
        owner_of = {p: m.member_id() for m in members for (_t, p) in m.assignment()}

        def ids_match():
            poll_members(members)()
            return sorted(meta_ls(b, f"/consumers/{group}/ids") or []) == ids
        wait_until(ids_match, 30, f"/consumers/{group}/ids should list exactly {ids}")
        assert len(meta_ls(b, f"/consumers/{group}/ids")) == len(d.members)

        def owners_match():
            poll_members(members)()
            return sorted(meta_ls(b, f"/consumers/{group}/owners/{topic}") or []) == \
                ["0", "1", "2", "3"]
        wait_until(owners_match, 30, f"/consumers/{group}/owners/{topic} should list 0..3")
        for p, mid in owner_of.items():
            assert meta_get(b, f"/consumers/{group}/owners/{topic}/{p}") == mid, \
                f"owner znode of partition {p}"
        dump = meta_dump(b)
        for i in ids:
            assert dump[f"/consumers/{group}/ids/{i}"][0] == "E", "member znodes are ephemeral"
        for p in range(4):
            assert dump[f"/consumers/{group}/owners/{topic}/{p}"][0] == "E", \
                "owner znodes are ephemeral"

        # commit: /consumers/g/offsets/topic/p holds the decimal offset
        m0 = members[0]
        commits = {p: 5 + p for (_t, p) in m0.assignment()}
        m0.c.commit(offsets=[CKTopicPartition(topic, p, o) for p, o in commits.items()],
                    asynchronous=False)

        def offsets_match():
            poll_members(members)()
            return all(meta_get(b, f"/consumers/{group}/offsets/{topic}/{p}") == str(o)
                       for p, o in commits.items())
        wait_until(offsets_match, 30, f"offsets znodes should show {commits}")
        dump = meta_dump(b)
        for p in commits:
            assert dump[f"/consumers/{group}/offsets/{topic}/{p}"][0] == "P", \
                "offset znodes are persistent"
        # recommit a higher offset: the znode follows
        p0 = min(commits)
        m0.c.commit(offsets=[CKTopicPartition(topic, p0, 30)], asynchronous=False)
        wait_until(lambda: meta_get(b, f"/consumers/{group}/offsets/{topic}/{p0}") == "30", 30,
                   "offset znode did not follow a second commit")

        # one member leaves: its id znode goes, the owners are redistributed
        gone = members.pop()
        gone_id = gone.member_id()
        gone.close()
        wait_exclusive(poll_members(members), assignments_of(members), all4, 30,
                       "the remaining member does not own every partition")
        mid = members[0].member_id()

        def after_leave():
            poll_members(members)()
            return (meta_ls(b, f"/consumers/{group}/ids") == [mid] and
                    all(meta_get(b, f"/consumers/{group}/owners/{topic}/{p}") == mid
                        for p in range(4)))
        wait_until(after_leave, 30, f"after {gone_id} left, /ids should be [{mid}] and it should "
                   "own every partition znode")

        # everyone leaves: no ids, no owners; offsets stay
        members.pop().close()

        def all_gone():
            ids_now = meta_ls(b, f"/consumers/{group}/ids")
            owners_now = meta_ls(b, f"/consumers/{group}/owners/{topic}")
            return not ids_now and not owners_now
        wait_until(all_gone, 30, "after all members closed, ids and owners znodes should vanish")
        dump = meta_dump(b)
        for p in range(4):
            assert f"/consumers/{group}/owners/{topic}/{p}" not in dump
        assert meta_get(b, f"/consumers/{group}/offsets/{topic}/{p0}") == "30"
    finally:
        for m in members:
            m.close()



def test_cooperative_sticky_rebalances_incrementally(broker):
    # KIP-429: with the cooperative-sticky assignor a rebalance takes place in repeated
    # rounds and moves only the partitions that change owner; the coordinator must handle
    # the extra rounds like any other JoinGroup/SyncGroup.
    b = broker(FAST_GROUPS)
    topic = "coop"
    create_topic(b.bootstrap, topic, 6)
    all6 = {(topic, p) for p in range(6)}
    conf = {"partition.assignment.strategy": "cooperative-sticky", "session.timeout.ms": 6000}
    members = []
    try:
        members.append(CKMember(b.bootstrap, "coop-g", [topic], name="c0", **conf))
        wait_exclusive(poll_members(members), assignments_of(members), all6, 60, "c0 never got every partition")
        for i in (1, 2):
            before = members[0].assignment()
            members.append(CKMember(b.bootstrap, "coop-g", [topic], name=f"c{i}", **conf))
            wait_exclusive(poll_members(members), assignments_of(members), all6, 60,
                           f"the group never split the partitions after c{i} joined")
            after = members[0].assignment()
            assert after and after < before, f"c0 should keep part of {before}, has {after}"
        for revoked in members[0].revoked_events:
            assert revoked and len(revoked) < 6, f"cooperative revocations are partial: {revoked}"
        assert members[0].lost_events == [], "no partition may be lost in a cooperative rebalance"
        members[0].c.close()
        members[0].closed = True
        survivors = members[1:]
        wait_exclusive(poll_members(survivors), assignments_of(survivors), all6, 60,
                       "the survivors never took over c0's partitions")
    finally:
        for m in members:
            if not m.closed:
                m.c.close()
