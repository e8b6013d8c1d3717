# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollback decision policy (module_utils/_policy.py), table-driven, against the real levels.yml."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import os

import pytest
import yaml

from ansible_collections.replyx.rollback.plugins.module_utils import _policy as pol
from ansible_collections.replyx.rollback.plugins.module_utils._policy import PolicyError


def _levels_yml():
    here = os.path.dirname(os.path.abspath(__file__))
    while here != os.path.dirname(here):
        path = os.path.join(here, "roles", "rollback_policy", "vars", "levels.yml")
        if os.path.isfile(path):
            return path
        here = os.path.dirname(here)
    return None


LEVELS_YML = _levels_yml()
if LEVELS_YML is None:  # the collection alone (ansible-test units): the policy lives in the project's role
    pytest.skip("roles/rollback_policy/vars/levels.yml not found above the collection", allow_module_level=True)
with open(LEVELS_YML) as f:
    RAW_POLICY = yaml.safe_load(f)
POLICY = pol.load_policy(RAW_POLICY)

NAMED = {"widget_version": "fb3228f45466", "pgvector_indexes": "c4132f66258f", "baseline": "66ea5c9e3d91"}
ROLES = "standard < developer < team_lead < executive"
EXEC2 = "ceo:executive:INC-1,cto:executive:INC-1"


def h(tag, result="success", rev=None, **extra):
    entry = dict(tag=tag, result=result, **extra)
    if rev is not None:
        entry["alembic_revision"] = rev
    return entry


BE_HIST = [h("v1.0.0", rev="66ea5c9e3d91"), h("v1.1.0", rev="fb3228f45466"), h("v1.2.0", rev="a1b2c3d4e5f6")]
WK_HIST = [h("v1.9.0"), h("v2.0.0")]

MIG_DROP = {"before": "a1b2c3d4e5f6", "target": "fb3228f45466", "would_drop_data": True, "sql": "ALTER TABLE ...",
            "steps": [{"revision": "a1b2c3d4e5f6", "down_revision": "fb3228f45466", "message": "widget version",
                       "drops_data": ["assistants.widget_version"]}]}
MIG_ADDITIVE = {"before": "c4132f66258f", "target": "165e5d314eaf", "would_drop_data": False, "sql": "DROP INDEX",
                "steps": [{"revision": "c4132f66258f", "down_revision": "165e5d314eaf", "message": "pgvector index",
                           "drops_data": [], "additive": True}]}
MIG_UNDECLARED = {"before": "7b2e4d6f8a10", "target": "3f9a1c2b7d45", "would_drop_data": True, "sql": "",
                  "steps": [{"revision": "7b2e4d6f8a10", "down_revision": "3f9a1c2b7d45", "message": "7b",
                             "drops_data": None}]}
MIG_TWO = {"before": "d8e1f2a3b4c5", "target": "165e5d314eaf", "would_drop_data": True, "sql": "",
           "steps": [{"revision": "d8e1f2a3b4c5", "down_revision": "c4132f66258f", "message": "d8",
                      "drops_data": ["users.email", "dialogs"], "additive": True},
                     {"revision": "c4132f66258f", "down_revision": "165e5d314eaf", "message": "c4",
                      "drops_data": ["dialogs.handoff", "users"], "additive": False}]}
MIG_BASE = {"before": "66ea5c9e3d91", "target": "base", "would_drop_data": False, "sql": "",
            "steps": [{"revision": "66ea5c9e3d91", "down_revision": None, "message": "baseline", "drops_data": [],
                       "additive": True}]}


def state(nb=1, nw=1, be_hist=None, wk_hist=None, be_release="v1.2.0", wk_release="v2.0.0", **extra):
    out = {
        "environment": "lab", "database": "chatai", "postgres_host": "postgres",
        "services": {"backend": "replyx-backend", "workers": "chatai-bot-manager"},
        "backend": [{"host": "backend%d" % (i + 1), "release": be_release,
                     "history": copy.deepcopy(BE_HIST if be_hist is None else be_hist), "config_backup": True}
                    for i in range(nb)],
        "workers": [{"host": "workers%d" % (i + 1), "release": wk_release,
                     "history": copy.deepcopy(WK_HIST if wk_hist is None else wk_hist), "config_backup": True}
                    for i in range(nw)],
        "migration": None, "indexes": None, "auto": None,
    }
    out.update(extra)
    return out


def request(**raw):
    raw.setdefault("named_targets", NAMED)
    return pol.parse_request(raw, POLICY)


def plan_for(raw, st=None, check=False, policy=None):
    policy = policy or POLICY
    raw = dict(raw)
    raw.setdefault("named_targets", NAMED)
    req = pol.parse_request(raw, policy)
    return pol.build_plan(req, policy, st if st is not None else state(), check_mode=check, run_id="r1")


def refusal(fn, *args, **kwargs):
    with pytest.raises(PolicyError) as info:
        fn(*args, **kwargs)
    return " ".join(str(info.value).split())


# ----------------------------------------------------------------------------------- known-good releases

LAST_GOOD = [
    ("empty history", [], "v1.2.0", ""),
    ("empty history, nothing running", [], "", ""),
    ("only the running release", [h("v1.2.0")], "v1.2.0", "v1.2.0"),
    ("previous success", BE_HIST, "v1.2.0", "v1.1.0"),
    ("rolled back from the previous one",
     BE_HIST[:2] + [h("v1.0.0", "rollback", rolled_back_from="v1.1.0"), h("v1.2.0")], "v1.2.0", "v1.0.0"),
    ("newest is a rollback onto the running release", BE_HIST + [h("v1.1.0", "rollback", rolled_back_from="v1.2.0")],
     "v1.1.0", "v1.1.0"),
    ("newest is a rollback onto another release", BE_HIST + [h("v1.1.0", "rollback", rolled_back_from="v1.2.0")],
     "v1.2.0", "v1.1.0"),
    ("failed and rescued entries are not good", [h("v1.0.0"), h("v1.1.0", "failed"), h("v1.1.1", "rescue"),
                                                 h("v1.2.0")], "v1.2.0", "v1.0.0"),
    ("rollback result counts as good", [h("v0.9.0", "rollback"), h("v1.2.0")], "v1.2.0", "v0.9.0"),
    ("everything else bad: the running one stays", [h("v1.1.0"), h("v1.2.0", rolled_back_from="v1.1.0")],
     "v1.2.0", "v1.2.0"),
    ("running release unknown", BE_HIST, "", "v1.2.0"),
    # a fleet rollback to v1.1.1 started on this host, failed on another, and was rescued back to v1.2.0:
    # the release the rescue moved away from is not known good, whatever it did on this host
    ("a release a rescue moved away from is bad",
     BE_HIST + [h("v1.1.1", "rollback", rolled_back_from="v1.2.0"), h("v1.2.0", "rescue", rolled_back_from="v1.1.1")],
     "v1.2.0", "v1.1.0"),
    ("a rolled-back-from of None is harmless", [h("v1.0.0", rolled_back_from=None), h("v1.1.0")], "v1.1.0", "v1.0.0"),
    # a high rollback switched to v1.0.0, its downgrade failed, and its rescue put v1.2.0 back (molecule/chaos
    # downgrade-fails): v1.0.0 was never proven here, the release before the bad one is still v1.1.0
    ("a switch its own run's rescue undid is not good",
     BE_HIST + [h("v1.0.0", "rollback", rolled_back_from="v1.2.0", run_id="r7"), h("v1.2.0", "rescue", run_id="r7")],
     "v1.2.0", "v1.1.0"),
    ("a rescue of another run does not undo it",
     BE_HIST + [h("v1.0.0", "rollback", rolled_back_from="v1.2.0", run_id="r7"), h("v1.2.0", "success"),
                h("v1.1.1", "rescue", run_id="r8")], "v1.2.0", "v1.0.0"),
    ("a rollback without a run id counts as before",
     BE_HIST + [h("v1.0.0", "rollback", rolled_back_from="v1.2.0"), h("v1.2.0", "rescue", run_id="r7")],
     "v1.2.0", "v1.0.0"),
]


@pytest.mark.parametrize("history, current, expected", [c[1:] for c in LAST_GOOD], ids=[c[0] for c in LAST_GOOD])
def test_last_known_good(history, current, expected):
    assert pol.last_known_good(history, current) == expected


RELEASE_FOR_REVISION = [
    ("the release at the revision", BE_HIST, "v1.2.0", "fb3228f45466", "v1.1.0"),
    ("the running release does not count", BE_HIST, "v1.2.0", "a1b2c3d4e5f6", ""),
    ("unknown revision", BE_HIST, "v1.2.0", "nosuchrev", ""),
    ("empty history", [], "v1.2.0", "fb3228f45466", ""),
    ("a rolled-back-from release does not count",
     BE_HIST + [h("v1.0.0", "rollback", rev="66ea5c9e3d91", rolled_back_from="v1.1.0")], "v1.0.0", "fb3228f45466", ""),
    ("the running release counts after a rollback onto it",
     BE_HIST + [h("v1.1.0", "rollback", rev="fb3228f45466", rolled_back_from="v1.2.0")], "v1.1.0", "fb3228f45466",
     "v1.1.0"),
    ("the newest of two at the same revision", [h("v1.0.0", rev="r1"), h("v1.0.1", rev="r1"), h("v2.0.0", rev="r2")],
     "v2.0.0", "r1", "v1.0.1"),
    ("entries without a revision are skipped", [h("v1.0.0"), h("v2.0.0", rev="r2")], "v2.0.0", "", ""),
    ("a switch its own run's rescue undid does not count",
     [h("v1.0.0", rev="r1"), h("v2.0.0", rev="r2"), h("v1.0.1", "rollback", rev="r1", run_id="x"),
      h("v2.0.0", "rescue", rev="r2", run_id="x")], "v2.0.0", "r1", "v1.0.0"),
]


