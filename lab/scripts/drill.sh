#!/usr/bin/env bash
# make drill: bring the lab up, deploy the bad release (the incident), then run the rollback.
set -euo pipefail
cd "$(dirname "$0")/../.."
step() { printf '\n==> %s\n' "$*"; }

# make drill FLEET=1: the fleet drill on separate hosts (network namespaces reached over SSH, HAProxy in
# front of two backends): molecule create, prepare, converge (the critical and high drills under traffic)
# and verify; the hosts stay up for a look (ssh -i .drill/id_ed25519 root@10.77.0.21), make drills-down stops them.
if [ -n "${FLEET:-}" ] && [ "${FLEET}" != 0 ]; then
  bash molecule/shared/setup.sh
  status=0
  for action in create prepare converge verify; do
    step "molecule $action (molecule/default)"
    molecule "$action" || { status=$?; break; }
  done
  step "Drills (artifacts/drills.md)"
  cat artifacts/drills.md 2>/dev/null || true
  step "The drill hosts are still up (pg1 10.77.0.11, be1 .21, be2 .22, wk1 .31, wk2 .32, lb1 .41: HAProxy on :8080). Stop them: make drills-down"
  exit "$status"
fi

# make drill INVENTORY=inventories/lab-fleet: the same drill on the fleet lab (two backends, two
# workers hosts); the default is ansible.cfg's inventories/lab.
if [ -n "${INVENTORY:-}" ]; then
  [ -d "$INVENTORY" ] || [ -f "$INVENTORY" ] || { echo "INVENTORY=$INVENTORY: no such inventory (try inventories/lab or inventories/lab-fleet)" >&2; exit 2; }
  export ANSIBLE_INVENTORY="$INVENTORY"
fi

step "Bringing the lab up (PostgreSQL 18 + pgvector, backend, workers): playbooks/lab.yml"
ansible-playbook playbooks/lab.yml

step "The incident: deploying the bad backend release (v1.2.0): playbooks/deploy.yml -e release=bad"
ansible-playbook playbooks/deploy.yml -e release=bad

step "Rolling back: playbooks/rollback.yml -e level=high -e target=widget_version (drill approvals)"
status=0
ansible-playbook playbooks/rollback.yml -e level=high -e target=widget_version \
  -e @lab/drill-approvals.yml || status=$?

report=$(ls -t "${REPLYX_ARTIFACTS_DIR:-artifacts}"/incident-*.md 2>/dev/null | head -n 1 || true)
if [ -n "$report" ]; then
  step "Validation checklist (from the incident report)"
  sed -n '/^## Validation checklist/,/^## Impact Assessment/p' "$report" | sed '$d'
  step "Incident report: $report"
fi
if [ -n "${INVENTORY:-}" ]; then
  step "The lab is still running ($INVENTORY). Stop it: ansible-playbook -i $INVENTORY playbooks/lab_down.yml; remove every lab and artifact: make distclean"
else
  step "The lab is still running (PostgreSQL, the backend and the workers under PM2). Stop it: make lab-down; remove every lab and artifact: make distclean"
fi
exit "$status"
