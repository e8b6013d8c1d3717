"""Helpers for tests against the running lab (inventories/lab): run playbooks, read its settings.
`Layout.resolve("layout2")` gives the same for the second layout (inventories/lab-layout2)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass, field
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


def env(*, drop: tuple[str, ...] = (), project: Path = ROOT, **extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in drop}
    e["PATH"] = f"{VENV_BIN}:{project / '.tools' / 'node_modules' / '.bin'}:{e.get('PATH', '')}"
    e["ANSIBLE_CONFIG"] = str(project / "ansible.cfg")
    e["ANSIBLE_FORCE_COLOR"] = "0"
    e["ANSIBLE_NOCOLOR"] = "1"
    e.update({k: str(v) for k, v in extra.items()})
    return e


def playbook(name: str, *args: str, check: bool = False, timeout: int = 900, inventory: str | None = None,
             drop_env: tuple[str, ...] = (), project: Path = ROOT, **extra_env) -> subprocess.CompletedProcess:
    """Run ansible-playbook playbooks/<name> against inventories/lab (or `inventory`); returns the finished
    process. `drop_env` names variables of this environment the run must not see; `project` is the checkout
    the run starts in (its ansible.cfg, playbooks, roles and collection), this one unless told."""
    inv = ["-i", inventory] if inventory else []
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), *inv, f"playbooks/{name}", *args], cwd=project,
                          env=env(drop=drop_env, project=project, **extra_env), capture_output=True, text=True,
                          timeout=timeout)
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


# The variables that move the default lab and the fleet: a run on another layout never sees them.
LAB_ENV_VARS = ("REPLYX_LAB_ROOT", "REPLYX_PG_PORT", "REPLYX_BACKEND_PORT", "REPLYX_WORKERS_PORT",
                "REPLYX_FLEET_ROOT", "REPLYX_FLEET_PG_PORT", "REPLYX_FLEET_PORT_BASE", "REPLYX_ARTIFACTS_DIR")


@dataclass(frozen=True)
class Layout:
    """One lab layout: its inventory, root, names, ports and host roots, as the inventory sets them
    (and as its REPLYX_* environment variables move them)."""

    name: str
    inventory: str | None
    root: Path
    database: str
    app_user: str
    pg_port: int
    backend_port: int
    workers_port: int
    host_roots: dict = field(default_factory=dict)  # postgres/backend/workers -> directory
    services: dict = field(default_factory=dict)  # backend/workers -> PM2 name
    env_vars: tuple[str, ...] = ()  # the variables this layout reads (the others are dropped)
    project: Path = ROOT  # the checkout its playbooks run from (layout2: a copy under a path with a space)

    @classmethod
    def resolve(cls, name: str = "lab") -> Layout:
        if name == "lab":
            return cls("lab", None, LAB_ROOT, "chatai", "chatai", PG_PORT, BACKEND_PORT, WORKERS_PORT,
                       {h: LAB_ROOT / h for h in ("postgres", "backend", "workers")},
                       {"backend": "replyx-backend", "workers": "chatai-bot-manager"},
                       ("REPLYX_LAB_ROOT", "REPLYX_PG_PORT", "REPLYX_BACKEND_PORT", "REPLYX_WORKERS_PORT"))
        if name == "layout2":  # inventories/lab-layout2/group_vars/lab_layout2.yml and host_vars/
            g = os.environ.get
            root = Path(g("REPLYX_LAYOUT2_ROOT") or ROOT / ".lab-layout2" / "replyx lab \u00fc'2")
            # the playbooks run from a copy of this checkout under a path with a space, quotes and a non-ASCII
            # character (the plan's own app root is ".../MVP 13/..."): see copy_checkout()
            project = ROOT / ".lab-layout2" / "checkout \"MVP 13\" \u00e9t\u00e9's"
            return cls("layout2", "inventories/lab-layout2", root, "replyx_prod", "replyx_app",
                       int(g("REPLYX_LAYOUT2_PG_PORT") or 55472), int(g("REPLYX_LAYOUT2_BACKEND_PORT") or 8470),
                       int(g("REPLYX_LAYOUT2_WORKERS_PORT") or 3471),
                       {"postgres": root / "pg data", "backend": root / "api server", "workers": root / "bot workers"},
                       {"backend": "replyx-api", "workers": "replyx-bots"},
                       ("REPLYX_LAYOUT2_ROOT", "REPLYX_LAYOUT2_PG_PORT", "REPLYX_LAYOUT2_BACKEND_PORT",
                        "REPLYX_LAYOUT2_WORKERS_PORT"), project)
        raise ValueError(f"unknown layout {name!r}")

    @property
    def app_dsn(self) -> str:
        return f"postgresql://{self.app_user}:LabAppPw-7f3a9c21@127.0.0.1:{self.pg_port}/{self.database}"

    @property
    def super_dsn(self) -> str:
        return f"postgresql://postgres:LabSuperPw-5d8e0b44@127.0.0.1:{self.pg_port}/{self.database}"

    @property
    def backend_url(self) -> str:
        return f"http://127.0.0.1:{self.backend_port}"

    @property
    def workers_url(self) -> str:
        return f"http://127.0.0.1:{self.workers_port}"

    @property
    def app_dir(self) -> Path:
        return self.host_roots["backend"] / "app"

    @property
    def workers_app_dir(self) -> Path:
        return self.host_roots["workers"] / "app"

    def playbook(self, name: str, *args: str, check: bool = False, timeout: int = 900,
                 **extra_env) -> subprocess.CompletedProcess:
        """Run a playbook on this layout: its inventory, none of the other layouts' variables."""
        drop = tuple(v for v in LAB_ENV_VARS if v not in self.env_vars and v not in extra_env)
        if self.project != ROOT:  # the root the tests read, not one relative to the copy
            extra_env.setdefault(self.env_vars[0], str(self.root))
        return playbook(name, *args, check=check, timeout=timeout, inventory=self.inventory, drop_env=drop,
                        project=self.project, **extra_env)

    def copy_checkout(self) -> Path:
        """Put a copy of this checkout (its tracked and new files, as they are in the working tree; .venv and
        .tools linked) at `project`, so every playbook, role, the collection and lab/app are read from a path
        with a space, quotes and a non-ASCII character. Nothing to do when the layout runs from here."""
        if self.project == ROOT:
            return ROOT
        if self.project.exists():
            shutil.rmtree(self.project)
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                               capture_output=True, check=True).stdout.decode().split("\0")
        for rel in filter(None, files):
            src, dest = ROOT / rel, self.project / rel
            if src.is_symlink() or src.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                if src.is_symlink():  # the inventories share group_vars through relative links
                    dest.symlink_to(os.readlink(src))
                else:
                    shutil.copy2(src, dest)
        for tool in (".venv", ".tools"):
            (self.project / tool).symlink_to(ROOT / tool)
        return self.project

    def psql(self, sql: str) -> str:
        return psql(sql, self.super_dsn)

    def alembic_current(self) -> str:
        out = subprocess.run([str(self.app_dir / "venv" / "bin" / "alembic"), "current"], cwd=self.app_dir,
                             capture_output=True, text=True, check=True)
        return out.stdout.split()[0] if out.stdout.split() else ""

    def release_history(self, app: str = "backend") -> list:
        path = self.host_roots[app] / "release_history.json"
        return json.loads(path.read_text()) if path.exists() else []
