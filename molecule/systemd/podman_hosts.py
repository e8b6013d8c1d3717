#!/usr/bin/env python3
"""The systemd drill's hosts: podman containers running systemd as PID 1, reached over SSH.

    podman_hosts.py up --root DIR --image IMAGE --network NET --subnet CIDR HOST=ADDRESS ...
    podman_hosts.py down [--root DIR] [--network NET]

up (idempotent) creates the podman network (internal: no route out), starts one container per host
(label replyx.drill=systemd, hostname HOST, its own address), gives each its own SSH host keys and the
drill's key as root's only way in, and writes DIR/known_hosts and DIR/instances.json (molecule's
instance config). The containers see, at the same paths as here, the release repositories
(DIR/repos, read-write: the hosts' shared "git server") and the lab's sources (read-only); the
wheelhouse at /opt/wheelhouse (read-only), which sshd points pip at (the hosts reach no index).

down stops and removes the containers and the network, then puts back what creating the network
changed on this machine and was not there before (net.ipv4.ip_forward, netavark's iptables chains:
recorded by up in DIR/host-state.json) and fails when anything of the drill is left. Prints one JSON
object: {"changed": bool, ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LABEL = "replyx.drill=systemd"
DEFAULT_NETWORK = "rxsd-net"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def podman(*argv: str, check: bool = True, capture: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTAINERS_CONF=str(HERE / "containers.conf"))
    proc = subprocess.run(["podman", *argv], env=env, text=True, input=stdin,
                          capture_output=capture, check=False)
    if check and proc.returncode:
        raise SystemExit(f"podman {' '.join(argv)}: exit {proc.returncode}: {(proc.stderr or '').strip()[-800:]}")
    return proc


def iptables_chains() -> dict[str, list[str]]:
    """netavark's chains per table (empty when iptables is not installed)."""
    out: dict[str, list[str]] = {}
    if not shutil.which("iptables-save"):
        return out
    for table in ("filter", "nat"):
        proc = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, check=False)
        out[table] = sorted(line[1:].split()[0] for line in proc.stdout.splitlines()
                            if line.startswith(":") and line[1:].upper().startswith("NETAVARK"))
    return out


def containers() -> list[dict]:
    proc = podman("ps", "-a", "--filter", f"label={LABEL}", "--format", "json")
    return json.loads(proc.stdout or "[]")


def wait_ssh(address: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, 22), timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"sshd on {address}:22 did not answer within {timeout:.0f}s")
            time.sleep(0.5)