@pytest.mark.parametrize("history, current, revision, expected", [c[1:] for c in RELEASE_FOR_REVISION],
                         ids=[c[0] for c in RELEASE_FOR_REVISION])
def test_release_for_revision(history, current, revision, expected):
    assert pol.release_for_revision(history, current, revision) == expected


# resuming: an earlier run switched the code (to a release recorded at the target revision) and stopped before the
# downgrade; the running release then does not know the database's revision (the plan uses the kept scripts)
RELEASE_FOR_REVISION_RESUMING = [
    ("the running release recorded at the revision is the earlier run's target", BE_HIST, "v1.1.0", "fb3228f45466",
     True, "v1.1.0"),
    ("the same state, not resuming: the running release is the suspect", BE_HIST, "v1.1.0", "fb3228f45466", False, ""),
    ("a running release recorded at another revision does not count", BE_HIST, "v1.2.0", "fb3228f45466", True,
     "v1.1.0"),
    ("a running release rolled back from does not count",
     BE_HIST + [h("v1.0.0", "rollback", rev="66ea5c9e3d91", rolled_back_from="v1.1.0")], "v1.1.0", "fb3228f45466",
     True, ""),
    ("nothing recorded at the revision", BE_HIST, "v1.1.0", "nosuchrev", True, ""),
    ("nothing running", BE_HIST, "", "fb3228f45466", True, "v1.1.0"),
]


@pytest.mark.parametrize("history, current, revision, resuming, expected",
                         [c[1:] for c in RELEASE_FOR_REVISION_RESUMING], ids=[c[0] for c in RELEASE_FOR_REVISION_RESUMING])
def test_release_for_revision_resuming(history, current, revision, resuming, expected):
    assert pol.release_for_revision(history, current, revision, resuming) == expected


# ---------------------------------------------------------------------------------------------- batches

BATCHES = [
    (1, None, [1]), (2, None, [1, 1]), (3, None, [1, 1, 1]), (4, None, [2, 2]), (5, None, [2, 2, 1]),
    (1, "", [1]), (5, 1, [1, 1, 1, 1, 1]), (5, 2, [2, 2, 1]), (3, 3, [3]), (2, 5, [2]), (4, "2", [2, 2]),
    (4, "50%", [2, 2]), (5, "50%", [2, 2, 1]), (3, "34%", [1, 1, 1]), (3, "67%", [2, 1]), (1, "10%", [1]),
    (5, "100%", [5]), (4, "25%", [1, 1, 1, 1]), (5, "99%", [4, 1]), (0, None, []),
]


@pytest.mark.parametrize("count, batch, sizes", BATCHES)
def test_batches(count, batch, sizes):
    hosts = ["h%d" % i for i in range(count)]
    out = pol.batches(hosts, batch)
    assert [len(b) for b in out] == sizes
    assert [x for b in out for x in b] == hosts
    assert all(out)


@pytest.mark.parametrize("batch", [0, -1, "0", "0%", "101%", "abc", "1.5", True, "%", "-2"])
def test_bad_batch_is_refused(batch):
    msg = refusal(pol.batches, ["a", "b"], batch)
    assert "rollback_batch must be a number of hosts (1 or more) or a percentage of the hosts (1%-100%)" in msg


# -------------------------------------------------------------------------------------------- approvals

APPROVALS = [
    ("empty", "", {}, []),
    ("none", None, {}, []),
    ("short form", "alice:team_lead:INC-42, bob:executive:INC-42",
     {}, [("alice", "team_lead", "INC-42"), ("bob", "executive", "INC-42")]),
    ("short form, no ticket, trailing comma", "alice:Developer,", {}, [("alice", "developer", "")]),
    ("list of dicts", [{"name": "alice", "role": "team_lead", "ticket": "INC-1"}, {"name": "bob", "role": "standard"}],
     {}, [("alice", "team_lead", "INC-1"), ("bob", "standard", "")]),
    ("list of short forms", ["alice:developer:T"], {}, [("alice", "developer", "T")]),
    ("one dict", {"name": "carol", "role": "executive", "ticket": "X"}, {}, [("carol", "executive", "X")]),
    ("single approver form", "", {"approved_by": "dave", "approver_role": "team_lead", "ticket": "INC-9"},
     [("dave", "team_lead", "INC-9")]),
    ("both forms", "alice:developer:T", {"approved_by": "dave", "approver_role": "executive"},
     [("alice", "developer", "T"), ("dave", "executive", "")]),
]


@pytest.mark.parametrize("raw, single, expected", [c[1:] for c in APPROVALS], ids=[c[0] for c in APPROVALS])
def test_parse_approvals(raw, single, expected):
    out = pol.parse_approvals(raw, roles=list(POLICY["role_rank"]), **single)
    assert [(a["name"], a["role"], a["ticket"]) for a in out] == expected


@pytest.mark.parametrize("raw, single", [
    (":team_lead:INC-1", {}),
    ("alice", {}),
    ("alice:boss:INC-1", {}),
    ([{"role": "executive"}], {}),
    ([42], {}),
    ("", {"approved_by": "dave", "approver_role": "ceo"}),
])
def test_malformed_approvals_name_the_valid_roles(raw, single):
    msg = refusal(pol.parse_approvals, raw, roles=list(POLICY["role_rank"]), **single)
    assert msg.startswith("Failed to start the rollback: every approval needs a name and a role among "
                          "standard, developer, team_lead, executive (got ")


# ---------------------------------------------------------------------------------------------- request

REQUEST_REFUSALS = [
    ({"level": "urgent"}, "unknown level 'urgent'. Valid levels: critical, high, medium, low, auto "
                          "(-e level=critical|high|medium|low|auto)."),
    ({}, "unknown level ''. Valid levels: critical, high, medium, low, auto"),
    ({"level": "medium", "component": "frontend"},
     "unknown component 'frontend'. Valid components: backend, workers, config, dependencies, worker_config, indexes"),
    ({"level": "critical", "component": "frontend"}, "unknown component 'frontend'"),
    ({"level": "medium"}, "Failed to start the rollback: level medium needs a component. Valid components: backend,"),
    ({"level": "high"}, "level high needs a migration target (-e target=...). Named targets: widget_version "
                        "(fb3228f45466), pgvector_indexes (c4132f66258f), baseline (66ea5c9e3d91); a revision id, -1, "
                        "or base also work."),
    ({"level": "low"}, "Failed to plan the rollback: level low needs a migration target (-e target=...) or a component "
                       "(-e component=backend|workers|config|dependencies|worker_config|indexes)."),
    ({"level": "critical", "recovery": "magic"}, "recovery must be none, restore (with -e recovery_backup=<manifest>) or "
                                                 "pitr (with -e recovery_target_time='YYYY-MM-DD HH:MM:SS+00'), and only "
                                                 "with level critical (got recovery=magic, level=critical)."),
    ({"level": "high", "target": "-1", "recovery": "restore", "recovery_backup": "/b.json"},
     "and only with level critical (got recovery=restore, level=high)"),
    ({"level": "auto", "recovery": "pitr", "recovery_target_time": "2026-01-01 00:00:00+00"},
     "(got recovery=pitr, level=auto)"),
    ({"level": "critical", "recovery": "pitr"}, "(got recovery=pitr, level=critical)"),
    ({"level": "critical", "recovery": "restore"}, "(got recovery=restore, level=critical)"),
    ({"level": "critical", "restore_mode": "partial"},
     "Failed to start the restore: restore_mode must be full, tables (with -e restore_tables=users,dialogs) or "
     "schema_only (got partial)."),
    ({"level": "critical", "restore_mode": "tables"}, "restore_mode must be full, tables"),
    ({"level": "critical", "restore_mode": "tables", "restore_tables": " , "}, "restore_mode must be full, tables"),
    ({"level": "low", "target": "widget_version", "window": "tonight"},
     "Failed to start the rollback: window must be 'now' (execute a planned rollback) or unset (got 'tonight')."),
    ({"level": "critical", "rollback_batch": "half"}, "rollback_batch must be a number of hosts"),
    ({"level": "critical", "approvals": "alice:boss:1"}, "every approval needs a name and a role among standard, "
                                                         "developer, team_lead, executive"),
    ({"level": "critical", "approved_by": "dave"}, "every approval needs a name and a role"),
    ({"level": "critical", "approvals": "x'); drop table users;--:executive:INC-1"},
     "an approver name is letters, digits, spaces and . _ @ + ' - (at most 64)"),
    ({"level": "critical", "approvals": "ceo:executive:INC-1\nroot:executive:INC-1"}, "a ticket letters, digits"),
    ({"level": "critical", "code_rollback": "maybe"}, "code_rollback must be true or false (got 'maybe')"),
    ({"level": "critical", "named_targets": ["a"]}, "named_targets must be a dict"),
    ({"level": "critical", "restore_tables": 5}, "restore_tables must be a list or a comma-separated string"),
    ({"level": "critical", "restore_method": "fast"},
     "Failed to start the restore: unknown restore_method 'fast'. Valid restore methods: auto (the default: physical "
     "when recovery_backup is a verified physical base backup"),
    ({"level": "critical", "restore_method": "pg_basebackup"}, "(-e restore_method=auto|logical|physical)"),
    ({"level": "critical", "recovery": "restore", "recovery_backup": "/m.json", "restore_method": "physical",
      "restore_mode": "tables", "restore_tables": "users"},
     "Failed to start the restore: restore_method=physical puts the whole data directory back (every database, every "
     "table), so it cannot restore restore_mode=tables: only a logical restore (pg_restore of a pg_dump backup) "
     "restores some tables. Use -e restore_method=logical (or auto)"),
    ({"level": "critical", "recovery": "restore", "recovery_backup": "/m.json", "restore_method": " Physical ",
      "restore_mode": "schema_only"}, "so it cannot restore restore_mode=schema_only: only a logical restore"),
]


@pytest.mark.parametrize("raw, message", REQUEST_REFUSALS)
def test_request_refusals_name_the_valid_choices(raw, message):
    assert message in refusal(request, **raw)


