"""Faults injected into real runs on the catalogue's lab: broken backups and WAL archives, a full disk, PostgreSQL
stopped or restarted mid-step, hosts that cannot be reached, two rollbacks at once, the control process killed
or interrupted, a downgrade failing half-way, a release that will not start. After each: rows lost (every
table, row count and per-column checksum), the lock, the report and every output grepped for every secret
(Case.finish). Faults that must be refused say so before anything changes; the others must leave the lab
consistent (the release running matches the schema, /health answers) and be recoverable by the tool."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import labutil
from tests.reliability.conftest import (APPROVALS, LAB_ROOT, LAYOUT, LOCK_FILE, ROOT, _tag, flat, kill_group, psql,
                                        reset_lab, wait_for)

pytestmark = pytest.mark.lab

HIGH = ("-e", "level=high", "-e", "target=widget_version", "-e", f"approvals={APPROVALS['high']}")
RESTORE = ("-e", f"approvals={APPROVALS['restore']}")
BACKUPS = LAB_ROOT / "postgres" / "backups"
# what a completed high rollback to widget_version changes on purpose: the revision, the dropped column
HIGH_CHANGES = {"allowed_changes": ("public.alembic_version.version_num",),
                "allowed_dropped": ("public.assistants.widget_version",),
                "files_may_change": ("backend_release", "backups")}


def _backup(lab, label: str, *extra: str) -> Path:
    proc = lab.playbook("backup.yml", "-e", f"backup_label={label}", *extra, verbose=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    found = sorted(BACKUPS.glob(f"*{label}*.manifest.json")) + \
        sorted((LAB_ROOT / "postgres" / "basebackups").glob(f"*{label}*.manifest.json"))
    assert found, f"no manifest for {label}"
    return found[-1]


def _drop_backup(manifest: Path) -> None:
    data = Path(str(manifest)[: -len(".manifest.json")])
    manifest.unlink(missing_ok=True)
    if data.is_dir():
        shutil.rmtree(data)
    else:
        data.unlink(missing_ok=True)


def _report(lab) -> str:
    reports = sorted(lab.artifacts.glob("incident-*.md"), key=lambda p: p.stat().st_mtime)
    assert reports, "no incident report"
    return flat(reports[-1].read_text())


def _consistent() -> tuple[str, str]:
    """The release running matches the schema, and the backend answers."""
    state = (_tag(LAYOUT.app_dir), psql("select version_num from alembic_version"))
    assert state in {("v1.1.0", "a1b2c3d4e5f6"), ("v1.0.0", "fb3228f45466")}, state
    assert wait_for(lambda: labutil.http_json(LAYOUT.backend_url + "/health")[0] == 200, timeout=60, step=1)
    return state


# --- backups and WAL: refused before anything changes ------------------------------------------------------

@pytest.mark.parametrize("damage", ["corrupt", "truncated", "checksum"])
def test_a_damaged_backup_is_refused_before_the_restore(baseline, case, damage):
    lab = baseline
    manifest = _backup(lab, f"rel-{damage}")
    dump = Path(str(manifest)[: -len(".manifest.json")])
    try:
        if damage == "corrupt":  # bytes flipped in the middle of the dump
            data = bytearray(dump.read_bytes())
            mid = len(data) // 2
            data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
            dump.write_bytes(bytes(data))
            tried = "restore.yml from a backup with 64 bytes flipped in the middle of the dump"
        elif damage == "truncated":
            dump.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
            tried = "restore.yml from a backup truncated to half its size"
        else:
            meta = json.loads(manifest.read_text())
            meta["sha256"] = "0" * 64
            manifest.write_text(json.dumps(meta))
            tried = "restore.yml from a backup whose manifest's sha256 does not match the dump"
        case.begin("fault", f"backup {damage}", tried, "refused before the lock: the backup fails verification")
        proc = lab.playbook("restore.yml", "-e", f"recovery_backup={manifest}", *RESTORE)
        out = flat(proc.stdout + proc.stderr)
        assert proc.returncode != 0
        assert ("sha256" in out or "checksum" in out) and dump.name in out, out[-3000:]
        case.finish(_error(out), refused_before_change=True)
    finally:
        _drop_backup(manifest)


def test_a_missing_wal_segment_is_named_before_a_pitr(baseline, case):
    lab = baseline
    manifest = _backup(lab, "rel-wal", "-e", "backup_kind=physical")
    archive = LAB_ROOT / "postgres" / "wal_archive"
    psql("select pg_logical_emit_message(false, 'replyx-reliability', 'wal'); select pg_switch_wal()")
    target = psql("select to_char(now() at time zone 'utc', 'YYYY-MM-DD HH24:MI:SS') || '+00'")
    psql("select pg_logical_emit_message(false, 'replyx-reliability', 'wal')")
    psql("select pg_switch_wal()")
    # the base backup's first segment (named by its .backup history file in the archive): the case
    history = sorted(archive.glob("*.backup"))
    assert history, "no backup history file in the archive"
    victim = archive / history[-1].name[:24]
    assert wait_for(victim.exists, timeout=30), f"{victim.name} was never archived"
    aside = victim.with_name(victim.name + ".aside")
    victim.rename(aside)
    try:
        case.begin("fault", "missing WAL segment",
                   f"pitr.yml to {target} with WAL segment {victim.name} removed from the archive",
                   "refused before the lock, naming the missing segment")
        proc = lab.playbook("pitr.yml", "-e", json.dumps({"recovery_target_time": target}), *RESTORE)
        out = flat(proc.stdout + proc.stderr)
        assert proc.returncode != 0
        assert victim.name in out, out[out.find("[ERROR]"):][:3000]
        case.finish(_error(out), refused_before_change=True)
    finally:
        aside.rename(victim)
        _drop_backup(manifest)


def _archiver() -> tuple[int, bool]:
    row = psql("select failed_count, coalesce(last_failed_time > coalesce(last_archived_time, 'epoch'), false) "
               "from pg_stat_archiver").split("|")
    return int(row[0]), row[1] in ("t", "True", "true")


def _archiving_caught_up() -> bool:
    """After a fault is lifted: a WAL switch, and the archiver's newest attempt is no longer a failure."""
    psql("select pg_logical_emit_message(false, 'replyx-reliability', 'wal')")
    psql("select pg_switch_wal()")
    time.sleep(1)
    return not _archiver()[1]


