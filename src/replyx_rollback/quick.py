"""The plan's "Quick Commands" (emergency aliases) as Fabric tasks, safe by construction.

  replyx-quick health                 # curl -f http://localhost:8000/health
  replyx-quick db-check               # psql $DATABASE_URL -c 'SELECT 1;'   (URL read from the app's .env)
  replyx-quick restart                # restart backend and bot manager (PM2 or systemd), never pkill
  replyx-quick logs [-n 50]           # tail of the backend log
  replyx-quick --host deploy@api1 --host deploy@api2 health   # the same on real hosts over SSH
  replyx-quick --version

Each command runs through a Fabric Connection (SSH) for --host (`local`: the lab on this machine), or
locally on the lab. Every host is tried; one that cannot be reached is named and the others still
answer. The DATABASE_URL is read from the app's .env as data (never sourced by a shell) and never
appears on a command line or in the output.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import yaml
from invoke import Context

REPO = Path(__file__).resolve().parents[2]


def lab_settings() -> dict:
    """Paths and ports of the embedded lab (inventories/lab), as the roles resolve them."""
    import os  # noqa: PLC0415

    root = Path(os.environ.get("REPLYX_LAB_ROOT") or REPO / ".lab")
    return {
        "backend_url": f"http://127.0.0.1:{os.environ.get('REPLYX_BACKEND_PORT') or 8000}",
        "app_dir": str(root / "backend" / "app"),
        "log_file": str(root / "backend" / "logs" / "backend.log"),
        "pm2": str(REPO / ".tools" / "node_modules" / ".bin" / "pm2"),
        "backend_pm2_home": str(root / "backend" / "pm2"),
        "workers_pm2_home": str(root / "workers" / "pm2"),
        "backend_service": "replyx-backend",
        "workers_service": "chatai-bot-manager",
        "manager": "pm2",
        # the query helper on the host: argv (a settings file may give a string, split like a shell would)
        "psql": [str(Path(sys.prefix) / "bin" / "python"), "-m", "replyx_rollback.quick", "_psql"],
    }


def connection(host: str | None):
    if host and host != "local":
        from fabric import Connection  # noqa: PLC0415

        return Connection(host, connect_timeout=10)
    return Context()


def health(c, s: dict) -> int:
    r = c.run(f"curl -fsS -m 10 {shlex.quote(s['backend_url'] + '/health')}", warn=True, hide=True)
    print(r.stdout.strip() or r.stderr.strip())
    return r.exited


def db_check(c, s: dict) -> int:
    """SELECT 1 with the app's own DATABASE_URL, read from its .env on the host as data (never run as shell
    code); the URL goes from the file to psycopg, never onto a command line or into the output."""
    prefix = s["psql"] if isinstance(s["psql"], list) else shlex.split(s["psql"])
    argv = [*prefix, "--env-file", s["app_dir"] + "/.env", "SELECT 1 AS ok, current_database() AS db, version() AS version"]
    r = c.run(shlex.join(argv), warn=True, hide=True)
    print(r.stdout.strip() or r.stderr.strip())
    return r.exited


def restart(c, s: dict) -> int:
    rc = 0
    for name, home in ((s["backend_service"], s["backend_pm2_home"]), (s["workers_service"], s["workers_pm2_home"])):
        if s["manager"] == "pm2":
            cmd = f"PM2_HOME={shlex.quote(home)} {shlex.quote(s['pm2'])} restart {shlex.quote(name)} --update-env"
        else:
            cmd = f"systemctl restart {shlex.quote(name)}"
        r = c.run(cmd, warn=True, hide=True)
        print(f"{name}: {'restarted' if r.ok else 'FAILED: ' + (r.stderr.strip() or r.stdout.strip())[-300:]}")
        rc = rc or r.exited
    return rc


def logs(c, s: dict, lines: int = 50) -> int:
    r = c.run(f"tail -n {int(lines)} {shlex.quote(s['log_file'])}", warn=True, hide=True)
    print(r.stdout.rstrip() or r.stderr.strip())
    return r.exited


def read_env_file(path: str) -> dict:
    """KEY=VALUE lines of a .env file, as data: comments, blank lines, `export `, and one level of matching
    quotes are understood; nothing is expanded or executed."""
    values = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export "):].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def _psql(argv: list[str]) -> int:
    """Run one query with psycopg using DATABASE_URL from the app's .env (--env-file) or the environment;
    print rows as JSON."""
    import os  # noqa: PLC0415

    import psycopg  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="replyx-quick _psql")
    p.add_argument("--env-file")
    p.add_argument("sql")
    args = p.parse_args(argv)
    url = os.environ.get("DATABASE_URL")
    if args.env_file:
        try:
            url = read_env_file(args.env_file).get("DATABASE_URL")
        except OSError as exc:
            print(f"Failed to check the database: cannot read {args.env_file}: {exc.strerror}", file=sys.stderr)
            return 2
    if not url:
        print("Failed to check the database: DATABASE_URL is not set in the app's .env", file=sys.stderr)
        return 2
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            cur = conn.execute(args.sql)
            cols = [d.name for d in cur.description]
            for row in cur.fetchall():
                print(json.dumps(dict(zip(cols, [str(v) for v in row]))))
    except psycopg.Error as exc:
        print(f"Failed to check the database: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


COMMANDS = {"health": health, "db-check": db_check, "restart": restart, "logs": logs}


def run_on(host: str | None, command: str, settings: dict, lines: int = 50) -> int:
    """One command on one host (None: the local lab). A host that cannot be reached is named, not a traceback."""
    fn = COMMANDS[command]
    try:
        c = connection(host)
        return fn(c, settings, lines) if fn is logs else fn(c, settings)
    except Exception as exc:  # noqa: BLE001 - SSH and socket errors of every kind: name the host and go on
        print(f"Failed to run {command} on {host}: {exc.__class__.__name__}: {str(exc).strip()[:300]}", file=sys.stderr)
        return 3


def main(argv=None) -> int:
    from replyx_rollback import __version__  # noqa: PLC0415

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_psql"]:
        return _psql(argv[1:])
    p = argparse.ArgumentParser(prog="replyx-quick", description="The plan's quick commands, done safely. Exit "
                                "status: 0 every host passed; 1 or the command's own status when a check failed; "
                                "3 a host could not be reached (each host is named).")
    p.add_argument("--version", action="version", version=f"replyx-quick {__version__}")
    p.add_argument("--host", action="append", help="user@host to run on over SSH, repeatable (default: the local lab)")
    p.add_argument("--settings", help="YAML file of settings for a real host (keys as in the lab)")
    p.add_argument("command", choices=sorted(COMMANDS))
    p.add_argument("-n", "--lines", type=int, default=50)
    args = p.parse_args(argv)
    settings = lab_settings()
    if args.settings:
        settings.update(yaml.safe_load(Path(args.settings).read_text()) or {})
    hosts = args.host or [None]
    results = {}
    for host in hosts:
        if len(hosts) > 1:
            print(f"== {host}")
        results[host] = run_on(host, args.command, settings, args.lines)
    failed = [h for h, rc in results.items() if rc]
    if len(hosts) > 1:
        print(f"{args.command}: {len(hosts) - len(failed)} of {len(hosts)} host(s) passed"
              + (f"; failed: {', '.join(str(h) for h in failed)}" if failed else ""))
    return next((results[h] for h in failed), 0)


if __name__ == "__main__":
    sys.exit(main())
