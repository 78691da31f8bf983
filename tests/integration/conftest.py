"""Fixtures for integration tests: a real in-memory FHIR R4 server on loopback.

The server is ``tests/integration/fhir_server/server.mjs`` (Node, wrapping @medplum/fhir-router's
FhirRouter + MemoryRepository). ``bash scripts/setup-test-env.sh`` installs its node_modules.

Fixtures
--------
``fhir_server``        session-scoped :class:`FhirServer`; ``.base`` is e.g. ``http://127.0.0.1:41234/fhir/R4``.
``fresh_fhir_server``  the same server, emptied (``reset()``) before the test.

:func:`start_fhir_server` can also be used directly (e.g. by a benchmark) with ``delay_ms``.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import stop_process

FHIR_SERVER_DIR = Path(__file__).resolve().parent / "fhir_server"
FHIR_SERVER_SCRIPT = FHIR_SERVER_DIR / "server.mjs"
STARTUP_TIMEOUT_S = 60.0


class FhirServerUnavailable(RuntimeError):
    """Node or the server's node_modules are missing."""


class FhirServer:
    """A running ``server.mjs`` subprocess."""

    def __init__(
        self, proc: subprocess.Popen[str], port: int, base: str, startup_s: float, stderr: list[str]
    ) -> None:
        self.proc = proc
        self.port = port
        self.base = base
        self.startup_s = startup_s
        self._stderr = stderr  # appended to by a reader thread (list.append is atomic)
        self._threads: list[threading.Thread] = []

    # -- logs -------------------------------------------------------------------------------
    def stderr_lines(self) -> list[str]:
        """Everything the server wrote to stderr so far (request log lines are ``METHOD /path``)."""
        return list(self._stderr)

    def request_log(self) -> list[tuple[str, str]]:
        """``(method, path)`` for every request the server has logged so far."""
        out = []
        for line in self.stderr_lines():
            method, _, path = line.partition(" ")
            if method.isupper() and path.startswith("/"):
                out.append((method, path))
        return out

    # -- control ----------------------------------------------------------------------------
    @property
    def origin(self) -> str:
        return self.base.rsplit("/fhir/R4", 1)[0]

    def reset(self) -> None:
        """Delete every resource in the server's in-memory repository."""
        req = urllib.request.Request(self.origin + "/__admin/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status != 204:
                raise RuntimeError(f"FHIR server reset answered {resp.status}")

    def is_running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc, 5)
        for thread in self._threads:  # they end at EOF; closing pipes under them would raise
            thread.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __repr__(self) -> str:
        return f"FhirServer(base={self.base!r}, pid={self.proc.pid})"


def _node_command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        raise FhirServerUnavailable("node (Node.js >= 20) is not on PATH")
    if not (FHIR_SERVER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        raise FhirServerUnavailable(
            f"{FHIR_SERVER_DIR / 'node_modules'} is missing; run `bash scripts/setup-test-env.sh`"
        )
    version = subprocess.run(
        [node, "-p", "process.versions.node"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    major = int(version.split(".")[0])
    if major < 20:
        raise FhirServerUnavailable(f"Node.js >= 20 is required, found {version}")
    # Medplum needs a global WebSocket: Node 20 has it only behind this flag (22+ by default).
    return [node, "--experimental-websocket"] if major < 22 else [node]


def start_fhir_server(
    *,
    host: str = "127.0.0.1",
    delay_ms: int = 0,
    default_count: int | None = None,
    timeout: float = STARTUP_TIMEOUT_S,
) -> FhirServer:
    """Start ``server.mjs`` on an ephemeral loopback port and wait for its JSON ready line."""
    cmd = [*_node_command(), str(FHIR_SERVER_SCRIPT), "--host", host, "--port", "0"]
    if delay_ms:
        cmd += ["--delay-ms", str(delay_ms)]
    if default_count is not None:
        cmd += ["--default-count", str(default_count)]

    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=FHIR_SERVER_DIR,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        start_new_session=True,  # a Ctrl-C in the terminal does not hit it before we stop it
    )
    stderr_lines: list[str] = []
    stdout_q: queue.Queue[str | None] = queue.Queue()

    def pump_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stdout_q.put(line)
        stdout_q.put(None)

    def pump_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr_lines.append(line.rstrip("\n"))

    threads = [
        threading.Thread(target=pump_stdout, name="fhir-server-stdout", daemon=True),
        threading.Thread(target=pump_stderr, name="fhir-server-stderr", daemon=True),
    ]
    for thread in threads:
        thread.start()

    def abort(reason: str) -> RuntimeError:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        for thread in threads:
            thread.join(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        tail = "\n".join(stderr_lines[-20:])
        return RuntimeError(
            f"FHIR test server {reason} (exit code {proc.returncode}); stderr:\n{tail}"
        )

    try:
        line = stdout_q.get(timeout=timeout)
    except queue.Empty:
        raise abort(f"did not report ready within {timeout:.0f} s") from None
    if line is None:
        raise abort("exited before it was ready")
    try:
        ready = json.loads(line)
        port, base = int(ready["port"]), str(ready["base"])
    except (ValueError, KeyError, TypeError) as exc:
        raise abort(f"printed an unexpected ready line {line!r}") from exc

    server = FhirServer(proc, port, base, time.monotonic() - started, stderr_lines)
    server._threads = threads
    return server


def _unavailable(reason: str) -> None:
    # A failure, never a skip: `make test` (scripts/setup-test-env.sh) installs the server.
    pytest.fail(f"FHIR test server unavailable: {reason} (run `make test`, which installs it)",
                pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    registered = config.getini("markers")
    if not any(str(m).split(":", 1)[0].strip() == "integration" for m in registered):
        config.addinivalue_line(
            "markers", "integration: starts real servers (FHIR server, gunicorn) on loopback"
        )


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[FhirServer]:
    try:
        server = start_fhir_server()
    except FhirServerUnavailable as exc:
        _unavailable(str(exc))
        raise  # unreachable: _unavailable always raises
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_fhir_server(fhir_server: FhirServer) -> FhirServer:
    """The session's FHIR server with its repository emptied first."""
    fhir_server.reset()
    return fhir_server
