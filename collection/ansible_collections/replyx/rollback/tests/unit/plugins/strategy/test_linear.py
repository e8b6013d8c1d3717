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


# --- SIGINT/SIGTERM to ansible-playbook: the first cancels at the next safe point, the second stops at once -------

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from ansible_collections.replyx.rollback.plugins.strategy import linear  # noqa: E402


@pytest.fixture
def handlers():
    """Put back this process's SIGINT/SIGTERM handlers after a test installed its own."""
    saved = {sig: signal.getsignal(sig) for sig in linear.SIGNALS}
    yield
    for sig, old in saved.items():
        signal.signal(sig, old)


def installed(previous):
    """An Interrupts installed over `previous` (ansible-core's TaskQueueManager handler in a real run)."""
    for sig in linear.SIGNALS:
        signal.signal(sig, previous)
    said = []
    interrupts = linear.Interrupts(say=said.append)
    interrupts.install()
    return interrupts, said


@pytest.mark.parametrize("sig", linear.SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_the_first_signal_only_asks_for_the_cancel_and_the_second_goes_to_ansible(handlers, sig):
    seen = []
    interrupts, said = installed(lambda signum, frame: seen.append(signum))
    assert signal.getsignal(sig) == interrupts.handle
    assert linear.cancel_requested(interrupts) == ""
    os.kill(os.getpid(), sig)  # a real signal: the handler runs in this (main) thread
    assert seen == [] and interrupts.received == signal.Signals(sig).name
    assert "cancelling at the next safe point" in said[0] and "again to stop at once" in said[0]
    message = linear.cancel_requested(interrupts)
    assert message.startswith("Cancelled by %s to ansible-playbook before this step started" % signal.Signals(sig).name)
    os.kill(os.getpid(), sig)
    assert seen == [sig] and len(said) == 1  # ansible-core's handler: workers told, KeyboardInterrupt / death


def test_installing_twice_keeps_the_handler_that_was_there_first(handlers):
    seen = []
    interrupts = installed(lambda signum, frame: seen.append(signum))[0]
    interrupts.install()  # the next play's strategy
    assert interrupts.previous[signal.SIGTERM] != interrupts.handle
    interrupts.handle(signal.SIGTERM, None)
    interrupts.handle(signal.SIGTERM, None)
    assert seen == [signal.SIGTERM]


def test_a_forked_child_ignores_the_signal_its_process_group_got(handlers):
    """A worker between fork and setsid still shares the controller's process group and handler."""
    seen = []
    interrupts, said = installed(lambda signum, frame: seen.append(signum))
    interrupts.pid = os.getpid() + 1  # as seen from the child: the handler was installed by another process
    interrupts.handle(signal.SIGINT, None)
    interrupts.handle(signal.SIGINT, None)
    assert interrupts.received is None and seen == [] and said == []


def test_a_second_signal_with_the_default_handler_before_stops_the_process(handlers, monkeypatch):
    killed, reset = [], []
    interrupts = installed(signal.SIG_DFL)[0]
    monkeypatch.setattr(linear.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    monkeypatch.setattr(linear.signal, "signal", lambda sig, h: reset.append((sig, h)))
    interrupts.handle(signal.SIGTERM, None)
    assert killed == []
    interrupts.handle(signal.SIGTERM, None)
    assert reset == [(signal.SIGTERM, signal.SIG_DFL)] and killed == [(os.getpid(), signal.SIGTERM)]


def test_the_cancel_file_of_replyx_rollback_still_cancels(monkeypatch, tmp_path):
    flag = tmp_path / "cancel-requested"
    monkeypatch.setenv("REPLYX_CANCEL_FILE", str(flag))
    interrupts = linear.Interrupts(say=lambda text: None)
    assert linear.cancel_requested(interrupts) == ""
    flag.touch()
    assert linear.cancel_requested(interrupts) == linear.CANCEL_MESSAGE
    interrupts.received = "SIGTERM"  # a signal names itself rather than the CLI's Ctrl-C
    assert linear.cancel_requested(interrupts).startswith("Cancelled by SIGTERM")


def test_the_failing_copy_says_why():
    class FakeTask(SimpleNamespace):
        def copy(self):
            return FakeTask(**vars(self))
    task = FakeTask(action="ansible.builtin.command", args={"cmd": "true"}, when=["x"], register="out", _uuid="u1")
    copy_ = linear.failing_copy(task, "Cancelled by SIGINT to ansible-playbook")
    assert copy_.action == "ansible.builtin.fail" and copy_.args == {"msg": "Cancelled by SIGINT to ansible-playbook"}
    assert copy_.when == [] and copy_.register is None and copy_._uuid == "u1" and task.action == "ansible.builtin.command"
    assert linear.failing_copy(task).args == {"msg": linear.CANCEL_MESSAGE}


# A real ansible-playbook run with the strategy: a step that is running when the signal comes finishes, the next
# one is failed, rescue and always run (the rollback's put-back, report and lock release).
PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  strategy: replyx.rollback.linear
  tasks:
    - block:
        - name: Running step
          ansible.builtin.shell: "touch {d}/started; sleep 4; touch {d}/step-finished"
        - name: Next step
          ansible.builtin.file: {{path: "{d}/next-step", state: touch}}
      rescue:
        - name: Put back
          ansible.builtin.file: {{path: "{d}/rescued", state: touch}}
      always:
        - name: Report and release the lock
          ansible.builtin.file: {{path: "{d}/always", state: touch}}
"""


def _ansible_playbook():
    found = Path(sys.executable).parent / "ansible-playbook"
    if not found.is_file():
        pytest.skip("ansible-playbook is not beside this Python")
    return str(found)


def _run(tmp_path, sigs):
    play = tmp_path / "play.yml"
    play.write_text(PLAYBOOK.format(d=tmp_path))
    collections = Path(__file__).resolve().parents[7]  # .../collection (holding ansible_collections)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_DEPRECATION_WARNINGS="0",
               ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    env.pop("REPLYX_CANCEL_FILE", None)
    proc = subprocess.Popen([_ansible_playbook(), "-i", "localhost,", "-c", "local", "-e",
                             "ansible_python_interpreter=" + sys.executable, str(play)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "slow"
            time.sleep(0.05)
        for sig in sigs:
            os.killpg(proc.pid, sig)  # the whole process group, as a terminal's Ctrl-C or a service manager does
            time.sleep(0.3)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out, {p.name for p in tmp_path.iterdir()}


@pytest.mark.parametrize("sig", linear.SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_playbook_finishes_the_step_then_rescue_and_always_run(tmp_path, sig):
    rc, out, files = _run(tmp_path, [sig])
    name = signal.Signals(sig).name
    assert "step-finished" in files, out  # the running step was not killed
    assert "next-step" not in files, out
    assert {"rescued", "always"} <= files, out
    assert "Cancelled by %s to ansible-playbook before this step started" % name in out
    assert rc == 0, out  # the rescue handled the failure (the rollback's rescue fails the run itself)


@pytest.mark.parametrize("sig", linear.SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_stops_the_playbook_at_once(tmp_path, sig):
    rc, out, files = _run(tmp_path, [sig, sig])
    assert "always" not in files and "next-step" not in files, out
    assert rc != 0, out
