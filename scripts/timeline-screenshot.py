"""Make docs/timeline-app.png: the SMART timeline app for a fixture patient, in headless Chromium.

    .venv/bin/python scripts/timeline-screenshot.py [patient-view fixture stem] [output.png]

Starts the FHIR test server and the service on loopback ports (as tests/browser does), loads the
fixture, opens the app with an open-server launch and saves a full-page screenshot.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from cds_service import cli, create_app  # noqa: E402
from cds_service.clock import fixed_clock  # noqa: E402
from cds_service.fixtures import FIXTURES_DIR, load_fixture  # noqa: E402
from tests.browser.conftest import CHROMIUM_ARGS, chromium_path  # noqa: E402
from tests.conftest import NOW  # noqa: E402
from tests.integration.conftest import start_fhir_server  # noqa: E402


def main() -> None:
    stem = sys.argv[1] if len(sys.argv) > 1 else "fires-urgent-progressive-weakness-3minus"
    output = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "timeline-app.png"
    fixture = FIXTURES_DIR / "patient-view" / f"{stem}.json"
    patient = load_fixture(fixture, NOW).request["context"]["patientId"]
    fhir = start_fhir_server()
    try:
        cli.load_fixtures(fhir.base, [fixture], NOW)
        with tempfile.TemporaryDirectory() as tmp:
            app = create_app({"database_url": f"sqlite:///{tmp}/cds.sqlite3",
                              "log_level": "WARNING", "smart_connect_src": "http://127.0.0.1:*"},
                             clock=fixed_clock(NOW))
            server = make_server("127.0.0.1", 0, app, threaded=True)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            base = f"http://127.0.0.1:{server.server_port}"
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium_path(),
                                                     args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1180, "height": 900})
                page.goto(f"{base}/app/launch.html?fhirServiceUrl={quote(fhir.base, safe='')}"
                          f"&patientId={patient}")
                page.wait_for_selector("body[data-ready=true]")
                page.screenshot(path=str(output), full_page=True)
                browser.close()
            server.shutdown()
            server.server_close()
    finally:
        fhir.stop()
    print(output)


if __name__ == "__main__":
    main()
