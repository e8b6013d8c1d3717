# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollback decision policy as pure functions: request, approvals, known-good releases, level=auto, plan.

Nothing here reads a file, a host or a clock. The playbooks gather the state (release histories, the
alembic_downgrade and pg_index_drop check-mode results, the measurements of level=auto) and the
``replyx.rollback.rollback_plan`` action plugin hands it to these functions. The level data
(``roles/rollback_policy/vars/levels.yml``) drives every decision; see ``load_policy``.

Every refusal is a ``PolicyError`` whose message says what failed and names the valid choices.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import math
import re

ACTIONS = ("code", "migration", "component", "plan")
CAN_LOSE_DATA = (False, "when_downgrade_drops_data", "with_recovery")
# Symbolic step names a level's ``steps`` may list, with what each one expands to.
STEP_NAMES = (
    "triage",          # controller: snapshot of health, database, connections, migration state, workers
    "lock",            # the first backend host: the environment's rollback lock
    "backup",          # postgres host: a verified backup, when the plan needs one (see ``backup``)
    "recovery",        # postgres host: restore or point-in-time recovery, when recovery != none
    "stop_backend",    # every backend host: a schema_first migration stops the backends first
    "downgrade",       # first backend host: one entry per alembic downgrade step
    "code_backend",    # every backend host, in batches: code action (code_rollback=true) and migration
    "code_workers",    # every workers host, in batches: code action (code_rollback=true)
    "start_services",  # every backend then workers host: code action with code_rollback=false
    "component",       # the component of a selective rollback (per host where the component is per host)
    "validate",        # controller: the post-rollback checklist
    "report",          # controller: the incident report
)
LEVEL_KEYS = ("issue", "rollback_type", "action", "window", "window_minutes", "approval_role", "approvers",
              "approvers_if_data_can_be_lost", "can_lose_data", "steps")
AUTO_MEASURES = ("failure_rate_percent", "p95_ratio_to_baseline", "failed_checks")
RECOVERIES = ("none", "restore", "pitr")
RESTORE_MODES = ("full", "tables", "schema_only")
# How a restore puts the data back: "auto" (physical when the recovery_backup is a verified physical base backup
# whose WAL is complete in the archive and the whole database is restored, else logical), or forced.
RESTORE_METHODS = ("auto", "logical", "physical")
# The manifest kinds of a physical base backup (as _pitr.PHYSICAL_KINDS; a unit test keeps them equal).
PHYSICAL_KINDS = ("physical", "base", "basebackup")
WINDOWS = ("", "now")
HISTORY_GOOD = ("success", "rollback")
PER_HOST_COMPONENTS = {"backend": "backend", "config": "backend", "dependencies": "backend",
                       "workers": "workers", "worker_config": "workers"}
CONFIG_BACKUPS = {"config": ("backend", ".env.backup"), "worker_config": ("workers", "config/production.json.backup")}
_TRUE = ("1", "true", "yes", "on", "y", "t")
_FALSE = ("0", "false", "no", "off", "n", "f", "")
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
# What the plan will do, and nothing about when or by whom: the plan's digest (what approvers sign) is the
# sha256 of these keys as canonical JSON, so --check and the executing run of one incident agree on it
# (no run id, no execute/check flag, no text, no SQL preview: the steps name every revision it runs).
DIGEST_KEYS = ("level", "action", "component", "recovery", "recovery_target_time", "recovery_backup", "restore_mode",
               "restore_tables", "restore_method", "code_rollback", "rebuild_venv", "environment", "approval_role",
               "approvers_required",
               "data_can_be_lost", "revision_before", "revision_target", "would_drop_data", "order",
               "downgrade_scripts", "backend_release_before", "backend_release_target", "workers_release_before",
               "workers_release_target", "backend_hosts", "workers_hosts", "backend_batches", "workers_batches",
               "backup", "indexes_to_drop", "services_touched", "steps")
DIGEST_VERSION = "replyx-rollback-plan/1"


class PolicyError(Exception):
    """A refusal: "Failed to <verb> <object>: <problem>. <valid choices>"."""

    def __init__(self, problem, choices="", verb="start", obj="the rollback"):
        self.problem = problem
        self.choices = choices
        self.verb = verb
        self.obj = obj
        msg = "Failed to %s %s: %s" % (verb, obj, problem)
        if not msg.endswith("."):
            msg += "."
        if choices:
            msg = "%s %s" % (msg, choices)
        super(PolicyError, self).__init__(msg)

    @property
    def msg(self):
        return str(self)


# ----------------------------------------------------------------------------------------------- policy

def _policy_error(problem, choices=""):
    return PolicyError(problem, choices, verb="load", obj="the rollback policy")


def load_policy(data):
    """Validate the level data (levels.yml's variables, with or without the ``rollback_policy_`` prefix).

    Returns ``{levels, components, auto_rules, role_rank, manual_indexes, escalation}``.
    """
    if not isinstance(data, dict):
        raise _policy_error("the policy must be a dict (got %s)" % type(data).__name__)
    raw = {}
    for key, value in data.items():
        key = str(key)
        if key.startswith("rollback_policy_"):
            key = key[len("rollback_policy_"):]
        raw[key] = value
    known = ("levels", "components", "auto_rules", "role_rank", "manual_indexes", "escalation")
    for key in ("levels", "components", "auto_rules", "role_rank"):
        if key not in raw:
            raise _policy_error("rollback_policy_%s is missing" % key, "Keys: %s." % ", ".join(known))

    role_rank = raw["role_rank"]
    if not isinstance(role_rank, dict) or not role_rank:
        raise _policy_error("rollback_policy_role_rank must be a non-empty dict role -> rank")
    for role, rank in role_rank.items():
        if not isinstance(rank, int) or isinstance(rank, bool):
            raise _policy_error("rollback_policy_role_rank.%s must be an integer (got %r)" % (role, rank))
    role_rank = dict((str(k), v) for k, v in role_rank.items())

    components = raw["components"]
    if not isinstance(components, dict) or not components:
        raise _policy_error("rollback_policy_components must be a non-empty dict component -> description")
    for comp in components:
        if comp not in PER_HOST_COMPONENTS and comp != "indexes":
            raise _policy_error("rollback_policy_components.%s is not a component the plan knows" % comp,
                                "Known components: %s." % ", ".join(list(PER_HOST_COMPONENTS) + ["indexes"]))

    levels_raw = raw["levels"]
    if not isinstance(levels_raw, dict) or not levels_raw:
        raise _policy_error("rollback_policy_levels must be a non-empty dict level -> definition")
    if "auto" in levels_raw:
        raise _policy_error("rollback_policy_levels.auto: 'auto' is reserved for level=auto")
    levels = {}
    for name, level in levels_raw.items():
        levels[str(name)] = _load_level(str(name), level, role_rank)

    rules = raw["auto_rules"]
    if not isinstance(rules, list):
        raise _policy_error("rollback_policy_auto_rules must be a list")
    auto_rules = []
    for i, rule in enumerate(rules):
        where = "rollback_policy_auto_rules[%d]" % i
        if not isinstance(rule, dict):
            raise _policy_error("%s must be a dict {level, when, above}" % where)
        for key in ("level", "when", "above"):
            if key not in rule:
                raise _policy_error("%s.%s is missing" % (where, key))
        if rule["level"] not in levels:
            raise _policy_error("%s.level %r is not a level" % (where, rule["level"]),
                                "Valid levels: %s." % ", ".join(levels))
        if rule["when"] not in AUTO_MEASURES:
            raise _policy_error("%s.when %r is not a measure" % (where, rule["when"]),
                                "Valid measures: %s." % ", ".join(AUTO_MEASURES))
        if not isinstance(rule["above"], (int, float)) or isinstance(rule["above"], bool):
            raise _policy_error("%s.above must be a number (got %r)" % (where, rule["above"]))
        auto_rules.append({"level": rule["level"], "when": rule["when"], "above": rule["above"]})

    manual_indexes = raw.get("manual_indexes", [])
    if not isinstance(manual_indexes, list) or not all(isinstance(i, str) and i for i in manual_indexes):
        raise _policy_error("rollback_policy_manual_indexes must be a list of index names")
    escalation = raw.get("escalation", {})
    if not isinstance(escalation, dict):
        raise _policy_error("rollback_policy_escalation must be a dict")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise _policy_error("unknown key rollback_policy_%s" % unknown[0], "Keys: %s." % ", ".join(known))
    return {"levels": levels, "components": dict(components), "auto_rules": auto_rules, "role_rank": role_rank,
            "manual_indexes": list(manual_indexes), "escalation": escalation}


