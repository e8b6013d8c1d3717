# -*- coding: utf-8 -*-
# Copyright: ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The linear strategy of the rollback plays: an unreachable delegated-to host fails the task instead of the
controller, and an operator's cancel (replyx-rollback, Ctrl-C) stops the run at the next safe point."""

from __future__ import annotations

DOCUMENTATION = r"""
name: linear
short_description: Linear, but a delegated-to host that cannot be reached fails the task
description:
  - Runs like P(ansible.builtin.linear#strategy).
  - With the built-in strategies, a task delegated to a host that cannot be reached marks the host the
    play runs for as unreachable. The rollback plays run on the controller (C(localhost)) and delegate
    every step to the hosts, so one backend whose link is cut mid-run would end the whole run at once,
    with neither the C(rescue) (put the touched hosts back) nor the C(always) (incident report, lock
    release) of the run's block.
  - With this strategy such a result is a failure of the task (its message names the host and the
    connection error, and C(unreachable_delegate) says which host), so the block's C(rescue) and C(always)
    run. A play host that cannot itself be reached is still unreachable, as with the built-in strategy.
  - Cancel at a safe point. When the file named by the E(REPLYX_CANCEL_FILE) environment variable exists
    (C(replyx-rollback) creates it on the first Ctrl-C), each task about to start in the main section of a
    block is replaced by a failure saying the run was cancelled; the running step finishes, tasks in
    C(rescue) and C(always) sections and handlers are never cancelled, so the rescue puts back what was
    touched and the C(always) section writes the report and releases the lock.
  - The same on a signal to C(ansible-playbook) itself. ansible-core's own handlers pass SIGINT and SIGTERM on
    to the workers, which kill the running module (a release checked out but never restarted, a step cut in
    half) and then the controller stops (SIGINT) or dies (SIGTERM) without the C(rescue) and C(always)
    sections. This strategy replaces them. The first SIGINT or SIGTERM only asks for the cancel above (the
    running step finishes, the next task of a main section fails saying which signal stopped the run); a
    second one is handled as ansible-core handles it (the workers are told, the run stops at once). A worker
    forked before it left the controller's process group (it calls setsid) gets a signal sent to the group
    too; it ignores the first one, as the controller decides.
  - ansible-core marks strategy plugins from outside ansible.builtin as deprecated; if a future version
    drops them, both behaviours must move into the playbooks.
author:
  - ReplyX platform team (@replyx)
version_added: 1.1.0
"""

import os
import re
import signal
import threading
from collections import deque

from ansible.executor.play_iterator import IteratingStates
from ansible.plugins.strategy.linear import StrategyModule as LinearStrategyModule

CANCEL_MESSAGE = "Cancelled by the operator (Ctrl-C in replyx-rollback) before this step started"
SIGNAL_MESSAGE = ("Cancelled by %s to ansible-playbook before this step started (the step before it finished; the "
                  "rescue, the report and the lock release still run)")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


ADDRESS = re.compile(r'remote host "([^"]+)"')


def fail_unreachable_delegate(task_result, host_of=lambda address: address):
    """Turn an unreachable delegated result (or loop item) into a failed one; returns the result.

    host_of maps the address in the connection error to the inventory host's name."""
    task = getattr(task_result, "task", None)
    if task is None or not getattr(task, "delegate_to", None):
        return task_result
    data = task_result._return_data  # pylint: disable=protected-access
    items = [item for item in (data.get("results") or []) if isinstance(item, dict)]
    named = []
    for item in items + [data]:  # the loop's items first: the loop's own result names no address
        if not item.get("unreachable"):
            continue
        found = ADDRESS.search(str(item.get("msg", "")))
        host = host_of(found.group(1)) if found else (named[0] if named else "")
        item["unreachable"] = False
        item["failed"] = True
        item["unreachable_delegate"] = str(host)
        item["msg"] = "delegated host %s is unreachable: %s" % (host or "(unknown)", item.get("msg", "")) \
            if found or not named else "delegated host %s is unreachable" % ", ".join(named)
        named.append(str(host))
    return task_result


class _FailingUnreachableDelegates(deque):
    """The strategy's result queue: results are converted as the strategy takes them."""

    def __init__(self, host_of):
        super().__init__()
        self.host_of = host_of

    def popleft(self):
        return fail_unreachable_delegate(super().popleft(), self.host_of)