def up(args) -> dict:
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("repos", "wheelhouse"):
        (root / sub).mkdir(exist_ok=True)
    changed = False
    key = root / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "replyx-drill-systemd", "-f", str(key)], check=True)
        changed = True
    state_file = root / "host-state.json"
    if podman("network", "exists", args.network, check=False).returncode:
        # what this machine had before the first network of the drill: down puts it back
        if not state_file.exists():
            state_file.write_text(json.dumps({"ip_forward": IP_FORWARD.read_text().strip(),
                                              "iptables_chains": iptables_chains()}) + "\n", encoding="utf-8")
        podman("network", "create", "--internal", "--subnet", args.subnet, "--label", LABEL, args.network)
        changed = True
    running = {c["Names"][0]: c for c in containers()}
    instances, known = [], []
    pubkey = (root / "id_ed25519.pub").read_text(encoding="utf-8").strip()
    lab = REPO / "lab"
    for spec in args.hosts:
        host, address = spec.split("=", 1)
        name = f"rxsd-{host}"
        state = running.get(name, {}).get("State")
        if state != "running":
            if name in running:
                podman("rm", "-f", name)
            podman("run", "-d", "--name", name, "--hostname", host, "--label", LABEL,
                   "--network", args.network, "--ip", address, "--systemd=always",
                   "-v", f"{root / 'repos'}:{root / 'repos'}",
                   "-v", f"{lab}:{lab}:ro",
                   "-v", f"{root / 'wheelhouse'}:/opt/wheelhouse:ro",
                   args.image, "/sbin/init")
            # the host's own SSH host keys, the drill's key as root's only way in, pip pointed at the wheelhouse
            podman("exec", "-i", name, "sh", "-euc",
                   "ssh-keygen -A >/dev/null; install -d -m 700 /root/.ssh; cat > /root/.ssh/authorized_keys; "
                   "chmod 600 /root/.ssh/authorized_keys; "
                   "printf 'SetEnv PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/wheelhouse PIP_DISABLE_PIP_VERSION_CHECK=1\\n' "
                   "> /etc/ssh/sshd_config.d/replyx-wheelhouse.conf; "
                   "for i in $(seq 1 100); do systemctl is-system-running >/dev/null 2>&1 && break; "
                   "[ \"$(systemctl is-system-running 2>/dev/null)\" = degraded ] && break; sleep 0.2; done; "
                   "systemctl enable ssh >/dev/null 2>&1; systemctl restart ssh",
                   stdin=pubkey + "\n")
            changed = True
        hostkey = podman("exec", name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()
        known.append(f"{address} {hostkey[0]} {hostkey[1]}")
        wait_ssh(address)
        instances.append({"instance": host, "address": address, "user": "root", "port": 22,
                          "identity_file": str(key), "container": name})
    (root / "known_hosts").write_text("\n".join(known) + "\n", encoding="utf-8")
    (root / "instances.json").write_text(json.dumps(instances, indent=2) + "\n", encoding="utf-8")
    return {"changed": changed, "hosts": [i["instance"] for i in instances]}


def down(args) -> dict:
    changed = False
    names = [c["Names"][0] for c in containers()]
    if names:
        podman("rm", "-f", "-t", "5", *names)
        changed = True
    if podman("network", "exists", args.network, check=False).returncode == 0:
        podman("network", "rm", "-f", args.network)
        changed = True
    restored = {}
    state_file = Path(args.root).resolve() / "host-state.json" if args.root else None
    if state_file and state_file.exists():
        before = json.loads(state_file.read_text(encoding="utf-8"))
        others = [n for n in json.loads(podman("network", "ls", "--format", "json").stdout or "[]")
                  if n.get("name") != "podman"]
        if not others:  # another podman network may still need what netavark set up
            if IP_FORWARD.read_text().strip() != before["ip_forward"]:
                IP_FORWARD.write_text(before["ip_forward"] + "\n")
                restored["ip_forward"] = before["ip_forward"]
            for table, chains in iptables_chains().items():
                added = [c for c in chains if c not in before["iptables_chains"].get(table, [])]
                for chain in added:  # first every rule that jumps to them, then the chains
                    rules = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, check=False).stdout
                    for line in rules.splitlines():
                        if line.startswith("-A ") and f"-j {chain}" in line:
                            subprocess.run(["iptables", "-t", table, "-D", *line[3:].split()], check=False)
                for chain in added:
                    subprocess.run(["iptables", "-t", table, "-F", chain], check=False)
                for chain in added:
                    subprocess.run(["iptables", "-t", table, "-X", chain], check=False)
                if added:
                    restored.setdefault("iptables_chains", {})[table] = added
        state_file.unlink()
        changed = changed or bool(restored)
    left = [c["Names"][0] for c in containers()]
    if podman("network", "exists", args.network, check=False).returncode == 0:
        left.append(f"network {args.network}")
    if left:
        raise SystemExit(f"left after down: {left}")
    return {"changed": changed, "removed": names, "restored": restored}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pu = sub.add_parser("up")
    pu.add_argument("--root", required=True)
    pu.add_argument("--image", required=True)
    pu.add_argument("--network", default=DEFAULT_NETWORK)
    pu.add_argument("--subnet", required=True)
    pu.add_argument("hosts", nargs="+", help="HOST=ADDRESS")
    pd = sub.add_parser("down")
    pd.add_argument("--root", default=os.environ.get("REPLYX_DRILL_SYSTEMD_ROOT") or str(REPO / ".drill-systemd"))
    pd.add_argument("--network", default=DEFAULT_NETWORK)
    args = p.parse_args(argv)
    if args.cmd == "down" and not shutil.which("podman"):
        print(json.dumps({"changed": False, "removed": [], "restored": {}}))
        return 0
    print(json.dumps(up(args) if args.cmd == "up" else down(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
