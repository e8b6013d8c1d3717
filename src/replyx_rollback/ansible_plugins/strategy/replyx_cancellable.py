"""The linear strategy with a safe-point cancel, for replyx-rollback (Ctrl-C).

The CLI points REPLYX_CANCEL_FILE at a file it creates when the operator presses Ctrl-C. From then
on, every task about to start in the main section of a block (never in a rescue or always section,
never a handler) is replaced by a failure that says the run was cancelled. The step that is running
finishes; the next one fails; the block's rescue puts back what was touched and its always section
writes the incident report and releases the lock, as for any failed step."""
from __future__ import annotations

import os

from ansible.executor.play_iterator import IteratingStates
from ansible.plugins.strategy.linear import StrategyModule as LinearStrategyModule

DOCUMENTATION = """
name: replyx_cancellable
short_description: linear strategy that stops at the next task when replyx-rollback is cancelled
description:
  - The linear strategy. When the file named by the REPLYX_CANCEL_FILE environment variable exists, each
    task of a block's main section is replaced by a failure before it starts, so rescue and always run.
author: replyx.rollback
"""

CANCEL_MESSAGE = "Cancelled by the operator (Ctrl-C in replyx-rollback) before this step started"


def _in_recovery(state) -> bool:
    """True when the host is in a rescue or always section (at any depth) or running handlers."""
    while state is not None:
        if state.run_state in (IteratingStates.RESCUE, IteratingStates.ALWAYS, IteratingStates.HANDLERS):
            return True
        if state.run_state != IteratingStates.TASKS:
            return False
        state = state.tasks_child_state
    return False


def cancel_requested() -> bool:
    flag = os.environ.get("REPLYX_CANCEL_FILE")
    return bool(flag) and os.path.exists(flag)


class StrategyModule(LinearStrategyModule):
    def run(self, iterator, play_context):  # pylint: disable=arguments-differ
        self._replyx_iterator = iterator
        return super().run(iterator, play_context)

    def _queue_task(self, host, task, task_vars, play_context):
        if cancel_requested():
            iterator = getattr(self, "_replyx_iterator", None)
            state = iterator.get_state_for_host(host.name) if iterator is not None else None
            if not _in_recovery(state):
                task = _failing_copy(task)
        return super()._queue_task(host, task, task_vars, play_context)


def _failing_copy(task):
    new = task.copy()  # keeps the task's uuid: results are matched to it
    new.action = "ansible.builtin.fail"
    new.args = {"msg": CANCEL_MESSAGE}
    new._resolved_action = None  # pylint: disable=protected-access
    for attr, value in (("loop", None), ("loop_with", None), ("when", []), ("failed_when", []),
                        ("changed_when", []), ("until", []), ("ignore_errors", False), ("delegate_to", None),
                        ("register", None), ("retries", None), ("no_log", False)):
        setattr(new, attr, value)
    return new
