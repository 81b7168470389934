"""Start and stop a real FHIR R4 server, sekmet-fhir (pinned), for tests, benchmarks and soak runs.

No pytest here: ``scripts/bench.py`` and ``scripts/soak.py`` can use it too::

    with running_sekmet(Path(tmp), tokens=("secret",)) as fhir:
        httpx.get(f"{fhir.base_url}/metadata")

The server runs as a subprocess of the current interpreter (the project venv), bound to 127.0.0.1 on
a free port, with its SQLite data, settings file and log in ``workdir``, the simulator disabled (it
would otherwise answer ServiceRequests and MedicationRequests with resources of its own), and, when
``tokens`` are given, static bearer tokens required on every FHIR call except ``/metadata``.
What sekmet 0.1.1 offers and lacks is in docs/sandbox.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

PINNED_VERSION = "0.1.1"  # requirements-dev.lock pins sekmet-fhir==0.1.1
STARTUP_TIMEOUT_SECONDS = 30.0


class SekmetError(RuntimeError):
    """The server could not be started (wrong version, port taken, crashed); the log tail says why."""


@dataclass(frozen=True)
class InboundRequest:
    """One request sekmet recorded in its traffic log (``log_inbound``). ``authorization`` is the
    header as sekmet stores it, redacted (``Bearer ***redacted***``), or None when none was sent."""

    id: int
    method: str
    url: str
    status: int | None
    authorization: str | None


@dataclass
class SekmetServer:
    base_url: str  # http://127.0.0.1:<port>/fhir
    port: int
    workdir: Path
    tokens: tuple[str, ...]
    process: subprocess.Popen[bytes]
    log: IO[bytes] = field(repr=False)

    @property
    def database(self) -> Path:
        return self.workdir / "data" / "sekmet.db"

    def inbound(self, after_id: int = 0, *, at_least: int = 0, timeout: float = 30.0) -> list[InboundRequest]:
        """Requests sekmet received (oldest first) with a traffic id above ``after_id``. sekmet writes a
        request to its log just after answering it, so this waits (up to ``timeout``) for ``at_least``."""
        deadline = time.monotonic() + timeout
        found = self._read_inbound(after_id)
        while len(found) < at_least and time.monotonic() < deadline:
            time.sleep(0.05)
            found = self._read_inbound(after_id)
        return found

    def _read_inbound(self, after_id: int) -> list[InboundRequest]:
        uri = f"file:{self.database}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            rows = db.execute(
                "SELECT id, method, url, status, req_headers FROM traffic "
                "WHERE direction = 'inbound' AND id > ? ORDER BY id",
                (after_id,),
            ).fetchall()
        return [
            InboundRequest(row[0], row[1], row[2], row[3], _header(row[4], "authorization")) for row in rows
        ]

    def last_traffic_id(self, settle: float = 0.1) -> int:
        """The newest traffic id once the log has stopped growing for ``settle`` seconds, so that
        requests answered before this call cannot appear after it."""
        last = -1
        while True:
            found = self._read_inbound(0)
            current = found[-1].id if found else 0
            if current == last:
                return current
            last = current
            time.sleep(settle)

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        text = (self.workdir / "sekmet.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.log.close()


def start_sekmet(
    workdir: Path,
    *,
    tokens: Sequence[str] = (),
    log_inbound: bool = False,
    startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
    attempts: int = 3,
) -> SekmetServer:
    """Start sekmet and wait until ``/metadata`` answers. Retries on another port if one was taken."""
    check_version()
    workdir.mkdir(parents=True, exist_ok=True)
    last: SekmetError | None = None
    for _ in range(attempts):
        server = _spawn(workdir, _free_port(), tuple(tokens), log_inbound)
        try:
            _wait_ready(server, startup_timeout)
            return server
        except SekmetError as exc:
            server.stop()
            last = exc
            if "address already in use" not in str(exc).lower():
                break
    assert last is not None
    raise last


@contextlib.contextmanager
def running_sekmet(workdir: Path, **options: Any) -> Iterator[SekmetServer]:
    server = start_sekmet(workdir, **options)
    try:
        yield server
    finally:
        server.stop()


def check_version() -> None:
    try:
        installed = version("sekmet-fhir")
    except PackageNotFoundError:
        raise SekmetError(
            "sekmet-fhir is not installed: `make test` installs requirements-dev.lock"
        ) from None
    if installed != PINNED_VERSION:
        raise SekmetError(f"sekmet-fhir {installed} is installed; the tests are written for {PINNED_VERSION}")


def settings(port: int, workdir: Path, tokens: tuple[str, ...], log_inbound: bool) -> dict[str, Any]:
    """sekmet's settings.yaml (sekmet/config.py): loopback only, simulator off."""
    values: dict[str, Any] = {
        "base_url": f"http://127.0.0.1:{port}/fhir",
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(workdir / "data"),
        "own_private_key_path": str(workdir / "keys" / "sekmet_private.pem"),
        "log_inbound": log_inbound,
        "simulator": {"enabled": False},
    }
    if tokens:
        values["server_auth"] = {"types": ["bearer"], "tokens": list(tokens)}
    return values


def _spawn(workdir: Path, port: int, tokens: tuple[str, ...], log_inbound: bool) -> SekmetServer:
    config = workdir / "settings.yaml"
    config.write_text(yaml.safe_dump(settings(port, workdir, tokens, log_inbound)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}
    log = (workdir / "sekmet.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "sekmet.cli", "serve", "--config", str(config)],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return SekmetServer(f"http://127.0.0.1:{port}/fhir", port, workdir, tokens, process, log)


def _wait_ready(server: SekmetServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise SekmetError(
                    f"sekmet exited with status {server.process.returncode}:\n{server.log_tail()}"
                )
            try:
                if http.get(f"{server.base_url}/metadata").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise SekmetError(f"sekmet did not answer /metadata within {timeout:g} s:\n{server.log_tail()}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _header(headers_json: str | None, name: str) -> str | None:
    if not headers_json:
        return None
    try:
        headers = json.loads(headers_json)
    except json.JSONDecodeError:
        return None
    value = headers.get(name) if isinstance(headers, dict) else None
    return str(value) if value is not None else None
