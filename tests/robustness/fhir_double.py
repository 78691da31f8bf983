"""A FHIR server on loopback that misbehaves on purpose.

The first path segment picks the behaviour, so one server serves every case:
``http://127.0.0.1:<port>/<mode>/Patient/p1``. Handlers that stall watch their socket and stop as
soon as the client hangs up, so ``busy`` (handlers still inside a request) tells a test whether the
service really dropped the connection. Every wait is bounded; ``close()`` ends the rest.
"""

from __future__ import annotations

import gzip
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

PATIENT_ID = "p1"
PATIENT = {"resourceType": "Patient", "id": PATIENT_ID, "gender": "female",
           "birthDate": "1970-01-01"}
MODES = ("ok", "gzip", "slow", "drip", "stall", "500", "401", "badjson", "nonbundle", "loop",
         "endless", "huge", "hugechunked", "redirect", "badheaders")
SLOW_SECONDS = 3.0  # well past any budget a test sets
DRIP_INTERVAL = 0.05
DRIP_MAX_BYTES = 200  # 10 s of dripping at most
STALL_AFTER = 0.8  # stall mode drips this long, then goes silent
HUGE_BYTES = 600 * 1024


def searchset(entries: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset",
                              "entry": [{"resource": r} for r in entries]}
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


class MisbehavingFhir(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the service opens a connection per prefetch key at once

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.busy = 0
        self.requests: list[tuple[str, str, str | None]] = []  # (mode, path, Authorization)
        self.connections: set[tuple[str, int]] = set()  # client addresses seen

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def base(self, mode: str) -> str:
        return f"{self.origin}/{mode}"

    def wait_idle(self, timeout: float) -> bool:
        """True when no handler is inside a request within ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if self.busy == 0:
                    return True
            time.sleep(0.01)
        with self.lock:
            return self.busy == 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: MisbehavingFhir

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.busy += 1
        try:
            self._dispatch()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        finally:
            with self.server.lock:
                self.server.busy -= 1

    # -- helpers ---------------------------------------------------------------------------
    def _client_gone(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True as soon as the client has closed the connection."""
        end = time.monotonic() + seconds
        while not self.server.stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable:
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return True
                except OSError:
                    return True
        return True

    def _send(self, status: int, body: bytes, *, content_type: str = "application/fhir+json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, orjson.dumps(value))

    def _normal(self, resource_path: str, query: dict[str, list[str]]) -> Any:
        if resource_path.startswith("Patient/"):
            return PATIENT if resource_path == f"Patient/{PATIENT_ID}" else None
        return searchset([])

    # -- behaviours ------------------------------------------------------------------------
    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        mode, _, resource_path = parts.path.lstrip("/").partition("/")
        query = parse_qs(parts.query)
        with self.server.lock:
            self.server.requests.append((mode, self.path, self.headers.get("Authorization")))
            self.server.connections.add(self.client_address)
        is_search = "/" not in resource_path
        if mode == "ok":
            value = self._normal(resource_path, query)
            if value is None:
                self._json({"resourceType": "OperationOutcome", "issue": []}, 404)
            else:
                self._json(value)
        elif mode == "gzip":
            body = gzip.compress(orjson.dumps(self._normal(resource_path, query)))
            self._send(200, body, headers={"Content-Encoding": "gzip"})
        elif mode == "slow":
            if not self._client_gone(SLOW_SECONDS):
                self._json(self._normal(resource_path, query))
        elif mode in ("drip", "stall"):
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            started = time.monotonic()
            for _ in range(DRIP_MAX_BYTES):
                if self.server.stop.is_set():
                    break
                self.wfile.write(b" ")
                self.wfile.flush()
                if mode == "stall" and time.monotonic() - started > STALL_AFTER:
                    self._client_gone(SLOW_SECONDS)
                    break
                time.sleep(DRIP_INTERVAL)
            self.close_connection = True
        elif mode == "500":
            self._json({"resourceType": "OperationOutcome", "issue": []}, 500)
        elif mode == "401":
            self._send(401, b'{"error":"invalid_token"}', content_type="application/json",
                       headers={"WWW-Authenticate": "Bearer"})
        elif mode == "badjson":
            self._send(200, b'{"resourceType": "Bundle", "entry": [', )
        elif mode == "nonbundle":
            self._json(PATIENT)  # a resource, but not the searchset Bundle a search returns
        elif mode == "loop":
            page = query.get("page", ["a"])[0]
            target = "b" if page == "a" else "a"
            kind = resource_path.split("?")[0]
            self._json(self._normal(resource_path, query) if not is_search else
                       searchset([], f"{self.server.base('loop')}/{kind}?page={target}"))
        elif mode == "endless":
            page = int(query.get("page", ["0"])[0])
            kind = resource_path.split("?")[0]
            self._json(self._normal(resource_path, query) if not is_search else
                       searchset([], f"{self.server.base('endless')}/{kind}?page={page + 1}"))
        elif mode in ("huge", "hugechunked"):
            if not is_search:
                self._json(PATIENT)
                return
            filler = [{"resourceType": "Observation", "id": f"o{i}", "status": "final",
                       "code": {"text": "x" * 200}, "subject": {"reference": "Patient/other"}}
                      for i in range(HUGE_BYTES // 250)]
            body = orjson.dumps(searchset(filler))
            if mode == "huge":
                self._send(200, body)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 16384):
                chunk = body[start:start + 16384]
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif mode == "badheaders":  # a header line without a colon: urllib3 warns, with the URL
            body = orjson.dumps(self._normal(resource_path, query))
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n"
                             b"Content-Length: " + str(len(body)).encode() +
                             b"\r\nNoColonHere\r\n\r\n" + body)
            self.close_connection = True
        elif mode == "redirect":
            self._send(302, b"", headers={"Location": "http://169.254.169.254/latest"})
        else:
            self._json({"resourceType": "OperationOutcome", "issue": []}, 404)


@contextmanager
def misbehaving_fhir() -> Iterator[MisbehavingFhir]:
    server = MisbehavingFhir()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="misbehaving-fhir", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
