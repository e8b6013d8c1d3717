# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release running on one application host, behind replyx.rollback.app_release.

A host keeps its application as a git working tree (``app_dir``) and a release history (a JSON list,
newest last: tag, commit, alembic revision, time, result). Three verbs:

* query    - the running release (tag, commit) and the history; changes nothing.
* prepared - the release's commit is in the local repository (fetched when missing), and optionally a
             checkout of the *running* release is kept at ``keep_tree`` so that its migration scripts
             stay usable after the switch (a downgrade run after the older code is serving).
* running  - the working tree at the release, dependencies reinstalled only when the release's
             dependency file differs from the one of the running release, the service restarted and
             its health URL answering, the switch recorded in the history.

The history is written atomically (temporary file + rename) under an exclusive lock.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fcntl
import json
import os
import tempfile
import time

from ansible_collections.replyx.rollback.plugins.module_utils import _service
from ansible_collections.replyx.rollback.plugins.module_utils._errors import CommandFailure, InputError, ReplyxError


def argument_spec():
    return dict(
        app=dict(type="str", required=True),
        app_dir=dict(type="path", required=True),
        state=dict(type="str", default="running", choices=["query", "prepared", "running"]),
        release=dict(type="str"),
        repo_url=dict(type="str"),
        history=dict(type="path"),
        history_result=dict(type="str", default="success", choices=["success", "rollback", "rescue"]),
        history_extra=dict(type="dict", default={}),
        dependency_files=dict(type="list", elements="str", default=[]),
        install_command=dict(type="list", elements="str"),
        keep_tree=dict(type="path"),
        service=dict(type="dict", default={}),
    )


# --- the release history ---------------------------------------------------------------------------

def read_history(path):
    """The history list ([] when the file does not exist yet)."""
    if not path or not os.path.exists(path):
        return []
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (IOError, OSError, ValueError) as exc:
        raise InputError("%s is not a readable JSON list (%s)" % (path, exc), verb="read", obj="the release history")
    if not isinstance(data, list):
        raise InputError("%s holds a %s, not a list" % (path, type(data).__name__), verb="read",
                         obj="the release history")
    return data