REQUEST_NORMALISED = [
    ({"level": " HIGH ", "target": " widget_version "}, {"level": "high", "target": "widget_version",
                                                         "target_revision": "fb3228f45466"}),
    ({"level": "high", "target": "a1b2c3"}, {"target_revision": "a1b2c3"}),
    ({"level": "high", "target": "-1"}, {"target_revision": "-1"}),
    ({"level": "Medium", "component": " Config "}, {"level": "medium", "component": "config", "recovery": "none"}),
    ({"level": "low", "component": "backend", "window": " NOW "}, {"window": "now"}),
    ({"level": "critical", "recovery": " Restore ", "recovery_backup": "/b/m.json", "restore_mode": "Tables",
      "restore_tables": "users, dialogs,"},
     {"recovery": "restore", "restore_mode": "tables", "restore_tables": ["users", "dialogs"]}),
    ({"level": "critical", "restore_tables": ["users"]}, {"restore_tables": ["users"], "restore_mode": "full"}),
    ({"level": "critical", "stable_commit": "abc123"}, {"stable_release": "abc123"}),
    ({"level": "critical"}, {"restore_method": "auto"}),
    ({"level": "critical", "restore_method": None}, {"restore_method": "auto"}),
    ({"level": "critical", "restore_method": " Physical "}, {"restore_method": "physical"}),
    ({"level": "critical", "restore_method": "LOGICAL", "restore_mode": "tables", "restore_tables": "users"},
     {"restore_method": "logical"}),
    # forced physical with a partial mode is only a contradiction when something is restored
    ({"level": "critical", "restore_method": "physical", "restore_mode": "schema_only"},
     {"restore_method": "physical", "restore_mode": "schema_only"}),
    ({"level": "critical", "stable_release": "", "stable_commit": "abc123"}, {"stable_release": "abc123"}),
    ({"level": "critical", "stable_release": " v1.0.0 ", "stable_commit": "abc"}, {"stable_release": "v1.0.0"}),
    ({"level": "critical", "code_rollback": "false", "rebuild_venv": "yes", "takeover_stale_lock": True},
     {"code_rollback": False, "rebuild_venv": True, "takeover_stale_lock": True}),
    ({"level": "critical"}, {"code_rollback": True, "rebuild_venv": False, "takeover_stale_lock": False,
                             "rollback_batch": None, "approvals": [], "window": ""}),
    ({"level": "critical", "rollback_batch": "2"}, {"rollback_batch": 2}),
    ({"level": "critical", "rollback_batch": " 50 % "}, {"rollback_batch": "50%"}),
    ({"level": "critical", "rollback_batch": ""}, {"rollback_batch": None}),
    ({"level": "auto"}, {"level": "auto"}),
    ({"level": "critical", "recovery": None}, {"recovery": "none"}),
    ({"level": "critical", "approvals": "a:Executive:T"}, {"approvals": [{"name": "a", "role": "executive",
                                                                          "ticket": "T"}]}),
]


@pytest.mark.parametrize("raw, expected", REQUEST_NORMALISED)
def test_request_is_normalised(raw, expected):
    req = request(**raw)
    for key, value in expected.items():
        assert req[key] == value, key


# ------------------------------------------------------------------------------------------- level=auto

RULES = POLICY["auto_rules"]


def http(count, errors=0, ratio=None):
    samples = {"count": count, "errors": errors}
    if ratio is not None or ratio == 0:
        samples["ratio_to_baseline"] = ratio
    return {"name": "c", "samples": samples}


AUTO = [
    ("API down", [http(5, 5), http(5, 5)], ["health"], True, "critical", "failure_rate_percent = 100.0 > 90 (health)"),
    ("no samples at all counts as down", [{"name": "login"}], [], True, "critical", "failure_rate_percent = 100.0 > 90"),
    ("91% failures", [http(100, 91)], [], True, "critical", "failure_rate_percent = 91.0 > 90"),
    ("90% failures is not critical", [http(100, 90, 1.0)], [], True, "none", "every check passed"),
    ("p95 over 3x baseline", [http(5, 0, 3.2), http(5, 0, 1.0)], [], True, "high", "p95_ratio_to_baseline = 3.2 > 3.0"),
    ("exactly 3x is not high", [http(5, 0, 3.0)], [], True, "low", "p95_ratio_to_baseline = 3.0 > 1.5"),
    ("a failing check", [http(5, 0, 1.0)], ["login"], True, "medium", "failed_checks = 1 > 0 (login)"),
    ("slower than 1.5x", [http(5, 0, 1.6)], [], True, "low", "p95_ratio_to_baseline = 1.6 > 1.5"),
    ("all well", [http(5, 0, 1.1)], [], True, "none", "every check passed and latency is within 150% of the baseline"),
    ("no baseline: latency not compared", [http(5, 0)], [], False, "none", "no baseline recorded"),
    ("no baseline, failing check", [http(5, 0)], ["dialogs"], False, "medium", "failed_checks = 1 > 0 (dialogs)"),
    ("ratio None is skipped", [http(5, 0, None)], [], True, "none", "every check passed"),
]


@pytest.mark.parametrize("checklist, failed, baseline, level, reason", [c[1:] for c in AUTO], ids=[c[0] for c in AUTO])
def test_auto_level(checklist, failed, baseline, level, reason):
    out = pol.auto_level(checklist, failed, baseline, RULES)
    assert out["level"] == level
    assert reason in out["reason"]
    assert out["measured"]["baseline_recorded"] is baseline
    assert out["measured"]["failed_checks"] == failed


def test_auto_from_several_hosts_names_host_and_check():
    measure = [{"item": "backend1", "checklist": [http(5, 0, 1.0)], "summary": {"failed_checks": []}},
               {"item": "backend2", "checklist": [http(5, 0, 1.0)], "summary": {"failed_checks": ["login"]}}]
    out = pol.auto_from_measurements(measure, True, RULES)
    assert out["level"] == "medium" and out["reason"] == "failed_checks = 1 > 0 (backend2/login)"
    assert out["measured"]["failure_rate_percent"] == 0.0


# ------------------------------------------------------------------------------------------------- plans

def steps_of(plan):
    return [(s["step"], s["host"]) for s in plan["steps"]]


HEAD = [("triage", "controller"), ("lock", "backend1")]
TAIL = [("validate", "controller"), ("report", "controller")]
BACKUP = [("backup", "postgres")]

