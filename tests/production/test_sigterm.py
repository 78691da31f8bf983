"""SIGTERM to a running instance: a hook call whose FHIR fallback is still in flight finishes
(200) within CDS_GRACEFUL_TIMEOUT_SECONDS, and the instance then exits cleanly. The instance
runs with its own gunicorn control socket (CDS_CONTROL_SOCKET)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
import requests

from tests.http import builders as b
from tests.production.instances import launch, wait_ready

pytestmark = pytest.mark.integration
SERVICE = "foot-drop-patient-view"
FHIR_DELAY_S = 1.5


class SlowFhir(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SlowHandler)
        self.request_arrived = threading.Event()
        self.release = threading.Event()


class _SlowHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SlowFhir

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.request_arrived.set()
        self.server.release.wait(FHIR_DELAY_S)  # the answer comes after the SIGTERM
        body = orjson.dumps(b.patient())
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_sigterm_lets_the_in_flight_hook_call_finish(tmp_path):
    fhir = SlowFhir()
    threading.Thread(target=fhir.serve_forever, daemon=True).start()
    control_socket = tmp_path / "instance.ctl"
    instance = launch(tmp_path, "graceful", {
        "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'cds.sqlite3'}", "CDS_AUTH": "off",
        "CDS_FHIR_BUDGET_SECONDS": "8", "CDS_GRACEFUL_TIMEOUT_SECONDS": "15",
        "CDS_CONTROL_SOCKET": str(control_socket), "CDS_PURGE_INTERVAL_SECONDS": "0",
    }, workers=1)
    try:
        wait_ready(instance)
        assert control_socket.exists()  # its own socket, at the configured path
        body = b.with_fhir_server(
            b.without_prefetch(b.patient_view(prefetch=b.foot_drop_prefetch()), "patient"),
            f"http://127.0.0.1:{fhir.server_port}/fhir")
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(requests.post, f"{instance.url}/cds-services/{SERVICE}",
                               json=body, timeout=30)
            assert fhir.request_arrived.wait(20), instance.log()[-2000:]
            instance.proc.terminate()  # SIGTERM while the fallback fetch is in flight
            response = call.result()
        assert response.status_code == 200, response.text
        assert response.json()["cards"]
        assert instance.proc.wait(timeout=30) == 0
    finally:
        fhir.release.set()
        instance.stop()
        fhir.shutdown()
        fhir.server_close()