def test_broken_archiving_fails_preflight_naming_it(baseline, case):
    lab = baseline
    failed_before = _archiver()[0]
    case.begin("fault", "archiving broken", "archive_command set to `false`, a WAL switch, then preflight.yml",
               "preflight fails naming the failing archiver; nothing changed")
    psql("alter system set archive_command = 'false'")
    try:
        psql("select pg_reload_conf()")
        psql("select pg_logical_emit_message(false, 'replyx-reliability', 'wal')")
        psql("select pg_switch_wal()")
        assert wait_for(lambda: _archiver()[0] > failed_before, timeout=30, step=0.2), "the archiver did not fail"
        proc = lab.playbook("preflight.yml")
        out = flat(proc.stdout + proc.stderr)
        assert proc.returncode != 0
        assert "FAIL | required | Point-in-time recovery possible (WAL archiving, base backup)" in out
        assert "FAILING since " in out, out[-3000:]
    finally:
        psql("alter system reset archive_command")
        psql("select pg_reload_conf()")

    assert wait_for(_archiving_caught_up, timeout=90, step=0), "archiving did not recover"
    case.finish(_line(out, "FAIL | required | Point-in-time"), refused_before_change=True)


def test_a_full_wal_archive_is_named_and_leaves_no_partial_segment(baseline, case):
    """The archive's disk full: a 64 KiB tmpfs mounted over the WAL archive directory (a segment is 16 MiB).
    replyx_archive_wal.py fails on every try and leaves nothing in the archive (no partial segment, no
    temporary file); preflight fails naming the archiver and a physical backup is refused before it starts."""
    lab = baseline
    archive = LAB_ROOT / "postgres" / "wal_archive"
    basebackups = LAB_ROOT / "postgres" / "basebackups"
    manifests_before = sorted(p.name for p in basebackups.glob("*.manifest.json"))
    failed_before = _archiver()[0]
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0777", "tmpfs", str(archive)],
                           capture_output=True, text=True)
    assert mount.returncode == 0, f"cannot mount a small tmpfs over the archive: {mount.stderr}"
    try:
        case.begin("fault", "WAL archive disk full",
                   "a 64 KiB tmpfs over the WAL archive, a WAL switch, then preflight.yml and "
                   "backup.yml -e backup_kind=physical",
                   "preflight fails naming the failing archiver; the physical backup is refused before it starts; "
                   "no partial segment in the archive; nothing changed")
        psql("select pg_logical_emit_message(false, 'replyx-reliability', 'wal')")
        psql("select pg_switch_wal()")
        assert wait_for(lambda: _archiver()[0] > failed_before + 1, timeout=60, step=0.5), "the archiver did not fail"
        left = sorted(p.name for p in archive.iterdir())
        assert left == [], f"the failing archive_command left files in the archive: {left}"
        proc = lab.playbook("preflight.yml")
        out = flat(proc.stdout + proc.stderr)
        assert proc.returncode != 0
        assert "FAIL | required | Point-in-time recovery possible (WAL archiving, base backup)" in out, out[-3000:]
        backup = lab.playbook("backup.yml", "-e", "backup_kind=physical", "-e", "backup_label=rel-archive-full")
        refused = flat(backup.stdout + backup.stderr)
        assert backup.returncode != 0
        assert "WAL archiving is broken" in refused, refused[-3000:]
        assert sorted(p.name for p in basebackups.glob("*.manifest.json")) == manifests_before
        assert sorted(p.name for p in archive.iterdir()) == [], "a partial segment appeared in the archive"
    finally:
        subprocess.run(["umount", str(archive)], check=False)

    assert wait_for(_archiving_caught_up, timeout=90, step=0), "archiving did not recover once the archive had room again"
    case.finish(_line(out, "FAIL | required | Point-in-time")[:250] + " / " + _error(refused)[:250],
                refused_before_change=True)


