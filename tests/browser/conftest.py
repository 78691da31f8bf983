"""A real HTTP server for the preview page, and headless Chromium through Playwright.

Chromium is Debian's (/usr/bin/chromium, installed by scripts/setup-test-env.sh), driven with
Playwright's ``executable_path``: ``playwright install`` is never needed. Without Chromium the
browser tests are skipped, unless CI is set, where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from cds_service import create_app
from cds_service.clock import fixed_clock
from tests.conftest import NOW

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def unavailable(reason: str) -> None:
    # A failure, never a skip: `make test` (scripts/setup-test-env.sh) installs Chromium, and a
    # browser check that silently stops running is worse than one that says why it cannot.
    pytest.fail(f"{reason} (run `make test`, which installs it)", pytrace=False)


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    db = tmp_path_factory.mktemp("preview") / "cds.sqlite3"
    return create_app({"database_url": f"sqlite:///{db}", "log_level": "WARNING"},
                      clock=fixed_clock(NOW))


@contextlib.contextmanager
def served(app: Any, name: str) -> Iterator[str]:
    """``app`` under werkzeug's threaded server on an ephemeral 127.0.0.1 port, in a thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture(scope="module")
def live_server(live_app) -> Iterator[str]:
    """The app under werkzeug's threaded server on 127.0.0.1, in a background thread."""
    with served(live_app, "preview-server") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        unavailable("Debian chromium is not installed (run scripts/setup-test-env.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.problems = problems  # type: ignore[attr-defined]
    yield page
    context.close()
