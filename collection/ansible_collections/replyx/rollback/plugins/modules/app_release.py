#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: app_release
short_description: The release an application host runs - read it, prepare one, switch to one
version_added: 1.0.0
description:
  - One application host (a ReplyX backend or a workers host) keeps its code as a git working tree and a release
    history, a JSON list of deploys (tag, commit, alembic revision, time, result), newest last. Rollbacks read
    "last known good" from that history.
  - V(query) returns the running release (the tag at C(HEAD)), its commit and the history. Changes nothing.
  - V(prepared) makes sure the release's commit is in the local repository (fetched from O(repo_url) when missing)
    while the current release keeps serving, says whether the release's dependency files differ from the running
    ones, and with O(keep_tree) keeps a detached checkout of the B(running) release there, so its migration
    scripts can still downgrade the schema after the older code is serving.
  - V(running) checks the release out, reinstalls dependencies only when O(dependency_files) differ between the
    running and the target commit, restarts the service exactly as M(replyx.rollback.app_service) does (systemd,
    PM2 or a verified pidfile, never C(pkill)) and waits for its health URL, then appends the switch to the history
    (atomically, under a lock). A switch that fails is recorded with result C(failed) and fails the task.
  - Already on the release - changed=false, nothing recorded; a stopped service is started.
author:
  - ReplyX platform team (@replyx)
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Returns the steps it would run; nothing is fetched, checked out, installed, restarted or recorded.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
options:
  app:
    description:
      - Name of the application (V(backend), V(workers)), used in messages and in the history entries.
    type: str
    required: true
  app_dir:
    description:
      - The application's git working tree.
    type: path
    required: true
  state:
    description:
      - V(query), V(prepared) or V(running); see the description.
    type: str
    default: running
    choices: [query, prepared, running]
  release:
    description:
      - The release (a git tag) to prepare or run. Required unless O(state=query).
      - With O(state=query), the release to check for (RV(checked_release)), in the working tree or with
        C(git ls-remote) in O(repo_url); nothing is fetched or changed.
    type: str
  repo_url:
    description:
      - Repository to fetch the release's tag from when the working tree does not have it yet.
    type: str
  history:
    description:
      - Path of the release history file (JSON list). Read with V(query), appended to with V(running).
    type: path
  history_result:
    description:
      - The C(result) recorded for a switch - V(success) (a deploy), V(rollback) (rolling back to a known-good
        release), V(rescue) (putting back the release that ran before a failed rollback).
    type: str
    default: success
    choices: [success, rollback, rescue]
  history_extra:
    description:
      - More keys for the history entry, for example C(rolled_back_from), C(run_id), C(alembic_revision).
    type: dict
    default: {}
  dependency_files:
    description:
      - Files (relative to O(app_dir)) that define the dependencies, for example C(requirements.txt). When one
        differs between the running and the target commit, O(install_command) runs after the checkout.
    type: list
    elements: str
    default: []
  install_command:
    description:
      - Argument list (no shell) that installs the dependencies, run in O(app_dir).
    type: list
    elements: str
  keep_tree:
    description:
      - Keep a detached checkout (C(git worktree)) of the running commit at this path (V(prepared), V(running)).
    type: path
  service:
    description:
      - The service that runs the application, with the options of M(replyx.rollback.app_service) (O(ignore:state)
        excepted; the switch restarts it), for example C(name), C(manager), C(pm2_bin), C(pm2_home), C(wait_url),
        C(wait_timeout). Required with O(state=running).
    type: dict
    default: {}
notes:
  - Configuration files outside git (C(.env), C(config/production.json)) and ignored directories (C(venv/),
    C(node_modules/)) are left as they are by the checkout.
seealso:
  - module: replyx.rollback.app_service
"""

EXAMPLES = r"""
- name: Read the running backend release and its history
  replyx.rollback.app_release:
    app: backend
    app_dir: /srv/replyx/backend/app
    history: /srv/replyx/backend/release_history.json
    state: query
  register: backend_release

- name: Prepare v1.0.0 while v1.2.0 serves, keeping v1.2.0's migrations for the downgrade
  replyx.rollback.app_release:
    app: backend
    app_dir: /srv/replyx/backend/app
    release: v1.0.0
    repo_url: git@git.example.com:replyx/backend.git
    keep_tree: /srv/replyx/backend/migrations
    state: prepared