PLANS = [
    ("critical, one host each", {"level": "critical"}, state(), False, {
        "level": "critical", "action": "code", "execute": True, "approvers_required": 1, "approval_role": "executive",
        "rollback_type": "Immediate code rollback", "window": "0-5 minutes", "window_minutes": 5, "needs_backup": False,
        "backup": {}, "order": "", "backend_release_target": "v1.1.0", "workers_release_target": "v1.9.0",
        "issue": "Data corruption, >90% API failures",
        "steps": HEAD + [("code_backend", "backend1"), ("code_workers", "workers1")] + TAIL,
        "services_touched": ["replyx-backend", "chatai-bot-manager"], "level_source": "operator"}),
    ("critical, 2 backends + 2 workers", {"level": "critical"}, state(2, 2), False, {
        "steps": HEAD + [("code_backend", "backend1"), ("code_backend", "backend2"), ("code_workers", "workers1"),
                         ("code_workers", "workers2")] + TAIL,
        "backend_batches": [["backend1"], ["backend2"]], "workers_batches": [["workers1", "workers2"]],
        "backend_hosts": [{"host": "backend1", "release_before": "v1.2.0", "release_target": "v1.1.0"},
                          {"host": "backend2", "release_before": "v1.2.0", "release_target": "v1.1.0"}],
        "workers_hosts": [{"host": "workers1", "release_before": "v2.0.0", "release_target": "v1.9.0"},
                          {"host": "workers2", "release_before": "v2.0.0", "release_target": "v1.9.0"}]}),
    ("critical, rollback_batch 1 batches the workers too", {"level": "critical", "rollback_batch": 1}, state(2, 2),
     False, {"workers_batches": [["workers1"], ["workers2"]], "backend_batches": [["backend1"], ["backend2"]]}),
    ("critical, stable_release overrides the backend only", {"level": "critical", "stable_release": "v0.9.0"},
     state(), False, {"backend_release_target": "v0.9.0", "workers_release_target": "v1.9.0"}),
    ("critical, restore", {"level": "critical", "recovery": "restore", "recovery_backup": "/b/m.json"}, state(), False, {
        "steps": HEAD + BACKUP + [("recovery_restore", "postgres"), ("code_backend", "backend1"),
                                  ("code_workers", "workers1")] + TAIL,
        "data_can_be_lost": True, "approvers_required": 2, "needs_backup": True, "backup": {"scope": "full"},
        "rollback_type": "Immediate code rollback",
        "services_touched": ["postgresql", "replyx-backend", "chatai-bot-manager"]}),
    ("critical, pitr only (no code rollback)", {"level": "critical", "recovery": "pitr", "code_rollback": False,
                                                "recovery_target_time": "2026-01-01 00:00:00+00"}, state(2, 1), False, {
        "rollback_type": "Point-in-time recovery", "backend_release_target": "v1.2.0",
        "workers_release_target": "v2.0.0",
        "steps": HEAD + BACKUP + [("recovery_pitr", "postgres"), ("start_services", "backend1"),
                                  ("start_services", "backend2"), ("start_services", "workers1")] + TAIL}),
    ("critical, tables restore only", {"level": "critical", "recovery": "restore", "recovery_backup": "/m.json",
                                       "restore_mode": "tables", "restore_tables": "users,dialogs",
                                       "code_rollback": "no"}, state(), False, {
        "rollback_type": "Database backup restoration (logical)", "restore_tables": ["users", "dialogs"],
        "restore_mode": "tables", "code_rollback": False}),
    ("critical, hosts run different releases", {"level": "critical"},
     state(2, 1, be_hist=[h("v1.1.0"), h("v1.2.0"), h("v1.3.0")]), False, {"backend_release_before": "v1.2.0"}),
    ("high, dropping downgrade, 2 backends", {"level": "high", "target": "widget_version"},
     state(2, 2, migration=MIG_DROP), False, {
        "action": "migration", "order": "schema_first", "would_drop_data": True, "data_can_be_lost": True,
        "approvers_required": 2, "backup": {"scope": "tables", "tables": ["assistants"]}, "needs_backup": True,
        "revision_before": "a1b2c3d4e5f6", "revision_target": "fb3228f45466", "sql_preview": "ALTER TABLE ...",
        "backend_release_target": "v1.1.0", "workers_release_target": "v2.0.0", "window_minutes": 15,
        "steps": HEAD + BACKUP + [("stop_backend", "backend1"), ("stop_backend", "backend2"),
                                  ("downgrade", "backend1"), ("code_backend", "backend1"),
                                  ("code_backend", "backend2")] + TAIL,
        "services_touched": ["replyx-backend"],
        "workers_hosts": [{"host": "workers1", "release_before": "v2.0.0", "release_target": "v2.0.0"},
                          {"host": "workers2", "release_before": "v2.0.0", "release_target": "v2.0.0"}]}),
    ("high, additive downgrade goes code first", {"level": "high", "target": "pgvector_indexes"},
     state(2, 2, be_hist=[h("v1.0.0", rev="165e5d314eaf"), h("v1.2.0", rev="c4132f66258f")],
           migration=MIG_ADDITIVE), False, {
        "order": "code_first", "would_drop_data": False, "data_can_be_lost": False, "approvers_required": 1,
        "backup": {"scope": "full"}, "backend_release_target": "v1.0.0",
        "steps": HEAD + BACKUP + [("code_backend", "backend1"), ("code_backend", "backend2"),
                                  ("downgrade", "backend1")] + TAIL}),
    ("high, undeclared drops: full backup", {"level": "high", "target": "3f9a1c2b7d45", "stable_release": "v1.0.0"},
     state(migration=MIG_UNDECLARED), False, {"backup": {"scope": "full"}, "order": "schema_first",
                                              "backend_release_target": "v1.0.0", "approvers_required": 2}),
    ("high, two dropping steps: their tables", {"level": "high", "target": "165e5d314eaf", "stable_release": "v1.0.0"},
     state(migration=MIG_TWO), False, {"backup": {"scope": "tables", "tables": ["dialogs", "users"]},
                                       "order": "schema_first"}),
    ("high, down to base", {"level": "high", "target": "base", "stable_release": "v0.1.0"},
     state(migration=MIG_BASE), False, {"order": "code_first", "revision_target": "base"}),
    ("high, check mode", {"level": "high", "target": "widget_version"}, state(migration=MIG_DROP), True,
     {"execute": False, "downgrade_scripts": "release"}),
    ("high, resumed after a killed run switched the code: the kept scripts", {"level": "high", "target": "widget_version"},
     state(migration=dict(MIG_DROP, scripts="kept")), False, {"downgrade_scripts": "kept"}),
    ("high, resumed after a run stopped between its code switch and its downgrade: the running release, recorded at "
     "the target revision, is the target (no stable_release needed)", {"level": "high", "target": "widget_version"},
     state(be_release="v1.1.0", migration=dict(MIG_DROP, scripts="kept")), False,
     {"downgrade_scripts": "kept", "backend_release_before": "v1.1.0", "backend_release_target": "v1.1.0"}),
    ("high, check mode with no release at the revision shows ?", {"level": "high", "target": "widget_version"},
     state(be_hist=[h("v1.2.0", rev="a1b2c3d4e5f6")], migration=MIG_DROP), True, {"backend_release_target": ""}),
    ("high, rolling batch 1 of 3", {"level": "high", "target": "widget_version", "rollback_batch": 1},
     state(3, 1, migration=MIG_DROP), False, {"backend_batches": [["backend1"], ["backend2"], ["backend3"]],
                                              "workers_batches": [["workers1"]]}),
    ("high, rolling batch 100%", {"level": "high", "target": "widget_version", "rollback_batch": "100%"},
     state(3, 2, migration=MIG_DROP), False, {"backend_batches": [["backend1", "backend2", "backend3"]],
                                              "workers_batches": [["workers1", "workers2"]]}),
    ("medium backend, 2 hosts", {"level": "medium", "component": "backend"}, state(2, 2), False, {
        "action": "component", "steps": HEAD + [("code_backend", "backend1"), ("code_backend", "backend2")] + TAIL,
        "backend_release_target": "v1.1.0", "workers_release_target": "v2.0.0", "services_touched": ["replyx-backend"],
        "approval_role": "developer", "needs_backup": False, "order": ""}),
    ("medium workers with stable_release", {"level": "medium", "component": "workers", "stable_release": "v1.8.0"},
     state(1, 2), False, {"steps": HEAD + [("code_workers", "workers1"), ("code_workers", "workers2")] + TAIL,
                          "workers_release_target": "v1.8.0", "backend_release_target": "v1.2.0",
                          "services_touched": ["chatai-bot-manager"]}),
    ("medium config", {"level": "medium", "component": "config"}, state(2, 1), False, {
        "steps": HEAD + [("config_backend", "backend1"), ("config_backend", "backend2")] + TAIL,
        "backend_release_target": "v1.2.0"}),
    ("medium dependencies, rebuild", {"level": "medium", "component": "dependencies", "rebuild_venv": True}, state(),
     False, {"steps": HEAD + [("dependencies_backend", "backend1")] + TAIL, "backend_release_target": "v1.1.0",
             "rebuild_venv": True}),
    ("medium worker_config", {"level": "medium", "component": "worker_config"}, state(1, 2), False, {
        "steps": HEAD + [("config_workers", "workers1"), ("config_workers", "workers2")] + TAIL}),
    ("medium indexes", {"level": "medium", "component": "indexes"},
     state(indexes={"would_drop": ["ix_a", "ix_b"]}), False, {
        "steps": HEAD + BACKUP + [("drop_indexes", "postgres")] + TAIL, "indexes_to_drop": ["ix_a", "ix_b"],
        "needs_backup": True, "backup": {"scope": "full"}, "services_touched": []}),
    ("medium indexes, none exists", {"level": "medium", "component": "indexes"}, state(indexes={"would_drop": []}),
     False, {"steps": HEAD + [("drop_indexes", "postgres")] + TAIL, "needs_backup": False, "backup": {}}),
    ("medium backend without workers in the state", {"level": "medium", "component": "backend"},
     state(1, 0), False, {"workers_hosts": [], "workers_batches": [], "workers_release_before": ""}),
    ("low, migration, planned", {"level": "low", "target": "widget_version"}, state(migration=MIG_DROP), False, {
        "action": "migration", "execute": False, "approvers_required": 2, "window": "Next window",
        "window_minutes": None, "approval_role": "standard"}),
    ("low, migration, now", {"level": "low", "target": "widget_version", "window": "now"}, state(migration=MIG_DROP),
     False, {"execute": True}),
    ("low, component", {"level": "low", "component": "config", "window": "now"}, state(), False, {
        "action": "component", "execute": True, "steps": HEAD + [("config_backend", "backend1")] + TAIL}),
    ("auto chose high", {"level": "auto", "target": "widget_version"},
     state(migration=MIG_DROP, auto={"level": "high", "reason": "p95_ratio_to_baseline = 4.0 > 3.0", "measured": {}}),
     False, {"level": "high", "requested_level": "auto", "level_source": "auto",
             "auto_reason": "p95_ratio_to_baseline = 4.0 > 3.0", "action": "migration"}),
    ("auto chose critical", {"level": "auto"}, state(auto={"level": "critical", "reason": "r", "measured": {}}), False,
     {"level": "critical", "action": "code"}),
]


@pytest.mark.parametrize("raw, st, check, expected", [c[1:] for c in PLANS], ids=[c[0] for c in PLANS])
def test_plan(raw, st, check, expected):
    plan = plan_for(raw, st, check)
    for key, value in expected.items():
        got = steps_of(plan) if key == "steps" else plan[key]
        assert got == value, key
    assert json.loads(json.dumps(plan)) == plan
    assert set(PLAN_KEYS) <= set(plan)
    assert plan["text"] == pol.render_plan_text(plan, check)


PLAN_KEYS = ["run_id", "level", "requested_level", "level_source", "auto_reason", "rollback_type", "window",
             "approval_role", "action", "component", "recovery", "recovery_target_time", "recovery_backup",
             "environment", "execute", "steps", "backend_release_before", "backend_release_target",
             "workers_release_before", "workers_release_target", "revision_before", "revision_target",
             "migration_steps", "would_drop_data", "sql_preview", "indexes_to_drop", "needs_backup",
             "data_can_be_lost", "approvers_required", "services_touched", "rebuild_venv", "code_rollback",
             "restore_mode", "restore_tables", "backend_hosts", "workers_hosts", "backend_batches", "workers_batches",
             "order", "backup", "window_minutes", "issue", "text"]


