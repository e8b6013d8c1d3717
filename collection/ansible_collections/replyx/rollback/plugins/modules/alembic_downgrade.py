#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: alembic_downgrade
short_description: Downgrade an application's database with alembic, safely
version_added: 1.0.0
description:
  - Downgrades the database of an alembic project (the ReplyX backend) to a target revision, on the host
    where the application lives, with the application's own Python interpreter.
  - Reads the current revision(s), the heads and the full history as structured data by running a small
    helper program with that interpreter (alembic's C(Config), C(ScriptDirectory) and C(MigrationContext));
    no CLI text is parsed.
  - Resolves O(target) (revision id or unique prefix, named target, relative V(-1)/V(-2), V(base)), refuses a
    target that is not an ancestor of the current revision, and plans the ordered steps.
  - Each migration module declares C(downgrade_drops_data), a list of C(table) or C(table.column) whose data its
    downgrade destroys. A module without it counts as dropping data. Steps that drop data need a verified
    O(backup_manifest) from M(replyx.rollback.pg_backup), taken at the current revision, or O(allow_data_loss=true).
  - Runs the downgrade in one process while holding a PostgreSQL session-level advisory lock, so two downgrades
    never interleave; the current revision is read again once the lock is held, and the stamped revision is
    verified afterwards.
  - Already at the target, nothing is run and RV(ignore:changed=false).
author:
  - ReplyX platform team (@replyx)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
requirements:
  - On the managed host, the application's interpreter (O(python) or O(virtualenv)) with C(alembic), C(sqlalchemy)
    and a PostgreSQL driver (C(psycopg) or C(psycopg2)).
attributes:
  check_mode:
    support: full
    details:
      - Returns the planned steps, whether they drop data and, with O(sql_preview), the offline SQL; changes nothing.
  diff_mode:
    support: full
    details:
      - The revision before and after.
  platform:
    platforms: posix
options:
  project_dir:
    description:
      - Directory of the alembic project (where C(alembic.ini) and the application's packages are).
      - The helper runs with this directory as working directory and first on C(sys.path).
    type: path
    required: true
  config:
    description:
      - Path of C(alembic.ini).
      - Defaults to C(<project_dir>/alembic.ini).
    type: path
  python:
    description:
      - The application's Python interpreter, which has alembic and the application's models.
      - Mutually exclusive with O(virtualenv); one of the two is required.
    type: path
  virtualenv:
    description:
      - The application's virtualenv; its C(bin/python) is used.
      - Mutually exclusive with O(python); one of the two is required.
    type: path
  database_url:
    description:
      - Database URL, for example C(postgresql+psycopg://user:password@host:5432/dbname).
      - When not set, C(DATABASE_URL) is read from O(env_file), then from the environment.
      - Passed to the helper in its environment (also as C(DATABASE_URL) for the application's C(env.py)),
        never on the command line, and never returned.
    type: str
  env_file:
    description:
      - The application's dotenv file to read C(DATABASE_URL) from when O(database_url) is not set.
      - Defaults to C(<project_dir>/.env).
    type: path
  target:
    description:
      - Where to go.
      - A revision id or a unique prefix of one, a key of O(named_targets), a relative V(-1), V(-2), ...
        (counted down from the current revision), or V(base) (below the first migration).
      - A target that is not an ancestor of the current revision is refused.
    type: str
    required: true
  named_targets:
    description:
      - "Names for revisions, used by O(target), for example C(widget_version=fb3228f45466). Application data:
        the playbooks pass the inventory's C(rollback_named_targets)."
    type: dict
    default: {}
  branch:
    description:
      - With several heads, the branch to downgrade, as a branch label or a head revision.
      - Required when the history or the database has more than one head.
    type: str
  backup_manifest:
    description:
      - Path of the JSON manifest of a backup written by M(replyx.rollback.pg_backup).
      - Required when a step drops data, unless O(allow_data_loss=true). When given, the backup's checksum is
        verified, and the manifest must be of the same database and taken at the current revision.
    type: path
  backup_manifest_data:
    description:
      - The manifest itself, as M(replyx.rollback.pg_backup) returned it (RV(replyx.rollback.pg_backup#module:backup)),
        for a downgrade run on another host than the one that keeps the backup (a fleet keeps backups on the
        PostgreSQL host and runs the migrations from a backend). The caller checks the backup's checksum on its
        host; the manifest must say the backup was verified.
      - Checked like O(backup_manifest) otherwise (same database, taken at the current revision, tables).
    type: dict
  allow_data_loss:
    description:
      - Run steps that drop data without a backup manifest.
      - When used, the result carries a warning naming the steps and what they drop.
    type: bool
    default: false
  backup_planned:
    description:
      - The caller takes the verified backup itself before the real run (a rollback plan previewing the
        downgrade). In check mode, steps that drop data without O(backup_manifest) are then reported in the
        result's RV(refused_without_backup) instead of a warning; a real run still needs the manifest.
    type: bool
    default: false
  sql_preview:
    description:
      - Also return the offline SQL of C(current:target) (alembic's C(--sql) mode); nothing is executed for it.
    type: bool
    default: false
  lock_id:
    description:
      - Key of the PostgreSQL advisory lock held while the downgrade runs.
      - Every downgrade of the same database must use the same key.
    type: int
    default: 1371980160693611854
  lock_timeout:
    description:
      - Seconds to wait for the advisory lock. Then the module fails, naming the session that holds it
        (pid, application_name, since when).
    type: int
    default: 60
  timeout:
    description:
      - Seconds each helper run may take, lock wait included. A downgrade cut off by it is rolled back
        (PostgreSQL runs it in one transaction unless the project's C(env.py) says otherwise).
    type: int
    default: 900
notes:
  - The lock is a session-level advisory lock on a connection of its own, held by the helper process for the
    whole downgrade, so it works whether or not the project's C(env.py) uses the connection passed in
    C(config.attributes['connection']). When C(env.py) creates its own engine, that engine must point at the same
    database as O(database_url), otherwise the downgrade is refused before it starts.
seealso:
  - module: replyx.rollback.pg_backup
  - name: Alembic operation reference
    description: How alembic downgrades, branches and offline mode work.
    link: https://alembic.sqlalchemy.org/en/latest/tutorial.html
"""

EXAMPLES = r"""
- name: Plan the widget_version rollback (steps and SQL, nothing changes)
  replyx.rollback.alembic_downgrade:
    project_dir: /srv/replyx/backend
    virtualenv: /srv/replyx/backend/venv
    target: widget_version
    sql_preview: true
  check_mode: true
  register: plan

- name: Roll the migrations back to the pgvector indexes, with a verified backup
  replyx.rollback.alembic_downgrade:
    project_dir: /srv/replyx/backend
    virtualenv: /srv/replyx/backend/venv
    target: pgvector_indexes
    backup_manifest: "{{ backup.manifest_path }}"
    lock_timeout: 120

- name: One step down, URL given explicitly
  replyx.rollback.alembic_downgrade:
    project_dir: /srv/replyx/backend
    python: /srv/replyx/backend/venv/bin/python
    database_url: "{{ vault_replyx_database_url }}"
    target: "-1"

- name: Back to the baseline schema, knowingly without a backup (lab only)
  replyx.rollback.alembic_downgrade:
    project_dir: /srv/replyx/backend
    virtualenv: /srv/replyx/backend/venv
    target: baseline
    allow_data_loss: true
"""

RETURN = r"""
before:
  description: The current revision before the run (null when the database is at base or unversioned).
  returned: always
  type: str
  sample: a1b2c3d4e5f6
after:
  description: The revision after the run (in check mode, the revision it would reach). Null for base.
  returned: always
  type: str
  sample: fb3228f45466
target:
  description: The resolved target revision id (null for base).
  returned: always
  type: str
  sample: fb3228f45466
current_heads:
  description: The rows of C(alembic_version) (after the run when it ran, otherwise before).
  returned: always
  type: list
  elements: str
  sample: [fb3228f45466]
heads:
  description: The heads of the migration history.
  returned: always
  type: list
  elements: str
  sample: [a1b2c3d4e5f6]
steps:
  description: The downgrade steps, newest first. Empty when already at the target.
  returned: always
  type: list
  elements: dict
  contains:
    revision:
      description: The revision whose downgrade runs.
      type: str
      sample: a1b2c3d4e5f6
    down_revision:
      description: The revision below it (null for base).
      type: str
      sample: fb3228f45466
    message:
      description: The migration's message.
      type: str
      sample: add widget_version
    drops_data:
      description: What its downgrade destroys (C(table) or C(table.column)); null when the migration does not say.
      type: list
      elements: str
      sample: [assistants.widget_version]
  sample:
    - revision: a1b2c3d4e5f6
      down_revision: fb3228f45466
      message: add widget_version
      drops_data: [assistants.widget_version]
would_drop_data:
  description: Whether any planned step drops data (or does not declare what it drops).
  returned: always
  type: bool
  sample: true
data_loss:
  description: The steps that drop data and what allowed them.
  returned: when a plan was made
  type: dict
  contains:
    steps:
      description: Revisions of the steps that drop data.
      type: list
      elements: str
    allowed_by:
      description: V(backup_manifest), V(allow_data_loss), or null when no step drops data (or, in check mode, when a
        real run would be refused).
      type: str
  sample: {steps: [a1b2c3d4e5f6], allowed_by: backup_manifest}
refused_without_backup:
  description: In check mode with O(backup_planned=true), why a real run without a backup manifest would be refused
    (the steps and what they drop); null otherwise.
  returned: always
  type: str
  sample: "Failed to downgrade the database: a1b2c3d4e5f6 drops assistants.widget_version; give backup_manifest ..."
backup_manifest:
  description: The verified backup manifest that allowed the data-dropping steps.
  returned: always
  type: dict
  contains:
    path:
      description: Path of the manifest.
      type: str
    sha256:
      description: Checksum of the backup, verified.
      type: str
    database:
      description: The database the backup is of.
      type: str
    alembic_revision:
      description: The revision the backup was taken at.
      type: str
    created:
      description: When the backup was taken.
      type: str
  sample:
    path: /var/backups/replyx/chatai-20260101T030000.json
    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    database: chatai
    alembic_revision: a1b2c3d4e5f6
    created: "2026-01-01T03:00:00+00:00"
sql:
  description: The offline SQL of the downgrade.
  returned: when O(sql_preview=true) and there are steps
  type: str
  sample: "ALTER TABLE assistants DROP COLUMN widget_version;\nUPDATE alembic_version SET version_num='fb3228f45466' ..."
lock:
  description: The advisory lock held during the downgrade.
  returned: always (null when no downgrade ran)
  type: dict
  contains:
    key:
      description: The lock key.
      type: int
    acquired:
      description: Whether it was acquired.
      type: bool
    waited_s:
      description: Seconds spent waiting for it.
      type: float
    backend_pid:
      description: PID of the server session that held it.
      type: int
  sample: {key: 1371980160693611854, acquired: true, waited_s: 0.0, backend_pid: 4242}
migration_connection:
  description: Whether the project's C(env.py) used the connection passed in C(config.attributes) or an engine of its
    own (checked to point at the same database).
  returned: when a downgrade ran
  type: str
  sample: passed connection
commands:
  description: The helper commands run (argv). The database URL is never in them; it travels in the environment.
  returned: always
  type: list
  elements: list
  sample: [["/srv/replyx/backend/venv/bin/python", "/tmp/ansible-moduletmp/replyx_alembic_helper.py", "{\"action\": \"state\"}"]]
database_url_source:
  description: Where the database URL came from (V(database_url), the env file's path, or V(environment)).
  returned: always
  type: str
  sample: /srv/replyx/backend/.env
alembic_version:
  description: The alembic version of the application's interpreter.
  returned: always
  type: str
  sample: 1.16.5
python:
  description: The interpreter the helper ran with.
  returned: always
  type: str
  sample: /srv/replyx/backend/venv/bin/python
duration_s:
  description: Seconds the module took.
  returned: always
  type: float
  sample: 2.417
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replyx.rollback.plugins.module_utils._alembic import (
    DEFAULT_LOCK_ID,
    run_downgrade,
)
from ansible_collections.replyx.rollback.plugins.module_utils._errors import ReplyxError, fail_from


def argument_spec():
    return dict(
        project_dir=dict(type="path", required=True),
        config=dict(type="path"),
        python=dict(type="path"),
        virtualenv=dict(type="path"),
        database_url=dict(type="str", no_log=True),
        env_file=dict(type="path"),
        target=dict(type="str", required=True),
        named_targets=dict(type="dict", default={}),
        branch=dict(type="str"),
        backup_manifest=dict(type="path"),
        backup_manifest_data=dict(type="dict"),
        allow_data_loss=dict(type="bool", default=False),
        backup_planned=dict(type="bool", default=False),
        sql_preview=dict(type="bool", default=False),
        lock_id=dict(type="int", default=DEFAULT_LOCK_ID),
        lock_timeout=dict(type="int", default=60),
        timeout=dict(type="int", default=900),
    )


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("python", "virtualenv"), ("backup_manifest", "backup_manifest_data")],
        required_one_of=[("python", "virtualenv")],
        supports_check_mode=True,
    )
    try:
        result = run_downgrade(module)
    except ReplyxError as exc:
        fail_from(module, exc, changed=False)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
