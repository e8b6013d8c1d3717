# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_index_drop through main() with a fake connection: check mode, idempotence, refusals, verification."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible.module_utils.common import warnings as ansible_warnings
from ansible.module_utils.testing import patch_module_args

from ansible_collections.replyx.rollback.plugins.module_utils import _pgquery
from ansible_collections.replyx.rollback.plugins.modules import pg_index_drop

PLAN = ["knowledge_embeddings_embedding_cosine_idx", "idx_ai_token_usage_user_created",
        "ix_knowledge_embeddings_user_assistant", "ix_dialog_messages_dialog_id", "ix_balance_transactions_user_created"]


class FakeDb(object):
    """Holds the set of existing indexes; DROP removes one unless it is 'sticky'."""

    def __init__(self, existing, constraints=(), sticky=()):
        self.existing = list(existing)
        self.constraints = list(constraints)
        self.sticky = set(sticky)
        self.statements = []
        self.connected = 0

    def connect(self, settings, **_kw):
        self.connected += 1
        return self

    def close(self):
        pass

    def fetch(self, conn, query, params=None, verb=None, obj=None):
        text = query if isinstance(query, str) else query.as_string(None)
        self.statements.append(text)
        if "FROM pg_indexes" in text:
            return [dict(schemaname=params[0], tablename="t", indexname=n, indexdef="CREATE INDEX %s" % n)
                    for n in self.existing if n in params[1]]
        if "FROM pg_constraint" in text:
            return [dict(indexname=n, conname=n, contype="p") for n in self.constraints if n in params[1]]
        if "DROP INDEX" in text:
            name = [n for n in self.existing if n in text][0]
            if name not in self.sticky:
                self.existing.remove(name)
        return []


@pytest.fixture
def db(monkeypatch):
    def install(*args, **kwargs):
        fake = FakeDb(*args, **kwargs)
        monkeypatch.setattr(_pgquery, "connect", fake.connect)
        monkeypatch.setattr(_pgquery, "fetch", fake.fetch)
        return fake
    return install


def run(monkeypatch, capsys, tmp_path, check_mode=False, diff=False, **params):
    (tmp_path / "remote").mkdir(exist_ok=True)
    monkeypatch.setattr(ansible_warnings, "_global_warnings", {})
    args = dict(login_db="chatai", login_password="pw-index-secret", _ansible_check_mode=check_mode,
                _ansible_diff=diff, _ansible_remote_tmp=str(tmp_path / "remote"), _ansible_keep_remote_files=False)
    args.update(params)
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            pg_index_drop.main()
    result = json.loads(capsys.readouterr().out)
    result["_rc"] = exit_info.value.code
    return result


def test_check_mode_lists_and_drops_nothing(monkeypatch, capsys, tmp_path, db):
    fake = db(PLAN[:3])
    result = run(monkeypatch, capsys, tmp_path, check_mode=True, diff=True, indexes=PLAN)
    assert result["changed"] is True and result["would_drop"] == PLAN[:3] and result["dropped"] == []
    assert result["absent"] == PLAN[3:] and result["remaining"] == PLAN[:3]
    assert result["diff"] == {"before": {"indexes": PLAN[:3]}, "after": {"indexes": []}}
    assert fake.existing == PLAN[:3] and not any("DROP" in s for s in fake.statements)


def test_drops_existing_then_is_idempotent(monkeypatch, capsys, tmp_path, db):
    fake = db(PLAN[:2])
    result = run(monkeypatch, capsys, tmp_path, indexes=PLAN, lock_timeout=5)
    assert result["_rc"] == 0 and result["changed"] is True
    assert result["dropped"] == PLAN[:2] and result["remaining"] == [] and fake.existing == []
    drops = [s for s in fake.statements if "DROP" in s]
    assert len(drops) == 2 and all("CONCURRENTLY IF EXISTS" in s for s in drops)
    assert "SET lock_timeout = 5000" in fake.statements
    again = run(monkeypatch, capsys, tmp_path, indexes=PLAN)
    assert again["changed"] is False and again["dropped"] == [] and again["absent"] == PLAN


@pytest.mark.parametrize("name", ["ix_a; DROP TABLE users", "public.ix_a", "1ix", "x" * 64, "ix-a", ""])
def test_refuses_names_that_are_not_identifiers(monkeypatch, capsys, tmp_path, db, name):
    fake = db(PLAN)
    result = run(monkeypatch, capsys, tmp_path, indexes=[PLAN[0], name])
    assert result["failed"] and result["msg"].startswith("Failed to validate index name:")
    assert fake.connected == 0 and fake.existing == PLAN


def test_refuses_constraint_indexes(monkeypatch, capsys, tmp_path, db):
    fake = db(["users_pkey", PLAN[0]], constraints=["users_pkey"])
    result = run(monkeypatch, capsys, tmp_path, indexes=["users_pkey", PLAN[0]])
    assert result["failed"] and "back constraints" in result["msg"] and result["changed"] is False
    assert fake.existing == ["users_pkey", PLAN[0]]


def test_verification_failure(monkeypatch, capsys, tmp_path, db):
    db(PLAN[:2], sticky=[PLAN[1]])
    result = run(monkeypatch, capsys, tmp_path, indexes=PLAN[:2])
    assert result["failed"] and result["msg"].startswith("Failed to verify dropped indexes: still in pg_indexes")
    assert result["changed"] is True and result["dropped"] == PLAN[:2]
    assert "pw-index-secret" not in json.dumps(result)


def test_identifier_check():
    assert _pgquery.check_identifier("ix_dialog_messages_dialog_id") == "ix_dialog_messages_dialog_id"
    assert _pgquery.check_identifier("a$1") == "a$1"
