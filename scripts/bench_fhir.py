"""A throw-away SEKMET FHIR R4 server for the missing-prefetch benchmark (``python-ecosystem.md`` §4).

``start_fhir(workdir)`` uses the project's own starter, ``tests/integration/sekmet_server.py``, when it
is importable, else the minimal one here (``start_sekmet``: settings file with loopback only, simulator
off, no traffic log; ``sekmet serve`` in its own process group; waits for ``/metadata``).
``load(base, bundle)`` POSTs a transaction Bundle. ``stop()`` ends only the process that was started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SEKMET = ROOT / ".venv" / "bin" / "sekmet"


@dataclass
class FhirServer:
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def start_sekmet(workdir: Path, port: int, timeout: float = 60.0) -> FhirServer:
    workdir.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}/fhir"
    settings = workdir / "settings.yaml"
    settings.write_text(
        f"base_url: {base}\n"
        "host: 127.0.0.1\n"
        f"port: {port}\n"
        f"data_dir: {workdir / 'data'}\n"
        "log_inbound: false\n"
        "simulator: {enabled: false}\n"
    )
    log = workdir / "sekmet.log"
    executable = str(SEKMET) if SEKMET.exists() else "sekmet"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [executable, "serve", "--config", str(settings)],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SEKMET_CONFIG": str(settings)},
            start_new_session=True,
        )
    server = FhirServer(process, base, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sekmet exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"sekmet did not answer /metadata within {timeout:.0f} s; see {log}")


@dataclass(frozen=True)
class RunningFhir:
    base: str
    stop: Callable[[], None]
    starter: str  # which starter was used, for the report


def start_fhir(workdir: Path, port: int) -> RunningFhir:
    """``tests.integration.sekmet_server.start_sekmet`` when available (free port of its own), else ours."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        from tests.integration import sekmet_server
    except ImportError:
        own = start_sekmet(workdir, port)
        return RunningFhir(own.base, own.stop, "scripts/bench_fhir.py")
    try:
        server = sekmet_server.start_sekmet(workdir)
    except sekmet_server.SekmetError as exc:
        raise RuntimeError(str(exc)) from exc
    return RunningFhir(server.base_url, server.stop, "tests/integration/sekmet_server.py")


def load(base: str, bundle: bytes) -> dict[str, int]:
    """POST a transaction Bundle; returns ``{status: count}`` of the entry responses."""
    r = httpx.post(base, content=bundle, headers={"Content-Type": "application/fhir+json"}, timeout=120)
    r.raise_for_status()
    counts: dict[str, int] = {}
    for entry in r.json().get("entry", []):
        status = str(entry.get("response", {}).get("status", "?")).split(" ")[0]
        counts[status] = counts.get(status, 0) + 1
    return counts


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        s = start_sekmet(Path(tmp), int(sys.argv[1]) if len(sys.argv) > 1 else 8199)
        print("up at", s.base)
        s.stop()
