"""A FHIR server on loopback that closes keep-alive connections idle for ``idle_seconds``, as
many real servers and their proxies do (the stale-connection race of issue 13)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

PATIENT_ID = "p1"
PATIENT = {"resourceType": "Patient", "id": PATIENT_ID, "gender": "female",
           "birthDate": "1970-01-01"}
EMPTY_SEARCHSET = {"resourceType": "Bundle", "type": "searchset", "entry": []}


class IdleClosingFhir(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, idle_seconds: float) -> None:
        handler = type("Handler", (_Handler,), {"timeout": idle_seconds})
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()
        self.requests = 0
        self.connections = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/fhir"

    def __enter__(self) -> IdleClosingFhir:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: IdleClosingFhir

    def setup(self) -> None:
        super().setup()  # applies ``timeout``: waiting for the next request ends the connection
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def log_error(self, format: str, *args: Any) -> None:
        pass  # "Request timed out": the idle close, on purpose

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests += 1
        path = self.path.split("?")[0].removeprefix("/fhir/")
        value = PATIENT if path == f"Patient/{PATIENT_ID}" else EMPTY_SEARCHSET
        body = orjson.dumps(value)
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