def test_disk_full_during_a_backup(baseline, case, tmp_path):
    lab = baseline
    tiny = tmp_path / "tiny disk"
    tiny.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0777", "tmpfs", str(tiny)],
                           capture_output=True, text=True)
    assert mount.returncode == 0, f"cannot mount a small tmpfs: {mount.stderr}"
    try:
        case.begin("fault", "disk full during a backup", "backup.yml into a 64 KiB tmpfs (the dump needs more)",
                   "fails naming the full disk; no partial backup left; nothing else changed")
        proc = lab.playbook("backup.yml", "-e", json.dumps({"backup_dest": str(tiny), "backup_label": "rel-full"}))
        out = flat(proc.stdout + proc.stderr)
        assert proc.returncode != 0
        assert "No space left on device" in out or "no space" in out.lower(), out[-3000:]
        assert list(tiny.iterdir()) == [], f"partial backup left: {list(tiny.iterdir())}"
        case.finish(_error(out), refused_before_change=True)
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


# --- hosts and processes mid-run ---------------------------------------------------------------------------

def _inventory(tmp_path: Path, host: str, extra: str) -> str:
    inv = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventories" / "lab", inv)
    with open(inv / "host_vars" / f"{host}.yml", "a") as f:
        f.write("\n" + extra + "\n")
    return str(inv)


def test_a_host_unreachable_at_the_start_is_refused(baseline, case, tmp_path):
    lab = baseline
    inv = _inventory(tmp_path, "workers", "ansible_connection: ssh\nansible_host: 127.0.0.1\nansible_port: 1\n"
                                          "ansible_ssh_common_args: -o ConnectTimeout=3")
    case.begin("fault", "host unreachable (at the start)",
               "high rollback with the workers host behind an SSH port nobody listens on",
               "stops before the lock naming the unreachable host; nothing changed")
    proc = lab.playbook("rollback.yml", *HIGH, inventory=inv)
    out = flat(proc.stdout + proc.stderr)
    assert proc.returncode != 0
    assert "UNREACHABLE" in out and "workers" in out, out[-3000:]
    case.finish(_line(out, "UNREACHABLE!"), refused_before_change=True)


