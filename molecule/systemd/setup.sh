#!/usr/bin/env bash
# What molecule/systemd needs on this machine, idempotent (`make drills` runs it when the scenario is
# in DRILL_SCENARIOS): podman with runc and netavark (which needs iptables), debootstrap; then the hosts' image, built once
# from Debian packages (no container registry is reachable) and reused while its content key is the same.
#   molecule/systemd/setup.sh            prints the image's name (localhost/replyx-systemd:<key>)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="$here/containers.conf"
suite=bookworm
mirror="${REPLYX_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# what the hosts run: sshd (Ansible reaches them over SSH), systemd as PID 1, python3 + venv (Ansible,
# the backend's virtualenv; python3-yaml: the lab's release builder), git (releases), nodejs (the bot manager)
include="python3,python3-venv,python3-yaml,openssh-server,sudo,iproute2,systemd,systemd-sysv,dbus,git,nodejs,ca-certificates"

missing=()
for pkg in podman runc netavark aardvark-dns iptables debootstrap openssh-client; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "systemd drill setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi

# the content key: the suite, the packages and the recipe below, comments left out (a change to any of
# them builds a new image)
key="$(printf '%s\n' "$suite" "$include" | cat - <(sed -n '/^# --- the image recipe/,$p' "$0" | grep -v '^ *#') | sha256sum | cut -c1-12)"
image="localhost/replyx-systemd:$key"
# --- the image recipe (part of the content key)
if ! podman image exists "$image"; then
  echo "systemd drill setup: building $image (debootstrap $suite, then podman import)" >&2
  rootfs="$(mktemp -d /var/tmp/replyx-systemd-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
  rm -f "$rootfs.log"
  # sshd: keys only (podman_hosts.py gives each container its host keys and the drill's key)
  printf 'PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n' \
    > "$rootfs/etc/ssh/sshd_config.d/replyx-drill.conf"
  rm -f "$rootfs"/etc/ssh/ssh_host_*   # no two hosts share host keys
  # nothing a container does not need at boot
  for unit in systemd-networkd-wait-online.service getty@tty1.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer; do
    rm -f "$rootfs/etc/systemd/system/"*.wants/"$unit"
  done
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$image" >/dev/null
  # older images of this scenario are replaced by this one
  podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/replyx-systemd:' | grep -vx "$image" | xargs -r podman rmi >/dev/null || true
fi
echo "$image"
