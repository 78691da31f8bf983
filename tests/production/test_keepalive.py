"""FHIR fallback against a server that closes keep-alive connections idle for about 100 ms.

A request written on a connection the server is closing at that moment fails before any
response byte; it is retried once on a new connection (issue 13: before the fix about 4 in 10
such calls answered 412 "unreachable"). Outcomes are counted, nothing is timed.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.http import builders as b
from tests.production.idle_fhir import IdleClosingFhir

PATIENT_VIEW = "foot-drop-patient-view"
IDLE_SECONDS = 0.1
CALLS = 300
CALLERS = 3


@pytest.fixture
def idle_fhir():
    with IdleClosingFhir(IDLE_SECONDS) as server:
        yield server


def test_spaced_fallback_calls_all_succeed_although_the_server_closes_idle_connections(
        app, idle_fhir):
    body = b.with_fhir_server(b.without_prefetch(b.patient_view()), idle_fhir.base)
    statuses: Counter[int] = Counter()

    def caller(seed: int) -> None:
        client = app.test_client()
        rng = random.Random(seed)
        for _ in range(CALLS // CALLERS):
            # Around the server's idle timeout: some connections are reused as it closes them.
            time.sleep(rng.uniform(IDLE_SECONDS * 0.9, IDLE_SECONDS * 1.1))
            status = client.post(f"/cds-services/{PATIENT_VIEW}", json=body).status_code
            with lock:
                statuses[status] += 1

    lock = threading.Lock()
    # a few callers at once (as a worker's threads are), so 300 spaced calls take seconds
    with ThreadPoolExecutor(CALLERS) as pool:
        list(pool.map(caller, range(CALLERS)))
    assert statuses == {200: CALLS}
    # the service really reused connections (and the server really closed them)
    assert idle_fhir.connections < idle_fhir.requests


@pytest.mark.parametrize("settings_overrides", [{"fhir_budget_seconds": 0.5}])
def test_a_timeout_is_not_retried(client):
    """Only a connection that failed before any response byte is retried: a server that does
    not answer in time is asked once."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)  # read nothing, answer nothing

    threading.Thread(target=accept, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{listener.getsockname()[1]}/fhir"
        body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "patient"), base)
        response = client.post(f"/cds-services/{PATIENT_VIEW}", json=body)
        assert response.status_code == 412
        assert "timeout" in response.get_data(as_text=True)
        assert len(accepted) == 1  # one connection: no second attempt
    finally:
        listener.close()
        for connection in accepted:
            connection.close()


class _Unavailable(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    calls = 0

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).calls += 1
        self.send_response(503)
        self.send_header("Retry-After", "0")
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_status_is_the_servers_answer_and_is_not_retried(client):
    """Even a 503 with Retry-After (which urllib3 would retry by default) is asked once."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/fhir"
        body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "patient"), base)
        response = client.post(f"/cds-services/{PATIENT_VIEW}", json=body)
        assert response.status_code == 412
        assert "server-error" in response.get_data(as_text=True)
        assert _Unavailable.calls == 1
    finally:
        server.shutdown()
        server.server_close()