def test_a_host_unreachable_mid_run_is_rescued(baseline, case, tmp_path):
    """The one-machine lab cannot lose a network link: the backend host's interpreter stops answering (exit 255,
    the ssh code for a lost connection) once the lock is taken, so every later step on that host fails."""
    lab = baseline
    flag = tmp_path / "backend-gone"
    wrapper = tmp_path / "python-backend"
    wrapper.write_text(f"#!/bin/sh\nif [ -e '{flag}' ]; then echo 'ssh: connect to host backend port 22: "
                       f"Connection timed out' >&2; exit 255; fi\nexec '{labutil.VENV_BIN / 'python'}' \"$@\"\n")
    wrapper.chmod(0o755)
    inv = _inventory(tmp_path, "backend", f"ansible_python_interpreter: '{wrapper}'")
    case.begin("fault", "host unreachable (mid-run)",
               "high rollback; the backend host stops answering once the lock is taken",
               "the run fails and is rescued: lock released, report FAILED with escalation, no row lost")
    run = lab.popen("rollback.yml", *HIGH, inventory=inv)
    try:
        assert wait_for(LOCK_FILE.exists, timeout=300), "the run never took the lock"
        flag.touch()
        rc, out = lab.finish(run, timeout=600)
    finally:
        kill_group(run)
        flag.unlink(missing_ok=True)
    assert rc != 0
    report = _report(lab)
    assert "**Outcome:** FAILED" in report and "Escalation" in report, report[-2000:]
    _consistent()
    case.finish("exit %d; report: FAILED, escalated" % rc, refused_before_change=False, **HIGH_CHANGES)
    reset_lab(lab)


def _pg_mid_run(lab, action: str) -> tuple[int, str]:
    run = lab.popen("rollback.yml", *HIGH)
    try:
        assert wait_for(LOCK_FILE.exists, timeout=300), "the run never took the lock"
        ctl = lab.pg_ctl(action, "-m", "fast", "-w")
        assert ctl.returncode == 0, ctl.stderr
        rc, out = lab.finish(run, timeout=600)
    finally:
        kill_group(run)
        if lab.pg_ctl("status").returncode != 0:
            assert lab.pg_ctl("start", "-w", "-t", "60").returncode == 0
    return rc, out


def test_postgres_stopped_mid_step(baseline, case):
    lab = baseline
    case.begin("fault", "PostgreSQL stopped mid-step", "high rollback; `pg_ctl stop -m fast` once the lock is taken",
               "the run fails cleanly: lock released, report FAILED; once PostgreSQL is back no row is lost")
    rc, out = _pg_mid_run(lab, "stop")
    assert rc != 0
    assert "**Outcome:** FAILED" in _report(lab)
    assert not LOCK_FILE.exists()
    _consistent()
    case.finish(f"exit {rc}; report FAILED; {_error(out)}", refused_before_change=False,
                **HIGH_CHANGES)
    reset_lab(lab)


def test_postgres_restarted_mid_step(baseline, case):
    lab = baseline
    case.begin("fault", "PostgreSQL restarted mid-step", "high rollback; `pg_ctl restart -m fast` once the lock is taken",
               "either completes or fails cleanly and is rescued; lock released, report written, no row lost")
    rc, out = _pg_mid_run(lab, "restart")
    report = _report(lab)
    state = _consistent()
    outcome = "SUCCESS" if "**Outcome:** SUCCESS" in report else "FAILED"
    assert (rc == 0) == (outcome == "SUCCESS"), (rc, outcome)
    case.finish(f"exit {rc}; report {outcome}; backend {state[0]} at {state[1]}", refused_before_change=False,
                **HIGH_CHANGES)
    reset_lab(lab)


