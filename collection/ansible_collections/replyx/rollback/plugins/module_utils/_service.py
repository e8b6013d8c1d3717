# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Service control behind replyx.rollback.app_service: systemd, PM2, or a pidfile.

Each manager reads the service's state, plans the steps for the wanted state (argv lists or, for the
pidfile manager, signals to one verified PID) and runs them. The pidfile manager is the plan's
"manual restart" done safely: it only ever signals the PID read from the service's own pidfile, and
only after /proc/<pid> shows that PID is the expected program. Never ``pkill -f``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

from ansible_collections.replyx.rollback.plugins.module_utils._errors import (
    CommandFailure,
    InputError,
    SafetyRefusal,
)

MANAGERS = ("systemd", "pm2", "pidfile")
STATES = ("started", "stopped", "restarted", "reloaded")


def argument_spec():
    return dict(
        name=dict(type="str", required=True),
        manager=dict(type="str", required=True, choices=list(MANAGERS)),
        state=dict(type="str", default="started", choices=list(STATES)),
        pm2_bin=dict(type="path"),
        pm2_home=dict(type="path"),
        script=dict(type="str"),
        ecosystem=dict(type="path"),
        interpreter=dict(type="str"),
        args=dict(type="list", elements="str", default=[]),
        chdir=dict(type="path"),
        # secret values (by name, and URL passwords) are masked by the module (module_utils._secrets); no_log on
        # the whole dict would mask every value ("1" included) everywhere in the result
        environment=dict(type="dict", default={}, no_log=False),
        pidfile=dict(type="path"),
        program=dict(type="str"),
        exe=dict(type="str"),
        command=dict(type="list", elements="str"),
        log_file=dict(type="path"),
        write_pidfile=dict(type="bool", default=True),
        stop_signal=dict(type="str", default="TERM"),
        stop_timeout=dict(type="float", default=10.0),
        reload_signal=dict(type="str", default="HUP"),
        wait_port=dict(type="int"),
        wait_host=dict(type="str", default="127.0.0.1"),
        wait_url=dict(type="str"),
        wait_status=dict(type="list", elements="int", default=[200]),
        wait_timeout=dict(type="float", default=30.0),
    )


REQUIRED_IF = [("manager", "pidfile", ("pidfile",))]


# --- /proc ----------------------------------------------------------------------------------------

def proc_cmdline(pid, proc="/proc"):
    """The command line of ``pid`` with arguments joined by spaces, or None when there is no such process."""
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as fh:
            raw = fh.read()
    except (IOError, OSError):
        return None
    return to_text(raw.replace(b"\0", b" ").strip(), errors="surrogate_or_replace")


