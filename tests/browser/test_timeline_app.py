"""The SMART timeline app in Debian's Chromium, against the real FHIR test server.

- open-server launch (``launch.html?fhirServiceUrl=...&patientId=...``): the chart shows every
  grade with its date, the red flag by name, and the same cards a patient-view hook call gives;
- EHR launch end to end against a real OAuth 2.0 server (``oidc-provider``, started here with
  SMART launch context): launch, sign in, consent, token with ``patient``, app renders; the
  same for a standalone launch (scope ``launch/patient``; the server stands in for the picker);
- a refused authorisation and a token without patient context each give a clear message.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from cds_service import cli, create_app
from cds_service.clock import fixed_clock
from cds_service.config import DEFAULT_SMART_APP_DIR
from cds_service.fixtures import FIXTURES_DIR, load_fixture
from tests.browser.conftest import served, unavailable
from tests.conftest import NOW
from tests.integration.conftest import (
    FHIR_SERVER_DIR,
    FhirServer,
    FhirServerUnavailable,
    start_fhir_server,
)
from tests.processes import stop_process

PATIENT = "fd-pv-progressive"
FIXTURE = FIXTURES_DIR / "patient-view" / "fires-urgent-progressive-weakness-3minus.json"
CLIENT_ID = "foot-drop-timeline"
READY = "body[data-ready=true]"


@pytest.fixture(scope="module")
def fhir() -> Iterator[FhirServer]:
    try:
        server = start_fhir_server()
    except FhirServerUnavailable as exc:
        unavailable(f"FHIR test server unavailable: {exc}")
        raise
    try:
        cli.load_fixtures(server.base, [FIXTURE], NOW)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory) -> Iterator[str]:
    if not (DEFAULT_SMART_APP_DIR / "timeline.js").is_file():
        unavailable("the SMART app is not built (app/dist is missing)")
    db = tmp_path_factory.mktemp("smart-app") / "cds.sqlite3"
    app = create_app({"database_url": f"sqlite:///{db}", "log_level": "WARNING",
                      "smart_connect_src": "http://127.0.0.1:*"}, clock=fixed_clock(NOW))
    with served(app, "smart-app-server") as url:
        yield url


@pytest.fixture(scope="module")
def auth_server(app_server: str, fhir: FhirServer) -> Iterator[dict[str, Any]]:
    """oidc-provider on an ephemeral loopback port, announced by the FHIR server's SMART
    discovery document (as an EHR's FHIR server would)."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is not on PATH")
    proc = subprocess.Popen(
        [node, str(FHIR_SERVER_DIR / "auth_server.mjs"), "--port", "0", "--client-id", CLIENT_ID,
         "--redirect-uri", f"{app_server}/app/index.html", "--standalone-patient", PATIENT],
        cwd=FHIR_SERVER_DIR, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        try:
            ready = json.loads(lines.get(timeout=30))
        except (queue.Empty, ValueError):
            pytest.fail("the OAuth 2.0 test server (auth_server.mjs) did not start; "
                        "run `make test`")
        discovery = {
            "issuer": ready["issuer"],
            "authorization_endpoint": ready["authorization_endpoint"],
            "token_endpoint": ready["token_endpoint"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "fhirUser", "launch", "launch/patient",
                                 "patient/*.read"],
            "capabilities": ["launch-ehr", "launch-standalone", "client-public",
                             "context-ehr-patient", "context-standalone-patient",
                             "permission-patient", "sso-openid-connect"],
        }
        request = urllib.request.Request(
            fhir.origin + "/__admin/smart-configuration", method="PUT",
            data=json.dumps(discovery).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 204
        yield ready
    finally:
        stop_process(proc, 5)
        if proc.stdout is not None:
            proc.stdout.close()


def hook_cards(app_server: str) -> list[dict[str, Any]]:
    request = load_fixture(FIXTURE, NOW).request
    http = urllib.request.Request(
        f"{app_server}/cds-services/foot-drop-patient-view", method="POST",
        data=json.dumps(request).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(http, timeout=30) as response:
        return json.loads(response.read())["cards"]


def table_rows(page) -> list[list[str]]:
    return page.eval_on_selector_all(
        "#table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


def assert_timeline_shown(page, app_server: str) -> None:
    rows = table_rows(page)
    assert ["2026-11-14", "Ankle dorsiflexion, left", "4/5 (MRC grade)"] in rows
    assert ["2026-11-18", "Ankle dorsiflexion, left", "3-/5 (MRC grade)"] in rows
    assert ["2026-11-18", "Red flag: progressive weakness", "recent, active"] in rows
    chart = page.inner_text("#chart")
    assert "red flag: progressive weakness (2026-11-18)" in chart
    assert "4/5" in chart and "3-/5" in chart
    titles = page.eval_on_selector_all("#chart .point title", "ts => ts.map(t => t.textContent)")
    assert "Ankle dorsiflexion, left: 4/5 on 2026-11-14" in titles
    assert "Ankle dorsiflexion, left: 3-/5 on 2026-11-18" in titles
    shown = page.eval_on_selector_all("#cards .card .card-summary",
                                      "s => s.map(x => x.textContent)")
    assert shown == [c["summary"] for c in hook_cards(app_server)]
    assert page.locator("#cards .card.critical").count() == 1
    assert page.locator("#problem").is_hidden()


def test_open_server_launch_draws_grades_red_flag_and_the_cards(page, app_server, fhir):
    url = (f"{app_server}/app/launch.html?fhirServiceUrl={quote(fhir.base, safe='')}"
           f"&patientId={PATIENT}")
    page.goto(url)
    page.wait_for_selector(READY)
    assert_timeline_shown(page, app_server)
    summary = page.inner_text("#summary")
    assert "Foot drop (left) since 2026-11-18; course: worsening" in summary
    assert "Red flags: progressive weakness" in summary
    assert page.problems == []  # type: ignore[attr-defined]


def sign_in(page) -> None:
    page.fill("input[name=login]", "dr-test")
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    page.click("text=Continue")  # consent


def ehr_launch(page, app_server: str, fhir: FhirServer, launch: str) -> None:
    page.goto(f"{app_server}/app/launch.html?iss={quote(fhir.base, safe='')}&launch={launch}")
    page.wait_for_selector("input[name=login]")


def test_ehr_launch_authorises_gets_a_patient_and_renders(page, app_server, fhir, auth_server):
    ehr_launch(page, app_server, fhir, f"patient:{PATIENT}")
    sign_in(page)
    page.wait_for_selector(READY)
    assert page.url.startswith(f"{app_server}/app/index.html")
    assert_timeline_shown(page, app_server)
    # The service never read FHIR for the app: every FHIR read came from the browser, with a token.
    assert any(path.startswith("/fhir/R4/Observation") for _, path in fhir.request_log())


def test_standalone_launch_with_patient_selection_renders(page, app_server, fhir, auth_server):
    page.goto(f"{app_server}/app/launch.html?iss={quote(fhir.base, safe='')}")
    page.wait_for_selector("input[name=login]")
    sign_in(page)
    page.wait_for_selector(READY)
    assert_timeline_shown(page, app_server)


def test_refused_authorisation_says_so_in_the_page(page, app_server, fhir, auth_server):
    ehr_launch(page, app_server, fhir, f"patient:{PATIENT}")
    page.click("text=[ Cancel ]")
    page.wait_for_selector("#problem:not([hidden])")
    message = page.inner_text("#problem")
    assert "Authorisation was refused" in message
    assert page.locator("#content").is_hidden()


def test_token_without_patient_context_says_so_in_the_page(page, app_server, fhir, auth_server):
    ehr_launch(page, app_server, fhir, "no-patient-context")
    sign_in(page)
    page.wait_for_selector("#problem:not([hidden])")
    assert "No patient in context" in page.inner_text("#problem")
    assert page.locator("#content").is_hidden()


def test_launch_page_without_a_server_explains_how_to_open_it(page, app_server):
    page.goto(f"{app_server}/app/launch.html")
    page.wait_for_selector("#status.problem")
    assert "opened by the EHR" in page.inner_text("#status")
