"""The fault runner: randomized faults against a 3-broker cluster under acks=all load.

    scripts/chaos [--cycles N] [--seed S] [--partitions P] [--netns] [--out FILE]

Starts a ZooKeeper and three kbroker processes (tests/cluster.py, free ports on 127.0.0.1,
a temporary directory), creates an RF=3, min.insync.replicas=2 topic and keeps an idempotent
acks=all producer (confluent-kafka) writing numbered records. Each cycle applies one fault,
picked at random: kill -9 of a partition leader, of a follower or of the controller (then a
restart), a clean stop of a leader (SIGTERM: controlled shutdown; then a restart), SIGSTOP of a leader past its ZooKeeper session (a zombie) or of a follower past
replica.lag.time.max.ms (then SIGCONT); with --netns (root: each broker in its own network
namespace, tests/netns.py) also a leader or the controller cut off from everyone, ZooKeeper
included, and a follower cut off from its leader only (then healed). After each it waits
until every partition's ISR is whole again. At the end every acknowledged record is read back and checked at the offset its
acknowledgement named. Reports cycles run, records acknowledged, lost (must be 0), duplicated,
misplaced, and per fault kind the longest time any partition went without an acknowledgement
while that fault was applied and healed, split by whether the victim led or followed that
partition when the fault began. Not a test:
figures depend on the machine, so nothing here is asserted on time. The broker logs stay in
the temporary directory it prints; KBROKER_CHAOS_CLIENT_DEBUG=topic,eos,metadata adds the
load producer's librdkafka debug log there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka import TopicPartition as CTP  # noqa: E402
from confluent_kafka.admin import NewTopic  # noqa: E402
from kazoo.client import KazooClient  # noqa: E402

from cluster import SESSION_TIMEOUT_MS, Cluster  # noqa: E402
from kclients import RDKAFKA_LOGGER, admin_error_code, wait_until  # noqa: E402
from zkserver import ZkNode  # noqa: E402

TOPIC = "chaos"
LAG_MS = 3000
OVERRIDES = {
    "replica.lag.time.max.ms": LAG_MS,
    "replica.fetch.wait.max.ms": 200,
    "min.insync.replicas": 2,
    "unclean.leader.election.enable": "false",
    "leader.imbalance.check.interval.seconds": 5,
}
FAULTS = ["kill_leader", "kill_follower", "kill_controller", "zombie_leader", "pause_follower",
          "stop_leader"]
NETNS_FAULTS = ["isolate_leader", "isolate_controller", "cut_follower"]


def client_debug(workdir: Path) -> dict:
    """KBROKER_CHAOS_CLIENT_DEBUG=topic,eos,... : the load producer's librdkafka debug
    contexts, logged to <workdir>/rdkafka-debug.log (how the client saw a failover)."""
    contexts = os.environ.get("KBROKER_CHAOS_CLIENT_DEBUG")
    if not contexts:
        return {}
    handler = logging.FileHandler(workdir / "rdkafka-debug.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    RDKAFKA_LOGGER.addHandler(handler)
    RDKAFKA_LOGGER.setLevel(logging.DEBUG)
    return {"debug": contexts}


class Load:
    """An idempotent acks=all producer writing r00000000, r00000001, ... round-robin."""

    def __init__(self, c: Cluster, partitions: int):
        # reconnect.backoff.max.ms: librdkafka's default (10 s) makes a client that saw a
        # broker refuse connections while it restarted wait up to 10 s before it connects
        # to it again, even once that broker leads a partition: that wait is the client's,
        # not the cluster's, so the load caps it at 1 s to measure the cluster.
        self.p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all",
                           "enable.idempotence": True, "linger.ms": 2,
                           "reconnect.backoff.max.ms": 1000,
                           "message.timeout.ms": 300000, "logger": RDKAFKA_LOGGER,
                           **client_debug(c.workdir)})
        self.partitions = partitions
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.failed = 0
        self.sent = 0
        self.last_ack = {p: time.monotonic() for p in range(partitions)}
        self.longest_gap = {p: 0.0 for p in range(partitions)}
        self.window_gap = {p: 0.0 for p in range(partitions)}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, err, msg):
        now = time.monotonic()
        with self._lock:
            if err is not None:
                self.failed += 1
                return
            self.acked[msg.value()] = (msg.partition(), msg.offset())
            p = msg.partition()
            self.longest_gap[p] = max(self.longest_gap[p], now - self.last_ack[p])
            self.window_gap[p] = max(self.window_gap[p], now - self.last_ack[p])
            self.last_ack[p] = now

    def start_window(self):
        """Starts measuring the longest gap between acknowledgements afresh."""
        with self._lock:
            self.window_gap = {p: 0.0 for p in range(self.partitions)}

    def acked_since(self, t: float) -> bool:
        """True once every partition has had an acknowledgement after monotonic time `t`."""
        with self._lock:
            return all(self.last_ack[p] > t for p in range(self.partitions))

    def window(self) -> float:
        """The longest gap of any partition since `start_window` (up to now)."""
        return max(self.window_by_partition().values())

    def window_by_partition(self) -> dict[int, float]:
        """Each partition's longest gap since `start_window` (up to now)."""
        now = time.monotonic()
        with self._lock:
            return {p: max(self.window_gap[p], now - self.last_ack[p])
                    for p in range(self.partitions)}

    def _run(self):
        while not self._stop.is_set():
            try:
                self.p.produce(TOPIC, f"r{self.sent:08d}".encode(),
                               partition=self.sent % self.partitions, on_delivery=self._on_delivery)
                self.sent += 1
            except BufferError:
                pass
            self.p.poll(0.001)

    def start(self):
        self.thread.start()

    def stop(self):
        self._stop.set()
        self.thread.join(30)
        left = self.p.flush(300)
        now = time.monotonic()
        for p in range(self.partitions):
            self.longest_gap[p] = max(self.longest_gap[p], 0.0 if left == 0 else now - self.last_ack[p])
        return left


