"""A live service under gunicorn on loopback, as ``python -m cds_service serve`` starts it.

Nothing here is optional: gunicorn is a dependency of the package, so a server that does not
come up is a failure, never a skip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from cds_service.config import PROJECT_ROOT
from tests.processes import stop_process

STARTUP_TIMEOUT_S = 30.0


@dataclass
class LiveServer:
    url: str
    proc: subprocess.Popen[bytes]
    database_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        stop_process(self.proc, 15)  # gunicorn: graceful shutdown of the master and workers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_live_server(tmp: Path, *, workers: int = 1, threads: int = 4,
                      env: dict[str, str] | None = None,
                      database_url: str | None = None) -> LiveServer:
    port = free_port()
    database_url = database_url or f"sqlite:///{tmp / 'live.sqlite3'}"
    log_path = tmp / f"server-{port}.log"
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("CDS_")
    } | {
        "CDS_DATABASE_URL": database_url,
        "CDS_AUTH": "off",
        "CDS_FHIR_BUDGET_SECONDS": "1.0",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cds_service", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers), "--threads", str(threads)],
            cwd=PROJECT_ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", proc, database_url, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the service exited with {proc.returncode}:\n{server.log()[-3000:]}")
        try:
            if requests.get(server.url + "/healthz", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"the service did not answer /healthz in {STARTUP_TIMEOUT_S:.0f} s:\n"
                       f"{server.log()[-3000:]}")


LIVE_MAX_BODY_MB = 1  # small, so the 413 tests need not send tens of megabytes


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> Iterator[LiveServer]:
    """One service for the session (schemathesis, bad input): CDS_AUTH=off, 1 worker."""
    server = start_live_server(tmp_path_factory.mktemp("live"),
                               env={"CDS_MAX_BODY_MB": str(LIVE_MAX_BODY_MB)})
    try:
        yield server
    finally:
        server.stop()
