"""Helpers for tests against the running lab (inventories/lab): run playbooks, read its settings."""
from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
LAB_ROOT = Path(os.environ.get("REPLYX_LAB_ROOT") or ROOT / ".lab")
PG_PORT = int(os.environ.get("REPLYX_PG_PORT") or 55432)
BACKEND_PORT = int(os.environ.get("REPLYX_BACKEND_PORT") or 8000)
WORKERS_PORT = int(os.environ.get("REPLYX_WORKERS_PORT") or 3001)
BACKEND_URL = f"http://127.0.0.1:{BACKEND_PORT}"
WORKERS_URL = f"http://127.0.0.1:{WORKERS_PORT}"
APP_DIR = LAB_ROOT / "backend" / "app"
WORKERS_APP_DIR = LAB_ROOT / "workers" / "app"
PM2 = ROOT / ".tools" / "node_modules" / ".bin" / "pm2"
# The lab's secrets (inventories/lab/group_vars/all.yml): tests grep outputs for them.
SECRETS = ("LabAppPw-7f3a9c21", "LabSuperPw-5d8e0b44", "LabSecretKey-91c2e6f0")
APP_DSN = f"postgresql://chatai:LabAppPw-7f3a9c21@127.0.0.1:{PG_PORT}/chatai"
SUPER_DSN = f"postgresql://postgres:LabSuperPw-5d8e0b44@127.0.0.1:{PG_PORT}/chatai"


def env(**extra) -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{VENV_BIN}:{ROOT / '.tools' / 'node_modules' / '.bin'}:{e.get('PATH', '')}"
    e["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    e["ANSIBLE_FORCE_COLOR"] = "0"
    e["ANSIBLE_NOCOLOR"] = "1"
    e.update({k: str(v) for k, v in extra.items()})
    return e


def playbook(name: str, *args: str, check: bool = False, timeout: int = 900, **extra_env) -> subprocess.CompletedProcess:
    """Run ansible-playbook playbooks/<name> against inventories/lab; returns the finished process."""
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), f"playbooks/{name}", *args], cwd=ROOT,
                          env=env(**extra_env), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed (rc={proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    return proc


def recap(output: str) -> dict:
    """PLAY RECAP counters per host: {'backend': {'ok': 3, 'changed': 0, ...}}."""
    hosts = {}
    lines = output.split("PLAY RECAP", 1)[-1].splitlines()
    for line in lines:
        if ":" in line and "ok=" in line:
            host, counters = line.split(":", 1)
            hosts[host.strip()] = {k: int(v) for k, v in (c.split("=") for c in counters.split())}
    return hosts


def http_json(url: str, timeout: float = 10) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def psql(sql: str, dsn: str = SUPER_DSN) -> str:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(sql).fetchall() if sql.lstrip().lower().startswith(("select", "explain", "with", "show")) \
            else (conn.execute(sql), [])[1]
    return "\n".join("|".join("" if v is None else str(v) for v in row) for row in rows)


def alembic_current() -> str:
    out = subprocess.run([str(APP_DIR / "venv" / "bin" / "alembic"), "current"], cwd=APP_DIR,
                         capture_output=True, text=True, check=True)
    return out.stdout.split()[0] if out.stdout.split() else ""


def release_history(app: str = "backend") -> list:
    path = LAB_ROOT / app / "release_history.json"
    return json.loads(path.read_text()) if path.exists() else []
