#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rollback_lock
short_description: One rollback at a time per environment
version_added: 1.0.0
description:
  - Acquires or releases the rollback lock of an environment, recording who holds it (owner, run id, level), since
    when, and from which host and process.
  - A second acquire by another run fails with who holds the lock and since when. Acquiring again with the same
    O(run_id) changes nothing.
  - A refusal says how long the lock has been held and whether its holder process still runs (checked when the holder
    ran on the host this module runs on; otherwise it says it cannot be checked from here).
  - A stale lock - whose holder process is known to be gone (a killed run, at any age), or older than the holder's TTL
    and not known to be running - is taken over only with O(takeover_stale=true); the previous holder is reported
    in RV(took_over).
  - "Backend V(file): a JSON file at O(path) on the host the module runs on, created with C(O_EXCL) so only one
    creator wins."
  - "Backend V(postgres): a row in the table C(replyx_rollback_lock) (created if missing) in the application
    database, taken atomically with C(INSERT ... ON CONFLICT DO NOTHING) in a transaction."
author:
  - ReplyX platform team (@replyx)
extends_documentation_fragment:
  - replyx.rollback.postgres
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Reports whether the lock would be acquired, taken over or released; writes nothing (no file, no table).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: full
    details: The lock record before and after.
requirements:
  - psycopg >= 3.1 on the managed host, for the V(postgres) backend.
options:
  state:
    description:
      - V(acquired) takes the lock, V(released) gives it back.
    type: str
    default: acquired
    choices: [acquired, released]
  environment:
    description:
      - The environment the lock is for (C(production), C(staging), C(lab)); one lock per environment.
    type: str
    required: true
  backend:
    description:
      - Where the lock lives.
      - With V(postgres), the connection options (O(login_host), O(database_url), ...) name the application database.
    type: str
    default: file
    choices: [file, postgres]
  path:
    description:
      - The lock file (V(file) backend). Its directory must exist.
      - Default is C(/var/lock/replyx-rollback-<environment>.json).
    type: path
  owner:
    description:
      - Who is rolling back, for the message another run gets. Default is C(<user>@<host>) of the module's process.
    type: str
  run_id:
    description:
      - Identifies this rollback run; only this run id releases the lock without O(force).
    type: str
    required: true
  level:
    description:
      - The rollback level of the run (C(critical), C(high), C(medium), C(low)), recorded with the lock.
    type: str
  ttl_s:
    description:
      - Seconds after which this run's lock counts as stale (recorded with the lock; the holder's own value is
        used when judging it).
    type: int
    default: 3600
  takeover_stale:
    description:
      - Take over a stale lock. Without it a stale lock is refused like any other, and the message says it is stale.
    type: bool
    default: false
  force:
    description:
      - Release the lock even when another run holds it.
    type: bool
    default: false
  holder_pid:
    description:
      - PID recorded as the holder, used by the V(file) backend to tell whether a lock past its TTL is stale.
      - Default is the outermost C(ansible)/C(ansible-playbook)/C(ansible-runner) process above this module on the
        host it runs on (none when Ansible runs elsewhere, and then the TTL alone decides).
    type: int
notes:
  - The holder's PID is checked only on the host it ran on (both backends). When the module runs on another host than
    the run that holds the lock (the usual case with V(postgres) and SSH), the TTL alone decides.
seealso:
  - module: replyx.rollback.service_health
"""

EXAMPLES = r"""
- name: Take the production rollback lock in the application database
  replyx.rollback.rollback_lock:
    environment: production
    backend: postgres
    database_url: "{{ backend_database_url }}"
    owner: "{{ approved_by }}"
    run_id: "{{ rollback_run_id }}"
    level: high
    ttl_s: 1800

- name: Take the lab lock as a file on the backend host, taking over a stale one
  replyx.rollback.rollback_lock:
    environment: lab
    path: /srv/backend/run/rollback.lock.json
    run_id: "{{ rollback_run_id }}"
    level: critical
    takeover_stale: true
  register: lock

- name: Say when a stale lock was taken over
  ansible.builtin.debug:
    msg: "Took over the lock from {{ lock.took_over.owner }} (run {{ lock.took_over.run_id }})"
  when: lock.took_over is defined

- name: Release the lock at the end of the run
  replyx.rollback.rollback_lock:
    state: released
    environment: production
    backend: postgres
    database_url: "{{ backend_database_url }}"
    run_id: "{{ rollback_run_id }}"
"""

RETURN = r"""
environment:
  description: The environment of the lock.
  returned: always
  type: str
  sample: production
backend:
  description: The backend used.
  returned: always
  type: str
  sample: postgres
location:
  description: Where the lock lives - the file, or C(db.replyx_rollback_lock@host:port).
  returned: always
  type: str
  sample: /var/lock/replyx-rollback-production.json
state:
  description: The state asked for.
  returned: always
  type: str
  sample: acquired
lock:
  description: The lock as held after the task (in check mode, as it would be); null after a release.
  returned: always
  type: dict
  contains:
    environment:
      description: The environment.
      type: str
      sample: production
    owner:
      description: Who holds it.
      type: str
      sample: alice
    run_id:
      description: The run holding it.
      type: str
      sample: rb-20260105-031200
    level:
      description: The rollback level of that run.
      type: str
      sample: high
    acquired_at:
      description: When it was acquired (UTC, ISO-8601).
      type: str
      sample: "2026-01-05T03:12:00Z"
    host:
      description: Host the holder ran the module on.
      type: str
      sample: backend-1
    pid:
      description: Holder PID on that host (see O(holder_pid)).
      type: int
      sample: 4242
    ttl_s:
      description: Seconds after which the lock counts as stale.
      type: int
      sample: 3600
took_over:
  description: The previous holder of a stale lock that was taken over, and why it was stale.
  returned: when a stale lock was taken over
  type: dict
  sample: {"owner": "bob", "run_id": "rb-1", "level": "medium", "acquired_at": "2026-01-05T01:00:00Z",
           "host": "backend-1", "pid": 999, "ttl_s": 3600, "environment": "production",
           "reason": "held for 2 h 1 min and holder PID 999 on backend-1 is gone"}
holder:
  description: The lock's current holder when the lock was refused.
  returned: when acquiring was refused
  type: dict
  sample: {"owner": "bob", "run_id": "rb-1", "level": "high", "acquired_at": "2026-01-05T01:00:00Z"}
holder_age_s:
  description: How long the refused lock has been held, in seconds.
  returned: when acquiring was refused
  type: int
  sample: 135
holder_alive:
  description: Whether the refused lock's holder process still runs; null when it cannot be checked from this host.
  returned: when acquiring was refused
  type: bool
  sample: false
released:
  description: The lock record that was released.
  returned: when a lock was released
  type: dict
  sample: {"owner": "alice", "run_id": "rb-20260105-031200", "level": "high"}
queries:
  description: The SQL run (V(postgres) backend).
  returned: with the postgres backend
  type: list
  elements: str
  sample: ["SELECT to_regclass(%(name)s) IS NOT NULL AS present"]
msg:
  description: What happened, in words.
  returned: always
  type: str
  sample: acquired rollback lock production
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replyx.rollback.plugins.module_utils._errors import ReplyxError, fail_from
from ansible_collections.replyx.rollback.plugins.module_utils._lock import argument_spec, run


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = run(module)
    except ReplyxError as exc:
        fail_from(module, exc, changed=False, environment=module.params["environment"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
