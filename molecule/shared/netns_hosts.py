#!/usr/bin/env python3
"""Real hosts for the drills: network namespaces on a bridge, each with its own sshd and private /srv.

    netns_hosts.py up     --root DIR --prefix rxd --subnet 10.77.0 pg1=11 be1=21 ...
    netns_hosts.py down   --root DIR --prefix rxd
    netns_hosts.py cut    --prefix rxd HOST      (the host's link goes down: unreachable, no hang)
    netns_hosts.py mend   --prefix rxd HOST
    netns_hosts.py status --root DIR --prefix rxd

Each host is a network namespace `<prefix>-<host>` joined to the bridge `<prefix>-br` by a veth pair
(the host side `<prefix>-<host>`, `eth0` inside), with the address `<subnet>.<n>/24` and no default
route. Its sshd (key-only, root, the drill's key) listens on that address only and runs in a mount
namespace of its own where `/srv` is `DIR/hosts/<host>/srv`: everything started over SSH sees the
host's own /srv, as on separate machines. The controller reaches the hosts from the bridge address
`<subnet>.1`. Hosts install Python packages from the drill's wheelhouse (`DIR/wheelhouse`, sshd
`SetEnv`), as an air-gapped fleet installs from its mirror.

`up` is idempotent (a host already up is left alone) and writes `DIR/instances.json` (what molecule's
instance config needs). `down` kills every process of each namespace, removes the namespaces, veths
and the bridge, and removes nothing else; it succeeds when nothing is up.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SSHD = shutil.which("sshd", path="/usr/sbin:/usr/bin") or "/usr/sbin/sshd"


def sh(*argv: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess:
    if ns:
        argv = ("ip", "netns", "exec", ns) + argv
    return subprocess.run(argv, check=check, text=True, capture_output=True)


def namespaces(prefix: str) -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(prefix + "-")]


def link_exists(name: str) -> bool:
    return sh("ip", "link", "show", name, check=False).returncode == 0


def bridge(prefix: str) -> str:
    return f"{prefix}-br"


def sshd_config(root: Path, host: str, address: str) -> Path:
    hdir = root / "hosts" / host
    (hdir / "srv").mkdir(parents=True, exist_ok=True)
    key = hdir / "ssh_host_ed25519_key"
    if not key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{host} host key", "-f", str(key))
    wheelhouse = root / "wheelhouse"
    conf = hdir / "sshd_config"
    conf.write_text(
        f"# sshd of drill host {host} (written by netns_hosts.py)\n"
        f"ListenAddress {address}\nPort 22\n"
        f'HostKey "{key}"\nPidFile "{hdir / "sshd.pid"}"\n'
        f'AuthorizedKeysFile "{root / "id_ed25519.pub"}"\n'
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nMaxSessions 50\nMaxStartups 50:30:100\nClientAliveInterval 5\n"
        "Subsystem sftp internal-sftp\n"
        f'SetEnv PIP_NO_INDEX=1 "PIP_FIND_LINKS={wheelhouse}" PIP_DISABLE_PIP_VERSION_CHECK=1\n',
        encoding="utf-8")
    return conf


def sshd_alive(root: Path, host: str, ns: str) -> bool:
    pidfile = root / "hosts" / host / "sshd.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return False
    return str(pid) in sh("ip", "netns", "pids", ns, check=False).stdout.split()


def up(args) -> int:
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    key = root / "id_ed25519"
    if not key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "replyx drill controller", "-f", str(key))
    (root / "wheelhouse").mkdir(exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)
    br = bridge(args.prefix)
    if not link_exists(br):
        sh("ip", "link", "add", br, "type", "bridge")
        sh("ip", "addr", "add", f"{args.subnet}.1/24", "dev", br)
    sh("ip", "link", "set", br, "up")
    instances = []
    for spec in args.hosts:
        host, _, n = spec.partition("=")
        ns, veth, address = f"{args.prefix}-{host}", f"{args.prefix}-{host}", f"{args.subnet}.{n}"
        if ns not in namespaces(args.prefix):
            sh("ip", "netns", "add", ns)
        if not link_exists(veth):
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", veth, "master", br)
            sh("ip", "addr", "add", f"{address}/24", "dev", "eth0", ns=ns)
        sh("ip", "link", "set", veth, "up")
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "set", "eth0", "up", ns=ns)
        conf = sshd_config(root, host, address)
        if not sshd_alive(root, host, ns):
            srv = root / "hosts" / host / "srv"
            # a mount namespace of its own: /srv is this host's directory for sshd and all it starts
            sh("unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount --bind "$1" /srv && exec "$2" -f "$3"', "sh", str(srv), SSHD, str(conf), ns=ns)
        instances.append({"instance": host, "address": address, "user": "root", "port": 22,
                          "identity_file": str(key), "namespace": ns})
    for item in instances:  # sshd answers before we hand the hosts over
        deadline = time.monotonic() + 10
        while sh("ssh-keyscan", "-T", "1", "-t", "ed25519", item["address"], check=False).returncode != 0 \
                or not sh("ssh-keyscan", "-T", "1", "-t", "ed25519", item["address"], check=False).stdout:
            if time.monotonic() > deadline:
                print(f"host {item['instance']}: sshd does not answer on {item['address']}:22", file=sys.stderr)
                return 1
            time.sleep(0.2)
    known = "".join(sh("ssh-keyscan", "-t", "ed25519", i["address"], check=False).stdout for i in instances)
    (root / "known_hosts").write_text(known, encoding="utf-8")
    (root / "instances.json").write_text(json.dumps(instances, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"changed": True, "hosts": [i["instance"] for i in instances]}))
    return 0


def down(args) -> int:
    removed = []
    for ns in namespaces(args.prefix):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + (5 if sig == signal.SIGTERM else 2)
            while pids and time.monotonic() < deadline:
                if not sh("ip", "netns", "pids", ns, check=False).stdout.split():
                    break
                time.sleep(0.1)
        veth = ns
        if link_exists(veth):
            sh("ip", "link", "del", veth, check=False)
        sh("ip", "netns", "del", ns, check=False)
        removed.append(ns)
    if link_exists(bridge(args.prefix)):
        sh("ip", "link", "del", bridge(args.prefix), check=False)
        removed.append(bridge(args.prefix))
    left = namespaces(args.prefix) + ([bridge(args.prefix)] if link_exists(bridge(args.prefix)) else [])
    print(json.dumps({"changed": bool(removed), "removed": removed, "left": left}))
    return 1 if left else 0


def cut(args, state: str) -> int:
    veth = f"{args.prefix}-{args.host}"
    if not link_exists(veth):
        print(f"no drill host {args.host!r} (no link {veth}); hosts: "
              + ", ".join(n[len(args.prefix) + 1:] for n in namespaces(args.prefix)), file=sys.stderr)
        return 2
    sh("ip", "link", "set", veth, state)
    return 0


def status(args) -> int:
    root = Path(args.root).resolve()
    rows = []
    for ns in namespaces(args.prefix):
        host = ns[len(args.prefix) + 1:]
        rows.append({"host": host, "sshd": sshd_alive(root, host, ns),
                     "processes": len(sh("ip", "netns", "pids", ns, check=False).stdout.split())})
    print(json.dumps(rows))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["up", "down", "cut", "mend", "status"])
    p.add_argument("hosts", nargs="*", help="up: HOST=N (address SUBNET.N); cut/mend: HOST")
    p.add_argument("--root", default=".drill")
    p.add_argument("--prefix", default="rxd")
    p.add_argument("--subnet", default="10.77.0")
    args = p.parse_intermixed_args(argv)
    if os.geteuid() != 0:
        p.error("network namespaces need root")
    if args.command == "up":
        bad = [h for h in args.hosts if not h.partition("=")[2].isdigit()]
        if bad or not args.hosts:
            p.error(f"up takes HOST=N for each host (N: 2-254), got {bad or 'none'}")
        return up(args)
    if args.command == "down":
        return down(args)
    if args.command in ("cut", "mend"):
        if len(args.hosts) != 1:
            p.error(f"{args.command} takes one host name")
        args.host = args.hosts[0]
        return cut(args, "down" if args.command == "cut" else "up")
    return status(args)


if __name__ == "__main__":
    sys.exit(main())