def test_two_rollbacks_at_once_exactly_one_runs(baseline, case):
    lab = baseline
    case.begin("fault", "two rollbacks at once", "two high rollbacks started together",
               "exactly one runs; the other is refused naming the holder; no row lost")
    runs = [lab.popen("rollback.yml", *HIGH), lab.popen("rollback.yml", *HIGH)]
    results = [lab.finish(r, timeout=600) for r in runs]
    codes = sorted(rc for rc, _ in results)
    assert codes[0] == 0, codes
    if codes[1] != 0:
        refused = flat(next(out for rc, out in results if rc != 0))
        assert "held by lead (run " in refused, refused[-3000:]
        outcome = f"one succeeded, one refused: {_error(refused)}"
    else:  # the second reached the lock after the first had released it: it must have found nothing to do
        reports = [flat(p.read_text()) for p in sorted(lab.artifacts.glob("incident-*.md"))]
        done = [r for r in reports if "alembic downgrade a1b2c3d4e5f6 -> fb3228f45466" in r
                and "already at the target" not in r]
        assert len(reports) == 2 and len(done) == 1, reports
        outcome = "the runs did not overlap at the lock: the first downgraded, the second found the target reached"
    assert _consistent() == ("v1.0.0", "fb3228f45466")
    case.finish(outcome, refused_before_change=False, **HIGH_CHANGES)
    reset_lab(lab)


def _interrupted(lab, sigs: tuple[int, ...]) -> tuple[dict, subprocess.Popen]:
    """A high rollback interrupted by `sigs` (0.3 s apart) once the code has been switched (the middle of the
    rollback)."""
    run = lab.popen("rollback.yml", *HIGH)
    try:
        assert wait_for(lambda: LOCK_FILE.exists() and _tag(LAYOUT.app_dir) != "v1.1.0" or run.poll() is not None,
                        timeout=300), "the code was never switched"
        assert run.poll() is None, "the run ended before it could be interrupted"
        held = json.loads(LOCK_FILE.read_text())
        for i, sig in enumerate(sigs):
            if i:
                time.sleep(0.3)
            kill_group(run, sig)
        lab.finish(run, timeout=120)
    finally:
        kill_group(run)
    return held, run


@pytest.mark.parametrize("sigs", [(signal.SIGKILL,), (signal.SIGINT,), (signal.SIGTERM,), (signal.SIGTERM, signal.SIGTERM)],
                         ids=["SIGKILL", "SIGINT", "SIGTERM", "SIGTERM-twice"])