PLAN_TEXT = [
    ({"level": "high", "target": "widget_version"}, state(2, 1, migration=MIG_DROP), True, [
        "Rollback plan r1 (CHECK MODE: nothing will change)",
        "Level: high - Migration rollback, window 5-15 minutes, approval: team_lead x2 (data can be lost)",
        "Backend release: v1.2.0 -> v1.1.0; workers release: v2.0.0 -> v2.0.0",
        "Backend hosts: backend1 v1.2.0 -> v1.1.0, backend2 v1.2.0 -> v1.1.0; batches: [backend1] then [backend2]",
        "Alembic: a1b2c3d4e5f6 -> fb3228f45466 (1 step(s), DROPS DATA), order schema_first",
        "Backup: tables assistants", "Steps:",
        "  6. downgrade on backend1: a1b2c3d4e5f6 -> fb3228f45466: widget version (DROPS DATA: assistants.widget_version)",
        "  7. code_backend on backend1: v1.2.0 -> v1.1.0", "  8. code_backend on backend2: v1.2.0 -> v1.1.0",
        "Services touched: replyx-backend"]),
    ({"level": "low", "target": "widget_version"}, state(migration=MIG_DROP), False, [
        "(PLANNED: written, not executed; run again with -e window=now)"]),
    ({"level": "critical"}, state(), False, ["(EXECUTING)", "Level: critical - Immediate code rollback",
                                             "approval: executive\n"]),
    ({"level": "high", "target": "widget_version"}, state(be_hist=[h("v1.2.0", rev="x")], migration=MIG_DROP), True,
     ["Backend release: v1.2.0 -> no known release at fb3228f45466 (pass -e stable_release=<tag> to execute);",
      "code_backend on backend1: v1.2.0 -> no known release at fb3228f45466"]),
    ({"level": "auto"}, state(auto={"level": "critical", "reason": "failure_rate_percent = 100.0 > 90"}), True,
     ["Level: critical (chosen by level=auto: failure_rate_percent = 100.0 > 90) - Immediate code rollback"]),
    ({"level": "medium", "component": "indexes"}, state(indexes={"would_drop": []}), True,
     ["drop_indexes on postgres: DROP INDEX CONCURRENTLY nothing (none of the listed indexes exists); verify in "
      "pg_indexes", "Services touched: none"]),
    ({"level": "high", "target": "3f9a1c2b7d45", "stable_release": "v1"}, state(migration=MIG_UNDECLARED), True,
     ["(DROPS DATA: undeclared)", "Backup: full"]),
    ({"level": "high", "target": "widget_version"}, state(migration=dict(MIG_DROP, scripts="kept")), True,
     ["Resuming: the running release v1.2.0 does not know revision a1b2c3d4e5f6 (an earlier run switched the code "
      "and stopped); the downgrade uses the migration scripts that run kept aside"]),
    ({"level": "high", "target": "widget_version"}, state(be_release="v1.1.0", migration=dict(MIG_DROP, scripts="kept")),
     False, ["Backend release: v1.1.0 -> v1.1.0;",
             "Resuming: v1.1.0 is already checked out; its switch is finished (restarted and recorded unless the "
             "history shows it done) before the downgrade"]),
]


@pytest.mark.parametrize("raw, st, check, lines", PLAN_TEXT)
def test_plan_text(raw, st, check, lines):
    text = plan_for(raw, st, check)["text"]
    for line in lines:
        assert line in text


def _disagreeing():
    st = state(2, 2, migration=MIG_DROP)
    st["backend"][1]["history"] = [h("v1.0.0", rev="fb3228f45466"), h("v1.2.0", rev="a1b2c3d4e5f6")]
    st["workers"][1]["history"] = [h("v1.8.0"), h("v2.0.0")]
    return st


def _without_backups(st):
    for host in st["backend"] + st["workers"]:
        del host["config_backup"]
    return st


PLAN_REFUSALS = [
    ({"level": "critical"}, _disagreeing(), False,
     "Failed to plan the rollback: the backend hosts disagree on the release to roll back to (backend1: v1.1.0, "
     "backend2: v1.0.0). Pass -e stable_release=<tag>."),
    ({"level": "high", "target": "widget_version"}, _disagreeing(), False,
     "the backend hosts disagree on the release to roll back to (backend1: v1.1.0, backend2: v1.0.0)"),
    ({"level": "critical", "stable_release": "v1.0.0"}, _disagreeing(), False,
     "the workers hosts disagree on the release to roll back to (workers1: v1.9.0, workers2: v1.8.0). Roll the "
     "workers back on their own with -e level=medium -e component=workers -e stable_release=<tag>."),
    ({"level": "high", "target": "widget_version"},
     state(be_hist=[h("v1.0.0", rev="66ea5c9e3d91"), h("v1.2.0")], migration=MIG_DROP), False,
     "Failed to plan the rollback: no known-good release in the backend release history runs at revision fb3228f45466, "
     "so the code to go with it is unknown. Pass -e stable_release=<tag>. History: v1.0.0@66ea5c9e3d91 (success), "
     "v1.2.0@? (success)."),
    # the running release at the target revision is the target only when resuming (the kept scripts)
    ({"level": "high", "target": "widget_version"}, state(be_release="v1.1.0", migration=MIG_DROP), False,
     "no known-good release in the backend release history runs at revision fb3228f45466"),
    ({"level": "low", "target": "widget_version", "window": "now"}, state(be_hist=[], migration=MIG_DROP), False,
     "no known-good release in the backend release history runs at revision fb3228f45466"),
    ({"level": "critical"}, state(be_hist=[], wk_hist=[]), False,
     "Failed to plan the rollback: no last known-good release in the release history (backend: empty; workers: "
     "empty). Pass -e stable_release=<tag>."),
    ({"level": "medium", "component": "workers"}, state(wk_hist=[]), False,
     "no last known-good release in the release history (backend: v1.0.0, v1.1.0, v1.2.0; workers: empty)"),
    ({"level": "medium", "component": "config"}, _without_backups(state(2, 1, config_backups={})), False,
     "Failed to plan the rollback: .env.backup does not exist on backend1, so there is no previous configuration"),
    ({"level": "medium", "component": "worker_config"},
     state(1, 1, workers=[{"host": "w9", "release": "v2.0.0", "config_backup": False}]), False,
     "config/production.json.backup does not exist on w9"),
    ({"level": "medium", "component": "config"},
     _without_backups(state(1, 1, config_backups={}, config_backup_paths={"backend1": "/srv/replyx app/.env.backup"})),
     False, "Failed to plan the rollback: /srv/replyx app/.env.backup does not exist on backend1"),
    ({"level": "auto"}, state(auto={"level": "none", "reason": "every check passed"}), False,
     "Failed to plan the rollback: level=auto found nothing to roll back: every check passed"),
    ({"level": "auto"}, state(auto={"level": "medium", "reason": "failed_checks = 1 > 0 (login)"}), False,
     "level=auto chose medium (failed_checks = 1 > 0 (login)): a selective rollback needs to know what to roll back: "
     "add -e component=backend|workers|config|dependencies|worker_config|indexes"),
    ({"level": "auto"}, state(be_hist=[h("v1.1.0"), h("v1.2.0")], auto={"level": "high", "reason": "r"}), False,
     "level=auto chose high (r) but the backend's last known-good release (v1.1.0) records no alembic revision"),
    ({"level": "auto"}, state(), False, "level=auto needs the measurements"),
    ({"level": "critical"}, state(0, 1), False, "the state has no backend host"),
    ({"level": "critical"}, state(1, 0), False, "the state has no workers host"),
]


@pytest.mark.parametrize("raw, st, check, message", PLAN_REFUSALS)
def test_plan_refusals(raw, st, check, message):
    assert message in refusal(plan_for, raw, st, check)


def test_host_lists_given_as_json_text_are_decoded_and_wrong_shapes_refused():
    st = state(2, 1)
    st["backend"] = json.dumps(st["backend"])
    st["workers"][0]["history"] = json.dumps(WK_HIST)
    assert plan_for({"level": "critical"}, st)["backend_release_target"] == "v1.1.0"
    st["backend"] = "not json"
    assert "state.backend must be a list (got str)" in refusal(plan_for, {"level": "critical"}, st)
    st = state()
    st["workers"] = [["workers1"]]
    assert "every host of state.workers must be a dict (got list)" in refusal(plan_for, {"level": "critical"}, st)


def test_config_backups_by_host_in_the_state():
    st = state(2, 1)
    for b in st["backend"]:
        del b["config_backup"]
    st["config_backups"] = {"backend1": True, "backend2": False}
    assert ".env.backup does not exist on backend2" in refusal(plan_for, {"level": "medium", "component": "config"}, st)
    st["config_backups"]["backend2"] = True
    assert plan_for({"level": "medium", "component": "config"}, st)["execute"] is True


def test_auto_high_defaults_the_target_to_the_last_good_revision():
    req = request(level="auto")
    out = pol.apply_auto(req, POLICY, {"level": "high", "reason": "r"}, state()["backend"])
    assert (out["level"], out["requested_level"], out["target"], out["target_revision"]) == (
        "high", "auto", "fb3228f45466", "fb3228f45466")
    assert pol.apply_auto(out, POLICY, None) == out


# --------------------------------------------------------------------------------------------- approvals

APPROVAL_CHECKS = [
    ({"level": "critical"}, state(), False, "",
     "Failed to start the rollback: level critical needs approval by a executive (or higher: %s). Recorded "
     "approvals: none. Give them with -e approvals=\"name:role:ticket,name:role:ticket\"." % ROLES),
    ({"level": "critical"}, state(), False, "dev:developer:INC-9", "level critical needs approval by a executive"),
    ({"level": "critical"}, state(), False, "ceo:executive:INC-1", None),
    ({"level": "critical"}, state(), True, "", None),
    ({"level": "high", "target": "widget_version"}, state(migration=MIG_DROP), False, "lead:team_lead:INC-2",
     "level high needs approval by a team_lead (or higher: %s) and two distinct approvers, because this rollback can "
     "lose data (the downgrade drops data). Recorded approvals: lead." % ROLES),
    ({"level": "high", "target": "widget_version"}, state(migration=MIG_DROP), False,
     "lead:team_lead:INC-2,lead:executive:INC-2", "two distinct approvers"),
    ({"level": "high", "target": "widget_version"}, state(migration=MIG_DROP), False,
     "lead:team_lead:INC-2,dev:developer:INC-2", None),
    ({"level": "high", "target": "widget_version"}, state(migration=MIG_DROP), False,
     "a:developer:1,b:developer:1", "level high needs approval by a team_lead"),
    ({"level": "high", "target": "pgvector_indexes", "stable_release": "v1"}, state(migration=MIG_ADDITIVE), False,
     "lead:team_lead:INC-2", None),
    ({"level": "critical", "recovery": "restore", "recovery_backup": "/m"}, state(), False, "ceo:executive:1",
     "two distinct approvers, because this rollback can lose data (recovery=restore)"),
    ({"level": "critical", "recovery": "restore", "recovery_backup": "/m"}, state(), False, EXEC2, None),
    ({"level": "medium", "component": "config"}, state(), False, "x:standard:1", "approval by a developer"),
    ({"level": "medium", "component": "config"}, state(), False, "x:executive:1", None),
    ({"level": "low", "target": "widget_version"}, state(migration=MIG_DROP), False, "", None),
    ({"level": "low", "target": "widget_version", "window": "now"}, state(migration=MIG_DROP), False, "x:standard:1",
     "level low needs approval by a standard (or higher: %s) and two distinct approvers" % ROLES),
]


