"""Bad input on the wire, against the real server (gunicorn + Flask): oversized bodies (declared
or chunked) get 413, non-JSON bodies 415, malformed JSON 400, wrong methods 405, unknown paths 404,
each a JSON OperationOutcome and never a 5xx or a stack trace; the worker stays free."""

from __future__ import annotations

import http.client
import json
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


def test_the_worker_is_free_after_all_that(live_server):
    conn = connect(live_server)
    started = time.monotonic()
    conn.request("GET", "/cds-services")
    status, body, _ = read(conn.getresponse())
    conn.close()
    assert status == 200 and body["services"]
    assert time.monotonic() - started < 1
    assert "unhandled error" not in live_server.log()