def in_recovery(state):
    """True when the host is in a rescue or always section (at any depth) or running handlers."""
    while state is not None:
        if state.run_state in (IteratingStates.RESCUE, IteratingStates.ALWAYS, IteratingStates.HANDLERS):
            return True
        if state.run_state != IteratingStates.TASKS:
            return False
        state = state.tasks_child_state
    return False


class Interrupts:
    """SIGINT/SIGTERM to the controller: the first one is a cancel at the next safe point (an in-process flag, read
    with the cancel file), the second one goes to the handler that was there before (ansible-core's
    TaskQueueManager: it signals the workers, then raises KeyboardInterrupt for SIGINT and dies of SIGTERM).

    The flag outlives the play: every later play is cancelled too. A process forked from the controller (a worker
    before its setsid) inherits the handler and ignores the signal, which the controller got as well; once
    detached, the worker has ansible-core's own handlers, which the controller's second signal reaches."""

    def __init__(self, say=None):
        self.pid = None
        self.received = None  # the name of the first signal
        self.previous = {}
        self.say = say or _say

    def install(self):
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            return
        self.pid = os.getpid()
        for sig in SIGNALS:
            current = signal.getsignal(sig)
            if current != self.handle:  # pylint: disable=comparison-with-callable
                self.previous[sig] = current
                signal.signal(sig, self.handle)

    def handle(self, signum, frame):
        if os.getpid() != self.pid:
            return  # a child still in the controller's process group (a worker before its setsid): the controller decides
        if self.received is None:
            self.received = signal.Signals(signum).name
            self.say("\n[%s] cancelling at the next safe point: the running step finishes, the next one fails, then "
                     "the rescue, the report and the lock release run. Send the signal again to stop at once "
                     "(the lock and the report may be left behind).\n" % self.received)
            return
        previous = self.previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


def _say(text):
    # straight to the file descriptor: Display takes a lock the interrupted code may hold
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


INTERRUPTS = Interrupts()


def cancel_file_exists():
    flag = os.environ.get("REPLYX_CANCEL_FILE")
    return bool(flag) and os.path.exists(flag)


def cancel_requested(interrupts=None):
    """The message of the failure that replaces the next task, or '' when no cancel was asked for."""
    interrupts = INTERRUPTS if interrupts is None else interrupts
    if interrupts.received:
        return SIGNAL_MESSAGE % interrupts.received
    if cancel_file_exists():
        return CANCEL_MESSAGE
    return ""


def failing_copy(task, msg=CANCEL_MESSAGE):
    """The task, turned into a failure that says the run was cancelled (same uuid: results match it)."""
    new = task.copy()
    new.action = "ansible.builtin.fail"
    new.args = {"msg": msg}
    new._resolved_action = None  # pylint: disable=protected-access
    for attr, value in (("loop", None), ("loop_with", None), ("when", []), ("failed_when", []),
                        ("changed_when", []), ("until", []), ("ignore_errors", False), ("delegate_to", None),
                        ("register", None), ("retries", None), ("no_log", False)):
        setattr(new, attr, value)
    return new


class StrategyModule(LinearStrategyModule):
    def __init__(self, tqm):
        super().__init__(tqm)
        self._results = _FailingUnreachableDelegates(self._host_of)
        self._replyx_iterator = None

    def run(self, iterator, play_context):  # pylint: disable=arguments-differ
        self._replyx_iterator = iterator
        INTERRUPTS.install()  # after the TaskQueueManager's own handlers, which become the second signal's
        return super().run(iterator, play_context)

    def _queue_task(self, host, task, task_vars, play_context):
        cancelled = cancel_requested()
        if cancelled:
            iterator = self._replyx_iterator
            state = iterator.get_state_for_host(host.name) if iterator is not None else None
            if not in_recovery(state):
                task = failing_copy(task, cancelled)
        return super()._queue_task(host, task, task_vars, play_context)

    def _host_of(self, address):
        """The inventory host whose name or ansible_host is address (the address itself when none is)."""
        for host in self._inventory.hosts.values():
            if address in (host.name, host.vars.get("ansible_host")):
                return host.name
        return address