- name: Switch to v1.0.0 (a rollback), restart under PM2 and wait for /health
  replyx.rollback.app_release:
    app: backend
    app_dir: /srv/replyx/backend/app
    release: v1.0.0
    history: /srv/replyx/backend/release_history.json
    history_result: rollback
    history_extra:
      rolled_back_from: v1.2.0
      run_id: 20261202-0300-high
    dependency_files: [requirements.txt]
    install_command: [/srv/replyx/backend/app/venv/bin/pip, install, -q, -r, requirements.txt]
    service:
      name: replyx-backend
      manager: pm2
      pm2_home: /srv/replyx/backend/pm2
      wait_url: http://127.0.0.1:8000/health
      wait_timeout: 90
"""

RETURN = r"""
app:
  description: The application.
  returned: always
  type: str
  sample: backend
release_before:
  description: The release (tag at C(HEAD)) that ran before; empty when C(HEAD) carries no tag.
  returned: always
  type: str
  sample: v1.2.0
commit_before:
  description: The commit that ran before.
  returned: always
  type: str
  sample: 6f1c0a9e1b7d4c3a2f0e9d8c7b6a5f4e3d2c1b0a
release:
  description: The release asked for (V(query) - the running one).
  returned: always
  type: str
  sample: v1.0.0
commit:
  description: The commit of O(release).
  returned: always
  type: str
  sample: 0a1b2c3d4e5f60718293a4b5c6d7e8f901234567
history:
  description: The release history, newest last (after the switch when one was recorded).
  returned: always
  type: list
  elements: dict
  sample: [{tag: v1.0.0, commit: 0a1b2c3, result: success, alembic_revision: fb3228f45466}]
steps:
  description: What was done (or, in check mode, would be done), in order.
  returned: always
  type: list
  elements: str
  sample: ["git checkout v1.0.0 (0a1b2c3d4e5f)", "restart replyx-backend (pm2) and wait for http://127.0.0.1:8000/health"]
checked_release:
  description:
    - Whether O(release) exists (V(known)), and where; when it does not, the releases that do (V(valid)).
  returned: when O(state) is V(query) and O(release) is given
  type: dict
  sample: {release: v9.9.9, known: false, valid: [v1.0.0, v1.1.0, v1.2.0]}
dependencies_differ:
  description: Whether O(dependency_files) differ between the running and the target commit.
  returned: when O(state) is V(prepared) or V(running)
  type: bool
  sample: false
kept_tree:
  description: The checkout of the running release kept at O(keep_tree).
  returned: when O(keep_tree) is set
  type: dict
  sample: {path: /srv/replyx/backend/migrations, commit: 6f1c0a9e, changed: true}
service:
  description: The result of restarting the service (as M(replyx.rollback.app_service) returns it).
  returned: when the service was started or restarted
  type: dict
  sample: {old_pids: [4242], new_pids: [4250], waited_s: 1.3}
unfinished_switch:
  description:
    - The working tree was already at O(release) but the release history does not record the switch to it (an
      earlier switch was cut between its checkout and its restart or record; its newest entry is another commit, or
      a failed switch). The switch is finished instead of only starting the service - dependencies compared with the
      commit that ran last, restart, record - and C(rolled_back_from) in the entry names the release that ran last.
    - C(tag) and C(commit) of the release that ran last (the newest entry that is not a failure), C(newest_result)
      the result of the history's newest entry.
  returned: when O(state) is V(running) and such a switch was found
  type: dict
  sample: {tag: v1.1.0, commit: 6f1c0a9e2b4d, newest_result: success}
entry:
  description: The history entry recorded.
  returned: when the switch happened
  type: dict
  sample: {tag: v1.0.0, result: rollback, rolled_back_from: v1.2.0}
switched_at:
  description: UTC time the switch was recorded at (ISO 8601); the good release serves from then on.
  returned: when the switch happened
  type: str
  sample: "2026-12-02T03:04:05Z"
seconds:
  description: Seconds the switch took (checkout, dependencies, restart, health wait).
  returned: when the switch happened
  type: float
  sample: 2.4
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replyx.rollback.plugins.module_utils._errors import ReplyxError, fail_from
from ansible_collections.replyx.rollback.plugins.module_utils._release import argument_spec, run


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_if=[("state", "prepared", ("release",)), ("state", "running", ("release",))])
    try:
        result = run(module)
    except ReplyxError as exc:
        fail_from(module, exc, changed=False, app=module.params["app"], release=module.params["release"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