@pytest.mark.parametrize("raw, st, check, approvals, message", APPROVAL_CHECKS)
def test_check_approvals(raw, st, check, approvals, message):
    raw = dict(raw, approvals=approvals)
    plan = plan_for(raw, st, check)
    approvals = request(**raw)["approvals"]
    if message is None:
        pol.check_approvals(plan, approvals, POLICY)
    else:
        assert message in refusal(pol.check_approvals, plan, approvals, POLICY)


# ------------------------------------------------------------------------------------------------ policy

def _mutated(path, value, delete=False):
    data = copy.deepcopy(RAW_POLICY)
    node = data
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


POLICY_REFUSALS = [
    (("rollback_policy_levels", "high", "approval_role"), None, True, "rollback_policy_levels.high.approval_role is "
                                                                      "missing"),
    (("rollback_policy_levels", "high", "approval_role"), "boss", False, "approval_role 'boss' is not a role. Valid "
                                                                         "roles: standard, developer, team_lead"),
    (("rollback_policy_levels", "low", "action"), "later", False, "Valid actions: code, migration, component, plan"),
    (("rollback_policy_levels", "critical", "steps"), ["triage", "dance"], False, "unknown step 'dance'. Valid steps:"),
    (("rollback_policy_levels", "critical", "steps"), ["triage", "triage"], False, "lists a step twice"),
    (("rollback_policy_levels", "critical", "can_lose_data"), "sometimes", False, "can_lose_data must be false, "
                                                                                  "when_downgrade_drops_data or "
                                                                                  "with_recovery"),
    (("rollback_policy_levels", "medium", "approvers_if_data_can_be_lost"), 2, False,
     "medium.approvers_if_data_can_be_lost is never read"),
    (("rollback_policy_levels", "high", "approvers_if_data_can_be_lost"), None, True, "is missing (can_lose_data is "
                                                                                      "when_downgrade_drops_data)"),
    (("rollback_policy_levels", "high", "action"), "code", False, "when_downgrade_drops_data never applies: action "
                                                                  "code never downgrades"),
    (("rollback_policy_levels", "high", "approvers"), 0, False, "high.approvers must be an integer >= 1"),
    (("rollback_policy_levels", "high", "window_minutes"), "soon", False, "window_minutes must be a positive integer"),
    (("rollback_policy_levels", "high", "colour"), "red", False, "high.colour is not a level key"),
    (("rollback_policy_levels", "high", "issue"), "", False, "high.issue must be a non-empty string"),
    (("rollback_policy_levels", "auto"), {}, False, "'auto' is reserved"),
    (("rollback_policy_auto_rules", 0, "when"), "vibes", False, "rollback_policy_auto_rules[0].when 'vibes' is not a "
                                                                "measure"),
    (("rollback_policy_auto_rules", 0, "level"), "panic", False, "rollback_policy_auto_rules[0].level 'panic' is not"),
    (("rollback_policy_role_rank",), None, True, "rollback_policy_role_rank is missing"),
    (("rollback_policy_components", "frontend"), "x", False, "rollback_policy_components.frontend is not a component"),
    (("rollback_policy_named_targets",), {"a": "b"}, False, "unknown key rollback_policy_named_targets"),
    (("rollback_policy_manual_indexes",), [""], False, "rollback_policy_manual_indexes must be a list of index names"),
]


@pytest.mark.parametrize("path, value, delete, message", POLICY_REFUSALS)
def test_malformed_policy_names_the_key(path, value, delete, message):
    msg = refusal(pol.load_policy, _mutated(path, value, delete))
    assert msg.startswith("Failed to load the rollback policy: ")
    assert message in msg


def test_policy_accepts_unprefixed_keys_and_has_no_named_targets():
    short = dict((k[len("rollback_policy_"):], v) for k, v in RAW_POLICY.items())
    assert pol.load_policy(short) == POLICY
    assert "rollback_policy_named_targets" not in RAW_POLICY
    assert set(POLICY["levels"]) == {"critical", "high", "medium", "low"}


# Every key of every level is read: changing it changes some plan (or refusal) of that level.
SCENARIOS = [
    ({"target": "widget_version"}, dict(migration=MIG_DROP)),
    ({"target": "widget_version", "window": "now"}, dict(migration=MIG_DROP)),
    ({"target": "pgvector_indexes", "stable_release": "v1"}, dict(migration=MIG_ADDITIVE)),
    ({"component": "config"}, {}),
    ({"component": "config", "window": "now"}, {}),
    ({}, {}),
    ({"recovery": "restore", "recovery_backup": "/m.json"}, {}),
    ({"recovery": "restore", "recovery_backup": "/m.json", "code_rollback": False}, {}),
    ({"recovery": "restore", "recovery_backup": "/m.json", "component": "config"}, {}),
]


def _outputs(policy, level):
    out = []
    for raw, extra in SCENARIOS:
        raw = dict(raw, level=level, approvals="a:standard:1")
        try:
            plan = plan_for(raw, state(2, 2, **extra), policy=policy)
        except PolicyError as exc:
            out.append(str(exc))
            continue
        out.append(json.dumps(plan, sort_keys=True))
        try:  # the approvals the plan needs, one standard approver given
            pol.check_approvals(plan, pol.parse_request(raw, policy)["approvals"], policy)
            out.append("approved")
        except PolicyError as exc:
            out.append(str(exc))
    return out


def _mutations(level, key, value, data):
    if key in ("issue", "rollback_type", "window"):
        return [value + " (changed)"]
    if key == "window_minutes":
        return [(value or 0) + 7]
    if key == "action":
        return [a for a in pol.ACTIONS if a != value]
    if key == "approval_role":
        return [r for r in data["rollback_policy_role_rank"] if r != value]
    if key in ("approvers", "approvers_if_data_can_be_lost"):
        return [value + 1]
    if key == "can_lose_data":
        return [v for v in pol.CAN_LOSE_DATA if v != value]
    if key == "steps":
        return [value[:-1], list(reversed(value))]
    raise AssertionError("no mutation for %s" % key)


DEAD_KEY_CASES = [(level, key) for level in RAW_POLICY["rollback_policy_levels"]
                  for key in RAW_POLICY["rollback_policy_levels"][level]]


@pytest.mark.parametrize("level, key", DEAD_KEY_CASES)
def test_no_level_key_is_dead(level, key):
    base = _outputs(POLICY, level)
    value = RAW_POLICY["rollback_policy_levels"][level][key]
    changed = []
    for new in _mutations(level, key, value, RAW_POLICY):
        data = _mutated(("rollback_policy_levels", level, key), new)
        lvl = data["rollback_policy_levels"][level]
        if lvl["can_lose_data"] is False:
            lvl.pop("approvers_if_data_can_be_lost", None)
        else:
            lvl.setdefault("approvers_if_data_can_be_lost", lvl["approvers"] + 1)
        try:
            policy = pol.load_policy(data)
        except PolicyError:  # a combination the policy refuses (e.g. a drop rule on a level that never downgrades)
            continue
        changed.append(_outputs(policy, level) != base)
    assert changed and any(changed), (level, key)
    if key == "steps":
        assert all(changed)


def test_every_level_key_of_the_schema_is_in_levels_yml():
    for name, level in RAW_POLICY["rollback_policy_levels"].items():
        expected = set(pol.LEVEL_KEYS) - ({"approvers_if_data_can_be_lost"} if level["can_lose_data"] is False else set())
        assert set(level) == expected, name


# ------------------------------------------------------------------------------------------ action plugin

def _policy_arg():
    return dict((k[len("rollback_policy_"):], v) for k, v in RAW_POLICY.items() if k != "rollback_policy_escalation")


def _action(args, check_mode=False):
    from unittest.mock import MagicMock

    from ansible.playbook.play_context import PlayContext

    from ansible_collections.replyx.rollback.plugins.action.rollback_plan import ActionModule

    task = MagicMock()
    task.args = args
    task.async_val = 0
    task.check_mode = check_mode
    task.action = "replyx.rollback.rollback_plan"
    play_context = PlayContext()
    play_context.check_mode = check_mode
    action = ActionModule(task=task, connection=MagicMock(), play_context=play_context, loader=None, templar=None)
    return action.run(task_vars={})