def _load_level(name, level, role_rank):
    where = "rollback_policy_levels.%s" % name
    if not isinstance(level, dict):
        raise _policy_error("%s must be a dict" % where)
    unknown = sorted(set(level) - set(LEVEL_KEYS))
    if unknown:
        raise _policy_error("%s.%s is not a level key" % (where, unknown[0]), "Level keys: %s." % ", ".join(LEVEL_KEYS))
    can_lose = level.get("can_lose_data", None)
    if can_lose not in CAN_LOSE_DATA or "can_lose_data" not in level:
        raise _policy_error("%s.can_lose_data must be false, when_downgrade_drops_data or with_recovery (got %r)"
                            % (where, can_lose))
    for key in LEVEL_KEYS:
        if key == "approvers_if_data_can_be_lost":
            if can_lose is False and key in level:
                raise _policy_error("%s.%s is never read: can_lose_data is false" % (where, key))
            if can_lose is not False and key not in level:
                raise _policy_error("%s.%s is missing (can_lose_data is %s)" % (where, key, can_lose))
            continue
        if key not in level:
            raise _policy_error("%s.%s is missing" % (where, key), "Level keys: %s." % ", ".join(LEVEL_KEYS))
    for key in ("issue", "rollback_type", "window"):
        if not isinstance(level[key], str) or not level[key]:
            raise _policy_error("%s.%s must be a non-empty string" % (where, key))
    if level["action"] not in ACTIONS:
        raise _policy_error("%s.action %r is not an action" % (where, level["action"]),
                            "Valid actions: %s." % ", ".join(ACTIONS))
    if can_lose == "when_downgrade_drops_data" and level["action"] not in ("migration", "plan"):
        raise _policy_error("%s.can_lose_data when_downgrade_drops_data never applies: action %s never downgrades"
                            % (where, level["action"]))
    minutes = level["window_minutes"]
    if minutes is not None and (not isinstance(minutes, int) or isinstance(minutes, bool) or minutes < 1):
        raise _policy_error("%s.window_minutes must be a positive integer or null (got %r)" % (where, minutes))
    if level["approval_role"] not in role_rank:
        raise _policy_error("%s.approval_role %r is not a role" % (where, level["approval_role"]),
                            "Valid roles: %s." % ", ".join(role_rank))
    for key in ("approvers", "approvers_if_data_can_be_lost"):
        if key in level and (not isinstance(level[key], int) or isinstance(level[key], bool) or level[key] < 1):
            raise _policy_error("%s.%s must be an integer >= 1 (got %r)" % (where, key, level[key]))
    steps = level["steps"]
    if not isinstance(steps, list) or not steps:
        raise _policy_error("%s.steps must be a non-empty list" % where)
    for step in steps:
        if step not in STEP_NAMES:
            raise _policy_error("%s.steps: unknown step %r" % (where, step), "Valid steps: %s." % ", ".join(STEP_NAMES))
    if len(set(steps)) != len(steps):
        raise _policy_error("%s.steps lists a step twice" % where)
    out = dict((key, level[key]) for key in LEVEL_KEYS if key in level)
    out["steps"] = list(steps)
    out.setdefault("approvers_if_data_can_be_lost", out["approvers"])
    return out


# ---------------------------------------------------------------------------------------------- request

def _text(value, default=""):
    if value is None:
        return default
    return str(value)


def _bool(name, value, default):
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise PolicyError("%s must be true or false (got %r)" % (name, value))