def proc_state(pid, proc="/proc"):
    """One-letter process state (R, S, Z, ...) or None when the process does not exist."""
    try:
        with open(os.path.join(proc, str(pid), "stat"), "rb") as fh:
            stat = to_text(fh.read(), errors="surrogate_or_replace")
    except (IOError, OSError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[0] if fields else None


def proc_exe(pid, proc="/proc"):
    try:
        return os.readlink(os.path.join(proc, str(pid), "exe"))
    except (IOError, OSError):
        return None


def alive(pid, proc="/proc"):
    state = proc_state(pid, proc)
    return state is not None and state not in ("Z", "X")


def read_pidfile(path):
    """(pid, problem): pid is an int or None; problem says why the file gives no usable PID."""
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except (IOError, OSError) as exc:
        if getattr(exc, "errno", None) == 2:
            return None, "missing"
        return None, "unreadable (%s)" % (exc.strerror or exc)
    first = text.split()[0] if text else ""
    if not first.isdigit() or int(first) <= 0:
        return None, "does not hold a PID (%r)" % text[:40]
    return int(first), None


def verify_pid(pid, program=None, exe=None, proc="/proc"):
    """(ok, reason, cmdline): does ``pid`` exist, live, and run the expected program?

    ``program`` is a regular expression searched in the command line; ``exe`` is searched in the path of
    the executable. Both must match when both are given.
    """
    state = proc_state(pid, proc)
    if state is None:
        return False, "no process with PID %d" % pid, None
    if state in ("Z", "X"):
        return False, "PID %d has exited (zombie)" % pid, None
    cmdline = proc_cmdline(pid, proc) or ""
    if program and not re.search(program, cmdline):
        return False, "PID %d belongs to another program: %s" % (pid, cmdline[:200] or "(no command line)"), cmdline
    if exe:
        path = proc_exe(pid, proc) or ""
        if not re.search(exe, path):
            return False, "PID %d runs %s, not %s" % (pid, path or "(unknown executable)", exe), cmdline
    return True, None, cmdline


def signal_number(name):
    name = to_text(name).upper()
    if name.isdigit():
        return int(name)
    if not name.startswith("SIG"):
        name = "SIG" + name
    number = getattr(signal, name, None)
    if not isinstance(number, int):
        raise InputError("unknown signal %s" % name, verb="parse", obj="signal")
    return number


# --- systemd --------------------------------------------------------------------------------------

class Systemd(object):
    def __init__(self, module, params):
        self.module = module
        self.name = params["name"]
        self.bin = module.get_bin_path("systemctl", required=True)

    def argv(self, verb):
        return [self.bin, verb, self.name]

    def status(self):
        rc, out, _err = self.module.run_command([self.bin, "is-active", self.name])
        running = rc == 0
        rc, pid, _err = self.module.run_command([self.bin, "show", "--property", "MainPID", "--value", self.name])
        pids = [int(pid.strip())] if rc == 0 and pid.strip().isdigit() and int(pid.strip()) > 0 else []
        return dict(running=running, pids=pids if running else [], detail=out.strip())

    def plan(self, state, before):
        verb = dict(started=None if before["running"] else "start",
                    stopped="stop" if before["running"] else None,
                    restarted="restart",
                    reloaded="reload" if before["running"] else "start")[state]
        if verb is None:
            return []
        return [dict(step="systemctl %s %s" % (verb, self.name), argv=self.argv(verb))]

    def execute(self, steps):
        for step in steps:
            _run(self.module, step["argv"], "%s service %s" % (step["argv"][1], self.name))


# --- pm2 ------------------------------------------------------------------------------------------

def pm2_environ(pm2_home, extra=None):
    env = dict(extra or {})
    if pm2_home:
        env["PM2_HOME"] = pm2_home
    return env


def pm2_daemon_running(pm2_home):
    """Whether the PM2 daemon of this PM2_HOME runs (asking pm2 when it does not would start one)."""
    home = pm2_home or os.path.join(os.path.expanduser("~"), ".pm2")
    pid, problem = read_pidfile(os.path.join(home, "pm2.pid"))
    return problem is None and alive(pid)


def pm2_jlist(module, pm2_bin=None, pm2_home=None):
    """The apps of a PM2 daemon as parsed ``pm2 jlist`` JSON; [] when no daemon runs."""
    if not pm2_daemon_running(pm2_home):
        return []
    binary = pm2_bin or module.get_bin_path("pm2", required=True)
    argv = [binary, "jlist"]
    rc, out, err = module.run_command(argv, environ_update=pm2_environ(pm2_home))
    if rc != 0:
        raise CommandFailure("pm2 jlist exited with %d" % rc, verb="list", obj="PM2 apps", cmd=argv, rc=rc,
                             stdout=out, stderr=err)
    start = out.find("[")
    try:
        return json.loads(out[start:]) if start >= 0 else []
    except ValueError as exc:
        raise CommandFailure("pm2 jlist printed no JSON (%s)" % exc, verb="list", obj="PM2 apps", cmd=argv,
                             rc=rc, stdout=out, stderr=err)


def pm2_start_argv(binary, params):
    """argv to register and start an app that PM2 does not know yet."""
    name = params["name"]
    if params.get("ecosystem"):
        return [binary, "start", params["ecosystem"], "--only", name]
    if not params.get("script"):
        raise InputError("PM2 does not know %s; give script (or ecosystem) to start it" % name,
                         verb="start", obj="PM2 app %s" % name)
    argv = [binary, "start", params["script"], "--name", name]
    if params.get("chdir"):
        argv += ["--cwd", params["chdir"]]
    if params.get("interpreter"):
        argv += ["--interpreter", params["interpreter"]]
    if params.get("args"):
        argv += ["--"] + list(params["args"])
    return argv


class Pm2(object):
    def __init__(self, module, params):
        self.module = module
        self.params = params
        self.name = params["name"]
        self.home = params.get("pm2_home")
        self.bin = params.get("pm2_bin") or module.get_bin_path("pm2", required=True)

    def apps(self):
        return [a for a in pm2_jlist(self.module, self.bin, self.home) if a.get("name") == self.name]

    def status(self):
        apps = self.apps()
        online = sorted(a["pid"] for a in apps if (a.get("pm2_env") or {}).get("status") == "online" and a.get("pid"))
        statuses = sorted(set((a.get("pm2_env") or {}).get("status") for a in apps))
        return dict(running=bool(online), pids=online, registered=bool(apps),
                    detail=", ".join(s for s in statuses if s) or "not registered")

    def plan(self, state, before):
        name = self.name
        if state == "stopped":
            return [self._step([self.bin, "stop", name])] if before["running"] else []
        if state == "started" and before["running"]:
            return []
        if not before["registered"]:
            return [self._step(pm2_start_argv(self.bin, self.params))]
        update = ["--update-env"] if self.params.get("environment") else []
        if state == "restarted":
            return [self._step([self.bin, "restart", name] + update)]
        if state == "reloaded" and before["running"]:
            return [self._step([self.bin, "reload", name] + update)]
        return [self._step([self.bin, "start", name] + update)]

    def _step(self, argv):
        return dict(step=" ".join(argv[1:]), argv=argv)

    def _restarts(self):
        """(PM2's restart count summed over the app's instances, their statuses)."""
        apps = self.apps()
        count = sum(int((a.get("pm2_env") or {}).get("restart_time") or 0) for a in apps)
        return count, set((a.get("pm2_env") or {}).get("status") for a in apps)

    def execute(self, steps):
        env = pm2_environ(self.home, self.params.get("environment"))
        for step in steps:
            _run(self.module, step["argv"], "%s PM2 app %s" % (step["argv"][1], self.name), environ_update=env,
                 cwd=self.params.get("chdir"))
        if steps and steps[-1]["argv"][1] != "stop":
            self._baseline, _statuses = self._restarts()
            self._checked = time.monotonic()

    # A release that cannot start makes PM2 restart it over and over (then mark it errored): say so at
    # once instead of waiting for the whole wait_timeout. Asked at most every PM2_CRASH_CHECK_S seconds
    # (each question starts a pm2 process).
    PM2_CRASH_CHECK_S = 1.5
    PM2_CRASH_RESTARTS = 2

    def died(self):
        """Why the app will not come up (PM2 restarting it in a loop, or errored), or None."""
        if getattr(self, "_baseline", None) is None or time.monotonic() - self._checked < self.PM2_CRASH_CHECK_S:
            return getattr(self, "_died", None)
        self._checked = time.monotonic()
        count, statuses = self._restarts()
        if "errored" in statuses:
            self._died = "PM2 marked %s errored (it exits at start; see its PM2 log)" % self.name
        elif count - self._baseline >= self.PM2_CRASH_RESTARTS:
            self._died = "PM2 restarted %s %d times since this start: it exits at start (see its PM2 log)" % (
                self.name, count - self._baseline)
        return getattr(self, "_died", None)


# --- pidfile --------------------------------------------------------------------------------------

class Pidfile(object):
    """A process started detached, known only by its pidfile, verified by its /proc entry."""

    def __init__(self, module, params):
        self.module = module
        self.params = params
        self.name = params["name"]
        self.path = params["pidfile"]
        if not (params.get("program") or params.get("exe")):
            raise InputError("the pidfile manager needs program (a regex for /proc/<pid>/cmdline) and/or exe, "
                             "so that it never signals a process that is not %s" % self.name,
                             verb="validate", obj="options")
        self.stop_signal = signal_number(params["stop_signal"])
        self.reload_signal = signal_number(params["reload_signal"])
        self.child = None

    def status(self):
        pid, problem = read_pidfile(self.path)
        if problem == "missing":
            return dict(running=False, pids=[], pidfile="missing", detail="pidfile %s missing" % self.path)
        if problem:
            return dict(running=False, pids=[], pidfile="stale", detail="pidfile %s %s" % (self.path, problem),
                        stale=dict(path=self.path, pid=None, reason="pidfile %s" % problem))
        ok, reason, cmdline = verify_pid(pid, self.params.get("program"), self.params.get("exe"))
        if not ok:
            return dict(running=False, pids=[], pidfile="stale", detail="stale pidfile %s: %s" % (self.path, reason),
                        stale=dict(path=self.path, pid=pid, reason=reason, cmdline=cmdline))
        return dict(running=True, pids=[pid], pidfile="valid", detail="PID %d runs %s" % (pid, cmdline[:200]))

    def plan(self, state, before):
        pid = before["pids"][0] if before["pids"] else None
        signame = signal.Signals(self.stop_signal).name
        steps = []
        if state in ("stopped", "restarted") and pid:
            steps.append(dict(step="send %s to PID %d (verified %s), SIGKILL after %ss" % (
                signame, pid, self.name, self.params["stop_timeout"]), action="stop", pid=pid, argv=None))
        if state == "reloaded" and pid:
            return [dict(step="send %s to PID %d (verified %s)" % (signal.Signals(self.reload_signal).name, pid, self.name),
                         action="reload", pid=pid, argv=None)]
        if state == "restarted" or (state in ("started", "reloaded") and not pid):
            if before.get("stale"):
                steps.append(dict(step="replace stale pidfile %s (%s); that process is not signalled"
                                  % (self.path, before["stale"]["reason"]), action="unlink", argv=None))
            if not self.params.get("command"):
                raise InputError("the pidfile manager needs command to start %s" % self.name,
                                 verb="start", obj=self.name)
            steps.append(dict(step="start %s detached, pidfile %s" % (" ".join(self.params["command"]), self.path),
                              action="start", argv=list(self.params["command"])))
        return steps

    def execute(self, steps):
        for step in steps:
            getattr(self, "_" + step["action"])(step)

    def _stop(self, step):
        pid = step["pid"]
        # Re-verify right before signalling: the PID must still be the expected program.
        ok, reason, _cmdline = verify_pid(pid, self.params.get("program"), self.params.get("exe"))
        if not ok:
            raise SafetyRefusal("%s; not signalling it" % reason, verb="stop", obj=self.name)
        try:
            os.kill(pid, self.stop_signal)
        except OSError as exc:
            if exc.errno != 3:  # ESRCH: gone in between
                raise CommandFailure(to_native(exc), verb="signal", obj="PID %d" % pid)
        deadline = time.monotonic() + self.params["stop_timeout"]
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            ok, reason, _cmdline = verify_pid(pid, self.params.get("program"), self.params.get("exe"))
            if ok:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
            if alive(pid):
                raise CommandFailure("PID %d still runs after SIGKILL" % pid, verb="stop", obj=self.name)
        step["done"] = "stopped PID %d" % pid
        _unlink_if_pid(self.path, pid)

    def _reload(self, step):
        ok, reason, _cmdline = verify_pid(step["pid"], self.params.get("program"), self.params.get("exe"))
        if not ok:
            raise SafetyRefusal("%s; not signalling it" % reason, verb="reload", obj=self.name)
        os.kill(step["pid"], self.reload_signal)

    def _unlink(self, step):
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _start(self, step):
        params = self.params
        env = dict(os.environ)
        env.update(dict((to_native(k), to_native(v)) for k, v in (params.get("environment") or {}).items()))
        log = None
        if params.get("log_file"):
            log = open(params["log_file"], "ab")
        try:
            with open(os.devnull, "rb") as devnull_in:
                self.child = subprocess.Popen(  # argv list, no shell; detached into its own session
                    step["argv"], cwd=params.get("chdir"), env=env, stdin=devnull_in,
                    stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                    close_fds=True, start_new_session=True)
        except OSError as exc:
            raise CommandFailure(exc.strerror or to_native(exc), verb="start", obj=self.name, cmd=step["argv"])
        finally:
            if log:
                log.close()
        if params["write_pidfile"]:
            write_pidfile_atomic(self.path, self.child.pid)
        step["pid"] = self.child.pid

    def died(self):
        """Why the process this run started is gone, or None while it runs (or when none was started)."""
        if self.child is None or self.child.poll() is None:
            return None
        return "the process exited with rc %s after start%s" % (
            self.child.returncode, " (see %s)" % self.params["log_file"] if self.params.get("log_file") else "")

    def new_status(self, timeout):
        """Wait until the pidfile names a live, verified process (the one just started, when we wrote it)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.died():
                raise CommandFailure(self.died(), verb="start", obj=self.name, cmd=self.params.get("command"),
                                     rc=self.child.returncode)
            last = self.status()
            if last["running"]:
                return last
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if self.child is not None and self.child.poll() is None:
            # Our own child, never verified as the program: do not leave it behind unnamed.
            self.child.terminate()
        raise CommandFailure("no verified process after %ss: %s" % (timeout, last["detail"]), verb="start", obj=self.name,
                             cmd=self.params.get("command"))


def write_pidfile_atomic(path, pid):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".pidfile.", dir=directory)
    try:
        os.write(fd, ("%d\n" % pid).encode("ascii"))
        os.close(fd)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _unlink_if_pid(path, pid):
    current, _problem = read_pidfile(path)
    if current == pid:
        try:
            os.unlink(path)
        except OSError:
            pass


def _run(module, argv, what, **kwargs):
    rc, out, err = module.run_command(argv, **kwargs)
    if rc != 0:
        raise CommandFailure("%s exited with %d: %s" % (os.path.basename(argv[0]), rc, (err or out).strip()[-500:]),
                             verb=what.split(" ", 1)[0], obj=what.split(" ", 1)[1], cmd=argv, rc=rc, stdout=out, stderr=err)
    return out


# --- waiting --------------------------------------------------------------------------------------

def port_open(host, port, timeout=1.0):
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except (OSError, socket.error):
        return False
    sock.close()
    return True


def url_status(url, timeout=2.0):
    try:
        return open_url(url, timeout=timeout, validate_certs=False).getcode()
    except HTTPError as exc:
        return exc.code
    except (URLError, OSError, ValueError):
        return None


def wait_until(predicate, timeout, interval=0.2, abort=None):
    """Poll until ``predicate()``; False on timeout or as soon as ``abort()`` says the wait is pointless."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline or (abort is not None and abort()):
            return False
        time.sleep(interval)


def wait_ready(params, stopping=False, abort=None):
    """Wait for the port/url to answer (or, when stopping, for the port to close). Returns problems.

    ``abort`` returns a reason (the process we started died) that ends the wait early."""
    timeout = params["wait_timeout"]
    problems = []
    started = time.monotonic()
    if params.get("wait_port"):
        host, port = params["wait_host"], params["wait_port"]
        if stopping:
            if not wait_until(lambda: not port_open(host, port), timeout):
                problems.append("port %s:%d still open after %ss" % (host, port, timeout))
        elif not wait_until(lambda: port_open(host, port), timeout, abort=abort):
            problems.append("port %s:%d not answering after %ss" % (host, port, round(time.monotonic() - started, 1)))
    if params.get("wait_url") and not stopping and not problems:
        remaining = max(0.5, timeout - (time.monotonic() - started))
        seen = []
        if not wait_until(lambda: seen.append(url_status(params["wait_url"])) or seen[-1] in params["wait_status"],
                          remaining, abort=abort):
            last = seen[-1] if seen else None
            expected = "/".join(str(s) for s in params["wait_status"])
            problems.append("%s answered %s, expected %s" % (params["wait_url"], last, expected) if last is not None
                            else "%s gave no HTTP answer, expected %s" % (params["wait_url"], expected))
    return problems


# --- the module's entry point ---------------------------------------------------------------------

MANAGER_CLASSES = dict(systemd=Systemd, pm2=Pm2, pidfile=Pidfile)


def run(module, params=None):
    """Bring the service to ``params["state"]`` (``params`` default: the module's own; other modules
    pass a dict built from argument_spec() defaults to drive a service as one step of their own)."""
    params = module.params if params is None else params
    state = params["state"]
    manager = MANAGER_CLASSES[params["manager"]](module, params)
    before = manager.status()
    steps = manager.plan(state, before)
    result = dict(changed=bool(steps), manager=params["manager"], name=params["name"], state=state,
                  old_pids=before["pids"], new_pids=before["pids"], waited_s=0.0,
                  steps=[s["step"] for s in steps], commands=[s["argv"] for s in steps if s.get("argv")],
                  status_before=before["detail"])
    if before.get("stale"):
        result["stale_pidfile"] = before["stale"]
    if module.check_mode or not steps:
        result["status_after"] = before["detail"]
        if module._diff and steps:
            result["diff"] = dict(before=dict(running=before["running"], pids=before["pids"]),
                                  after=dict(running=state != "stopped", pids="(new)" if state != "stopped" else []))
        return result

    started = time.monotonic()
    manager.execute(steps)
    stopping = state == "stopped"
    if stopping:
        after = manager.status()
    elif isinstance(manager, Pidfile):
        after = manager.new_status(params["wait_timeout"])
    else:
        after = dict(manager.status())
        if not after["running"]:
            wait_until(lambda: after.update(manager.status()) or after["running"], params["wait_timeout"], 0.5,
                       abort=getattr(manager, "died", None))
    abort = getattr(manager, "died", None)
    problems = wait_ready(params, stopping=stopping, abort=abort)
    if abort is not None and abort():
        problems.insert(0, abort())
    if not stopping and not after["running"]:
        problems.insert(0, "not running after %s: %s" % (state, after["detail"]))
    if stopping and after["running"]:
        problems.insert(0, "still running: %s" % after["detail"])
    result.update(new_pids=after["pids"], waited_s=round(time.monotonic() - started, 2), status_after=after["detail"])
    if module._diff:
        result["diff"] = dict(before=dict(running=before["running"], pids=before["pids"]),
                              after=dict(running=after["running"], pids=after["pids"]))
    if problems:
        raise CommandFailure("; ".join(problems), verb=_verb(state), obj="service %s" % params["name"], **dict(
            (k, result[k]) for k in ("changed", "manager", "old_pids", "new_pids", "steps", "waited_s")))
    return result


def _verb(state):
    return dict(started="start", stopped="stop", restarted="restart", reloaded="reload")[state]