def test_an_interrupted_run_is_reported_and_recovered(baseline, case, sigs):
    """SIGKILL (and a second SIGTERM, which ansible-core passes on to the running step) leaves the lock to a dead
    holder and the rollback half done; a first SIGINT/SIGTERM stops at the next safe point (the rescue puts back,
    the report is written, the lock released). Either way: a new run is never refused while planning, says who
    held the lock, how long and that the holder is gone, takes it over only when asked, completes the rollback
    (resuming a half-done one with the release it switched to), and its report records both runs. No row lost."""
    lab = baseline
    name = " then ".join(signal.Signals(sig).name for sig in sigs)
    case.begin("fault", f"control process {name} mid-run, then re-run",
               f"high rollback; {name} to ansible-playbook's process group after the code switch; re-run; re-run "
               "with takeover_stale_lock=true",
               "a first SIGINT/SIGTERM stops at the next safe point (rescue, report, lock release); otherwise the lock "
               "is reported (owner, age, holder gone) and taken over only when asked; the re-run completes, without "
               "-e stable_release; no row lost")
    held, run = _interrupted(lab, sigs)
    time.sleep(0.5)
    out = flat(run.log.read_text(errors="replace"))
    notes = [f"exit {run.returncode}", f"then backend {_tag(LAYOUT.app_dir)}, database at "
             f"{psql('select version_num from alembic_version')}"]
    if sigs[0] != signal.SIGKILL and len(sigs) == 1:  # a safe-point stop: the running step finished, then rescue
        assert f"Cancelled by {name} to ansible-playbook before this step started" in out, out[-3000:]
        assert not LOCK_FILE.exists(), "the lock was not released"
        report = _report(lab)
        assert "**Outcome:** FAILED" in report and f"Cancelled by {name}" in report, report[-3000:]
        notes.append("stopped at the next safe point, rescued, report written, lock released")
    # the plain re-run, as an operator types it first: never refused while planning (the running release may be the
    # target of the half-done run); only a lock left by a dead holder stops it
    plain = lab.playbook("rollback.yml", *HIGH)
    plain_out = flat(plain.stdout + plain.stderr)
    if plain.returncode == 0:
        resumed = plain
    else:
        assert "Failed to acquire rollback lock" in _error(plain_out), _error(plain_out)  # not a planning refusal
        assert LOCK_FILE.exists(), _error(plain_out)
        assert json.loads(LOCK_FILE.read_text()) == held
        assert f"held by lead (run {held['run_id']}, level high) since {held['acquired_at']} (held for " in plain_out, \
            plain_out[-3000:]
        assert f"holder PID {held['pid']} on {held['host']} is gone" in plain_out
        assert "set takeover_stale=true to take it over" in plain_out
        notes.append("lock left; plain re-run refused: " + _error(plain_out))
        resumed = lab.playbook("rollback.yml", *HIGH, "-e", "takeover_stale_lock=true")
    resumed_out = flat(resumed.stdout + resumed.stderr)
    assert resumed.returncode == 0, (notes, _error(resumed_out))
    assert _consistent() == ("v1.0.0", "fb3228f45466")
    report = _report(lab)
    assert "**Outcome:** SUCCESS" in report
    if any("lock left" in n for n in notes):
        assert f"Took over the lock of run {held['run_id']}" in report and "is gone" in report
        assert f"Earlier run {held['run_id']} (level high, lead) took the lock" in report
    if "Resuming:" in resumed_out:
        notes.append("the re-run resumed the half-done rollback")
    notes.append("the re-run completed (SUCCESS)")
    case.finish("; ".join(notes), refused_before_change=False, **HIGH_CHANGES)
    reset_lab(lab)


def test_a_switch_cut_in_half_is_finished_by_the_re_run(baseline, case):
    """The state a run leaves when it dies inside the code switch (the host lost power, the module was killed):
    the older release checked out, the running process still the newer code, nothing recorded in the release
    history, the newer release's migration scripts kept aside. The plain re-run plans without -e stable_release,
    says it resumes, restarts the checked-out release before the downgrade and validates clean."""
    lab = baseline
    case.begin("fault", "code switch cut in half, then re-run",
               "v1.0.0 checked out on the backend while the v1.1.0 process keeps serving (no restart, nothing in the "
               "release history), v1.1.0's scripts kept aside; then the plain high rollback",
               "the re-run reports the half-done switch, finishes it (restart, record), downgrades with the kept "
               "scripts and validates clean; no row lost")
    app, kept = LAYOUT.app_dir, LAB_ROOT / "backend" / "migrations"

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(app), *args], check=True, capture_output=True, text=True).stdout.strip()
    history_before = json.loads((LAB_ROOT / "backend" / "release_history.json").read_text())
    git("worktree", "prune")
    if kept.exists():
        git("worktree", "remove", "--force", str(kept))
    git("worktree", "add", "--force", "--detach", str(kept), git("rev-parse", "v1.1.0^{commit}"))
    git("checkout", "--force", "--quiet", "v1.0.0")
    proc = lab.playbook("rollback.yml", *HIGH)
    out = flat(proc.stdout + proc.stderr)
    assert proc.returncode == 0, _error(out)
    assert "Resuming: v1.0.0 is already checked out" in out, out[-3000:]
    assert "finish the switch to v1.0.0 an earlier run left unfinished" in out, out[-3000:]
    assert _consistent() == ("v1.0.0", "fb3228f45466")
    history = json.loads((LAB_ROOT / "backend" / "release_history.json").read_text())
    assert len(history) == len(history_before) + 1
    assert history[-1]["tag"] == "v1.0.0" and history[-1]["result"] == "rollback"
    assert history[-1]["rolled_back_from"] == "v1.1.0", history[-1]
    assert "**Outcome:** SUCCESS" in _report(lab)
    case.finish("exit 0; the plan said it resumes; the switch was finished (restart, recorded as a rollback from "
                "v1.1.0); downgraded with the kept scripts; report SUCCESS", refused_before_change=False, **HIGH_CHANGES)
    reset_lab(lab)


