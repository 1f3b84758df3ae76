"""Network namespaces for partition tests (root only): one bridge in the test's namespace,
one namespace per broker joined to it by a veth pair.

    net = Net()                 # bridge kbbr<tag> with 10.a.b.1/24
    ip = net.add("b1")          # namespace kb<tag>b1 with 10.a.b.<n>/24; returns its address
    net.isolate("b1")           # the broker's link down: cut from everyone (ZooKeeper too)
    net.cut("b1", "b2")         # only b1 <-> b2 dropped (blackhole routes, both directions)
    net.heal()                  # everything back
    net.close()                 # namespaces, links and the bridge removed

Servers bind the namespace addresses; the test reaches them through the bridge, ZooKeeper
listens on the bridge address. Names carry a random tag, so parallel runs do not collide,
and `close` runs even if the test failed (use it as a context manager or a fixture).
"""

from __future__ import annotations

import os
import random
import subprocess


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns, "ip"] if ns else ["ip"]) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


def available() -> str | None:
    """None if namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"kbprobe{random.randrange(1 << 16):04x}"
    try:
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    except FileNotFoundError:
        return "the ip command (iproute2) is not installed"
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Net:
    def __init__(self):
        self.tag = f"{random.randrange(1 << 16):04x}"
        a, b = random.randrange(100, 250), random.randrange(1, 250)
        self.prefix = f"10.{a}.{b}"
        self.bridge = f"kbbr{self.tag}"
        self.gateway = f"{self.prefix}.1"
        self.members: dict[str, tuple[str, str, str]] = {}  # name -> (ns, host link, addr)
        self.cuts: set[tuple[str, str]] = set()
        ip("link", "add", "name", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def ns(self, name: str) -> str:
        return self.members[name][0]

    def addr(self, name: str) -> str:
        return self.members[name][2]

    def add(self, name: str) -> str:
        n = len(self.members) + 10
        ns, host, peer = f"kb{self.tag}{name}", f"kb{self.tag}h{n}", f"kb{self.tag}p{n}"
        addr = f"{self.prefix}.{n}"
        ip("netns", "add", ns)
        ip("link", "add", host, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", ns)
        ip("link", "set", host, "master", self.bridge)
        ip("link", "set", host, "up")
        ip("addr", "add", f"{addr}/24", "dev", peer, ns=ns)
        ip("link", "set", peer, "up", ns=ns)
        ip("link", "set", "lo", "up", ns=ns)
        self.members[name] = (ns, host, addr)
        return addr

    def isolate(self, name: str) -> None:
        ip("link", "set", self.members[name][1], "down")

    def rejoin(self, name: str) -> None:
        ip("link", "set", self.members[name][1], "up")

    def cut(self, a: str, b: str) -> None:
        """Drops what `a` sends to `b` and what `b` sends to `a`."""
        for x, y in ((a, b), (b, a)):
            ip("route", "add", "blackhole", f"{self.addr(y)}/32", ns=self.ns(x))
        self.cuts.add((a, b))

    def uncut(self, a: str, b: str) -> None:
        for x, y in ((a, b), (b, a)):
            ip("route", "del", "blackhole", f"{self.addr(y)}/32", ns=self.ns(x), check=False)
        self.cuts.discard((a, b))

    def heal(self) -> None:
        for a, b in list(self.cuts):
            self.uncut(a, b)
        for name in self.members:
            self.rejoin(name)

    def close(self) -> None:
        for ns, host, _ in self.members.values():
            ip("link", "del", host, check=False)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        ip("link", "del", self.bridge, check=False)
        self.members.clear()

    def __enter__(self) -> "Net":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
