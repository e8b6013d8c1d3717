"""replyx-rollback: the rollback playbooks as commands, run through ansible-runner.

  replyx-rollback plan high --target widget_version          # check mode: the plan, nothing changes
  replyx-rollback run high --target widget_version --approval lead:team_lead:INC-7 --approval dba:executive:INC-7
  replyx-rollback run critical --recovery pitr --recovery-target-time '2026-11-24 05:40:00+00' --approval ...
  replyx-rollback restore --backup <manifest> [--mode tables --tables users,dialogs] --approval ... --approval ...
  replyx-rollback restore --backup <manifest> --method physical ...   # auto (default) | logical | physical
  replyx-rollback pitr --target-time '2026-11-24 05:40:00+00' --approval ... --approval ...
  replyx-rollback triage | validate | preflight | backup | lab-status
  replyx-rollback approve --digest <plan digest> --key ~/.ssh/id_ed25519 -o alice.sig   # an approver signs the plan
  replyx-rollback run high --target widget_version --signature alice.sig --signature bob.sig

Exit codes: 0 success, 1 failed (not put back: escalate), 2 usage error, 3 refused before any change,
4 hosts unreachable, 5 rollback failed and rescued, 6 validation failed, 130 cancelled (Ctrl-C).
Ctrl-C stops at the next safe point (rescue, report and lock release still run); a second Ctrl-C kills.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from replyx_rollback import __version__
from replyx_rollback.runner import EXIT_CODES, EXIT_USAGE, PROJECT_ENV, UsageError, run_playbook

LEVELS = ("critical", "high", "medium", "low", "auto")
COMPONENTS = ("backend", "workers", "config", "dependencies", "worker_config", "indexes")
RECOVERIES = ("none", "restore", "pitr")
RESTORE_MODES = ("full", "tables", "schema_only")
RESTORE_METHODS = ("auto", "logical", "physical")  # module_utils/_policy.py RESTORE_METHODS (tests/tooling/test_cli.py)
PROCEDURES = {"triage": "triage.yml", "validate": "validate.yml", "preflight": "preflight.yml",
              "backup": "backup.yml", "lab-status": "lab_status.yml"}


def _approval(text: str) -> str:
    parts = text.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError(f"approval {text!r} must be name:role[:ticket]")
    return text


# The namespace of an approval's signature (ssh-keygen -Y sign -n): the plan checks it (module_utils/_signatures.py).
SIGNATURE_NAMESPACE = "replyx-rollback"


def _digest(text: str) -> str:
    value = text.strip().lower()
    if value.startswith("sha256:"):
        value = value[len("sha256:"):]
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise argparse.ArgumentTypeError(
            f"digest {text!r} must be the 64 hex digits the plan prints after 'Plan digest:' "
            "(replyx-rollback plan ... or --check shows it)")
    return value


def _signature_file(text: str) -> str:
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.exists(path):
        raise argparse.ArgumentTypeError(f"signature {text!r} not found (a .sig file from replyx-rollback approve, "
                                         "or a directory of them)")
    return path


def _extra_var(text: str) -> dict:
    """-e key=value (repeatable), -e '{"json": 1}' or -e @file.yml/json, as ansible-playbook takes them."""
    text = text.strip()
    if text.startswith("@"):
        import yaml  # noqa: PLC0415

        try:
            with open(text[1:], encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"extra vars file {text[1:]!r}: {exc.strerror}") from exc
        if not isinstance(data, dict):
            raise argparse.ArgumentTypeError(f"extra vars file {text[1:]!r} must hold a mapping")
        return data
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"extra vars {text!r}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise argparse.ArgumentTypeError("extra vars JSON must be an object")
        return data
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"extra var {text!r} must be key=value, a JSON object or @file")
    return {key.strip(): value}


def _common(p: argparse.ArgumentParser, sub: bool = True) -> None:
    """The options every command takes, before or after the command's name (a subcommand's own
    defaults are suppressed so that they do not overwrite what was given before it)."""
    def dflt(value):
        return argparse.SUPPRESS if sub else value

    p.add_argument("-i", "--inventory", default=dflt(None), 
                   help="inventory path, relative to the current directory or the project "
                   "(default: inventories/lab)")
    p.add_argument("--project-dir", default=dflt(None), 
                   help=f"the replyx.rollback checkout (playbooks/, roles/, ansible.cfg); "
                   f"default: ${PROJECT_ENV}, else the current directory or a parent, else the source tree")
    p.add_argument("-e", "--extra-vars", action="append", type=_extra_var, default=dflt([]), metavar="KEY=VALUE",
                   help="extra variable for the playbook (repeatable; also JSON or @file)")
    p.add_argument("-l", "--limit", default=dflt(None), help="limit the run to these hosts or groups (ansible --limit)")
    p.add_argument("--json", action="store_true", default=dflt(False), 
                   help="print one JSON object with the result (no progress)")
    p.add_argument("--keep-artifacts", default=dflt(None), metavar="DIR", 
                   help="copy ansible-runner's artifacts (events, stdout) to DIR")
    p.add_argument("-v", "--verbose", action="count", default=dflt(0))


def _signatures(s: argparse.ArgumentParser) -> None:
    s.add_argument("--signature", action="append", type=_signature_file, default=[], metavar="FILE.sig",
                   help="a signed approval of the plan's digest (replyx-rollback approve; repeat for two; a "
                   "directory stands for its .sig files)")
    s.add_argument("--ticket", help="the incident the signed approvals are for (recorded with them)")


def _approvals(s: argparse.ArgumentParser) -> None:
    s.add_argument("--approval", action="append", type=_approval, default=[], metavar="NAME:ROLE[:TICKET]",
                   help="an approver, typed (repeat for two; only where the inventory allows unsigned approvals)")
    _signatures(s)
    s.add_argument("--check", action="store_true", help="the plan only, nothing changes")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="replyx-rollback", description=__doc__.splitlines()[0],
                                epilog="exit codes: " + "; ".join(f"{k} {v}" for k, v in sorted(EXIT_CODES.items())),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"replyx-rollback {__version__}")
    _common(p, sub=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, helptext in (("run", "execute a rollback"), ("plan", "show the plan of a rollback (check mode)")):
        s = sub.add_parser(name, help=helptext)
        _common(s)
        s.add_argument("level", choices=LEVELS)
        s.add_argument("--target", help="migration target: a named target, a revision id, -1, base")
        s.add_argument("--component", choices=COMPONENTS)
        s.add_argument("--approval", action="append", type=_approval, default=[], metavar="NAME:ROLE[:TICKET]",
                       help="an approver, typed (only where the inventory allows unsigned approvals)")
        _signatures(s)
        s.add_argument("--stable-release", help="code release to roll back to (default: last known good)")
        s.add_argument("--window", choices=["now"], help="execute a planned (low) rollback now")
        s.add_argument("--recovery", choices=RECOVERIES, help="critical only: also recover the database "
                       "(restore needs --recovery-backup, pitr needs --recovery-target-time)")
        s.add_argument("--recovery-backup", metavar="MANIFEST", help="backup manifest for --recovery restore")
        s.add_argument("--restore-method", choices=RESTORE_METHODS, help="for --recovery restore: auto (default: "
                       "physical for a verified physical base backup with its WAL archived), logical or physical")
        s.add_argument("--recovery-target-time", metavar="TIME", help="'YYYY-MM-DD HH:MM:SS+00' for --recovery pitr")
        s.add_argument("--takeover-stale-lock", action="store_true",
                       help="take over the lock of a run that died (its PID is gone or its TTL expired)")
    s = sub.add_parser("restore", help="restore the database from a verified backup (playbooks/restore.yml)")
    _common(s)
    s.add_argument("--backup", required=True, metavar="MANIFEST", help="the backup's manifest (pg_backup)")
    s.add_argument("--mode", choices=RESTORE_MODES, default=None, help="full (default), tables or schema_only")
    s.add_argument("--tables", help="comma-separated tables for --mode tables")
    s.add_argument("--method", choices=RESTORE_METHODS, default=None,
                   help="auto (default: physical when --backup is a verified physical base backup whose WAL is "
                        "archived and --mode is full, else logical), logical (pg_restore) or physical (the base "
                        "backup put back, WAL replayed to its end point); the plan says which and why")
    _approvals(s)
    s = sub.add_parser("pitr", help="recover the database to a point in time (playbooks/pitr.yml)")
    _common(s)
    s.add_argument("--target-time", required=True, metavar="TIME", help="'YYYY-MM-DD HH:MM:SS+00'")
    _approvals(s)
    for name in PROCEDURES:
        s = sub.add_parser(name, help=f"run playbooks/{PROCEDURES[name]}")
        _common(s)
    s = sub.add_parser("approve", help="sign a plan's digest with your SSH key: the approval the run takes",
                       description="Sign the digest of a rollback plan (the 'Plan digest:' line of replyx-rollback "
                       f"plan or --check) with ssh-keygen -Y sign -n {SIGNATURE_NAMESPACE}, and write the signature "
                       "file to give to the operator (replyx-rollback run ... --signature FILE). Needs no inventory "
                       "and runs nothing else.")
    s.add_argument("--digest", required=True, type=_digest, help="the plan's digest (64 hex digits)")
    s.add_argument("--key", required=True, metavar="KEY",
                   help="your SSH private key (or its .pub with the key in ssh-agent), e.g. ~/.ssh/id_ed25519")
    s.add_argument("-o", "--output", metavar="FILE.sig",
                   help="where to write the signature (default: approval-<first 12 digits of the digest>.sig here)")
    s.add_argument("--allowed-signers", metavar="FILE",
                   help="check the signature at once against this allowed_signers file (with --principal)")
    s.add_argument("--principal", help="your name in allowed_signers (to check the signature at once)")
    return p


def approve(args) -> int:
    """replyx-rollback approve: ssh-keygen -Y sign over a file holding the digest (argv, no shell)."""
    keygen = shutil.which("ssh-keygen")
    if not keygen:
        print("replyx-rollback: error: ssh-keygen not found (OpenSSH 8.2 or later signs approvals)", file=sys.stderr)
        return EXIT_USAGE
    key = os.path.expanduser(args.key)
    if not os.path.exists(key):
        print(f"replyx-rollback: error: key {args.key!r} not found", file=sys.stderr)
        return EXIT_USAGE
    output = os.path.abspath(args.output or f"approval-{args.digest[:12]}.sig")
    if args.principal and not args.allowed_signers or args.allowed_signers and not args.principal:
        print("replyx-rollback: error: --allowed-signers and --principal go together", file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="replyx-approve-") as tmp:
        message = os.path.join(tmp, "plan.digest")
        with open(message, "w", encoding="ascii") as fh:
            fh.write(args.digest + "\n")
        # a passphrase is asked on the terminal (not stderr); stderr only names the temporary files
        proc = subprocess.run([keygen, "-Y", "sign", "-n", SIGNATURE_NAMESPACE, "-f", key, message],
                              stderr=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0 or not os.path.exists(message + ".sig"):
            print(f"replyx-rollback: error: ssh-keygen -Y sign failed (exit {proc.returncode}: "
                  f"{proc.stderr.strip() or 'no message'}); is {args.key} your private key (or its .pub with the key "
                  "in ssh-agent)?", file=sys.stderr)
            return 1
        if args.allowed_signers:
            with open(message, "rb") as fh:
                check = subprocess.run([keygen, "-Y", "verify", "-f", os.path.expanduser(args.allowed_signers),
                                        "-I", args.principal, "-n", SIGNATURE_NAMESPACE, "-s", message + ".sig"],
                                       stdin=fh, capture_output=True, text=True, check=False)
            if check.returncode != 0:
                print(f"replyx-rollback: error: the signature does not verify for {args.principal} against "
                      f"{args.allowed_signers}: {(check.stdout + check.stderr).strip()}", file=sys.stderr)
                return 1
            print((check.stdout + check.stderr).strip())
        shutil.move(message + ".sig", output)
    print(f"approval written: {output}")
    print(f"it approves the plan with digest {args.digest} and nothing else; give it to the operator, who runs: "
          f"replyx-rollback run ... --signature {os.path.basename(output)}")
    return 0


def _request(args) -> tuple[str, dict, bool]:
    """(playbook, extra vars, check mode) of the command."""
    if args.command in PROCEDURES:
        return PROCEDURES[args.command], {}, False
    extravars: dict = {}
    if args.command == "restore":
        extravars["recovery_backup"] = args.backup
        if args.mode:
            extravars["restore_mode"] = args.mode
        if args.tables:
            extravars["restore_tables"] = args.tables
        if args.method:
            extravars["restore_method"] = args.method
        playbook, check = "restore.yml", args.check
    elif args.command == "pitr":
        extravars["recovery_target_time"] = args.target_time
        playbook, check = "pitr.yml", args.check
    else:
        playbook, check = "rollback.yml", args.command == "plan"
        extravars["level"] = args.level
        for key in ("target", "component", "window", "stable_release", "recovery", "recovery_backup",
                    "recovery_target_time", "restore_method"):
            if getattr(args, key):
                extravars[key] = getattr(args, key)
        if args.takeover_stale_lock:
            extravars["takeover_stale_lock"] = True
    if args.approval:
        extravars["approvals"] = ",".join(args.approval)
    if args.signature:
        extravars["approval_signatures"] = list(args.signature)
    if args.ticket:
        extravars["ticket"] = args.ticket
    return playbook, extravars, check


def _summary(result) -> list[str]:
    hosts = result.hosts or {}
    lines = [f"result: {result.outcome} (exit {result.exit_code}: {EXIT_CODES.get(result.exit_code, 'failed')})"]
    lines.append("hosts: ok {} | failed {} | unreachable {}".format(
        ", ".join(hosts.get("ok", [])) or "-", ", ".join(hosts.get("failed", [])) or "-",
        ", ".join(hosts.get("unreachable", [])) or "-"))
    for host, msg in result.unreachable.items():
        lines.append(f"unreachable: {host}: {msg}")
    for w in result.warnings:
        lines.append(f"warning: {w}")
    for failure in result.failed_tasks[-3:]:
        lines.append(f"failed: {failure['task']} on {failure['host']}: {failure['msg']}")
    st = result.state
    if st.get("rescue"):
        lines.append(f"rescue: {st['rescue']}")
    if result.seconds_to_restore is not None:
        lines.append(f"service restored after {result.seconds_to_restore:.0f} s (from the command's start)")
    lines.append(f"elapsed: {result.elapsed_s:.1f} s")
    if result.plan:
        lines.append(f"plan: {result.plan}")
    digest = (result.plan_info or {}).get("digest")
    if digest and not (result.plan_info or {}).get("execute"):
        lines.append(f"plan digest: {digest} (each approver: replyx-rollback approve --digest {digest} --key <ssh key> "
                     "-o <name>.sig)")
    if result.report:
        lines.append(f"incident report: {result.report}")
    if result.cancelled and not result.report:
        lines.append("cancelled before the run record was opened: nothing was changed, no report")
    if result.forced:
        lines.append("killed: check the lock (a stale lock is taken over with --takeover-stale-lock) and the hosts")
    if result.artifacts:
        lines.append(f"artifacts: {result.artifacts}")
    return lines


def _check(parser: argparse.ArgumentParser, args) -> None:
    """Combinations the options alone can refuse, before anything runs (exit 2)."""
    if args.command in ("run", "plan") and args.recovery not in (None, "none"):
        if args.level != "critical":
            parser.error(f"--recovery {args.recovery} is only for level critical (got {args.level})")
        if args.recovery == "restore" and not args.recovery_backup:
            parser.error("--recovery restore needs --recovery-backup MANIFEST")
        if args.recovery == "pitr" and not args.recovery_target_time:
            parser.error("--recovery pitr needs --recovery-target-time 'YYYY-MM-DD HH:MM:SS+00'")
    if args.command == "restore" and args.mode == "tables" and not args.tables:
        parser.error("--mode tables needs --tables a,b (the tables whose data to restore)")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "approve":
        return approve(args)
    _check(parser, args)
    playbook, extravars, check = _request(args)
    for extra in args.extra_vars:
        extravars.update(extra)
    tty = sys.stdout.isatty() and not args.json
    printer = None if args.json else (lambda line: print(line, flush=True))
    if not args.json:
        shown = {k: v for k, v in extravars.items() if k != "approvals"}
        print(f"replyx-rollback: {playbook} {'(check mode) ' if check else ''}{shown or ''}", flush=True)
    try:
        result = run_playbook(playbook, extravars=extravars, inventory=args.inventory, check=check,
                              limit=args.limit, verbosity=args.verbose, on_progress=printer,
                              keep_artifacts=args.keep_artifacts, project_dir=args.project_dir, tty=tty)
    except UsageError as exc:
        print(f"replyx-rollback: error: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"exit_code": EXIT_USAGE, "exit_meaning": EXIT_CODES[EXIT_USAGE], "error": str(exc)}))
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
        return result.exit_code
    print("\n" + "\n".join(_summary(result)), flush=True)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
