# -*- coding: utf-8 -*-
"""The rollback strategy: an unreachable delegated-to host fails the task instead of the controller."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from ansible_collections.replyx.rollback.plugins.strategy.linear import fail_unreachable_delegate

UNREACHABLE = {"unreachable": True, "changed": False,
               "msg": 'Task failed: Data could not be sent to remote host "10.77.0.22". Make sure this host can be reached over ssh'}
HOSTS = {"10.77.0.22": "be2"}


def result(data, delegate_to="{{ item.host }}"):
    return SimpleNamespace(task=SimpleNamespace(delegate_to=delegate_to), _return_data=copy.deepcopy(data))


@pytest.mark.parametrize("data, delegate_to, expect", [
    # delegated and unreachable: a failure naming the inventory host
    (UNREACHABLE, "be2", {"failed": True, "unreachable": False, "unreachable_delegate": "be2"}),
    # a loop: the unreachable item fails, the others stay as they were
    ({"results": [{"changed": True, "item": "be1"}, dict(UNREACHABLE, item="be2")]}, "{{ item }}",
     {"results": [{"changed": True, "item": "be1"},
                  dict(UNREACHABLE, item="be2", unreachable=False, failed=True, unreachable_delegate="be2")]}),
    # the loop's own result (no address in its message) names the items' unreachable hosts
    ({"unreachable": True, "msg": "All items completed", "results": [dict(UNREACHABLE, item="be2")]}, "{{ item }}",
     {"failed": True, "unreachable": False, "unreachable_delegate": "be2", "msg": "delegated host be2 is unreachable"}),
    # an address that is no inventory host is named as it is
    (dict(UNREACHABLE, msg='Data could not be sent to remote host "10.9.9.9"'), "x",
     {"failed": True, "unreachable": False, "unreachable_delegate": "10.9.9.9"}),
    # not delegated: the play host itself is unreachable, as with the built-in strategy
    (UNREACHABLE, None, {"unreachable": True}),
    (UNREACHABLE, "", {"unreachable": True}),
    # delegated, reachable: untouched, failed or not
    ({"changed": True}, "be1", {"changed": True}),
    ({"failed": True, "msg": "boom"}, "be1", {"failed": True, "msg": "boom"}),
])
def test_fail_unreachable_delegate(data, delegate_to, expect):
    got = fail_unreachable_delegate(result(data, delegate_to), lambda address: HOSTS.get(address, address))._return_data
    for key, value in expect.items():
        if key == "results":
            for got_item, want in zip(got["results"], value):
                assert {k: got_item.get(k) for k in want if k != "msg"} == {k: v for k, v in want.items() if k != "msg"}
        else:
            assert got.get(key) == value, (key, got)
    if expect.get("failed") and "unreachable_delegate" in expect:
        assert got["msg"].startswith("delegated host %s is unreachable" % expect["unreachable_delegate"])


def test_a_result_without_a_task_is_left_alone():
    raw = SimpleNamespace(_return_data=dict(UNREACHABLE))
    assert fail_unreachable_delegate(raw)._return_data == UNREACHABLE
