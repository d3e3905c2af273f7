"""A second "host" on this machine: a network namespace joined to the root one by a veth pair.

The remote-worker tests (tests/integration/test_remote.py, docs/remote.md) run a backend worker under a
second supervisord inside such a namespace: it reaches the server's broker and scheduler only over
``tcp://`` on the veth addresses, as a worker on another machine does, and a partition is the root side
of the link set down (its packets are dropped, as on a cut cable; local connections to the server address
keep working, so the server tree itself is not disturbed).

Needs root and iproute2's ``ip``. Usage from Python::

    with Netns.create() as ns:                  # deleted, with its veth pair, when the block ends
        ns.server_addr, ns.worker_addr          # e.g. 10.231.17.1 and 10.231.17.2 (a private /30)
        subprocess.Popen(ns.exec_argv([...]))   # runs the command inside the namespace
        ns.partition(); ns.heal()

or by hand: ``python -m ops.netns up NAME`` (prints the addresses), ``partition NAME``, ``heal NAME``,
``down NAME``.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass

PREFIX = "fano"       # namespace names start with it
NET = ipaddress.ip_network("10.200.0.0/13")   # /30s are picked from here, avoiding ones already in use


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no ``ip``, or the kernel refuses): say why."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can be."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed"
    return None


def _used_networks() -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = _ip("-o", "-4", "addr", "show", check=False).stdout
    nets = set()
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.add(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


@dataclass
class Netns:
    """One namespace ``name`` with the veth pair ``veth_root`` (root side, ``server_addr``) and
    ``veth_ns`` (inside, ``worker_addr``) on a /30."""

    name: str
    veth_root: str
    veth_ns: str
    server_addr: str
    worker_addr: str

    @classmethod
    def create(cls, name: str | None = None) -> Netns:
        why = unavailable()
        if why:
            raise NetnsUnavailable(why)
        tag = name or f"{os.getpid() % 100000}{random.randrange(1000):03d}"
        used = _used_networks()
        while True:
            net = ipaddress.ip_network((int(NET.network_address) + 4 * random.randrange(NET.num_addresses // 4), 30))
            if not any(net.overlaps(u) for u in used):
                break
        hosts = list(net.hosts())
        ns = cls(f"{PREFIX}-{tag}", f"fv{tag}r"[:15], f"fv{tag}n"[:15], str(hosts[0]), str(hosts[1]))
        try:
            ns._up(net.prefixlen)
        except subprocess.CalledProcessError as exc:
            ns.delete()
            raise NetnsUnavailable(f"{' '.join(exc.cmd)}: {exc.stderr.strip()}") from None
        return ns

    def _up(self, prefixlen: int) -> None:
        _ip("netns", "add", self.name)
        _ip("link", "add", self.veth_root, "type", "veth", "peer", "name", self.veth_ns)
        _ip("link", "set", self.veth_ns, "netns", self.name)
        _ip("addr", "add", f"{self.server_addr}/{prefixlen}", "dev", self.veth_root)
        _ip("link", "set", self.veth_root, "up")
        for args in (("addr", "add", f"{self.worker_addr}/{prefixlen}", "dev", self.veth_ns),
                     ("link", "set", self.veth_ns, "up"), ("link", "set", "lo", "up")):
            _ip("netns", "exec", self.name, "ip", *args)

    def exec_argv(self, argv: list[str] | tuple[str, ...] = ()) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: the pid is the command's own)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def partition(self) -> None:
        """Cut the link: the root side down, so packets between the two sides are lost, not refused."""
        _ip("link", "set", self.veth_root, "down")

    def heal(self) -> None:
        _ip("link", "set", self.veth_root, "up")

    def delete(self) -> list[str]:
        """Remove the veth pair and the namespace (whatever exists of them); the problems, if any. Stop the
        processes running inside first: the namespace of a running process outlives its name."""
        problems = []
        for args in (("link", "del", self.veth_root), ("netns", "del", self.name)):
            res = _ip(*args, check=False)
            if res.returncode and "Cannot find" not in res.stderr and "No such" not in res.stderr:
                problems.append(f"ip {' '.join(args)}: {res.stderr.strip()}")
        return problems

    def exists(self) -> bool:
        names = _ip("netns", "list", check=False).stdout.split()
        return self.name in names or _ip("link", "show", self.veth_root, check=False).returncode == 0

    def __enter__(self) -> Netns:
        return self

    def __exit__(self, *exc) -> None:
        self.delete()


def _named(tag: str) -> Netns:
    """The namespace ``python -m ops.netns up TAG`` made (its addresses are read back from the interface)."""
    out = _ip("-o", "-4", "addr", "show", "dev", f"fv{tag}r"[:15], check=False).stdout.split()
    iface = ipaddress.ip_interface(out[out.index("inet") + 1]) if "inet" in out else None
    server = str(iface.ip) if iface else ""
    worker = str(iface.ip + 1) if iface else ""
    return Netns(f"{PREFIX}-{tag}", f"fv{tag}r"[:15], f"fv{tag}n"[:15], server, worker)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down", "partition", "heal"))
    parser.add_argument("tag", help="a short name (at most 10 characters): namespace fano-TAG, veth fvTAGr/fvTAGn")
    args = parser.parse_args(argv)
    if len(args.tag) > 10:
        parser.error("the tag must be at most 10 characters (interface names are 15)")
    try:
        if args.action == "up":
            ns = Netns.create(args.tag)
            print(f"namespace {ns.name}: server side {ns.server_addr} ({ns.veth_root}), worker side "
                  f"{ns.worker_addr} ({ns.veth_ns}); run a command there with: ip netns exec {ns.name} ...")
            return 0
        ns = _named(args.tag)
        if args.action == "down":
            problems = ns.delete()
            print("\n".join(problems) or f"{ns.name} removed")
            return 1 if problems else 0
        (ns.partition if args.action == "partition" else ns.heal)()
        return 0
    except (NetnsUnavailable, subprocess.CalledProcessError) as exc:
        print(f"ops/netns: {getattr(exc, 'stderr', None) or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
