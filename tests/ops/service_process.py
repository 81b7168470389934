"""Run the real service (``cds-service serve``) as a subprocess on a free port, for tests that need
processes: several workers, signals, several instances. No pytest dependency."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

AUDIT_TOKEN = "ops-audit-token-5b1f"
HASH_KEY = "ops-hash-key-9c2e"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS_"))}
    env.update(
        {
            "CDS_ENV": "development",
            "CDS_AUTH": "off",
            "CDS_DATA_DIR": str(data_dir),
            "CDS_AUDIT_TOKEN": AUDIT_TOKEN,
            "CDS_PATIENT_HASH_SECRET": HASH_KEY,
            "CDS_LOG_LEVEL": "INFO",
        }
    )
    env.update(overrides)
    return env


def serve_command(port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port), "--workers", str(workers)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@dataclass
class ServiceProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """uvicorn's worker processes (not multiprocessing's resource tracker)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        pids = [int(p) for p in children.read_text().split()] if children.exists() else []
        return [
            pid for pid in pids if b"spawn_main" in _cmdline(pid) and b"resource_tracker" not in _cmdline(pid)
        ]

    def _socket_inodes(self, state: str) -> set[str]:
        """Inodes of the TCP sockets on the service port in ``state`` (01 established, 0A listening)."""
        inodes: set[str] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == self.port and fields[3] == state:
                    inodes.add(fields[9])
        return inodes

    def listening_sockets(self) -> int:
        """Each worker listens on its own socket once its application has started."""
        return len(self._socket_inodes("0A"))

    def connections_per_worker(self) -> dict[int, int]:
        """How many established TCP connections to the service port each worker holds (from /proc)."""
        inodes = self._socket_inodes("01")
        held: dict[int, int] = {}
        for pid in self.worker_pids():
            links = (os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())
            held[pid] = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
        return held

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


def start_service(
    data_dir: Path, *, workers: int = 1, port: int | None = None, timeout: float = 45.0, **env: str
) -> ServiceProcess:
    """Start ``cds-service serve`` and wait until ``/healthz`` answers (raises with the logs if it dies)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = data_dir.parent / f"service-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            serve_command(port, workers),
            env=service_env(data_dir, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    service = ServiceProcess(proc, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}:\n{service.logs()[-3000:]}")
        try:
            healthy = httpx.get(f"{service.base}/healthz", timeout=1.0).status_code == 200
            if healthy and service.listening_sockets() >= workers:
                return service
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    service.stop(signal.SIGKILL)
    raise RuntimeError(f"service did not become healthy in {timeout} s:\n{service.logs()[-3000:]}")


def run_serve(data_dir: Path, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``serve`` expecting it to refuse to start: returns its exit status and output."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        serve_command(free_port(), 1),
        env=service_env(data_dir, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
