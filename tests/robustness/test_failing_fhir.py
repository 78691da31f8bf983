"""Failing FHIR servers: every misbehaviour ends within the per-request budget with 412 (data a
rule needs is missing, the keys named) or 200 (what could be read was enough), and leaves no
fetch thread or server connection behind."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import wait

import pytest

from cds_service import create_app
from cds_service.clock import fixed_clock
from tests.conftest import NOW
from tests.robustness.fhir_double import PATIENT_ID, MisbehavingFhir, misbehaving_fhir

BUDGET = 1.0
SLACK = 0.5
SERVICE = "foot-drop-patient-view"
TOKEN = "fhir-access-token-for-robustness"


@pytest.fixture(scope="module")
def fhir() -> MisbehavingFhir:
    with misbehaving_fhir() as server:
        yield server


@pytest.fixture(scope="module")
def robust_app(tmp_path_factory):
    """One app for every case, so a thread or connection left over by one case hurts the next."""
    db = tmp_path_factory.mktemp("failing-fhir") / "cds.sqlite3"
    return create_app(
        {"database_url": f"sqlite:///{db}", "fhir_budget_seconds": BUDGET,
         "fhir_max_response_mb": 0.25, "fhir_max_pages": 4},
        clock=fixed_clock(NOW),
    )


@pytest.fixture(scope="module")
def key_modes(robust_app) -> dict[str, str]:
    service = robust_app.extensions["cds"].knowledge.services[SERVICE]
    return {spec.key: spec.on_failure for spec in service.prefetch}


def hook_request(fhir_server: str) -> dict:
    return {
        "hook": "patient-view",
        "hookInstance": "0f5b7c1e-8f43-4c2e-9a55-3c1a2b0d9e01",
        "fhirServer": fhir_server,
        "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                              "scope": "patient/*.read", "subject": "cds-service"},
        "context": {"userId": "Practitioner/dr-1", "patientId": PATIENT_ID},
    }


def failed_keys(body: dict) -> dict[str, str]:
    """{key: reason} from a 412 OperationOutcome."""
    out = {}
    for issue in body["issue"]:
        (expression,) = issue["expression"]
        key = expression.removeprefix("prefetch.")
        match = re.search(r"\(([^()]+)\)$", issue["diagnostics"])
        assert match, issue["diagnostics"]
        out[key] = match.group(1)
    return out


def assert_fetch_pool_free(app, within: float = 0.5) -> None:
    """Every fetch thread can run at once: none is still stuck in a socket read."""
    executor = app.extensions["cds"].pipeline.executor
    workers = executor._max_workers
    barrier = threading.Barrier(workers, timeout=within)
    futures = [executor.submit(barrier.wait) for _ in range(workers)]
    done, _ = wait(futures, timeout=within + 1.0)
    assert len(done) == workers and all(f.exception() is None for f in done), (
        "a fetch thread is still busy after the response was sent"
    )


def post(app, fhir_server: str):
    client = app.test_client()
    started = time.monotonic()
    response = client.post(f"/cds-services/{SERVICE}", json=hook_request(fhir_server))
    return response, time.monotonic() - started


# mode -> (status, reason every "fail" key must carry, or None when the patient read succeeds and
# only searches fail, with that reason)
CASES = {
    "slow": (412, "timeout", False),
    "drip": (412, "timeout", False),
    "stall": (412, "timeout", False),
    "500": (412, "server-error", False),
    "401": (412, "unauthorized", False),
    "badjson": (412, "invalid-json", False),
    "nonbundle": (412, "not-a-bundle", True),
    "huge": (412, "too-large", True),
    "hugechunked": (412, "too-large", True),
    "redirect": (412, "http-302", False),
    "loop": (200, None, False),
    "endless": (200, None, False),
    "gzip": (200, None, False),
    "ok": (200, None, False),
}


@pytest.mark.parametrize("mode", list(CASES))
def test_misbehaving_fhir_server_ends_within_budget(robust_app, fhir, key_modes, mode):
    status, reason, searches_only = CASES[mode]
    response, elapsed = post(robust_app, fhir.base(mode))
    body = response.get_json()

    assert response.status_code == status, body
    assert elapsed <= BUDGET + SLACK, f"{mode}: took {elapsed:.2f} s"
    if status == 412:
        assert body["resourceType"] == "OperationOutcome"
        expected = {k for k, m in key_modes.items() if m == "fail"}
        if searches_only:
            expected.discard("patient")
        got = failed_keys(body)
        assert set(got) == expected, got
        assert set(got.values()) == {reason}, got
        assert "traceback" not in response.get_data(as_text=True).lower()
    else:
        assert isinstance(body["cards"], list)

    # the service let go of the FHIR server's connections and its own fetch threads
    assert fhir.wait_idle(SLACK), f"{mode}: a FHIR server handler is still serving the service"
    assert_fetch_pool_free(robust_app)
    # and the worker is free: a normal request right after is answered quickly
    follow_up, follow_elapsed = post(robust_app, fhir.base("ok"))
    assert follow_up.status_code == 200
    assert follow_elapsed < BUDGET


def test_fhir_server_only_sees_the_token_on_its_own_urls(fhir):
    """The access token went to the FHIR server (it needs it), and no redirect was followed."""
    tokens = {auth for _, _, auth in fhir.requests}
    assert tokens == {f"Bearer {TOKEN}"}
    assert not any("169.254" in path for _, path, _ in fhir.requests)


def test_next_link_loop_is_followed_once(fhir):
    loop_paths = [path for mode, path, _ in fhir.requests if mode == "loop" and "page=" in path]
    # each search key: first page, page=b, page=a once (a loop back to page=b is detected)
    assert loop_paths, "the loop case did not follow next links"
    assert len(loop_paths) == len(set(loop_paths))


def test_unreachable_fhir_server_is_412_quickly(robust_app, key_modes):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    response, elapsed = post(robust_app, f"http://127.0.0.1:{port}/fhir")
    assert response.status_code == 412
    assert set(failed_keys(response.get_json()).values()) == {"unreachable"}
    assert elapsed <= BUDGET + SLACK


def test_fully_read_responses_keep_the_connection_for_the_next_fetch(fhir):
    """A body read to the end returns its connection to the pool (no new TCP/TLS per key)."""
    import requests

    from cds_service.prefetch.fhir_client import FetchLimits, fetch

    session = requests.Session()
    before = set(fhir.connections)
    for _ in range(5):
        result = fetch(session, fhir.base("ok"), f"Patient/{PATIENT_ID}", TOKEN,
                       time.monotonic() + BUDGET, FetchLimits(max_pages=2, max_bytes=10**6))
        assert result.value["id"] == PATIENT_ID
    assert len(fhir.connections - before) == 1
    session.close()
