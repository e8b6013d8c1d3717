"""Helpers for the lab workers app (lab/app/workers): assemble a release into a temporary directory,
render its config on a free loopback port, run the bot manager and always stop what was started."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
APP_SRC = ROOT / "lab" / "app" / "workers"
RELEASES_DIR = ROOT / "lab" / "app" / "releases"
MANIFEST = RELEASES_DIR / "workers.yml"
NODE = shutil.which("node") or "/usr/bin/node"
PM2 = ROOT / ".tools" / "node_modules" / ".bin" / "pm2"
PORT_RANGE = range(56200, 56300)
IGNORED = shutil.ignore_patterns("state", "logs", "node_modules", "production.json", "production.json.backup")


def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def assemble(dest: Path, tag: str = "v2.0.0") -> Path:
    """The release's tree exactly as the release builder makes it: base + overlay - removed."""
    release = next(r for r in manifest()["releases"] if r["tag"] == tag)
    shutil.copytree(APP_SRC, dest, ignore=IGNORED)
    if release.get("overlay"):
        shutil.copytree(RELEASES_DIR / "workers" / release["overlay"], dest, dirs_exist_ok=True, ignore=IGNORED)
    for rel in release.get("remove") or []:
        target = dest / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return dest


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return not port_is_open(port)


def free_port() -> int:
    ports = list(PORT_RANGE)
    random.shuffle(ports)
    for port in ports:
        if port_is_free(port):
            return port
    raise RuntimeError("no free port in 56200-56299")


def port_is_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def write_config(app: Path, port: int, workers: int = 3, **extra) -> Path:
    config = {"workers": workers, "status_port": port, "host": "127.0.0.1", "restart_delay_ms": 300,
              "message_interval_ms": 100, "shutdown_timeout_ms": 2000}
    config.update(extra)
    path = app / "config" / "production.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode(errors="replace").split("\0")
    except OSError:
        return []


def worker_pids(app: Path) -> dict[int, str]:
    """pid -> worker-id argument of every bot_worker.js process running from `app`."""
    script = str(app / "bot_worker.js")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        args = cmdline(int(entry.name))
        if script in args:
            wid = next((a.split("=", 1)[1] for a in args if a.startswith("--worker-id=")), "")
            try:
                state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                found[int(entry.name)] = wid
    return found


def get(port: int, path: str = "/status", method: str = "GET") -> tuple[int, dict | None, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            body = resp.read()
            return resp.status, (json.loads(body) if body else None), dict(resp.headers)
    except urllib.error.HTTPError as err:
        body = err.read()
        return err.code, (json.loads(body) if body else None), dict(err.headers)


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, urllib.error.URLError, ValueError) as err:
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def status_where(port: int, check):
    def probe():
        code, body, _ = get(port)
        return (code, body) if check(code, body) else None
    return probe


class ManagerProcess:
    """`node scalable_bot_manager.js` in an app copy; stop() is safe to call any number of times."""

    def __init__(self, app: Path, args=(), env=None):
        self.app = app
        self.log_path = app / f"manager-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([NODE, "scalable_bot_manager.js", *args], cwd=app,
                                     env=dict(os.environ, **(env or {})), stdout=self._log,
                                     stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 5.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def kill_leftover_workers(app: Path):
    for pid in worker_pids(app):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def app_factory(tmp_path):
    """Assemble a release into tmp_path/<tag>; every manager started through it is stopped at the end
    and any bot_worker left running from these directories is killed (and reported as a failure)."""
    managers: list[ManagerProcess] = []
    apps: list[Path] = []

    class Factory:
        def app(self, tag="v2.0.0", name=None) -> Path:
            app = assemble(tmp_path / (name or tag), tag)
            apps.append(app)
            return app

        def start(self, app: Path, args=(), env=None) -> ManagerProcess:
            manager = ManagerProcess(app, args, env)
            managers.append(manager)
            return manager

    yield Factory()
    for manager in managers:
        manager.stop(signal.SIGKILL if manager.proc.poll() is None else signal.SIGTERM)
    leftovers = {}
    for app in apps:
        try:
            wait_for(lambda: not worker_pids(app), 5, what="workers to exit")
        except AssertionError:
            leftovers[str(app)] = worker_pids(app)
            kill_leftover_workers(app)
    assert not leftovers, f"bot_worker processes left running: {leftovers}"
