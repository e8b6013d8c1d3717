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
  - ansible-core marks strategy plugins from outside ansible.builtin as deprecated; if a future version
    drops them, both behaviours must move into the playbooks.
author:
  - ReplyX platform team (@replyx)
version_added: 1.1.0
"""

import os
import re
from collections import deque

from ansible.executor.play_iterator import IteratingStates
from ansible.plugins.strategy.linear import StrategyModule as LinearStrategyModule

CANCEL_MESSAGE = "Cancelled by the operator (Ctrl-C in replyx-rollback) before this step started"


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


def cancel_requested():
    flag = os.environ.get("REPLYX_CANCEL_FILE")
    return bool(flag) and os.path.exists(flag)


def failing_copy(task):
    """The task, turned into a failure that says the run was cancelled (same uuid: results match it)."""
    new = task.copy()
    new.action = "ansible.builtin.fail"
    new.args = {"msg": CANCEL_MESSAGE}
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
        return super().run(iterator, play_context)

    def _queue_task(self, host, task, task_vars, play_context):
        if cancel_requested():
            iterator = self._replyx_iterator
            state = iterator.get_state_for_host(host.name) if iterator is not None else None
            if not in_recovery(state):
                task = failing_copy(task)
        return super()._queue_task(host, task, task_vars, play_context)

    def _host_of(self, address):
        """The inventory host whose name or ansible_host is address (the address itself when none is)."""
        for host in self._inventory.hosts.values():
            if address in (host.name, host.vars.get("ansible_host")):
                return host.name
        return address
