#!/usr/bin/env bash
# What the drills need on this machine, installed once (idempotent; `make drills` and `make test` run it):
# sshd for the hosts, HAProxy for the load balancer, socat for its runtime API, iproute2 for the namespaces.
set -euo pipefail
missing=()
for pkg in openssh-server openssh-client haproxy socat iproute2; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "drill setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d: the packages must not start their own sshd/haproxy on this machine (the drills start their own)
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.replyx && chmod +x /usr/sbin/policy-rc.d.replyx
  [ -e /usr/sbin/policy-rc.d ] || ln -s /usr/sbin/policy-rc.d.replyx /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
  [ "$(readlink /usr/sbin/policy-rc.d 2>/dev/null)" = /usr/sbin/policy-rc.d.replyx ] && rm -f /usr/sbin/policy-rc.d
  rm -f /usr/sbin/policy-rc.d.replyx
fi
mkdir -p /run/sshd