ACTION_CASES = [
    ({"stage": "request", "request": {"level": "HIGH", "target": "widget_version", "named_targets": NAMED}}, False,
     lambda r: not r.get("failed") and r["request"]["target_revision"] == "fb3228f45466"),
    ({"stage": "request", "request": {"level": "urgent"}}, False,
     lambda r: r["failed"] and "unknown level 'urgent'. Valid levels: critical, high, medium, low, auto" in r["msg"]),
    ({"stage": "plan", "request": {"level": "critical"}, "state": state()}, False,
     lambda r: r["failed"] and "level critical needs approval by a executive" in r["msg"]),
    ({"stage": "plan", "request": {"level": "critical"}, "state": state()}, True,
     lambda r: not r.get("failed") and r["plan"]["execute"] is False and "CHECK MODE" in r["plan"]["text"]),
    ({"stage": "plan", "request": {"level": "critical", "approvals": "c:executive:1"}, "state": state(2, 2)}, False,
     lambda r: r["plan"]["execute"] is True and r["plan"]["run_id"].endswith("-critical")),
    ({"stage": "plan", "request": {"level": "critical", "approvals": "c:executive:1"}, "state": state(),
      "run_id": "run-7"}, False, lambda r: r["plan"]["run_id"] == "run-7"),
    ({"stage": "auto", "request": {"level": "auto", "named_targets": NAMED},
      "state": dict(state(), measure=[{"item": "backend1", "checklist": [http(5, 0, 4.0)],
                                       "summary": {"failed_checks": []}}], baseline_recorded=True)}, False,
     lambda r: r["auto"]["level"] == "high" and r["request"]["level"] == "high"
     and r["request"]["target_revision"] == "fb3228f45466"),
    ({"stage": "auto", "request": {"level": "auto"},
      "state": dict(state(), measure=[{"checklist": [http(5, 0, 1.0)], "summary": {"failed_checks": []}}],
                    baseline_recorded=True)}, False,
     lambda r: r["failed"] and "level=auto found nothing to roll back" in r["msg"]),
    ({"stage": "plan", "request": {"level": "auto", "approvals": "c:executive:1"},
      "state": dict(state(), measure=[{"checklist": [http(5, 5)], "summary": {"failed_checks": ["health"]}}])}, False,
     lambda r: r["plan"]["level"] == "critical" and r["plan"]["level_source"] == "auto"),
]


@pytest.mark.parametrize("args, check_mode, ok", ACTION_CASES)
def test_action_plugin(args, check_mode, ok):
    # the lab's setting: typed approvals count (signed ones: test_signatures.py)
    args = dict(args, policy=_policy_arg(), approval={"allow_unsigned": True})
    result = _action(args, check_mode)
    assert result["changed"] is False
    assert ok(result), result


def test_action_plugin_refuses_unknown_options():
    from ansible.errors import AnsibleActionFail

    with pytest.raises(AnsibleActionFail):
        _action({"stage": "plan", "request": {}, "policy": _policy_arg(), "colour": "red"})


def test_module_stub_refuses_to_run_on_a_host(tmp_path):
    # In a child process: loading a module in-process changes ansible-core's global module state for
    # the module tests that run after this file.
    import subprocess
    import sys

    code = ("from ansible.module_utils.testing import patch_module_args\n"
            "from ansible_collections.replyx.rollback.plugins.modules import rollback_plan\n"
            "with patch_module_args({'stage': 'request', 'request': {}, 'policy': {}}):\n"
            "    rollback_plan.main()\n")
    collections = os.path.abspath(os.path.join(os.path.dirname(__file__), *[".."] * 7))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env=dict(os.environ, PYTHONPATH=collections))
    result = json.loads(proc.stdout)
    assert result["failed"] and "runs on the controller as an action plugin" in result["msg"]


# ------------------------------------------------------------------- every level's plan says exactly what

IDX = {"would_drop": ["ix_dialogs_created"], "absent": [], "sql": ["DROP INDEX CONCURRENTLY ix_dialogs_created"]}
EXACT = [
    ("critical", {"level": "critical"}, {}),
    ("critical, two hosts each", {"level": "critical"}, {"nb": 2, "nw": 2}),
    ("high", {"level": "high", "target": "widget_version"}, {"migration": MIG_DROP}),
    ("high, additive", {"level": "high", "target": "pgvector_indexes"},
     {"migration": MIG_ADDITIVE, "be_hist": BE_HIST[:1] + [h("v1.1.0", rev="165e5d314eaf")] + BE_HIST[2:]}),
    ("low, a revision no release runs at", {"level": "low", "target": "pgvector_indexes"}, {"migration": MIG_ADDITIVE}),
    ("low, component", {"level": "low", "component": "backend"}, {}),
] + [("medium " + c, {"level": "medium", "component": c}, {"indexes": IDX} if c == "indexes" else {})
     for c in ("backend", "workers", "config", "dependencies", "worker_config", "indexes")]


@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
@pytest.mark.parametrize("raw, st", [c[1:] for c in EXACT], ids=[c[0] for c in EXACT])
def test_every_plan_names_every_release_and_field(raw, st, check):
    plan = plan_for(raw, state(**st), check=check)
    assert "?" not in plan["text"], plan["text"]
    for step in plan["steps"]:
        assert step["detail"].strip() and not step["detail"].rstrip().endswith("->"), step
    for row in plan["backend_hosts"] + plan["workers_hosts"]:
        assert row["release_before"], row


def test_executing_a_plan_with_no_known_release_at_the_revision_is_refused():
    msg = refusal(plan_for, {"level": "low", "target": "pgvector_indexes", "window": "now"}, state(migration=MIG_ADDITIVE))
    assert "no known-good release in the backend release history runs at revision 165e5d314eaf" in msg
    assert "Pass -e stable_release=<tag>." in msg
    plan = plan_for({"level": "low", "target": "pgvector_indexes", "window": "now", "stable_release": "v1.1.0"},
                    state(migration=MIG_ADDITIVE))
    assert "Backend release: v1.2.0 -> v1.1.0;" in plan["text"]


def _checked(st, group, release, known, valid=()):
    for host in st[group]:
        host["checked_release"] = {"release": release, "known": known, "valid": list(valid)}
    return st


STABLE = [
    ("critical, unknown backend release", {"level": "critical", "stable_release": "v9.9.9"},
     _checked(state(nb=2), "backend", "v9.9.9", False, ["v1.0.0", "v1.1.0"]),
     "unknown backend release 'v9.9.9' (not in the repository of backend1). Valid releases: v1.0.0, v1.1.0."),
    ("medium backend, unknown release", {"level": "medium", "component": "backend", "stable_release": "v9"},
     _checked(state(), "backend", "v9", False, ["v1.0.0"]), "unknown backend release 'v9'"),
    ("medium workers, unknown release", {"level": "medium", "component": "workers", "stable_release": "v9"},
     _checked(state(), "workers", "v9", False, ["v2.0.0"]), "unknown workers release 'v9' (not in the repository of workers1)"),
    ("high, unknown release", {"level": "high", "target": "widget_version", "stable_release": "v9"},
     _checked(state(migration=MIG_DROP), "backend", "v9", False, []), "Valid releases: none."),
]


@pytest.mark.parametrize("raw, st, message", [c[1:] for c in STABLE], ids=[c[0] for c in STABLE])
def test_an_unknown_stable_release_is_refused_while_planning(raw, st, message):
    assert message in refusal(plan_for, raw, st, True)


def test_a_known_stable_release_plans_and_other_groups_checks_do_not_matter():
    st = _checked(_checked(state(), "backend", "v1.0.0", True), "workers", "v1.0.0", False, ["v2.0.0"])
    plan = plan_for({"level": "critical", "stable_release": "v1.0.0"}, st, True)
    assert "Backend release: v1.2.0 -> v1.0.0;" in plan["text"]


# ------------------------------------------------------------------- code rollbacks across migrations

# BE_HIST: v1.1.0 runs at fb3228f45466, v1.2.0 (running) at a1b2c3d4e5f6.
STEP_ADD = {"revision": "a1b2c3d4e5f6", "down_revision": "fb3228f45466", "message": "widget", "additive": True,
            "drops_data": ["assistants.widget_version"]}
STEP_RENAME = {"revision": "a1b2c3d4e5f6", "down_revision": "fb3228f45466", "message": "rename", "additive": False,
               "drops_data": []}
CRITICAL = dict(level="critical", approvals="ceo:executive:INC-1")

SCHEMA_DECIDED = [
    # (case, request, database revision, code_schema (second pass), verdict, needs, plan text)
    ("same revision: one pass", CRITICAL, "fb3228f45466", None, "same", "",
     "Schema: stays at fb3228f45466, the revision v1.1.0 runs at"),
    ("database ahead: the first pass asks for a preview", CRITICAL, "a1b2c3d4e5f6", None, "", "preview", ""),
    ("database ahead by additive steps: go on", CRITICAL, "a1b2c3d4e5f6",
     {"release": "v1.1.0", "preview": {"steps": [STEP_ADD], "before": "a1b2c3d4e5f6"}}, "ahead", "",
     "Schema: stays at a1b2c3d4e5f6, ahead of release v1.1.0 (which runs at fb3228f45466): a1b2c3d4e5f6 only adds"),
    ("database unreadable: not checked, said", CRITICAL, "", None, "unknown", "",
     "Schema: the database's alembic revision could not be read"),
    ("medium backend: same check", dict(level="medium", component="backend", approvals="dev:developer:INC-3"),
     "a1b2c3d4e5f6", {"release": "v1.1.0", "preview": {"steps": [STEP_ADD]}}, "ahead", "", "ahead of release v1.1.0"),
    ("release never deployed here: head from its scripts",
     dict(CRITICAL, stable_release="v1.1.1"), "a1b2c3d4e5f6", None, "", "head", ""),
    ("head read from the scripts, equal", dict(CRITICAL, stable_release="v1.1.1"), "a1b2c3d4e5f6",
     {"release": "v1.1.1", "head": "a1b2c3d4e5f6"}, "same", "", "the revision v1.1.1 runs at"),
]


@pytest.mark.parametrize("case,raw,db,code_schema,verdict,needs,text", SCHEMA_DECIDED, ids=[c[0] for c in SCHEMA_DECIDED])
def test_code_rollback_schema_check(case, raw, db, code_schema, verdict, needs, text):
    plan = plan_for(raw, state(database_revision=db, code_schema=code_schema))
    check = plan["schema_check"]
    assert (check["verdict"], check["needs"]) == (verdict, needs)
    assert text in plan["text"]
    assert plan["revision_before"] == db and plan["revision_target"] == db


