#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rollback_plan
short_description: The rollback decision policy - check the request, choose the level, compute the plan
version_added: 1.0.0
description:
  - Applies the rollback decision matrix (the level data of C(roles/rollback_policy/vars/levels.yml)) to the
    operator's request and to the state the playbook gathered, and returns the normalised request, the level
    chosen by C(level=auto) in O(request) or the whole rollback plan.
  - Runs on the controller as an action plugin; it reads nothing and changes nothing, and never reports a change.
  - O(stage=request) normalises and checks the request (level, component, target, recovery, restore mode, window,
    rolling batch, approvals). Every refusal fails with a message that names the valid choices.
  - O(stage=auto) applies the matrix's triggers (the C(auto_rules) of O(policy)) to the measurements in C(measure) of O(state) and
    returns the level chosen and the request at that level (a migration level's target defaults to the backend's
    last known-good release's revision).
  - O(stage=plan) computes the plan for every host of the backend and workers groups - each host's target release from
    its own release history, rolling batches, the order of a migration (code or schema first), the backup scope, the
    steps and the approvals required - and checks the approvals when the plan executes.
  - The plan executes (C(plan.execute)) unless in check mode, and for a planned (action V(plan) in the C(levels) of O(policy))
    level only with C(window=now) in O(request).
author:
  - ReplyX platform team (@replyx)
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
    support: full
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: In check mode the plan does not execute (C(plan.execute=false)) and needs no approval.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
options:
  stage:
    description:
      - V(request) checks the request only.
      - V(auto) chooses the level of C(level=auto) in O(request) from the measurements in O(state).
      - V(plan) computes the plan and checks the approvals it needs.
    type: str
    required: true
    choices: [request, auto, plan]
  request:
    description:
      - The operator's extra vars, as named in C(roles/rollback_policy/defaults/main.yml) - C(level), C(target),
        C(component), C(recovery), C(recovery_target_time), C(recovery_backup), C(restore_mode), C(restore_tables)
        (a list or a comma-separated string), C(window), C(stable_release) (or C(stable_commit)), C(code_rollback),
        C(rebuild_venv), C(takeover_stale_lock), C(approvals), C(approved_by), C(approver_role), C(ticket),
        C(rollback_batch) - and C(named_targets), the application's named migration targets (name -> revision).
      - C(approvals) is C(name:role:ticket,name:role:ticket) or a list of C({name, role, ticket}); these typed
        approvals count only where O(approval.allow_unsigned) is true (or O(approval.from_controller)).
      - C(approval_signatures) lists signature files (or directories of C(.sig) files), as a list or comma-separated -
        each made with C(ssh-keygen -Y sign -n replyx-rollback) over the plan's digest (C(digest) of RV(plan)).
      - C(rollback_batch) is a number of hosts, a percentage such as C(50%), or empty for the default (half the
        backends, so that one keeps serving).
    type: dict
    required: true
  policy:
    description:
      - The level data, the variables of C(roles/rollback_policy/vars/levels.yml) without their C(rollback_policy_)
        prefix - C(levels), C(components), C(auto_rules), C(role_rank), C(manual_indexes) (and optionally
        C(escalation)).
      - A missing, unknown or malformed key fails naming the key.
    type: dict
    required: true
  state:
    description:
      - What the playbook read, for O(stage=auto) and O(stage=plan).
      - C(environment), C(database), C(postgres_host); C(services) (C(backend), C(workers) service names).
      - C(backend), C(workers) - every host of the group in inventory order, each C({host, release, history}) and
        optionally C(config_backup) (the configuration backup exists); or C(config_backups), a dict host -> bool.
      - C(migration) - the result of M(replyx.rollback.alembic_downgrade) in check mode, or null.
      - C(indexes) - the result of M(replyx.rollback.pg_index_drop) in check mode, or null.
      - C(auto) - the RV(auto) of O(stage=auto); or C(measure) (the M(replyx.rollback.service_health) results, one per
        backend host) and C(baseline_recorded) (bool), from which it is computed.
    type: dict
    default: {}
  run_id:
    description:
      - Identifies the run in the plan. Default is C(<UTC time>-<level>).
    type: str
    default: ""
  approval:
    description:
      - Who may approve, from the inventory. The action refuses when the inventory variables C(rollback_allow_unsigned_approvals),
        C(rollback_allowed_signers), C(rollback_signer_roles) or C(awx_approvals_users) are given as extra vars.
      - A signed approval is a signature over the C(digest) of RV(plan) in the namespace C(replyx-rollback) by a key of O(approval.allowed_signers);
        its approver is the principal that file names for the key, its role the one O(approval.signer_roles) gives.
      - Refused, before anything changes - a malformed signature file, another namespace, a key no principal has, a key listed
        for several principals, a signature over another digest, a principal without a role, the same key or principal twice.
    type: dict
    default: {}
    suboptions:
      allow_unsigned:
        description:
          - Whether typed approvals (C(approvals), C(approved_by) in O(request)) count. The lab and drill inventories only.
        type: bool
        default: false
      allowed_signers:
        description:
          - Path on the controller of the OpenSSH C(allowed_signers) file holding every approver's public key.
        type: str
        default: ""
      signer_roles:
        description:
          - The role of each principal of O(approval.allowed_signers), principal -> role of the role rank.
        type: dict
        default: {}
      from_controller:
        description:
          - The approvals in O(request) were read back from the approval nodes of the AWX workflow (C(playbooks/awx_approvals.yml)),
            not typed. They count even where O(approval.allow_unsigned) is false.
        type: bool
        default: false
notes:
  - The decisions are plain Python in the collection's C(module_utils/_policy.py), unit-tested without hosts.
  - Signatures are checked with C(ssh-keygen -Y find-principals) and C(ssh-keygen -Y verify) on the controller (OpenSSH 8.2 or later),
    in C(module_utils/_signatures.py).
seealso:
  - module: replyx.rollback.alembic_downgrade
  - module: replyx.rollback.service_health
"""

EXAMPLES = r"""
- name: Check the request
  replyx.rollback.rollback_plan:
    stage: request
    request:
      level: "{{ level | default('') }}"
      target: "{{ target | default('') }}"
      component: "{{ component | default('') }}"
      approvals: "{{ approvals | default([]) }}"
      approval_signatures: "{{ approval_signatures | default([]) }}"
      named_targets: "{{ rollback_named_targets | default({}) }}"
    policy:
      levels: "{{ rollback_policy_levels }}"
      components: "{{ rollback_policy_components }}"
      auto_rules: "{{ rollback_policy_auto_rules }}"
      role_rank: "{{ rollback_policy_role_rank }}"
      manual_indexes: "{{ rollback_policy_manual_indexes }}"
    approval:
      allowed_signers: /etc/replyx/rollback/allowed_signers
      signer_roles: {alice@replyx.internal: team_lead, bob@replyx.internal: executive}
  register: checked

- name: Compute the plan
  replyx.rollback.rollback_plan:
    stage: plan
    request: "{{ rollback_policy_request }}"
    policy: "{{ rollback_policy }}"
    state:
      environment: production
      database: chatai
      postgres_host: db1
      services: {backend: replyx-backend, workers: chatai-bot-manager}
      backend:
        - {host: api1, release: v1.2.0, history: "{{ api1_history }}"}
        - {host: api2, release: v1.2.0, history: "{{ api2_history }}"}
      workers:
        - {host: bots1, release: v2.0.0, history: "{{ bots1_history }}"}
      migration: "{{ downgrade_preview if downgrade_preview is not skipped else none }}"
  register: planned

- name: Show it
  ansible.builtin.debug:
    msg: "{{ planned.plan.text.splitlines() }}"
"""

RETURN = r"""
request:
  description:
    - The normalised request - the options as given, lower-cased and trimmed, C(approvals) as a list of
      C({name, role, ticket}), C(restore_tables) as a list, C(rollback_batch) as null, an int or C(N%), and
      C(target_revision) (a named target resolved to its revision id).
    - After O(stage=auto) and O(stage=plan), C(level) is the level in effect, C(requested_level) the one asked for.
  returned: success
  type: dict
  sample: {level: high, target: widget_version, target_revision: fb3228f45466, component: "", recovery: none,
           approvals: [{name: lead, role: team_lead, ticket: INC-2}], rollback_batch: null}
auto:
  description: The level O(stage=auto) chose, why, and what was measured.
  returned: O(stage=auto) and C(level=auto) in O(request)
  type: dict
  sample: {level: high, reason: "p95_ratio_to_baseline = 4.2 > 3.0",
           measured: {failure_rate_percent: 0.0, p95_ratio_to_baseline: 4.2, failed_checks: [], baseline_recorded: true}}
plan:
  description:
    - The rollback plan. C(level), C(requested_level), C(level_source), C(auto_reason), C(issue), C(rollback_type),
      C(window), C(window_minutes), C(approval_role), C(approvers_required), C(action) (code, migration or component),
      C(component), C(recovery), C(recovery_target_time), C(recovery_backup), C(restore_mode), C(restore_tables),
      C(environment), C(execute), C(run_id).
    - C(steps) - ordered C({step, host, detail}) (and C(batch) for per-host steps), one per host for per-host steps.
    - C(backend_release_before), C(backend_release_target), C(workers_release_before), C(workers_release_target) -
      the group's common release (the first host's when the hosts differ); C(backend_hosts), C(workers_hosts) -
      C({host, release_before, release_target}) per host; C(backend_batches), C(workers_batches) - the rolling batches.
    - C(revision_before), C(revision_target), C(migration_steps), C(would_drop_data), C(sql_preview), C(order)
      (V(code_first), V(schema_first) or empty), C(indexes_to_drop).
    - "C(needs_backup), C(backup) (empty, C({scope: tables, tables}) or C({scope: full})), C(data_can_be_lost),
      C(services_touched), C(rebuild_venv), C(code_rollback)."
    - C(text) - the plan as text for the operator.
    - C(digest) - sha256 (64 hex digits) of the canonical JSON of what the plan does (level, action, revisions, releases,
      every host, batch and step; not the run id, the time or check mode) - what approvers sign.
  returned: O(stage=plan)
  type: dict
  sample: {level: high, action: migration, order: schema_first, execute: true, approvers_required: 2,
           backup: {scope: tables, tables: [assistants]},
           backend_batches: [[api1], [api2]], steps: [{step: triage, host: controller, detail: "snapshot: ..."}]}
approvals:
  description:
    - The approvals the plan accepted, signed ones first - C({name, role, ticket}), and for a signature also C(key) (the
      key's SHA256 fingerprint) and C(signature) (the file).
  returned: O(stage=plan)
  type: list
  elements: dict
  sample: [{name: alice@replyx.internal, role: team_lead, ticket: INC-7, key: "SHA256:3f0...", signature: /tmp/alice.sig}]
msg:
  description: The refusal, naming the valid choices.
  returned: failure
  type: str
  sample: "Failed to start the rollback: unknown level 'urgent'. Valid levels: critical, high, medium, low, auto
    (-e level=critical|high|medium|low|auto)."
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replyx.rollback.plugins.module_utils._policy import argument_spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    module.fail_json(msg="replyx.rollback.rollback_plan runs on the controller as an action plugin; "
                         "it cannot run as a module on a managed host.")


if __name__ == "__main__":
    main()