def test_a_downgrade_failing_half_way_is_rescued(baseline, case):
    """The step a1b2c3d4e5f6 -> fb3228f45466 runs DROP COLUMN assistants.widget_version, then updates alembic_version;
    a trigger makes that update fail, so the step fails after half of it ran."""
    lab = baseline
    psql("create function reliability_refuse() returns trigger language plpgsql as "
         "$$ begin raise exception 'reliability: the downgrade fails half-way'; end $$; "
         "create trigger reliability_half_way before update on alembic_version "
         "for each row execute function reliability_refuse()")
    try:
        case.begin("fault", "downgrade failing half-way",
                   "high rollback to widget_version; the step fails after its DROP COLUMN (a trigger refuses the "
                   "alembic_version update)",
                   "rescued: the step's transaction undone (column and data back), report FAILED with escalation, "
                   "lock released, no row lost")
        proc = lab.playbook("rollback.yml", *HIGH)
        out = flat(proc.stdout + proc.stderr)
        assert proc.returncode != 0
        report = _report(lab)
        assert "**Outcome:** FAILED" in report and "Step failed in phase migration" in report, report[-3000:]
        assert psql("select count(*) from information_schema.columns where table_name = 'assistants' "
                    "and column_name = 'widget_version'") == "1"
        assert _consistent() == ("v1.1.0", "a1b2c3d4e5f6")
        case.finish(f"exit {proc.returncode}; report FAILED; back on v1.1.0 at a1b2c3d4e5f6, widget_version kept; "
                    + _error(out), refused_before_change=False, files_may_change=("backend_release", "backups"))
    finally:
        psql("drop trigger if exists reliability_half_way on alembic_version; "
             "drop function if exists reliability_refuse()")
    reset_lab(lab)


def test_a_release_that_will_not_start_is_rescued(baseline, case):
    lab = baseline
    from tests.rollback.conftest import publish_release  # noqa: PLC0415

    def break_import(work: Path) -> None:
        main = work / "main.py"
        main.write_text("import replyx_missing_module  # broken build\n" + main.read_text())
    publish_release(LAB_ROOT / "repos" / "backend.git", "v1.1.1-broken", break_import, "broken build", base="v1.1.0")
    case.begin("fault", "release that will not start",
               "critical rollback to v1.1.1-broken (an import error at start)",
               "rescued to the release that ran before; report FAILED; lock released; no row lost")
    proc = lab.playbook("rollback.yml", "-e", "level=critical", "-e", "stable_release=v1.1.1-broken", "-e",
                        "backend_health_timeout=20", "-e", f"approvals={APPROVALS['critical']}")
    assert proc.returncode != 0
    assert _consistent() == ("v1.1.0", "a1b2c3d4e5f6")
    report = _report(lab)
    assert "**Outcome:** FAILED" in report and "Put back the pre-rollback state" in report, report[-3000:]
    assert "## Escalation" in report and "Level 1" in report, report[-3000:]
    assert labutil.http_json(f"http://127.0.0.1:{LAYOUT.backend_port}/health")[0] == 200
    case.finish(f"exit {proc.returncode}; back on v1.1.0; report FAILED", refused_before_change=False,
                files_may_change=("backups",))


def _error(out: str) -> str:
    """The refusal as Ansible prints it: from the last "[ERROR]:" to its "Origin:"."""
    i = out.rfind("[ERROR]:")
    if i < 0:
        i = out.rfind("FAILED!")
    if i < 0:
        return out[-300:]
    end = out.find(" Origin:", i)
    return out[i:end if end > 0 else i + 400][:400]


def _line(out: str, *words: str) -> str:
    """The output from the first of the words on (for the catalogue's outcome column)."""
    for word in words:
        i = out.find(word)
        if i >= 0:
            return out[i:i + 300]
    return out[-300:]
