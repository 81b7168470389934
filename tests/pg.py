"""A real, throw-away PostgreSQL server for the storage tests: one per test session, on loopback.

On a fresh Debian machine (CI) the server may not be installed: it is then installed from the system
packages (``apt-get install -y postgresql``, non-interactive; needs root). The binaries are found on PATH
or under ``/usr/lib/postgresql/<version>/bin``. The cluster lives in a temporary directory; PostgreSQL
refuses to run as root, so as root ``initdb`` and the server run as the ``postgres`` system user the
package creates (``runuser``). It listens on 127.0.0.1 on a free port, with its unix socket inside the
temporary directory, ``fsync=off`` (data is disposable) and trust authentication (loopback only). Each
test gets its own database (``new_database``). ``stop`` shuts it down and removes the directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

PG_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be installed or started; the message says why."""


def _binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version_key)
    return Path(versions[-1]).parent if versions else None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.parent.name
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _install() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresUnavailable("PostgreSQL is not installed and cannot be (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]
    result = subprocess.run(install, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:  # package lists may be missing on a fresh machine
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, stdin=subprocess.DEVNULL)
        result = subprocess.run(install, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise PostgresUnavailable(f"apt-get install postgresql failed: {result.stderr.strip()[-500:]}")


def _runuser() -> str:
    """``runuser`` lives in sbin, which a CI PATH may lack."""
    for candidate in (shutil.which("runuser"), "/usr/sbin/runuser", "/sbin/runuser"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise PostgresUnavailable("runuser not found: cannot run PostgreSQL as the postgres user")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int
    as_user: str | None  # run commands as this user (None: as ourselves)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={PG_USER} dbname={database} connect_timeout=5"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_user:
            command = [_runuser(), "-u", self.as_user, "--", *command]
        result = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120
        )
        if result.returncode != 0:
            log = (
                (self.root / "server.log").read_text()[-1500:] if (self.root / "server.log").exists() else ""
            )
            raise PostgresUnavailable(f"{args[0]} failed: {result.stderr.strip()[-800:]}\n{log}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", PG_USER, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.socket_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired, FileNotFoundError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def new_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def execute(self, sql: str, database: str = "postgres") -> None:
        with psycopg.connect(self.conninfo(database), autocommit=True) as conn:
            conn.execute(sql)


def start_postgres() -> PostgresServer:
    """Install if needed, initialise and start a server; the caller stops it."""
    bindir = _binaries()
    if bindir is None:
        _install()
        bindir = _binaries()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL binaries not found after installation")
    as_root = os.geteuid() == 0
    # as root, the postgres user must be able to reach the directory: not under a private TMPDIR
    root = Path(tempfile.mkdtemp(prefix="cds-pg-", dir="/tmp" if as_root and os.path.isdir("/tmp") else None))
    as_user = None
    if as_root:  # the server refuses to run as root
        try:
            account = pwd.getpwnam(PG_USER)
        except KeyError as exc:
            raise PostgresUnavailable(f"no {PG_USER!r} system user to run PostgreSQL as") from exc
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = PG_USER
    (root / "sock").mkdir()
    if as_user:
        account = pwd.getpwnam(as_user)
        os.chown(root / "sock", account.pw_uid, account.pw_gid)
    server = PostgresServer(bindir, root, _free_port(), as_user)
    try:
        server.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server