def append_history(path, entry):
    """Append ``entry`` under an exclusive lock; the file is replaced atomically, mode kept (0644 new)."""
    directory = os.path.dirname(path) or "."
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        history = read_history(path)
        history.append(entry)
        fd, tmp = tempfile.mkstemp(prefix=".history-", dir=directory)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(history, fh, indent=2)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644)
            os.rename(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return history


# --- git ------------------------------------------------------------------------------------------

class Git(object):
    def __init__(self, module, app_dir):
        self.module = module
        self.app_dir = app_dir
        self.bin = module.get_bin_path("git", required=True)

    def run(self, args, what, check=True, cwd=None):
        argv = [self.bin, "-C", cwd or self.app_dir] + list(args)
        rc, out, err = self.module.run_command(argv)
        if check and rc != 0:
            raise CommandFailure("git %s exited with %d: %s" % (args[0], rc, (err or out).strip()[-400:]),
                                 verb=what.split(" ", 1)[0], obj=what.split(" ", 1)[1], cmd=argv, rc=rc,
                                 stdout=out, stderr=err)
        return rc, out.strip()

    def head(self):
        rc, out = self.run(["rev-parse", "HEAD"], "read the running commit", check=False)
        return out if rc == 0 else ""

    def tag_at_head(self):
        rc, out = self.run(["describe", "--tags", "--exact-match", "HEAD"], "read the running release", check=False)
        return out if rc == 0 else ""

    def commit_of(self, release):
        rc, out = self.run(["rev-parse", "--verify", "--quiet", "refs/tags/%s^{commit}" % release],
                           "resolve the release", check=False)
        return out if rc == 0 else ""

    def tags(self):
        _rc, out = self.run(["tag", "--list"], "list the releases")
        return sorted(out.split())

    def remote_tags(self, repo_url):
        """The tags of ``repo_url`` (git ls-remote: reads only, nothing is fetched)."""
        rc, out = self.run(["ls-remote", "--tags", "--refs", repo_url], "list the releases of the repository", check=False)
        if rc != 0:
            return None
        return sorted(line.split("refs/tags/", 1)[1] for line in out.splitlines() if "refs/tags/" in line)

    def fetch(self, repo_url):
        self.run(["fetch", "--quiet", "--tags", repo_url], "fetch the releases")

    def differs(self, a, b, paths):
        if not paths:
            return False
        rc, _out = self.run(["diff", "--quiet", a, b, "--"] + list(paths), "compare the dependencies", check=False)
        return rc != 0


def _query(git, params):
    return dict(release=git.tag_at_head(), commit=git.head(), history=read_history(params["history"]))


def _check_release(git, params):
    """state=query with a release: does it exist here or in repo_url? Reads only (ls-remote, no fetch), so a
    plan can refuse an unknown release before anything changes."""
    release = params["release"]
    if git.commit_of(release):
        return dict(release=release, known=True, where="local")
    remote = git.remote_tags(params["repo_url"]) if params["repo_url"] else None
    if remote is not None and release in remote:
        return dict(release=release, known=True, where="repository")
    valid = sorted(set(git.tags()) | set(remote or []))
    return dict(release=release, known=False, valid=valid)


def _resolve(git, params):
    release = params["release"]
    if not release:
        raise InputError("release is required with state=%s" % params["state"], verb="switch", obj=params["app"])
    commit = git.commit_of(release)
    if not commit and params["repo_url"]:
        git.fetch(params["repo_url"])
        commit = git.commit_of(release)
    if not commit:
        raise InputError("unknown release '%s'. Valid releases: %s" % (release, ", ".join(git.tags()) or "none"),
                         verb="switch", obj=params["app"])
    return commit


def _keep_tree(git, params, head, steps, check_mode):
    """A detached checkout of the running commit at keep_tree (replaced when it is at another commit)."""
    path = params["keep_tree"]
    if not path or not head:
        return None
    if os.path.isdir(path) and Git(git.module, path).head() == head:
        return dict(path=path, commit=head, changed=False)
    steps.append("keep a checkout of %s at %s" % (head[:12], path))
    if not check_mode:
        git.run(["worktree", "prune"], "prune old checkouts")
        if os.path.exists(path):
            git.run(["worktree", "remove", "--force", path], "remove the old checkout", check=False)
        git.run(["worktree", "add", "--force", "--detach", path, head], "keep a checkout of the running release")
    return dict(path=path, commit=head, changed=True)


def unfinished_switch(history, commit, release):
    """The working tree is at commit (tag release), but the release history does not say the switch to it
    finished: its newest entry is another commit or tag, or a failed switch. Returns that entry's tag and commit
    (the code that ran last), or None when the newest entry records this commit (or the history is empty, so there
    is nothing to compare with)."""
    entries = [e for e in history or [] if isinstance(e, dict)]
    if not entries:
        return None
    newest = entries[-1]
    same = newest.get("commit") == commit if newest.get("commit") else newest.get("tag") == release
    if same and newest.get("result") != "failed":
        return None
    ran = [e for e in entries if e.get("result") != "failed"]
    last = ran[-1] if ran else newest
    return dict(tag=str(last.get("tag") or ""), commit=str(last.get("commit") or ""),
                newest_result=str(newest.get("result") or ""))


def _service_params(params):
    """The app_service options of the service (same names and defaults), state restarted."""
    spec = _service.argument_spec()
    given = params["service"] or {}
    unknown = sorted(set(given) - set(spec) | (set(given) & set(["state"])))
    if unknown:
        raise InputError("unknown service option(s) %s; valid: %s" % (", ".join(unknown), ", ".join(
            sorted(k for k in spec if k != "state"))), verb="switch", obj=params["app"])
    if not given.get("name") or given.get("manager") not in _service.MANAGERS:
        raise InputError("service.name and service.manager (%s) are required with state=running"
                         % "|".join(_service.MANAGERS), verb="switch", obj=params["app"])
    service = dict((k, v.get("default")) for k, v in spec.items())
    service.update((k, v) for k, v in given.items() if v is not None)
    for key in ("wait_timeout", "stop_timeout"):
        service[key] = float(service[key])
    if service.get("wait_port") is not None:
        service["wait_port"] = int(service["wait_port"])
    service["wait_status"] = [int(s) for s in service["wait_status"]]
    service["state"] = "restarted"
    return service


def run(module):
    params = module.params
    git = Git(module, params["app_dir"])
    if not os.path.isdir(os.path.join(params["app_dir"], ".git")) and not os.path.isfile(
            os.path.join(params["app_dir"], ".git")):
        raise InputError("%s is not a git working tree" % params["app_dir"], verb="read", obj=params["app"])
    before = _query(git, params)
    result = dict(changed=False, app=params["app"], release_before=before["release"], commit_before=before["commit"],
                  history=before["history"], steps=[])
    if params["state"] == "query":
        result.update(release=before["release"], commit=before["commit"])
        if params["release"]:
            result["checked_release"] = _check_release(git, params)
        return result

    commit = _resolve(git, params)
    result.update(release=params["release"], commit=commit)
    steps = result["steps"]
    kept = _keep_tree(git, params, before["commit"], steps, module.check_mode)
    if kept:
        result["kept_tree"] = kept
        result["changed"] = kept["changed"]
    deps_differ = git.differs(before["commit"], commit, params["dependency_files"]) if before["commit"] else True
    result["dependencies_differ"] = deps_differ
    if params["state"] == "prepared":
        return result

    service = _service_params(params)
    unfinished = unfinished_switch(before["history"], commit, params["release"]) \
        if before["commit"] == commit and before["release"] == params["release"] and params["history"] else None
    if before["commit"] == commit and before["release"] == params["release"] and not unfinished:
        # Already there: make sure it runs (a start when stopped), record nothing.
        service["state"] = "started"
        if not module.check_mode:
            svc = _service.run(module, service)
            result["service"] = svc
            result["changed"] = result["changed"] or svc["changed"]
        return result

    previous = before["commit"]
    if unfinished:
        # Checked out by a switch that never finished (interrupted before its restart or its record): the
        # process may still run the code the history says ran last, and its dependencies may be half installed.
        # Finish the switch: dependencies against the recorded commit, restart, record.
        result["unfinished_switch"] = unfinished
        steps.append("finish the switch to %s an earlier run left unfinished (checked out, not recorded; the history's "
                     "newest entry is %s)" % (params["release"], unfinished["tag"] or unfinished["commit"][:12] or "?"))
        previous = unfinished["commit"]
        deps_differ = git.differs(previous, commit, params["dependency_files"]) if previous else True
        result["dependencies_differ"] = deps_differ
    steps.append("git checkout %s (%s)" % (params["release"], commit[:12]))
    if deps_differ and params["install_command"]:
        steps.append("install dependencies: %s" % " ".join(params["install_command"]))
    waited = service.get("wait_url") or "the process"
    steps.append("restart %s (%s) and wait for %s" % (service["name"], service["manager"], waited))
    result["changed"] = True
    if module.check_mode:
        return result

    started = time.time()
    entry = dict(app=params["app"], tag=params["release"], commit=commit, previous_commit=previous,
                 deployed_at=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z", result=params["history_result"])
    entry.update(params["history_extra"])
    if unfinished and entry.get("rolled_back_from") == params["release"]:
        # the caller named the checkout as the release it moves from; the release that ran is the recorded one
        if unfinished["tag"] and unfinished["tag"] != params["release"]:
            entry["rolled_back_from"] = unfinished["tag"]
        else:
            del entry["rolled_back_from"]
    try:
        git.run(["checkout", "--force", "--quiet", commit], "check out the release")
        if deps_differ and params["install_command"]:
            rc, out, err = module.run_command(params["install_command"], cwd=params["app_dir"])
            if rc != 0:
                raise CommandFailure("%s exited with %d: %s" % (params["install_command"][0], rc, (err or out)[-400:]),
                                     verb="install", obj="the dependencies of %s" % params["release"],
                                     cmd=params["install_command"], rc=rc, stdout=out, stderr=err)
        result["service"] = _service.run(module, service)
    except (ReplyxError, OSError) as exc:
        failed = dict(entry, result="failed", error=getattr(exc, "msg", str(exc)))
        if params["history"]:
            append_history(params["history"], failed)
        raise
    result["switched_at"] = entry["deployed_at"]
    result["seconds"] = round(time.time() - started, 2)
    if params["history"]:
        result["history"] = append_history(params["history"], entry)
    result["entry"] = entry
    return result