def _csv_list(value, refusal="restore_tables must be a list or a comma-separated string"):
    """A list given as a list or as a comma-separated string; anything else is refused with ``refusal``."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    raise PolicyError("%s (got %r)" % (refusal, value))


def _roles_text(roles):
    return ", ".join(roles)


def parse_approvals(raw, approved_by="", approver_role="", ticket="", roles=None):
    """Approvals from ``name:role:ticket,...``, a list of ``{name, role, ticket}`` (or of short forms), one
    dict, or nothing; plus the single-approver form. Returns a list of ``{name, role, ticket}``.

    ``roles``: the valid roles (the role rank's keys); every approval needs a name and one of them.
    """
    items = []
    if raw is None or raw == "":
        pass
    elif isinstance(raw, str):
        items = [item for item in raw.split(",") if item.strip()]
    elif isinstance(raw, dict):
        items = [raw]
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        items = [raw]
    out = []
    for item in items:
        if isinstance(item, str):
            parts = item.strip().split(":")
            parts += [""] * (3 - len(parts))
            out.append({"name": parts[0].strip(), "role": parts[1].strip().lower(), "ticket": ":".join(parts[2:]).strip()})
        elif isinstance(item, dict):
            out.append({"name": _text(item.get("name")).strip(), "role": _text(item.get("role")).strip().lower(),
                        "ticket": _text(item.get("ticket")).strip()})
        else:
            out.append({"name": "", "role": "", "ticket": _text(item)})
    if approved_by is not None and _text(approved_by).strip():
        out.append({"name": _text(approved_by).strip(), "role": _text(approver_role).strip().lower(),
                    "ticket": _text(ticket).strip()})
    for approval in out:
        if not approval["name"] or not approval["role"] or (roles is not None and approval["role"] not in roles):
            raise PolicyError(
                "every approval needs a name and a role among %s (got %s)"
                % (_roles_text(roles) if roles is not None else "the role rank",
                   json.dumps(out, sort_keys=True)))
        # names and tickets go into the lock, the report and the webhook: a person's name and an incident id,
        # never a newline, a separator or SQL/shell syntax
        if not _APPROVER_NAME.match(approval["name"]) or not _TICKET.match(approval["ticket"]):
            raise PolicyError(
                "approval %s: an approver name is letters, digits, spaces and . _ @ + ' - (at most 64), a ticket "
                "letters, digits and . _ : / # - (got name %r, ticket %r)"
                % (json.dumps(approval, sort_keys=True), approval["name"], approval["ticket"]))
    return out


_APPROVER_NAME = re.compile(r"^\w[\w .@+'-]{0,63}\Z", re.UNICODE)
_TICKET = re.compile(r"^(\w[\w.:/#-]{0,63})?\Z", re.UNICODE)


def parse_batch(value):
    """rollback_batch: None/'' (the default), an int >= 1, or 'N%' with 1 <= N <= 100."""
    problem = ("rollback_batch must be a number of hosts (1 or more) or a percentage of the hosts (1%%-100%%), "
               "or unset for the default (got %r)" % (value,))
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise PolicyError(problem)
    if isinstance(value, int):
        if value < 1:
            raise PolicyError(problem)
        return value
    if isinstance(value, float) and value.is_integer() and value >= 1:
        return int(value)
    text = str(value).strip()
    if re.match(r"^[0-9]+$", text):
        if int(text) < 1:
            raise PolicyError(problem)
        return int(text)
    match = re.match(r"^([0-9]+)\s*%$", text)
    if match and 1 <= int(match.group(1)) <= 100:
        return "%d%%" % int(match.group(1))
    raise PolicyError(problem)


RESTORE_METHOD_CHOICES = (
    "Valid restore methods: auto (the default: physical when recovery_backup is a verified physical base backup "
    "whose WAL is complete in the archive and restore_mode is full, else logical), logical (pg_restore of a pg_dump "
    "backup), physical (the base backup put back into the data directory, WAL replayed to its end) "
    "(-e restore_method=auto|logical|physical).")


def parse_request(raw, policy):
    """The operator's extra vars (named as in roles/rollback_policy/defaults/main.yml) plus ``named_targets``,
    normalised and validated. Refuses in the order the role did, with the same messages."""
    raw = dict(raw or {})
    levels = policy["levels"]
    components = policy["components"]
    named_targets = raw.get("named_targets") or {}
    if not isinstance(named_targets, dict):
        raise PolicyError("named_targets must be a dict name -> revision (got %r)" % (named_targets,))

    stable = raw.get("stable_release")
    if stable is None or _text(stable).strip() == "":
        stable = raw.get("stable_commit")
    req = {
        "level": _text(raw.get("level")).lower().strip(),
        "target": _text(raw.get("target")).strip(),
        "component": _text(raw.get("component")).lower().strip(),
        "recovery": _text(raw.get("recovery"), "none").lower().strip() or "none",
        "recovery_target_time": _text(raw.get("recovery_target_time")).strip(),
        "recovery_backup": _text(raw.get("recovery_backup")).strip(),
        "stable_release": _text(stable).strip(),
        "code_rollback": _bool("code_rollback", raw.get("code_rollback"), True),
        "restore_mode": _text(raw.get("restore_mode"), "full").lower().strip() or "full",
        "restore_tables": _csv_list(raw.get("restore_tables")),
        "restore_method": _text(raw.get("restore_method"), "auto").lower().strip() or "auto",
        "window": _text(raw.get("window")).lower().strip(),
        "rebuild_venv": _bool("rebuild_venv", raw.get("rebuild_venv"), False),
        "takeover_stale_lock": _bool("takeover_stale_lock", raw.get("takeover_stale_lock"), False),
        "named_targets": dict((str(k), str(v)) for k, v in named_targets.items()),
    }
    level_names = list(levels) + ["auto"]
    level, comp = req["level"], req["component"]
    if level not in level_names:
        raise PolicyError("unknown level '%s'" % level, "Valid levels: %s (-e level=%s)."
                          % (", ".join(level_names), "|".join(level_names)))
    action = levels[level]["action"] if level != "auto" else "auto"
    if not ((action != "component" and comp == "") or comp in components):
        problem = ("unknown component '%s'" % comp) if comp else "level %s needs a component" % level
        raise PolicyError(problem, "Valid components: %s (-e component=...)." % ", ".join(components))
    if action == "migration" and not req["target"]:
        raise PolicyError(
            "level %s needs a migration target (-e target=...)" % level,
            "Named targets: %s; a revision id, -1, or base also work."
            % (", ".join("%s (%s)" % (k, v) for k, v in req["named_targets"].items()) or "none"))
    if action == "plan" and not req["target"] and not comp:
        raise PolicyError("level %s needs a migration target (-e target=...) or a component (-e component=%s)"
                          % (level, "|".join(components)), verb="plan")
    recovery_levels = [name for name, lvl in levels.items() if lvl["can_lose_data"] == "with_recovery"]
    rec = req["recovery"]
    if (rec not in RECOVERIES or (rec != "none" and level not in recovery_levels)
            or (rec == "pitr" and not req["recovery_target_time"])
            or (rec == "restore" and not req["recovery_backup"])):
        raise PolicyError(
            "recovery must be none, restore (with -e recovery_backup=<manifest>) or pitr (with "
            "-e recovery_target_time='YYYY-MM-DD HH:MM:SS+00'), and only with level %s (got recovery=%s, level=%s)"
            % (" or ".join(recovery_levels) or "(none)", rec, level))
    if req["restore_mode"] not in RESTORE_MODES or (req["restore_mode"] == "tables" and not req["restore_tables"]):
        raise PolicyError("restore_mode must be full, tables (with -e restore_tables=users,dialogs) or schema_only "
                          "(got %s)" % req["restore_mode"], obj="the restore")
    method = req["restore_method"]
    if method not in RESTORE_METHODS:
        raise PolicyError("unknown restore_method '%s'" % method, RESTORE_METHOD_CHOICES, obj="the restore")
    if rec == "restore" and method == "physical" and req["restore_mode"] != "full":
        raise PolicyError(
            "restore_method=physical puts the whole data directory back (every database, every table), so it cannot "
            "restore restore_mode=%s: only a logical restore (pg_restore of a pg_dump backup) restores %s"
            % (req["restore_mode"], "some tables" if req["restore_mode"] == "tables" else "the schema alone"),
            "Use -e restore_method=logical (or auto) with a logical backup's manifest, or restore_mode=full.",
            obj="the restore")
    if req["window"] not in WINDOWS:
        raise PolicyError("window must be 'now' (execute a planned rollback) or unset (got '%s')" % req["window"])
    req["rollback_batch"] = parse_batch(raw.get("rollback_batch"))
    req["approvals"] = parse_approvals(raw.get("approvals"), raw.get("approved_by"), raw.get("approver_role"),
                                       raw.get("ticket"), roles=list(policy["role_rank"]))
    req["approval_signatures"] = _csv_list(
        raw.get("approval_signatures"), "approval_signatures must be a list of signature files, a comma-separated string "
        "or a directory of .sig files")
    req["target_revision"] = req["named_targets"].get(req["target"], req["target"])
    return req


# ---------------------------------------------------------------------------------------------- history

def _bad_tags(history):
    return [h.get("rolled_back_from") for h in history if "rolled_back_from" in h]


def _proven(history):
    """The entries that count as good: a successful deploy or a rollback, except a rollback's switch that the same
    run's rescue undid later (same run_id): that release ran only inside a run that failed (its downgrade, say),
    so it was never proven on this host - the release is not bad either (no rolled_back_from)."""
    rescued = set()
    proven = []
    for entry in reversed(history):
        run = entry.get("run_id")
        if entry.get("result") == "rescue" and run:
            rescued.add(run)
        elif entry.get("result") in HISTORY_GOOD and not (entry.get("result") == "rollback" and run in rescued):
            proven.append(entry)
    return proven[::-1]


def _newest_is_rollback_onto(history, current):
    last = history[-1] if history else {}
    return last.get("result", "") == "rollback" and last.get("tag", "") == current


def last_known_good(history, current):
    """The last known-good release in a release history (newest last).

    A release rolled back FROM is bad; a rollback's switch that its own run's rescue undid proves nothing. When the
    newest entry is a rollback onto the running release, that
    release is the known-good state. Otherwise the running release is the suspect: the newest successful or
    rolled-back-to release other than it, or the running release itself when the history holds no other,
    or '' for an empty history.
    """
    history = list(history or [])
    if _newest_is_rollback_onto(history, current):
        return current
    exclude = _bad_tags(history) + [current]
    good = [h for h in _proven(history) if h.get("tag") not in exclude]
    tag = good[-1].get("tag", "") if good else ""
    return tag or (current if history else "")


def release_head(history, tag):
    """The alembic head a release runs at, as its newest successful deploy or rollback recorded it, or ''."""
    good = [h for h in history or [] if h.get("tag") == tag and h.get("alembic_revision")
            and h.get("result") in HISTORY_GOOD]
    return good[-1]["alembic_revision"] if good else ""


def release_for_revision(history, current, revision, resuming=False):
    """The newest known-good release recorded at an alembic revision (the running release counts only when it
    is itself the result of a rollback), or ''.

    resuming: an earlier run switched the code and stopped before the downgrade (the running release does not
    know the database's revision). The running release is then the earlier run's target when the history
    records it at the revision (and never as rolled back from): the re-run finishes that rollback."""
    history = list(history or [])
    exclude = _bad_tags(history)
    if resuming and current and current not in exclude and release_head(history, current) == revision:
        return current
    if not _newest_is_rollback_onto(history, current):
        exclude = exclude + [current]
    good = [h for h in _proven(history) if "alembic_revision" in h
            and h.get("alembic_revision") == revision and h.get("tag") not in exclude]
    return good[-1].get("tag", "") if good else ""


# ------------------------------------------------------------------------------------------- level=auto

def _no_auto_rules_reason(rules, baseline_recorded):
    lows = [r for r in rules if r["when"] == "p95_ratio_to_baseline"]
    limit = min([r["above"] for r in lows]) if lows else None
    if not baseline_recorded:
        return "every check passed; no baseline recorded, so latency was not compared"
    if limit is None:
        return "every check passed"
    return "every check passed and latency is within %s%% of the baseline" % _num(limit * 100)


def _num(value):
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def auto_level(checklist, failed_checks, baseline_recorded, rules):
    """The matrix applied to measurements (service_health's checklist): the first rule whose measure is above
    its threshold picks the level. Returns ``{level, reason, measured}``; level 'none' when no rule fires."""
    sampled = [c.get("samples") for c in (checklist or []) if isinstance(c, dict) and "samples" in c]
    sampled = [s for s in sampled if isinstance(s, dict)]
    total = sum(int(s.get("count") or 0) for s in sampled)
    errors = sum(int(s.get("errors") or 0) for s in sampled)
    failure_rate = (100.0 * errors / total) if total else 100.0
    ratios = [s.get("ratio_to_baseline") for s in sampled if s.get("ratio_to_baseline") is not None]
    failed = list(failed_checks or [])
    measured = {"failure_rate_percent": round(failure_rate, 1), "p95_ratio_to_baseline": max(ratios) if ratios else None,
                "failed_checks": failed, "baseline_recorded": bool(baseline_recorded)}
    for rule in rules:
        value = measured[rule["when"]]
        if rule["when"] == "failed_checks":
            value = len(value)
        if value is not None and value > rule["above"]:
            reason = "%s = %s > %s" % (rule["when"], value, rule["above"])
            if failed:
                reason += " (%s)" % ", ".join(failed)
            return {"level": rule["level"], "reason": reason, "measured": measured}
    return {"level": "none", "reason": _no_auto_rules_reason(rules, baseline_recorded), "measured": measured}


def apply_auto(request, policy, auto, backend=None):
    """level=auto: refuse when the matrix found nothing (or chose a selective rollback without a component) and
    default the migration target of a migration level to the backend's last known-good release's revision.
    Returns a new request with ``effective_level`` set (the requested level when it is not auto)."""
    req = dict(request)
    if "effective_level" in req:
        req.setdefault("requested_level", req["level"])
        return req
    req["requested_level"] = req["level"]
    if req["level"] != "auto":
        req["effective_level"] = req["level"]
        return req
    if not auto or not auto.get("level"):
        raise PolicyError("level=auto needs the measurements (the auto_level result) in the state", verb="plan")
    level = auto["level"]
    if level == "none":
        raise PolicyError("level=auto found nothing to roll back: %s" % auto.get("reason", ""), verb="plan")
    if level not in policy["levels"]:
        raise PolicyError("level=auto chose %r, which is not a level" % level,
                          "Valid levels: %s." % ", ".join(policy["levels"]), verb="plan")
    action = policy["levels"][level]["action"]
    if action == "component" and not req["component"]:
        raise PolicyError("level=auto chose %s (%s): a selective rollback needs to know what to roll back: add "
                          "-e component=%s" % (level, auto.get("reason", ""), "|".join(policy["components"])),
                          verb="plan")
    if action == "migration" and not req["target"]:
        hosts = backend or []
        tag = _group_answer("backend", hosts, [last_known_good(h.get("history"), h.get("release", "")) for h in hosts],
                            "Pass -e target=<revision> or -e stable_release=<tag>.")
        revision = ""
        if hosts and tag:
            entries = [h for h in hosts[0].get("history") or [] if h.get("tag") == tag]
            revision = (entries[-1].get("alembic_revision") or "") if entries else ""
        if not revision:
            raise PolicyError(
                "level=auto chose %s (%s) but the backend's last known-good release (%s) records no alembic revision "
                "to downgrade to" % (level, auto.get("reason", ""), tag or "none"),
                "Pass -e target=<named target or revision id>.", verb="plan")
        req["target"] = revision
        req["target_revision"] = req["named_targets"].get(revision, revision)
    req["effective_level"] = level
    req["level"] = level
    return req


def auto_from_measurements(measure, baseline_recorded, rules):
    """auto_level() over one service_health result or a list of them (one per backend host, as a loop
    registers them: each with ``item``). Failed checks are named ``host/check`` when there are several hosts."""
    if isinstance(measure, dict) and "results" in measure:
        measure = measure["results"]
    results = [measure] if isinstance(measure, dict) else list(measure or [])
    checklist, failed = [], []
    for result in results:
        if not isinstance(result, dict):
            continue
        checklist.extend(result.get("checklist") or [])
        names = ((result.get("summary") or {}).get("failed_checks")) or []
        for name in names:
            failed.append("%s/%s" % (result.get("item"), name) if len(results) > 1 and result.get("item") else name)
    return auto_level(checklist, failed, baseline_recorded, rules)


# ---------------------------------------------------------------------------------------------- batches

def batches(hosts, batch=None):
    """Split an ordered host list into rolling batches. None/'': half the hosts (at least one), so that one
    keeps serving when there are two or more; an int: chunks of that size; 'N%': chunks of N% (at least 1)."""
    hosts = list(hosts)
    if not hosts:
        return []
    batch = parse_batch(batch)
    if batch is None:
        size = max(1, len(hosts) // 2)
    elif isinstance(batch, int):
        size = batch
    else:
        size = max(1, int(math.floor(len(hosts) * int(batch[:-1]) / 100.0)))
    return [hosts[i:i + size] for i in range(0, len(hosts), size)]


# ------------------------------------------------------------------------------------------------- plan

def _history_text(history):
    return ", ".join("%s@%s (%s)" % (h.get("tag", ""), h.get("alembic_revision") or "?", h.get("result", ""))
                     for h in history or [])


def _group_answer(group, hosts, answers, advice):
    """The group's common answer, or a refusal naming each host's answer when they disagree."""
    if len(set(answers)) > 1:
        per_host = ", ".join("%s: %s" % (h.get("host", "?"), a or "none") for h, a in zip(hosts, answers))
        raise PolicyError("the %s hosts disagree on the release to roll back to (%s)" % (group, per_host), advice,
                          verb="plan")
    return answers[0] if answers else ""


def _drop_text(step):
    drops = step.get("drops_data")
    if drops is None:
        return " (DROPS DATA: undeclared)" if "drops_data" in step else ""
    if drops:
        return " (DROPS DATA: %s)" % ", ".join(drops)
    return ""


def _drops(step):
    """None: drops undeclared (counts as dropping); []: drops nothing; [..]: what it drops."""
    return step.get("drops_data")


def _backup(needs_backup, action, migration_steps, component, recovery):
    if not needs_backup:
        return {}
    if action == "migration" and recovery == "none":
        tables = []
        for step in migration_steps:
            drops = _drops(step)
            if drops is None:
                return {"scope": "full"}
            for entry in drops:
                parts = str(entry).split(".")
                table = parts[0] if len(parts) <= 2 else ".".join(parts[:2])
                if table not in tables:
                    tables.append(table)
        if tables:
            return {"scope": "tables", "tables": sorted(tables)}
    return {"scope": "full"}


def _order(action, migration_steps):
    if action != "migration":
        return ""
    if all(step.get("additive") is True for step in migration_steps):
        return "code_first"
    return "schema_first"


def _decoded(value, kind, where):
    """A list or dict given as JSON text (as a Jinja template that builds one renders it) is decoded."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else kind()
        except ValueError:
            pass
    if value is None:
        value = kind()
    if kind is list and isinstance(value, dict):
        value = [value]
    if not isinstance(value, kind):
        raise PolicyError("%s must be a %s (got %s)" % (where, kind.__name__, type(value).__name__),
                          "Give it as data, not as text.", verb="plan")
    return value


def _schema_check(release, backend, database_revision, code_schema):
    """Can the backend release a code rollback deploys run on the schema the database is at?

    ``database_revision``: the database's alembic revision ('' when it could not be read). ``code_schema`` (the
    second pass): ``{release, head, head_error, preview}``, the head read from the release's own migration scripts
    when no deploy recorded it, and the downgrade preview from the database's revision to that head with the
    running release's migrations (alembic_downgrade in check mode). Returns the plan's ``schema_check``:
    ``needs`` ('' when decided, 'head' or 'preview' for the playbook) and ``verdict`` (same, ahead, unknown).
    Refuses (PolicyError) when the release cannot run on the schema."""
    code_schema = code_schema or {}
    if code_schema and code_schema.get("release") != release:
        raise PolicyError("state.code_schema is about release %s, but the plan deploys %s"
                          % (code_schema.get("release"), release), verb="plan")
    heads = [release_head(h["history"], release) for h in backend]
    head = next((x for x in heads if x), "") or _text(code_schema.get("head")).strip()
    out = {"release": release, "head": head, "database_revision": database_revision, "needs": "",
           "verdict": "", "ahead_by": [], "note": ""}
    if not database_revision:
        out.update(verdict="unknown", note="the database's alembic revision could not be read, so whether %s runs on "
                   "its schema is not checked" % release)
        return out
    if head == database_revision:
        out.update(verdict="same", note="stays at %s, the revision %s runs at" % (head, release))
        return out
    if not code_schema:
        out["needs"] = "preview" if head else "head"
        return out
    if not head:
        raise PolicyError("the alembic head of release %s is unknown (no deploy recorded it and its migration scripts "
                          "could not be read: %s), so whether it runs on the database's schema (%s) cannot be checked"
                          % (release, _text(code_schema.get("head_error")) or "no answer", database_revision),
                          "Roll back with -e level=high -e target=<revision> -e stable_release=%s, or name a release "
                          "deployed here before with -e stable_release=<tag>." % release, verb="plan")
    preview = code_schema.get("preview") or {}
    high = "-e level=high -e target=%s -e stable_release=%s" % (head, release)
    at_db = [t for t in (release_for_revision(h["history"], h["release"], database_revision) for h in backend) if t]
    other = ("a release at %s (%s) with -e stable_release=<tag>" % (database_revision, at_db[0]) if at_db
             else "a release at %s with -e stable_release=<tag>" % database_revision)
    if preview.get("failed") or not isinstance(preview.get("steps"), list):
        raise PolicyError("release %s runs at alembic revision %s, which the running release's migrations do not reach by "
                          "a downgrade from the database's revision %s (%s)"
                          % (release, head, database_revision, _text(preview.get("msg")) or "no preview"),
                          "Choose %s." % other, verb="plan")
    steps = preview["steps"]
    not_additive = [s.get("revision", "?") for s in steps if s.get("additive") is not True]
    if not_additive:
        raise PolicyError("release %s runs at alembic revision %s, but the database is at %s and %s between them %s not "
                          "declared additive, so %s cannot run on this schema"
                          % (release, head, database_revision, ", ".join(not_additive),
                             "is" if len(not_additive) == 1 else "are", release),
                          "Downgrade the schema with the code: %s (the high level, with its backup and approvals), or "
                          "roll the code back to %s." % (high, other), verb="plan")
    out.update(verdict="ahead", ahead_by=[s.get("revision", "") for s in steps],
               note="stays at %s, ahead of release %s (which runs at %s): %s only add%s"
                    % (database_revision, release, head, ", ".join(s.get("revision", "") for s in steps),
                       "s" if len(steps) == 1 else ""))
    return out


def _lsn_time(lsn, when):
    return "%s (%s)" % (lsn, when) if when else str(lsn)


def choose_restore_method(req, restore):
    """(method, reason) of a restore: "logical" (pg_restore of a pg_dump backup) or "physical" (pg_physical_restore:
    the base backup put back into the data directory with a delta, WAL replayed to the backup's consistency point).

    ``restore``: what planning read - ``manifest`` (the recovery_backup manifest: kind, name, created; ``error``
    when it could not be read) and ``physical`` (pg_physical_restore's check-mode result for that manifest, which
    verifies its sha256 and that the archive holds its WAL: base_backup, window, target, delta; ``failed`` and
    ``msg`` when it refused). Physical is chosen only for a physical manifest: a pg_dump records no WAL position,
    so a base backup replayed "to the dump's point" would be a different database state than the one asked for.
    Refuses (PolicyError, before the lock) whatever cannot be done, naming what is missing."""
    restore = restore or {}
    manifest = restore.get("manifest") or {}
    probe = restore.get("physical") or {}
    backup, mode, want = req["recovery_backup"], req["restore_mode"], req["restore_method"]
    kind = _text(manifest.get("kind")).lower().strip()
    physical = kind in PHYSICAL_KINDS
    what = ("a logical dump (pg_dump, %s)" % (manifest.get("name") or backup) if kind == "logical" else
            "not a readable backup manifest (%s)" % manifest["error"] if manifest.get("error") else
            "a backup of kind '%s'" % kind if kind else "not known to be a physical base backup")
    if mode != "full":
        if physical:
            raise PolicyError(
                "restore_mode=%s restores part of the database, which only a logical restore (pg_restore of a "
                "pg_dump backup) can do, and %s is a physical base backup" % (mode, backup),
                "Give a logical backup's manifest (playbooks/backup.yml) as -e recovery_backup, or restore_mode=full.",
                verb="plan", obj="the restore")
        return "logical", "logical: restore_mode=%s restores part of the database; only pg_restore of a dump can" % mode
    if want == "logical":
        if physical:
            raise PolicyError(
                "restore_method=logical needs a pg_dump backup, and %s is a physical base backup" % backup,
                "Use -e restore_method=auto (or physical), or give a logical backup's manifest (playbooks/backup.yml).",
                verb="plan", obj="the restore")
        return "logical", ("logical: forced by restore_method=logical; %s is reloaded with pg_restore (every row "
                           "copied, every index rebuilt)" % (manifest.get("name") or backup))
    if not physical:
        if want == "physical":
            raise PolicyError(
                "restore_method=physical needs a verified physical base backup whose WAL is in the archive, and "
                "recovery_backup %s is %s" % (backup, what),
                "Take one with playbooks/backup.yml -e backup_kind=physical and give its manifest as "
                "-e recovery_backup=<...>.manifest.json, or use -e restore_method=auto|logical.",
                verb="plan", obj="the restore")
        return "logical", ("logical: recovery_backup is %s; a physical restore needs a physical base backup's manifest "
                           "(playbooks/backup.yml -e backup_kind=physical)" % what)
    if not probe or probe.get("failed") or not probe.get("base_backup"):
        raise PolicyError(
            "recovery_backup %s is a physical base backup but it cannot be restored: %s"
            % (backup, " ".join(_text(probe.get("msg")).split()) or "its preflight (pg_physical_restore in check mode) "
               "did not run"),
            "Fix what is named (the backup's checksum, the WAL archive), or give another backup's manifest: a "
            "logical one is restored with pg_restore.", verb="plan", obj="the restore")
    base, window, target = probe.get("base_backup") or {}, probe.get("window") or {}, probe.get("target") or {}
    delta = probe.get("delta") or {}
    wal = "WAL complete in the archive from %s" % (window.get("first_segment") or "?")
    if window.get("last_segment"):
        wal += " to %s" % window["last_segment"]
    if window.get("gap"):
        wal += " (segment %s missing after it: later WAL is not needed here)" % window["gap"]
    reason = ("physical: base backup %s verified (sha256), %s; recovery stops %s, the backup's own point%s; "
              "a logical restore would reload every row and rebuild every index (the pgvector hnsw index too)"
              % (base.get("name") or backup, wal, target.get("stops") or "at its consistency point "
                 + _lsn_time(base.get("stop_lsn"), base.get("stop_time")),
                 ("; at planning %s file(s) differed from the backup (the delta copies only those), %s did not"
                  % (delta.get("copied"), delta.get("skipped"))) if "copied" in delta else ""))
    return "physical", reason + (" (forced by restore_method=physical)" if want == "physical" else "")


def _hosts_of(state, group, required=True):
    hosts = _decoded(state.get(group), list, "state.%s" % group)
    backups = _decoded(state.get("config_backups"), dict, "state.config_backups")
    backup_paths = _decoded(state.get("config_backup_paths"), dict, "state.config_backup_paths")
    out = []
    for h in hosts:
        h = _decoded(h, dict, "every host of state.%s" % group)
        host = _text(h.get("host"))
        out.append({"host": host, "release": _text(h.get("release")).strip(),
                    "history": [_decoded(e, dict, "every entry of %s's history" % host)
                                for e in _decoded(h.get("history"), list, "%s's history" % host)],
                    "config_backup": h["config_backup"] if "config_backup" in h else backups.get(host),
                    "config_backup_path": h.get("config_backup_path") or backup_paths.get(host),
                    "checked_release": h.get("checked_release") if isinstance(h.get("checked_release"), dict) else {}})
    if not out and required:
        raise PolicyError("the state has no %s host" % group, "Give every host of the group in state.%s." % group,
                          verb="plan")
    return out


def build_plan(request, policy, state, check_mode=False, run_id=""):
    """The rollback plan (plan.json.j2 extended to many hosts per group) and the plan-time refusals."""
    levels = policy["levels"]
    backend = _hosts_of(state, "backend")
    req = apply_auto(request, policy, state.get("auto"), backend)
    auto = state.get("auto") or {}
    level = req["effective_level"]
    lvl = levels[level]
    comp = req["component"]
    recovery = req["recovery"]
    code_rollback = req["code_rollback"]
    stable = req["stable_release"]
    level_action = lvl["action"]
    # how a restore puts the data back, decided (and refused) before anything else is planned
    restore_method, restore_reason = choose_restore_method(req, state.get("restore")) if recovery == "restore" \
        else ("", "")
    if level_action == "plan":
        action = "migration" if req["target"] else "component"
    else:
        action = level_action
    workers = _hosts_of(state, "workers", required=action == "code" or comp in ("workers", "worker_config"))
    execute = (not check_mode) and (level_action != "plan" or req["window"] == "now")
    mig = state.get("migration") or {}
    if action != "migration":
        mig = {}
    idx = state.get("indexes") or {}
    if comp != "indexes":
        idx = {}
    migration_steps = list(mig.get("steps") or [])
    services = state.get("services") or {}
    be_svc = services.get("backend", "backend")
    wk_svc = services.get("workers", "workers")
    environment = _text(state.get("environment"))
    pg_host = _text(state.get("postgres_host")) or "postgres"
    database = _text(state.get("database"))

    # Which group's code moves, and to what (per host, from each host's own history).
    be_moves = (action == "code" and code_rollback) or action == "migration" or comp in ("backend", "dependencies")
    wk_moves = (action == "code" and code_rollback) or (action == "component" and comp == "workers")
    if action == "code" and not code_rollback:
        be_moves = wk_moves = False
    be_target = wk_target = ""
    if be_moves:
        if stable:
            be_target = stable
        elif action == "migration":
            revision = mig.get("target", "")
            resuming = mig.get("scripts") == "kept"
            answers = [release_for_revision(h["history"], h["release"], revision, resuming) for h in backend]
            be_target = _group_answer("backend", backend, answers, "Pass -e stable_release=<tag>.")
            if not be_target and execute:
                if len(backend) == 1:
                    history = _history_text(backend[0]["history"])
                else:
                    history = "; ".join("%s: %s" % (h["host"], _history_text(h["history"]) or "empty")
                                        for h in backend)
                raise PolicyError(
                    "no known-good release in the backend release history runs at revision %s, so the code to go "
                    "with it is unknown" % revision, "Pass -e stable_release=<tag>. History: %s." % history,
                    verb="plan")
        else:
            answers = [last_known_good(h["history"], h["release"]) for h in backend]
            be_target = _group_answer("backend", backend, answers, "Pass -e stable_release=<tag>.")
    if wk_moves:
        if stable and action == "component":
            wk_target = stable
        else:
            answers = [last_known_good(h["history"], h["release"]) for h in workers]
            wk_target = _group_answer(
                "workers", workers, answers,
                "Roll the workers back on their own with -e level=medium -e component=workers -e stable_release=<tag>.")

    def check_release_exists(group, hosts):
        # the hosts' query (app_release state=query release=<stable_release>) said whether the tag exists
        for h in hosts:
            checked = h["checked_release"]
            if checked.get("release") == stable and checked.get("known") is False:
                raise PolicyError("unknown %s release '%s' (not in the repository of %s)" % (group, stable, h["host"]),
                                  "Valid releases: %s. Pass one with -e stable_release=<tag>."
                                  % (", ".join(checked.get("valid") or []) or "none"), verb="plan")

    if stable and be_moves:
        check_release_exists("backend", backend)
    if stable and wk_moves and action == "component":
        check_release_exists("workers", workers)
    missing = ((action == "code" and code_rollback and (not be_target or not wk_target))
               or (be_moves and action != "migration" and not be_target)
               or (wk_moves and not wk_target))
    if missing:
        def tags(hosts):
            seen = []
            for h in hosts:
                for entry in h["history"]:
                    if entry.get("tag") not in seen:
                        seen.append(entry.get("tag"))
            return ", ".join(str(t) for t in seen) or "empty"
        raise PolicyError("no last known-good release in the release history (backend: %s; workers: %s)"
                          % (tags(backend), tags(workers)), "Pass -e stable_release=<tag>.", verb="plan")
    if comp in CONFIG_BACKUPS and action == "component":
        group, default_path = CONFIG_BACKUPS[comp]
        for h in backend if group == "backend" else workers:
            if not h["config_backup"]:
                raise PolicyError("%s does not exist on %s, so there is no previous configuration to restore"
                                  % (h["config_backup_path"] or default_path, h["host"]), verb="plan")

    # A code rollback of the backend (no downgrade, no recovery) deploys a release that must run on the schema the
    # database stays at: checked now, before the lock (two passes when the revisions differ, see _schema_check).
    schema_check = {}
    if be_moves and be_target and recovery == "none" and (action == "code" or comp == "backend"):
        schema_check = _schema_check(be_target, backend, _text(state.get("database_revision")).strip(),
                                     _decoded(state.get("code_schema"), dict, "state.code_schema"))

    def host_rows(hosts, moves, target):
        return [{"host": h["host"], "release_before": h["release"], "release_target": target if moves else h["release"]}
                for h in hosts]

    backend_hosts = host_rows(backend, be_moves, be_target)
    workers_hosts = host_rows(workers, wk_moves, wk_target)
    backend_batches = batches([h["host"] for h in backend], req.get("rollback_batch"))
    workers_batches = (batches([h["host"] for h in workers], req["rollback_batch"])
                       if req.get("rollback_batch") is not None else ([[h["host"] for h in workers]] if workers else []))
    be_before = backend[0]["release"]
    wk_before = workers[0]["release"] if workers else ""

    would_drop = bool(mig.get("would_drop_data", False))
    needs_backup = ((action == "migration" and len(migration_steps) > 0)
                    or (comp == "indexes" and action == "component" and len(idx.get("would_drop") or []) > 0)
                    or recovery != "none")
    can_lose = lvl["can_lose_data"]
    data_can_be_lost = ((can_lose == "when_downgrade_drops_data" and action == "migration" and would_drop)
                        or (can_lose == "with_recovery" and recovery != "none"))
    order = _order(action, migration_steps)
    backup = _backup(needs_backup, action, migration_steps, comp, recovery)
    be_first = backend[0]["host"]

    def per_host(step, group_batches, detail):
        out = []
        for batch_no, batch in enumerate(group_batches, 1):
            for host in batch:
                out.append({"step": step, "host": host, "detail": detail(host), "batch": batch_no})
        return out

    be_target_of = dict((r["host"], r["release_target"]) for r in backend_hosts)
    be_before_of = dict((r["host"], r["release_before"]) for r in backend_hosts)
    wk_target_of = dict((r["host"], r["release_target"]) for r in workers_hosts)
    wk_before_of = dict((r["host"], r["release_before"]) for r in workers_hosts)

    # A plan that is only written (low) may name a revision no known release runs at: it says so, exactly;
    # executing it is refused above until -e stable_release=<tag> names the release.
    unknown_target = ("no known release at %s (pass -e stable_release=<tag> to execute)" % mig.get("target", "")
                      if action == "migration" else "unknown")

    def code_backend():
        return per_host("code_backend", backend_batches,
                        lambda h: "%s -> %s" % (be_before_of[h] or "none running", be_target_of[h] or unknown_target))

    def code_workers():
        return per_host("code_workers", workers_batches,
                        lambda h: "%s -> %s" % (wk_before_of[h] or "none running", wk_target_of[h] or unknown_target))

    def expand(name):
        if name == "triage":
            return [{"step": "triage", "host": "controller",
                     "detail": "snapshot: health, database, connections, migration state, workers"}]
        if name == "lock":
            return [{"step": "lock", "host": be_first, "detail": "rollback lock for environment " + environment}]
        if name == "backup" and needs_backup:
            scope = (" tables " + ", ".join(backup["tables"])) if backup.get("scope") == "tables" else ""
            return [{"step": "backup", "host": pg_host, "detail": "verified pg_backup of %s%s (custom format, sha256, "
                     "pg_restore --list)" % (database, scope)}]
        if name == "recovery" and recovery != "none":
            if recovery == "restore":
                detail = "%s %s restore of %s" % (req["restore_mode"], restore_method, req["recovery_backup"])
                if req["restore_mode"] == "tables":
                    detail += " (tables %s)" % ", ".join(req["restore_tables"])
            else:
                detail = "point-in-time recovery to " + req["recovery_target_time"]
            return [{"step": "recovery_" + recovery, "host": pg_host, "detail": detail}]
        if name == "stop_backend" and action == "migration" and order == "schema_first":
            return per_host("stop_backend", [[h["host"] for h in backend]],
                            lambda h: "stop %s: the downgrade changes the schema under it" % be_svc)
        if name == "downgrade" and action == "migration":
            return [{"step": "downgrade", "host": be_first,
                     "detail": "%s -> %s: %s%s" % (s.get("revision", ""), s.get("down_revision") or "base",
                                                   s.get("message") or "", _drop_text(s))} for s in migration_steps]
        if name == "code_backend" and ((action == "code" and code_rollback) or action == "migration"):
            return code_backend()
        if name == "code_workers" and action == "code" and code_rollback:
            return code_workers()
        if name == "start_services" and action == "code" and not code_rollback:
            return (per_host("start_services", backend_batches, lambda h: "start %s again (no code change)" % be_svc)
                    + per_host("start_services", workers_batches, lambda h: "start %s again (no code change)" % wk_svc))
        if name == "component" and action == "component":
            if comp == "backend":
                return code_backend()
            if comp == "workers":
                return code_workers()
            if comp == "config":
                return per_host("config_backend", backend_batches,
                                lambda h: ".env <- .env.backup, verify the app loads DATABASE_URL, restart")
            if comp == "dependencies":
                return per_host("dependencies_backend", backend_batches, lambda h: "requirements.txt from %s%s, restart"
                                % (be_target_of[h], ", rebuild the virtualenv" if req["rebuild_venv"] else ", pip install -r"))
            if comp == "worker_config":
                return per_host("config_workers", workers_batches,
                                lambda h: "config/production.json <- production.json.backup, clean restart")
            if comp == "indexes":
                return [{"step": "drop_indexes", "host": pg_host, "detail": "DROP INDEX CONCURRENTLY %s; verify in pg_indexes"
                         % (", ".join(idx.get("would_drop") or []) or "nothing (none of the listed indexes exists)")}]
        if name == "validate":
            return [{"step": "validate", "host": "controller", "detail": "the plan's post-rollback checklist"}]
        if name == "report":
            return [{"step": "report", "host": "controller", "detail": "incident report"}]
        return []

    names = list(lvl["steps"])
    if order == "code_first" and "code_backend" in names and "downgrade" in names:
        names.remove("code_backend")
        names.insert(names.index("downgrade"), "code_backend")
    steps = []
    for name in names:
        steps.extend(expand(name))

    if action == "code":
        svcs = (["postgresql"] if recovery != "none" else []) + [be_svc, wk_svc]
    elif action == "migration":
        svcs = [be_svc]
    elif comp in ("backend", "config", "dependencies"):
        svcs = [be_svc]
    elif comp in ("workers", "worker_config"):
        svcs = [wk_svc]
    else:
        svcs = []
    if code_rollback or recovery == "none":
        rollback_type = lvl["rollback_type"]
    else:
        rollback_type = ("Database backup restoration (%s)" % restore_method if recovery == "restore"
                         else "Point-in-time recovery")

    plan = {
        "run_id": run_id,
        "level": level,
        "requested_level": req["requested_level"],
        "level_source": "auto" if req["requested_level"] == "auto" else "operator",
        "auto_reason": auto.get("reason", "") if req["requested_level"] == "auto" else "",
        "issue": lvl["issue"],
        "rollback_type": rollback_type,
        "window": lvl["window"],
        "window_minutes": lvl["window_minutes"],
        "approval_role": lvl["approval_role"],
        "action": action,
        "component": comp,
        "recovery": recovery,
        "recovery_target_time": req["recovery_target_time"],
        "recovery_backup": req["recovery_backup"],
        "environment": environment,
        "execute": execute,
        "steps": steps,
        "backend_release_before": be_before,
        "backend_release_target": be_target if be_moves else be_before,
        "workers_release_before": wk_before,
        "workers_release_target": wk_target if wk_moves else wk_before,
        "backend_hosts": backend_hosts,
        "workers_hosts": workers_hosts,
        "backend_batches": backend_batches,
        "workers_batches": workers_batches,
        "revision_before": mig.get("before", "") if action == "migration" else _text(state.get("database_revision")),
        "revision_target": mig.get("target", "") if action == "migration" else _text(state.get("database_revision")),
        "schema_check": schema_check,
        "migration_steps": migration_steps,
        "would_drop_data": would_drop,
        "sql_preview": mig.get("sql", "") or "",
        "indexes_to_drop": list(idx.get("would_drop") or []),
        "order": order,
        # "kept": the running release lacks the database's revision (an earlier run switched the code and
        # stopped): the downgrade runs with the migration scripts that run kept aside, which are not replaced
        "downgrade_scripts": "kept" if mig.get("scripts") == "kept" else "release",
        "needs_backup": needs_backup,
        "backup": backup,
        "data_can_be_lost": data_can_be_lost,
        "approvers_required": lvl["approvers_if_data_can_be_lost"] if data_can_be_lost else lvl["approvers"],
        "services_touched": svcs,
        "rebuild_venv": req["rebuild_venv"],
        "code_rollback": code_rollback,
        "restore_mode": req["restore_mode"],
        "restore_tables": list(req["restore_tables"]),
        "restore_method_requested": req["restore_method"] if recovery == "restore" else "",
        "restore_method": restore_method,
        "restore_method_reason": restore_reason,
        "unknown_target": unknown_target,
    }
    plan["digest"] = plan_digest(plan)
    plan["text"] = render_plan_text(plan, check_mode)
    return plan


def plan_digest(plan):
    """sha256 (64 hex digits) of the canonical JSON of what the plan will do (``DIGEST_KEYS``): the value an
    approver signs. Keys sorted, no whitespace, non-ASCII kept as UTF-8."""
    content = {"format": DIGEST_VERSION}
    for key in DIGEST_KEYS:
        content[key] = plan.get(key)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_approvals(plan, approvals, policy, how=""):
    """The level's approval role (or a higher one) and ``approvers_required`` distinct approvers, when the plan
    executes. A plan that is only written or shown needs no approval. ``how``: how to give approvals (the refusal
    says it; default: the typed form)."""
    if not plan.get("execute"):
        return
    rank = policy["role_rank"]
    approvals = list(approvals or [])
    need = rank[plan["approval_role"]]
    best = max([rank.get(a.get("role"), -1) for a in approvals] or [-1])
    names = set(a.get("name") for a in approvals)
    required = plan["approvers_required"]
    if approvals and best >= need and len(names) >= required:
        return
    problem = "level %s needs approval by a %s (or higher: %s)" % (
        plan["level"], plan["approval_role"],
        " < ".join(sorted(rank, key=lambda role: rank[role])))
    if required > 1:
        problem += " and %s distinct approvers, because this rollback can lose data (%s)" % (
            _NUMBER_WORDS.get(required, str(required)),
            "the downgrade drops data" if plan.get("would_drop_data") else "recovery=" + plan.get("recovery", ""))
    seen = []
    for a in approvals:
        if a.get("name") not in seen:
            seen.append(a.get("name"))
    raise PolicyError(problem, "Recorded approvals: %s. %s" % (
        ", ".join(seen) or "none", how or 'Give them with -e approvals="name:role:ticket,name:role:ticket".'))


def render_plan_text(plan, check_mode):
    """The plan as text for the operator (roles/rollback_run/templates/plan.txt.j2, with the hosts)."""
    if check_mode:
        mode = "CHECK MODE: nothing will change"
    elif not plan["execute"]:
        mode = "PLANNED: written, not executed; run again with -e window=now"
    else:
        mode = "EXECUTING"
    lines = ["Rollback plan %s (%s)" % (plan["run_id"], mode)]
    lines.append("Level: %s%s - %s, window %s, approval: %s%s" % (
        plan["level"], (" (chosen by level=auto: %s)" % plan["auto_reason"]) if plan["level_source"] == "auto" else "",
        plan["rollback_type"], plan["window"], plan["approval_role"],
        (" x%d (data can be lost)" % plan["approvers_required"]) if plan["approvers_required"] > 1 else ""))
    lines.append("Environment: %s" % plan["environment"])
    unknown = plan.get("unknown_target") or "unknown"
    lines.append("Backend release: %s -> %s; workers release: %s -> %s" % (
        plan["backend_release_before"] or "none running", plan["backend_release_target"] or unknown,
        plan["workers_release_before"] or "none running", plan["workers_release_target"] or unknown))
    for group in ("backend", "workers"):
        rows = plan["%s_hosts" % group]
        lines.append("%s hosts: %s; batches: %s" % (
            group.capitalize(),
            ", ".join("%s %s -> %s" % (r["host"], r["release_before"] or "none running", r["release_target"] or unknown)
                      for r in rows),
            " then ".join("[%s]" % ", ".join(b) for b in plan["%s_batches" % group])))
    if plan["action"] == "migration":
        lines.append("Alembic: %s -> %s (%d step(s)%s), order %s" % (
            plan["revision_before"], plan["revision_target"], len(plan["migration_steps"]),
            ", DROPS DATA" if plan["would_drop_data"] else "", plan["order"]))
        if plan.get("downgrade_scripts") == "kept":
            lines.append("Resuming: the running release %s does not know revision %s (an earlier run switched the "
                         "code and stopped); the downgrade uses the migration scripts that run kept aside" % (
                             plan["backend_release_before"], plan["revision_before"]))
            if plan["backend_release_before"] and plan["backend_release_target"] == plan["backend_release_before"]:
                lines.append("Resuming: %s is already checked out; its switch is finished (restarted and recorded "
                             "unless the history shows it done) before the downgrade" % plan["backend_release_before"])
    elif plan.get("schema_check", {}).get("note"):
        lines.append("Schema: %s" % plan["schema_check"]["note"])
    elif plan.get("revision_before"):
        lines.append("Schema: stays at %s (no migration)" % plan["revision_before"])
    if plan.get("restore_method"):
        lines.append("Restore method: %s" % plan["restore_method_reason"])
    if plan["backup"]:
        lines.append("Backup: %s" % ("tables " + ", ".join(plan["backup"]["tables"])
                                     if plan["backup"]["scope"] == "tables" else "full"))
    lines.append("Steps:")
    for i, step in enumerate(plan["steps"], 1):
        lines.append("  %d. %s on %s: %s" % (i, step["step"], step["host"], step["detail"]))
    lines.append("Services touched: %s" % (", ".join(plan["services_touched"]) or "none"))
    if plan.get("digest"):
        lines.append("Plan digest: %s (approvers sign it: replyx-rollback approve --digest %s --key <ssh key> -o <name>.sig)"
                     % (plan["digest"], plan["digest"]))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ the action plugin

STAGES = ("request", "auto", "plan")


def argument_spec():
    """The options of replyx.rollback.rollback_plan (the action plugin and its documentation module)."""
    return dict(
        stage=dict(type="str", required=True, choices=list(STAGES)),
        request=dict(type="dict", required=True),
        policy=dict(type="dict", required=True),
        state=dict(type="dict", default={}),
        run_id=dict(type="str", default=""),
        approval=dict(type="dict", default={}, options=dict(
            allow_unsigned=dict(type="bool", default=False),
            allowed_signers=dict(type="str", default=""),
            signer_roles=dict(type="dict", default={}),
            from_controller=dict(type="bool", default=False),
        )),
    )


UNSIGNED_REFUSED = (
    "unsigned approvals (-e approvals=... or approved_by) are not accepted in this inventory "
    "(rollback_allow_unsigned_approvals is not true): anyone can type a name and a role")


def typed_approvals_allowed(request, approval):
    """Refuses typed approvals where the inventory does not allow them; approvals read back from the AWX
    workflow's approval nodes (``approval.from_controller``) are records of the controller, not typed."""
    approval = approval or {}
    if request["approvals"] and not approval.get("allow_unsigned") and not approval.get("from_controller"):
        return False
    return True


def _approval_hint(approval):
    approval = approval or {}
    if approval.get("allow_unsigned"):
        return ('Give them with -e approvals="name:role:ticket,name:role:ticket", or signed: '
                "-e approval_signatures=a.sig,b.sig (replyx-rollback approve --digest <plan digest> ...).")
    return ("Give them signed: each approver runs replyx-rollback approve --digest <plan digest> --key <ssh key> -o "
            "<name>.sig, and the run takes -e approval_signatures=a.sig,b.sig (replyx-rollback run ... --signature a.sig).")


def run_stage(args, check_mode=False, default_run_id=None, verify_signatures=None):
    """What the action plugin returns for its (validated) arguments; raises PolicyError on a refusal.

    ``default_run_id(level)`` names the run when ``run_id`` is empty (the action plugin passes the clock).
    ``verify_signatures(signatures, digest, approval, roles, ticket)`` returns the approvals the signature files give
    (``_signatures.approvals_from_signatures``; the action plugin passes it): it reads files and runs ssh-keygen."""
    policy = load_policy(args["policy"])
    state = args.get("state") or {}
    approval = args.get("approval") or {}
    request = parse_request(args["request"], policy)
    if not typed_approvals_allowed(request, approval):
        raise PolicyError(UNSIGNED_REFUSED, _approval_hint(approval))
    if args["stage"] == "request":
        return {"changed": False, "request": request}
    auto = state.get("auto")
    if request["level"] == "auto" and not auto and "measure" in state:
        auto = auto_from_measurements(state["measure"], state.get("baseline_recorded", False), policy["auto_rules"])
    if args["stage"] == "auto":
        if request["level"] != "auto":
            return {"changed": False, "auto": None, "request": apply_auto(request, policy, None)}
        if not auto:
            raise PolicyError("level=auto needs the measurements (state.measure: the service_health results)",
                              verb="plan")
        return {"changed": False, "auto": auto,
                "request": apply_auto(request, policy, auto, _hosts_of(state, "backend", required=False))}
    state = dict(state)
    state["auto"] = auto
    run_id = args.get("run_id") or ""
    request = apply_auto(request, policy, auto, _hosts_of(state, "backend"))
    if not run_id and default_run_id is not None:
        run_id = default_run_id(request["effective_level"])
    plan = build_plan(request, policy, state, check_mode=check_mode, run_id=run_id)
    approvals = list(request["approvals"])
    if request["approval_signatures"]:
        # checked even when the plan only shows (--check): the operator learns before the window that a signature
        # does not fit this plan
        if verify_signatures is None:
            raise PolicyError("signed approvals need the controller's ssh-keygen (verify_signatures)", verb="plan")
        signed = verify_signatures(request["approval_signatures"], plan["digest"], approval,
                                   list(policy["role_rank"]), _text(args["request"].get("ticket")).strip())
        for approval in signed:
            # the principal and the ticket go into the lock, the report and the webhook, as a typed name would
            if not _APPROVER_NAME.match(approval["name"]) or not _TICKET.match(approval["ticket"]):
                raise PolicyError(
                    "signed approval %s: a principal is letters, digits, spaces and . _ @ + ' - (at most 64), a ticket "
                    "letters, digits and . _ : / # - (got principal %r, ticket %r)"
                    % (approval["signature"], approval["name"], approval["ticket"]))
        names = set(a["name"] for a in signed)
        approvals = signed + [a for a in approvals if a["name"] not in names]
    check_approvals(plan, approvals, policy, how=_approval_hint(approval))
    request = dict(request, approvals=approvals)
    return {"changed": False, "plan": plan, "request": request, "approvals": approvals}