def full_isr(c: Cluster, partitions: int) -> bool:
    try:
        t = c.zk_topic(TOPIC)
        return all(sorted(t[p]["isr"] or []) == [1, 2, 3] and t[p]["leader"] in (1, 2, 3)
                   for p in range(partitions))
    except Exception:
        return False


class LeaderWatch:
    """How long after the fault began ZooKeeper named another leader for every partition
    the victim led: the cluster's part of the unavailability, without the producer's own
    time to learn of the new leader (its metadata refresh backoff). Polls the partition
    state znodes every 50 ms from its own ZooKeeper session."""

    def __init__(self, c: Cluster, victim: int, led: list[int]):
        self.victim, self.led = victim, led
        self.after: float | None = None
        self._stop = threading.Event()
        self._zk = KazooClient(hosts=c.zk_connect + c.chroot, timeout=10.0)
        self._zk.start(timeout=20)
        self.began = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _moved(self) -> bool:
        for p in self.led:
            data, _ = self._zk.get(f"/brokers/topics/{TOPIC}/partitions/{p}/state")
            if json.loads(data.decode())["leader"] in (self.victim, -1):
                return False
        return True

    def _run(self):
        while not self._stop.is_set():
            try:
                if self._moved():
                    self.after = time.monotonic() - self.began
                    return
            except Exception:  # a znode mid-write, a session hiccup: ask again
                pass
            self._stop.wait(0.05)

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        self._zk.stop()
        self._zk.close()
        return self.after


def fault(c: Cluster, kind: str, rng: random.Random, partitions: int,
          net=None) -> tuple[str, int, dict[int, int], LeaderWatch | None]:
    """Applies and heals one fault: (description, victim broker, leaders before it, the
    watch of the partitions the victim led — None if it led none; the caller stops it)."""
    leaders = c.leaders(TOPIC)
    p = rng.randrange(partitions)
    leader = leaders[p]
    if kind in ("kill_leader", "zombie_leader", "isolate_leader", "stop_leader"):
        victim = leader
    elif kind in ("kill_follower", "pause_follower", "cut_follower"):
        victim = rng.choice([b for b in (1, 2, 3) if b != leader])
    else:  # kill_controller, isolate_controller
        victim = c.controller_id() or leader
    b = c.brokers[victim]
    led = [q for q, lead in leaders.items() if lead == victim]
    watch = LeaderWatch(c, victim, led) if led else None
    try:
        _apply(kind, rng, b, victim, leader, net)
    except BaseException:
        if watch:
            watch.stop()
        raise
    return (f"{kind} broker {victim} (partition {p}'s leader was {leader})", victim, leaders,
            watch)


