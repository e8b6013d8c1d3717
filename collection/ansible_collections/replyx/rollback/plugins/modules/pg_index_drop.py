#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_index_drop
short_description: Drop PostgreSQL indexes with DROP INDEX CONCURRENTLY and verify they are gone
version_added: 1.0.0
description:
  - The rollback plan's manual index fallback, for when the Alembic downgrade cannot remove the performance indexes.
  - Runs C(DROP INDEX CONCURRENTLY IF EXISTS) for each listed index that exists in O(schema) (writes are not blocked),
    then checks C(pg_indexes) that none of them is left.
  - Refuses names that are not simple SQL identifiers, and indexes that back a primary key, unique or exclusion
    constraint.
  - C(changed) is true only when an index was dropped (in check mode, when one would be).
author:
  - ReplyX platform team (@replyx)
extends_documentation_fragment:
  - replyx.rollback.postgres
attributes:
  check_mode:
    support: full
    description: Lists which of the indexes exist and would be dropped; drops nothing.
  diff_mode:
    support: full
    description: The listed indexes that exist before and after.
options:
  indexes:
    description:
      - Names of the indexes to drop (simple identifiers, without schema).
    type: list
    elements: str
    required: true
    aliases: [names]
  schema:
    description:
      - Schema of the indexes.
    type: str
    default: public
  lock_timeout:
    description:
      - Seconds to wait for locks for each drop (C(lock_timeout)); V(0) waits as long as it takes.
    type: int
    default: 0
notes:
  - C(DROP INDEX CONCURRENTLY) cannot run inside a transaction; the module uses an autocommit connection.
  - An interrupted concurrent drop can leave an invalid index behind; running the module again drops it.
seealso:
  - module: replyx.rollback.alembic_downgrade
  - module: community.postgresql.postgresql_idx
"""

EXAMPLES = r"""
- name: Remove the critical performance indexes by hand (Alembic rollback failed)
  replyx.rollback.pg_index_drop:
    database_url: "{{ replyx_database_url }}"
    indexes:
      - knowledge_embeddings_embedding_cosine_idx
      - idx_ai_token_usage_user_created
      - ix_knowledge_embeddings_user_assistant
      - ix_dialog_messages_dialog_id
      - ix_balance_transactions_user_created
    lock_timeout: 30
  register: index_drop

- name: Which of them exist (nothing is dropped)
  replyx.rollback.pg_index_drop:
    login_db: chatai
    indexes: [ix_dialog_messages_dialog_id]
  check_mode: true
"""

RETURN = r"""
dropped:
  description: Indexes dropped by this run.
  returned: always
  type: list
  elements: str
  sample: [ix_dialog_messages_dialog_id]
would_drop:
  description: Listed indexes that existed at the start (check mode - would be dropped).
  returned: always
  type: list
  elements: str
  sample: [ix_dialog_messages_dialog_id]
absent:
  description: Listed indexes that did not exist at the start.
  returned: always
  type: list
  elements: str
  sample: [idx_ai_token_usage_user_created]
remaining:
  description: Listed indexes still in C(pg_indexes) at the end (empty after a successful run).
  returned: always
  type: list
  elements: str
  sample: []
indexes_before:
  description: The C(pg_indexes) rows of the listed indexes at the start.
  returned: always
  type: list
  elements: dict
  sample: [{schemaname: public, tablename: dialog_messages, indexname: ix_dialog_messages_dialog_id,
            indexdef: "CREATE INDEX ix_dialog_messages_dialog_id ON public.dialog_messages USING btree (dialog_id)"}]
queries:
  description: SQL run, in order.
  returned: always
  type: list
  elements: str
  sample: ['DROP INDEX CONCURRENTLY IF EXISTS "public"."ix_dialog_messages_dialog_id"']
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replyx.rollback.plugins.module_utils._errors import ReplyxError, fail_from
from ansible_collections.replyx.rollback.plugins.module_utils._pg import connection_settings, pg_common_argument_spec
from ansible_collections.replyx.rollback.plugins.module_utils._pgquery import drop_indexes, require_psycopg


def main():
    spec = pg_common_argument_spec()
    spec.update(indexes=dict(type="list", elements="str", required=True, aliases=["names"]),
                schema=dict(type="str", default="public"),
                lock_timeout=dict(type="int", default=0))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_psycopg(module)
    try:
        result = drop_indexes(module, connection_settings(module.params))
    except ReplyxError as exc:
        fail_from(module, exc, changed=bool(exc.extra.get("dropped")))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
