"""Bad input on the wire, against the real server (gunicorn + Flask): oversized bodies (declared
or chunked) get 413, non-JSON bodies 415, malformed JSON 400, wrong methods 405, unknown paths 404,
each a JSON OperationOutcome and never a 5xx or a stack trace; the worker stays free."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.robustness.conftest import LIVE_MAX_BODY_MB

SERVICE_PATH = "/cds-services/foot-drop-patient-view"
FEEDBACK_PATH = SERVICE_PATH + "/feedback"
LIMIT = LIVE_MAX_BODY_MB * 1024 * 1024
pytestmark = pytest.mark.integration


def connect(live_server) -> http.client.HTTPConnection:
    parts = urlsplit(live_server.url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)


def read(response: http.client.HTTPResponse) -> tuple[int, dict, dict]:
    raw = response.read()
    assert b"Traceback" not in raw and b'File "' not in raw
    assert response.getheader("Content-Type", "").startswith("application/json"), raw[:200]
    return response.status, json.loads(raw), dict(response.getheaders())


def assert_outcome(body: dict, code: str | None = None) -> None:
    assert body["resourceType"] == "OperationOutcome"
    if code:
        assert body["issue"][0]["details"]["coding"][0]["code"] == code


@pytest.mark.parametrize("path", [SERVICE_PATH, FEEDBACK_PATH])
def test_declared_oversized_body_is_413_without_reading_it(live_server, path):
    conn = connect(live_server)
    started = time.monotonic()
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(50 * LIMIT))
    conn.endheaders()  # and never send the body: the answer must not wait for it
    status, body, _ = read(conn.getresponse())
    conn.close()
    assert status == 413
    assert_outcome(body, "body-too-large")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("path", [SERVICE_PATH, FEEDBACK_PATH])
def test_chunked_oversized_body_is_413(live_server, path):
    def chunks():
        yield b'{"hook": "patient-view", "pad": "'
        for _ in range(LIMIT // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    conn = connect(live_server)
    conn.request("POST", path, body=chunks(), encode_chunked=True,
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    status, body, _ = read(conn.getresponse())
    conn.close()
    assert status == 413
    assert_outcome(body, "body-too-large")


@pytest.mark.parametrize(
    ("content_type", "payload", "status", "code"),
    [
        ("text/plain", b'{"hook": "patient-view"}', 415, "unsupported-media-type"),
        (None, b'{"hook": "patient-view"}', 415, "unsupported-media-type"),
        ("application/x-www-form-urlencoded", b"hook=patient-view", 415,
         "unsupported-media-type"),
        ("application/json", b'{"hook": ', 400, "invalid-json"),
        ("application/json", b"\xff\xfe{}", 400, "invalid-json"),
        ("application/json", b"", 400, "invalid-json"),
        ("application/json", b"[" * 5000, 400, "invalid-json"),
        ("application/json", b"[]", 400, None),
        ("application/fhir+json", b"{}", 400, None),
    ],
)
@pytest.mark.parametrize("path", [SERVICE_PATH, FEEDBACK_PATH])
def test_malformed_bodies_are_4xx_json(live_server, path, content_type, payload, status, code):
    conn = connect(live_server)
    headers = {"Content-Type": content_type} if content_type else {}
    conn.request("POST", path, body=payload, headers=headers)
    got, body, _ = read(conn.getresponse())
    conn.close()
    assert got == status
    assert_outcome(body, code)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", SERVICE_PATH, 405),
        ("PUT", "/cds-services", 405),
        ("DELETE", FEEDBACK_PATH, 405),
        ("GET", "/no/such/path", 404),
        ("POST", "/cds-services/no-such-service", 404),
        ("POST", "/cds-services/no-such-service/feedback", 404),
    ],
)
def test_wrong_method_or_path_is_json(live_server, method, path, status):
    conn = connect(live_server)
    conn.request(method, path, body=b"{}" if method == "POST" else None,
                 headers={"Content-Type": "application/json"})
    got, body, headers = read(conn.getresponse())
    conn.close()
    assert got == status
    assert_outcome(body)
    if status == 405:
        assert headers.get("Allow")


SECRET = "eyJhbGciOiJFUzM4NCJ9.c2VjcmV0LXRva2Vu.c2ln"
PATIENT = "patient-7c1e90"


def send_raw(live_server, raw: bytes) -> tuple[int, dict, bytes]:
    """Send bytes gunicorn cannot parse; return the status, the decoded body and the head."""
    parts = urlsplit(live_server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), data[:300]
    assert b"<html" not in data.lower() and b"Traceback" not in data
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    return int(head.split(b" ", 2)[1]), json.loads(rest[:length]), head


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (f"GET /cds-services?patient={PATIENT}&x={'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n",
         414, "request-line-too-long"),
        (f"BOGUS\x01 /cds-services/{PATIENT} HTTP/1.1\r\nHost: x\r\n\r\n", 400,
         "malformed-http"),
        (f"GET /cds-services HTTP/9.9\r\nHost: x\r\nX-Patient: {PATIENT}\r\n\r\n", 400,
         "malformed-http"),
        (f"GET /cds-services HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\x00\r\n\r\n",
         400, "malformed-http"),
        ("GET /cds-services HTTP/1.1\r\nHost: x\r\n"
         + "".join(f"X-Filler-{i}: {SECRET}\r\n" for i in range(120)) + "\r\n",
         431, "headers-too-large"),
        (f"POST {SERVICE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400,
         "unreadable-body"),  # found by the app while it reads the body
        (f"POST {SERVICE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         "Transfer-Encoding: bogus, chunked\r\n\r\n0\r\n\r\n", 400,
         "unsupported-transfer-coding"),
    ],
    ids=["long-request-line", "bad-method", "bad-version", "control-char-in-token-header",
         "too-many-headers", "bad-chunk-size", "unknown-transfer-coding"],
)
def test_malformed_http_is_answered_in_json_and_never_logged(live_server, raw, status, code):
    got, body, head = send_raw(live_server, raw.encode("latin-1"))
    assert got == status
    assert_outcome(body, code)
    log = live_server.log()
    assert SECRET not in log and PATIENT not in log
    if code != "unreadable-body":
        assert b"connection: close" in head.lower()
        assert "malformed HTTP request refused" in log


def test_the_worker_is_free_after_all_that(live_server):
    conn = connect(live_server)
    started = time.monotonic()
    conn.request("GET", "/cds-services")
    status, body, _ = read(conn.getresponse())
    conn.close()
    assert status == 200 and body["services"]
    assert time.monotonic() - started < 1
    assert "unhandled error" not in live_server.log()


def test_the_single_threaded_worker_answers_malformed_http_in_json_too(tmp_path):
    from tests.robustness.conftest import start_live_server

    server = start_live_server(tmp_path, threads=1)
    try:
        got, body, _ = send_raw(server, b"GET /cds-services HTTP/9.9\r\nHost: x\r\n\r\n")
    finally:
        server.stop()
    assert got == 400
    assert_outcome(body, "malformed-http")
    assert "malformed HTTP request refused" in server.log()


@pytest.mark.parametrize("path", [
    "/cds-services//foot-drop-patient-view",
    "/cds-services/foot-drop-patient-view//feedback",
    "/cds-services/foot-drop-patient-view/",
])
def test_doubled_or_trailing_slash_is_a_json_404_never_a_redirect_to_the_host_header(
        live_server, path):
    # Under gunicorn the path reaches Werkzeug as sent; it used to answer a 308 in HTML with
    # Location: http://evil.example/..., taken from the Host header.
    conn = connect(live_server)
    conn.request("POST", path, body=b"{}",
                 headers={"Content-Type": "application/json", "Host": "evil.example"})
    response = conn.getresponse()
    status, body, headers = read(response)
    conn.close()
    assert status == 404
    assert_outcome(body, "not-found")
    assert "Location" not in headers and "evil.example" not in json.dumps(body)


def test_clients_that_stall_mid_request_do_not_hold_the_workers(tmp_path):
    """More stalled clients than threads (unfinished headers, a body shorter than announced):
    each is dropped after CDS_CLIENT_READ_TIMEOUT_SECONDS and the service answers again."""
    import requests

    from tests.robustness.conftest import start_live_server

    server = start_live_server(tmp_path, threads=2,
                               env={"CDS_CLIENT_READ_TIMEOUT_SECONDS": "1"})
    parts = urlsplit(server.url)
    stalled = []
    try:
        for i in range(6):
            sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " if i % 2 else
                         f"POST {SERVICE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         "application/json\r\nContent-Length: 500\r\n\r\n{".encode())
            stalled.append(sock)
        for sock in stalled:  # the server gives up on each: end of stream, or a JSON 400
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            assert not data or b"application/json" in data.lower()
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
        log = server.log()
        assert "client went quiet" in log
        assert "Traceback" not in log  # one line per closed connection, not a stack trace
    finally:
        for sock in stalled:
            sock.close()
        server.stop()