SCHEMA_REFUSED = [
    ("a step that is not additive: the high level is the way", CRITICAL, "a1b2c3d4e5f6",
     {"release": "v1.1.0", "preview": {"steps": [STEP_RENAME]}},
     ["release v1.1.0 runs at alembic revision fb3228f45466, but the database is at a1b2c3d4e5f6 and a1b2c3d4e5f6",
      "is not declared additive", "-e level=high -e target=fb3228f45466 -e stable_release=v1.1.0",
      "a release at a1b2c3d4e5f6"]),
    ("an undeclared step counts as not additive", CRITICAL, "a1b2c3d4e5f6",
     {"release": "v1.1.0", "preview": {"steps": [dict(STEP_ADD, additive=None)]}}, ["not declared additive"]),
    ("the preview cannot reach the release's head", CRITICAL, "66ea5c9e3d91",
     {"release": "v1.1.0", "preview": {"failed": True, "msg": "fb3228f45466 is a descendant of the current revision"}},
     ["do not reach by a downgrade from the database's revision 66ea5c9e3d91", "is a descendant"]),
    ("the head cannot be read", dict(CRITICAL, stable_release="v1.1.1"), "a1b2c3d4e5f6",
     {"release": "v1.1.1", "head": "", "head_error": "no alembic directory"},
     ["the alembic head of release v1.1.1 is unknown", "no alembic directory", "-e level=high"]),
    ("a second pass about another release", CRITICAL, "a1b2c3d4e5f6", {"release": "v1.0.0", "preview": {"steps": []}},
     ["state.code_schema is about release v1.0.0, but the plan deploys v1.1.0"]),
]


@pytest.mark.parametrize("case,raw,db,code_schema,texts", SCHEMA_REFUSED, ids=[c[0] for c in SCHEMA_REFUSED])
def test_code_rollback_schema_refusals(case, raw, db, code_schema, texts):
    msg = refusal(plan_for, raw, state(database_revision=db, code_schema=code_schema))
    for text in texts:
        assert text in msg, msg


@pytest.mark.parametrize("raw", [dict(level="critical", recovery="restore", recovery_backup="/b/x.dump",
                                      approvals=EXEC2),
                                 dict(level="medium", component="config", approvals="dev:developer:INC-3"),
                                 dict(level="medium", component="workers", approvals="dev:developer:INC-3")])
def test_no_schema_check_where_the_backend_code_stays_or_the_data_is_recovered(raw):
    plan = plan_for(raw, state(database_revision="a1b2c3d4e5f6"))
    assert plan["schema_check"] == {}
    assert "Schema: stays at a1b2c3d4e5f6 (no migration)" in plan["text"]


# ---------------------------------------------------------------------------------------- restore method

LOGICAL_MANIFEST = {"kind": "logical", "name": "chatai-x.dump"}
PHYSICAL_MANIFEST = {"kind": "physical", "name": "base-x"}
PROBE = {"changed": False, "base_backup": {"name": "base-x", "verified": True, "stop_lsn": "0/5000120",
                                           "stop_time": "2026-12-03 10:00:00+00"},
         "window": {"first_segment": "000000010000000000000005", "last_segment": "000000010000000000000009",
                    "gap": None},
         "target": {"kind": "immediate", "stops": "at the consistency point 0/5000120"},
         "delta": {"copied": 12, "skipped": 980, "removed": 1, "preview": True}}
PROBE_FAILED = {"failed": True,
                "msg": "Failed to verify WAL continuity: segment 000000010000000000000005 is missing: the base backup's own "
                       "WAL (0/5000028..0/5000120) is not complete in the archive"}


def restore_state(manifest=None, physical=None):
    return state(restore={"manifest": manifest, "physical": physical})


RESTORE = {"level": "critical", "recovery": "restore", "recovery_backup": "/b/m.json", "code_rollback": False}

RESTORE_METHODS = [
    ("auto, a verified physical backup whose WAL is complete: physical", {}, PHYSICAL_MANIFEST, PROBE, "physical",
     ["physical: base backup base-x verified (sha256), WAL complete in the archive from 000000010000000000000005 to "
      "000000010000000000000009; recovery stops at the consistency point 0/5000120, the backup's own point; at planning 12 "
      "file(s) differed from the backup (the delta copies only those), 980 did not; a logical restore would reload every row and "
      "rebuild every index (the pgvector hnsw index too)"]),
    ("forced physical: said so", {"restore_method": "physical"}, PHYSICAL_MANIFEST, PROBE, "physical",
     ["physical: base backup base-x", "(forced by restore_method=physical)"]),
    ("auto, a logical dump: logical", {}, LOGICAL_MANIFEST, None, "logical",
     ["logical: recovery_backup is a logical dump (pg_dump, chatai-x.dump); a physical restore needs a physical base "
      "backup's manifest (playbooks/backup.yml -e backup_kind=physical)"]),
    ("forced logical", {"restore_method": "logical"}, LOGICAL_MANIFEST, None, "logical",
     ["logical: forced by restore_method=logical; chatai-x.dump is reloaded with pg_restore"]),
    ("auto, the manifest not read (the logical preflight judges it)", {}, None, None, "logical",
     ["logical: recovery_backup is not known to be a physical base backup"]),
    ("tables mode is logical", {"restore_mode": "tables", "restore_tables": "users"}, LOGICAL_MANIFEST, None,
     "logical", ["logical: restore_mode=tables restores part of the database; only pg_restore of a dump can"]),
    ("schema_only mode is logical (forced physical is refused with the request)", {"restore_mode": "schema_only"},
     LOGICAL_MANIFEST, None, "logical", ["logical: restore_mode=schema_only"]),
    ("a gap after the backup's own WAL does not matter for its own point", {}, PHYSICAL_MANIFEST,
     dict(PROBE, window=dict(PROBE["window"], gap="00000001000000000000000A")), "physical",
     ["to 000000010000000000000009 (segment 00000001000000000000000A missing after it: later WAL is not needed here)"]),
]


@pytest.mark.parametrize("raw, manifest, probe, method, reasons", [c[1:] for c in RESTORE_METHODS],
                         ids=[c[0] for c in RESTORE_METHODS])
def test_restore_method(raw, manifest, probe, method, reasons):
    plan = plan_for(dict(RESTORE, **raw), restore_state(manifest, probe), check=True)
    assert plan["restore_method"] == method
    assert plan["rollback_type"] == "Database backup restoration (%s)" % method
    assert plan["restore_method_requested"] == raw.get("restore_method", "auto")
    for reason in reasons:
        assert reason in plan["restore_method_reason"]
    assert "Restore method: " + plan["restore_method_reason"] in plan["text"]
    assert ("recovery_restore", "postgres") in steps_of(plan)
    assert [s for s in plan["steps"] if s["step"] == "recovery_restore"][0]["detail"].startswith(
        "%s %s restore of /b/m.json" % (plan["restore_mode"], method))


RESTORE_METHOD_REFUSALS = [
    ("forced physical, a logical dump given", {"restore_method": "physical"}, LOGICAL_MANIFEST, None,
     "Failed to plan the restore: restore_method=physical needs a verified physical base backup whose WAL is in the "
     "archive, and recovery_backup /b/m.json is a logical dump (pg_dump, chatai-x.dump). Take one with "
     "playbooks/backup.yml -e backup_kind=physical and give its manifest"),
    ("forced physical, the manifest unreadable", {"restore_method": "physical"},
     {"error": "/b/m.json does not exist"}, None,
     "recovery_backup /b/m.json is not a readable backup manifest (/b/m.json does not exist)"),
    ("forced physical, its WAL missing from the archive", {"restore_method": "physical"}, PHYSICAL_MANIFEST,
     PROBE_FAILED, "Failed to plan the restore: recovery_backup /b/m.json is a physical base backup but it cannot be "
                   "restored: Failed to verify WAL continuity: segment 000000010000000000000005 is missing"),
    ("auto, a physical backup whose checksum fails: no logical fallback from a base backup", {}, PHYSICAL_MANIFEST,
     {"failed": True, "msg": "Failed to verify backup /b/base: checksum mismatch"},
     "is a physical base backup but it cannot be restored: Failed to verify backup /b/base: checksum mismatch"),
    ("auto, a physical backup not checked", {}, PHYSICAL_MANIFEST, None,
     "its preflight (pg_physical_restore in check mode) did not run"),
    ("forced logical, a physical backup given", {"restore_method": "logical"}, PHYSICAL_MANIFEST, PROBE,
     "Failed to plan the restore: restore_method=logical needs a pg_dump backup, and /b/m.json is a physical base "
     "backup. Use -e restore_method=auto (or physical)"),
    ("tables from a physical backup", {"restore_mode": "tables", "restore_tables": "users"}, PHYSICAL_MANIFEST, None,
     "restore_mode=tables restores part of the database, which only a logical restore (pg_restore of a pg_dump "
     "backup) can do, and /b/m.json is a physical base backup"),
]


@pytest.mark.parametrize("raw, manifest, probe, message", [c[1:] for c in RESTORE_METHOD_REFUSALS],
                         ids=[c[0] for c in RESTORE_METHOD_REFUSALS])
def test_restore_method_refusals_name_what_is_missing(raw, manifest, probe, message):
    assert message in refusal(plan_for, dict(RESTORE, **raw), restore_state(manifest, probe), True)


def test_restore_method_is_in_the_digest_and_only_for_restores():
    logical = plan_for(RESTORE, restore_state(LOGICAL_MANIFEST))
    physical = plan_for(RESTORE, restore_state(PHYSICAL_MANIFEST, PROBE))
    assert logical["digest"] != physical["digest"]
    plain = plan_for({"level": "critical"})
    assert plain["restore_method"] == "" and "Restore method" not in plain["text"]


def test_physical_kinds_are_those_of_the_recovery_modules():
    from ansible_collections.replyx.rollback.plugins.module_utils import _pitr
    assert tuple(pol.PHYSICAL_KINDS) == tuple(_pitr.PHYSICAL_KINDS)