def _apply(kind: str, rng: random.Random, b, victim: int, leader: int, net):
    """The fault itself, applied and healed."""
    if kind.startswith("isolate"):
        net.isolate(f"b{victim}")
        try:
            time.sleep(SESSION_TIMEOUT_MS / 1000 + rng.uniform(1.0, 4.0))
        finally:
            net.rejoin(f"b{victim}")
    elif kind == "cut_follower":
        net.cut(f"b{leader}", f"b{victim}")
        try:
            time.sleep(LAG_MS / 1000 + rng.uniform(1.0, 4.0))
        finally:
            net.uncut(f"b{leader}", f"b{victim}")
    elif kind == "stop_leader":
        # SIGTERM: a controlled shutdown moves the leaderships away before the exit.
        b.stop()
        time.sleep(rng.uniform(1.0, 3.0))
        b.start(timeout=SESSION_TIMEOUT_MS / 1000 + 30)
    elif kind.startswith("kill"):
        b.kill9()
        time.sleep(rng.uniform(1.0, 6.0))
        b.start(timeout=SESSION_TIMEOUT_MS / 1000 + 30)
    else:
        pause = (SESSION_TIMEOUT_MS / 1000 + 2) if kind == "zombie_leader" else LAG_MS / 1000 + 2
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(pause + rng.uniform(0, 2))
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)


def fmt_gap(g: float | None) -> str:
    return "-" if g is None else f"{g:.1f} s"


