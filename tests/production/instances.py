"""Service instances (``python -m cds_service serve`` under gunicorn) and HAProxy in front of
them, all on loopback, as a health system runs several instances on one PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from cds_service.config import PROJECT_ROOT
from tests.processes import stop_process
from tests.robustness.conftest import free_port

STARTUP_TIMEOUT_S = 60.0
SETUP_HINT = "run `make test` (or `bash scripts/setup-test-env.sh`) to install Debian's haproxy"


@dataclass
class Instance:
    name: str
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kill_hard(self) -> None:
        """kill -9 of the master and every worker (its own process group)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.proc, 30, force=lambda: os.killpg(self.proc.pid, signal.SIGKILL))


def launch(tmp: Path, name: str, env: dict[str, str], *, workers: int = 2,
           threads: int = 4) -> Instance:
    """Start an instance without waiting for it (see ``wait_ready``)."""
    port = free_port()
    log_path = tmp / f"{name}.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")} | {
        "PYTHONUNBUFFERED": "1", **env}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cds_service", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers), "--threads", str(threads)],
            cwd=PROJECT_ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,  # its own group, for kill -9
        )
    return Instance(name, f"http://127.0.0.1:{port}", port, proc, log_path)


def wait_ready(instance: Instance, path: str = "/readyz") -> Instance:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if instance.proc.poll() is not None:
            raise RuntimeError(f"{instance.name} exited with {instance.proc.returncode}:\n"
                               f"{instance.log()[-3000:]}")
        try:
            if requests.get(instance.url + path, timeout=1).status_code == 200:
                return instance
        except requests.RequestException:
            pass
        time.sleep(0.1)
    instance.stop()
    raise RuntimeError(f"{instance.name} was not ready in {STARTUP_TIMEOUT_S:.0f} s:\n"
                       f"{instance.log()[-3000:]}")


@dataclass
class Haproxy:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        stop_process(self.proc, 10)


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                        if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    assert found, f"haproxy is not installed: {SETUP_HINT}"
    return found


def start_haproxy(tmp: Path, backends: list[Instance]) -> Haproxy:
    """Round robin over the instances; an instance whose /readyz fails leaves the rotation."""
    port = free_port()
    servers = "\n".join(
        f"    server {b.name} 127.0.0.1:{b.port} check inter 200ms fall 1 rise 2"
        for b in backends)
    config = tmp / "haproxy.cfg"
    config.write_text(f"""
global
    maxconn 512

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 2
    option redispatch

frontend cds
    bind 127.0.0.1:{port}
    default_backend instances

backend instances
    balance roundrobin
    option httpchk GET /readyz
{servers}
""")
    log_path = tmp / "haproxy.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([haproxy_binary(), "-f", str(config), "-db"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    proxy = Haproxy(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()
        try:
            if requests.get(proxy.url + "/healthz", timeout=1).status_code == 200:
                return proxy
        except requests.RequestException:
            pass
        time.sleep(0.1)
    proxy.stop()
    raise RuntimeError(f"haproxy did not answer:\n{log_path.read_text()}")
