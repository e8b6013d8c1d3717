#!/usr/bin/env bash
# make drill: bring the lab up, deploy the bad release (the incident), then run the rollback.
set -euo pipefail
cd "$(dirname "$0")/../.."
step() { printf '\n==> %s\n' "$*"; }

step "Bringing the lab up (PostgreSQL 18 + pgvector, backend, workers): playbooks/lab.yml"
ansible-playbook playbooks/lab.yml

step "The incident: deploying the bad backend release (v1.2.0): playbooks/deploy.yml -e release=bad"
ansible-playbook playbooks/deploy.yml -e release=bad

if [ ! -f playbooks/rollback.yml ]; then
  step "The rollback playbooks do not exist yet (issue: rollback levels end to end)."
  echo "The lab now runs the bad release. Inspect it with: make lab-status"
  exit 0
fi

step "Rolling back: playbooks/rollback.yml -e level=high (drill approvals)"
ansible-playbook playbooks/rollback.yml -e level=high -e target=widget_version \
  -e @lab/drill-approvals.yml