def batch_headers(log_dir: Path, partition: int) -> list[dict]:
    """Every batch header of one replica's log of `chaos-<partition>`, read from its files."""
    out = []
    for seg in sorted((log_dir / f"{TOPIC}-{partition}").glob("*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            base, length, leader_epoch = struct.unpack_from(">qii", data, pos)
            if length <= 0:
                break  # preallocated zeros after the last batch of the active segment
            last_delta, = struct.unpack_from(">i", data, pos + 23)
            pid, pepoch, seq = struct.unpack_from(">qhi", data, pos + 43)
            out.append({"base": base, "last": base + last_delta, "leader_epoch": leader_epoch,
                        "producer_id": pid, "producer_epoch": pepoch, "base_sequence": seq})
            pos += 12 + length
    return out


def describe_copies(c: Cluster, where: list[tuple[int, int]]) -> str:
    """The batches holding each stored copy: leader epoch, producer id and epoch, sequence."""
    parts = []
    for p, offset in where:
        for b in c.brokers.values():
            found = [h for h in batch_headers(b.log_dir, p) if h["base"] <= offset <= h["last"]]
            if found:
                h = found[0]
                parts.append(f"offset {offset}: leader epoch {h['leader_epoch']}, producer "
                             f"{h['producer_id']} epoch {h['producer_epoch']} sequence "
                             f"{h['base_sequence'] + offset - h['base']}")
                break
    return "; ".join(parts)


def read_back(c: Cluster, partitions: int) -> dict[int, list[tuple[int, bytes]]]:
    consumer = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": "chaos-reader",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "logger": RDKAFKA_LOGGER})
    try:
        ends = {}
        for p in range(partitions):
            deadline = time.monotonic() + 60
            while True:
                try:
                    ends[p] = consumer.get_watermark_offsets(CTP(TOPIC, p), timeout=10)[1]
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        consumer.assign([CTP(TOPIC, p, 0) for p in range(partitions)])
        got: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + 300
        while any(len(got[p]) < ends[p] for p in got) and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None or m.error() is not None:
                continue
            got[m.partition()].append((m.offset(), m.value()))
        return got
    finally:
        consumer.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--netns", action="store_true",
                    help="brokers in network namespaces; adds partition faults (root)")
    ap.add_argument("--out", default="bench-results/chaos.md")
    ap.add_argument("--faults", default=None,
                    help="comma-separated fault kinds to draw from (default: all)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="kb-chaos-"))
    net = None
    faults = list(FAULTS)
    if args.netns:
        from netns import Net, available
        why = available()
        if why:
            print(f"--netns: {why}", file=sys.stderr)
            return 2
        net = Net()
        faults += NETNS_FAULTS
    if args.faults:
        chosen = [f.strip() for f in args.faults.split(",") if f.strip()]
        unknown = [f for f in chosen if f not in faults]
        if unknown:
            print(f"--faults: unknown or unavailable {unknown}; choose from {faults}",
                  file=sys.stderr)
            return 2
        faults = chosen
    zk = ZkNode(work / "zk", host=net.gateway if net else "127.0.0.1")
    c = Cluster(work / "cluster", zk.connect, 3, OVERRIDES)
    gaps: dict[str, float] = {}
    role_gaps: dict[tuple[str, str], float] = {}
    elections: dict[str, float] = {}
    started = time.monotonic()
    log: list[str] = []
    cycles = 0
    try:
        zk.start()
        if net:
            for bid, b in c.brokers.items():
                b.place(net.add(f"b{bid}"), net.ns(f"b{bid}"))
        c.start()
        fs = c.admin(1).create_topics([NewTopic(TOPIC, num_partitions=args.partitions,
                                                replication_factor=3)],
                                      operation_timeout=20, request_timeout=30)
        assert admin_error_code(fs[TOPIC], 40) is None
        c.wait_converged([TOPIC])
        load = Load(c, args.partitions)
        load.start()
        wait_until(lambda: len(load.acked) >= 1000, 60, "load running")
        for i in range(args.cycles):
            kind = rng.choice(faults)
            load.start_window()
            began = time.strftime("%H:%M:%S", time.gmtime())
            try:
                what, victim, leaders, watch = fault(c, kind, rng, args.partitions, net)
            except Exception as e:  # a broker that would not restart: report, then stop
                log.append(f"cycle {i + 1}: {kind} failed: {e!r}"[:2000])
                print(log[-1], flush=True)
                break
            healed = time.monotonic()
            try:
                wait_until(lambda: full_isr(c, args.partitions), 180, "ISR whole again")
            except AssertionError as e:
                if watch:
                    watch.stop()
                log.append(f"cycle {i + 1}: {what}: {e}")
                print(log[-1], flush=True)
                break
            isr_whole = time.monotonic() - healed
            cycles += 1
            # Acknowledgements resume once the ISR is whole at the latest; a little more,
            # and every partition acknowledged again, so that this fault's gap is counted
            # here in full and none of it leaks into the next cycle's window.
            time.sleep(1.0)
            try:
                wait_until(lambda: load.acked_since(healed), 120, "acknowledgements resumed")
            except AssertionError as e:
                log.append(f"cycle {i + 1}: {what}: {e}")
                print(log[-1], flush=True)
                break
            finally:
                # Leaderships may move after the heal too (a broker restarted before its
                # old session expired): watched until acknowledgements resumed.
                elected = watch.stop() if watch else None
            by_p = load.window_by_partition()
            window = max(by_p.values())
            gaps[kind] = max(gaps.get(kind, 0.0), window)
            if elected is not None:
                elections[kind] = max(elections.get(kind, 0.0), elected)
            # The victim of a "follower" fault usually leads another partition: each
            # partition's gap is counted under the role the victim had in it.
            for p, g in by_p.items():
                role = "leader" if leaders.get(p) == victim else "follower"
                role_gaps[(kind, role)] = max(role_gaps.get((kind, role), 0.0), g)
            moved = "" if elected is None else f"new leader(s) in ZooKeeper after {elected:.1f} s, "
            log.append(f"cycle {i + 1} ({began} UTC): {what}; {moved}ISR whole "
                       f"{isr_whole:.1f} s after the heal, gaps by partition "
                       f"{', '.join(f'{g:.1f}' for _, g in sorted(by_p.items()))} s, "
                       f"{len(load.acked)} acknowledged so far")
            print(log[-1], flush=True)
        undelivered = load.stop()
        stored = read_back(c, args.partitions)
        where: dict[bytes, list[tuple[int, int]]] = {}
        for p, records in stored.items():
            for offset, value in records:
                where.setdefault(value, []).append((p, offset))
        copies = {v: describe_copies(c, at) for v, at in list(where.items()) if len(at) > 1}
    finally:
        c.stop()
        zk.stop()
        if net:
            net.close()
    lost = [v for v in load.acked if v not in where]
    duplicated = [v for v, at in where.items() if len(at) > 1]
    # librdkafka reports some deliveries without an offset (a retry it resolved itself,
    # e.g. after an epoch bump): those are checked for presence only.
    no_offset = [v for v, (_, o) in load.acked.items() if o is None or o < 0]
    misplaced = [v for v, at in load.acked.items()
                 if v in where and at[1] is not None and at[1] >= 0 and at not in where[v]]
    report = [
        f"# Fault runner — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"seed {seed}, {args.partitions} partitions, RF 3, min.insync.replicas 2, idempotent "
        f"acks=all producer; zookeeper.session.timeout.ms {SESSION_TIMEOUT_MS}, "
        f"replica.lag.time.max.ms {LAG_MS}; {'brokers in network namespaces; ' if net else ''}"
        f"{time.monotonic() - started:.0f} s in all.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| cycles run | {cycles} of {args.cycles} |",
        f"| records sent | {load.sent} |",
        f"| records acknowledged | {len(load.acked)} |",
        f"| delivery failures reported to the producer | {load.failed} |",
        f"| left undelivered at the end | {undelivered} |",
        f"| **acknowledged and lost** | **{len(lost)}** |",
        f"| stored more than once | {len(duplicated)} |",
        f"| acknowledged at another offset than stored | {len(misplaced)} |",
        f"| acknowledged without an offset (librdkafka) | {len(no_offset)} |",
        f"| longest time a partition went without an acknowledgement | "
        f"{max(load.longest_gap.values()):.1f} s |",
        "",
        "Longest time any partition went without an acknowledgement while a fault of each kind "
        "was applied and healed (pauses and cuts last their full duration by design):",
        "",
        "| fault | cycles | longest gap | where the victim led | where it followed | "
        "new leader in ZooKeeper after |",
        "|---|---|---|---|---|---|",
        *[f"| {k} | {sum(1 for line in log if f': {k} ' in line)} | {v:.1f} s | "
          f"{fmt_gap(role_gaps.get((k, 'leader')))} | {fmt_gap(role_gaps.get((k, 'follower')))} | "
          f"{fmt_gap(elections.get(k))} |"
          for k, v in sorted(gaps.items())],
        "",
        "The last column is the cluster's part: from the fault until ZooKeeper named another "
        "leader for every partition the victim led (longest of the cycles where that happened "
        "before acknowledgements resumed; a victim healed before its session expired may keep "
        "its leaderships); the rest of a gap where the victim led is the producer learning of "
        "the new leader and resending.",
        "",
        "Cycles:",
        "",
        *[f"- {line}" for line in log],
        "",
    ]
    by_position = {(p, o): v for p, records in stored.items() for o, v in records}
    if lost:
        report.insert(-1, f"Lost, e.g.: {sorted(lost)[:10]}")
    for v in sorted(misplaced)[:5]:
        report.insert(-1, f"Misplaced: {v!r} acknowledged at {load.acked[v]} (holding "
                          f"{by_position.get(load.acked[v])!r}), stored at {where[v]}")
    for v in sorted(duplicated)[:5]:
        report.insert(-1, f"Duplicated: {v!r} stored at {where[v]}, acknowledged at "
                          f"{load.acked.get(v)} ({copies.get(v, 'batches not found')})")
    text = "\n".join(report)
    print(text)
    print(f"broker logs: {work}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    ok = not lost and not misplaced and not duplicated and cycles == args.cycles
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
