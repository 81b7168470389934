"""The service as a real server: in a thread of the test process (uvicorn, real sockets, settings injected)
or as real processes (``cds-service serve --workers N``, settings from the environment), as deployed.

No pytest here: ``scripts/soak.py`` uses ``ServiceProcess`` too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import uvicorn
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceThread:
    """``create_app(...)`` served by uvicorn on 127.0.0.1 in a background thread (its own event loop)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,  # leave the test session's logging alone
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="service", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServiceThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@dataclass
class ServiceProcess:
    """``cds-service serve`` in a subprocess (its own session), logging to ``log``."""

    port: int
    workers: int
    process: subprocess.Popen[bytes]
    log: Path
    _out: IO[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        """uvicorn's worker processes (multiprocessing spawn children of the supervisor)."""
        pid = self.process.pid
        if self.workers == 1:
            return [pid]
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return []
        found = []
        for child in map(int, children):
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(child)
        return sorted(found)

    def rss_mib(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for pid in self.worker_pids():
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[pid] = int(line.split()[1]) / 1024
        return out

    def log_text(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._out.close()


def start_service(
    workdir: Path, env: Mapping[str, str], *, workers: int = 1, timeout: float = 60.0
) -> ServiceProcess:
    """Start ``cds-service serve`` on a free loopback port and wait until every worker answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / f"service-{port}.log"
    out = log.open("ab")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    command = [sys.executable, "-m", "cds_service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers)]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**clean, "CDS_LOG_LEVEL": "INFO", **env},
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    service = ServiceProcess(port, workers, process, log, out)
    logs_ready = env.get("CDS_LOG_LEVEL", "INFO").upper() in ("INFO", "DEBUG")
    try:
        _wait_ready(service, timeout, logs_ready)
    except BaseException:
        service.stop()
        raise
    return service


def _wait_ready(service: ServiceProcess, timeout: float, logs_ready: bool) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise RuntimeError(
                    f"cds-service exited ({service.process.returncode}):\n{service.log_text()[-2000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{service.url}/healthz").status_code == 200 and (
                    len(service.worker_pids()) >= service.workers
                ):
                    # each worker answers once its lifespan has run: ask a few times so both have
                    for _ in range(4 * service.workers):
                        http.get(f"{service.url}/healthz")
                    if not logs_ready or _all_ready(service):
                        return
            time.sleep(0.1)
    raise RuntimeError(f"cds-service not ready within {timeout:g} s:\n{service.log_text()[-2000:]}")


def _all_ready(service: ServiceProcess) -> bool:
    """Every worker logged that it is ready (the lifespan's "ready: ..." line, at INFO)."""
    return service.log_text().count("ready:") >= service.workers or service.workers == 1


@contextlib.contextmanager
def running_service(workdir: Path, env: Mapping[str, str], *, workers: int = 1) -> Iterator[ServiceProcess]:
    service = start_service(workdir, env, workers=workers)
    try:
        yield service
    finally:
        service.stop()
