"""Two service instances (gunicorn, 2 workers each) on one PostgreSQL behind HAProxy, all with
the same CDS_PUBLIC_BASE_URL and CDS_AUTH=required: the state they share lives in the database.

Outcomes are counted, nothing is timed. The kill -9 test runs last (it stops instance a).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from cds_service.storage.db import Database
from tests.conftest import TEST_PSEUDONYM_KEY
from tests.production.ehr import TestEhr
from tests.production.instances import Haproxy, Instance, launch, start_haproxy, wait_ready

pytestmark = pytest.mark.integration
BASE = "https://cds.test.example"
SERVICE = "foot-drop-patient-view"
FEEDBACK_PATH = f"/cds-services/{SERVICE}/feedback"


@dataclass
class Deployment:
    a: Instance
    b: Instance
    proxy: Haproxy
    ehr: TestEhr
    database: Database
    home: Path

    def headers(self, path: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.ehr.token(BASE + path)}"}

    def feedback(self, url: str, card: str) -> requests.Response:
        body = {"feedback": [{"card": card, "outcome": "overridden",
                              "outcomeTimestamp": "2026-11-20T12:00:00Z"}]}
        return requests.post(url + FEEDBACK_PATH, json=body, headers=self.headers(FEEDBACK_PATH),
                             timeout=15)

    def stored_cards(self, prefix: str) -> list[str]:
        with self.database.engine.connect() as conn:
            return list(conn.execute(
                text("select card_uuid from feedback where card_uuid like :p"),
                {"p": prefix + "%"}).scalars())


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, postgres_cluster):
    tmp = tmp_path_factory.mktemp("two-instances")
    ehr = TestEhr(tmp)
    database_url = postgres_cluster.new_database()
    home = tmp / "home"  # gunicorn would put a shared control socket here by default
    home.mkdir()
    env = {"CDS_DATABASE_URL": database_url, "CDS_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
           "CDS_AUTH": "required",
           "CDS_TRUSTED_ISSUERS_FILE": str(ehr.issuers_file), "CDS_PUBLIC_BASE_URL": BASE,
           "CDS_PURGE_INTERVAL_SECONDS": "0", "HOME": str(home)}
    # started together on an empty database: both migrate, under the database lock
    a, b = launch(tmp, "a", env), launch(tmp, "b", env)
    started: list[object] = [a, b]
    try:
        wait_ready(a)
        wait_ready(b)
        proxy = start_haproxy(tmp, [a, b])
        started.append(proxy)
        database = Database(database_url)
        yield Deployment(a, b, proxy, ehr, database, home)
        database.dispose()
    finally:
        for process in reversed(started):
            process.stop()  # type: ignore[attr-defined]


def test_instances_started_together_on_an_empty_database_both_serve(deployment):
    for instance in (deployment.a, deployment.b):
        assert requests.get(instance.url + "/readyz", timeout=5).status_code == 200
    with deployment.database.engine.connect() as conn:
        assert conn.execute(text("select count(*) from alembic_version")).scalar_one() == 1
    # no gunicorn control socket shared through $HOME (none unless CDS_CONTROL_SOCKET is set)
    assert not (deployment.home / ".gunicorn").exists()


def test_a_jwt_replayed_to_the_other_instance_is_refused(deployment):
    headers = deployment.headers("/cds-services")
    first = requests.get(deployment.a.url + "/cds-services", headers=headers, timeout=5)
    replayed = requests.get(deployment.b.url + "/cds-services", headers=headers, timeout=5)
    assert first.status_code == 200
    assert replayed.status_code == 401


def test_the_same_feedback_sent_concurrently_through_both_is_stored_once(deployment):
    cards = [f"dup-{i}" for i in range(20)]
    targets = [deployment.a.url, deployment.b.url, deployment.proxy.url]
    jobs = [(url, card) for card in cards for url in targets]
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda job: deployment.feedback(*job), jobs))
    assert [r.status_code for r in responses] == [200] * len(jobs)
    assert sum(r.json()["stored"] for r in responses) == len(cards)
    assert sorted(deployment.stored_cards("dup-")) == sorted(cards)


def test_kill_9_of_one_instance_under_load_loses_nothing_acknowledged(deployment):
    acknowledged: list[str] = []
    failed: list[str] = []
    after_kill: list[int] = []
    killed = threading.Event()
    stop = threading.Event()
    lock = threading.Lock()

    def load(worker: int) -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            card = f"load-{worker}-{i}"
            try:
                status = deployment.feedback(deployment.proxy.url, card).status_code
            except requests.RequestException:
                status = 0
            with lock:
                (acknowledged if status == 200 else failed).append(card)
                if killed.is_set():
                    after_kill.append(status)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(load, w) for w in range(4)]
        wait_for(lambda: len(acknowledged) >= 40)
        deployment.a.kill_hard()
        killed.set()
        wait_for(lambda: after_kill.count(200) >= 60)
        stop.set()
        for future in futures:
            future.result()

    stored = deployment.stored_cards("load-")
    assert len(stored) == len(set(stored))  # exactly once each
    assert set(acknowledged) <= set(stored)  # every 200 was stored
    # the other instance keeps answering, directly and through the proxy
    assert after_kill.count(200) >= 60
    assert deployment.feedback(deployment.b.url, "after-kill").status_code == 200


def wait_for(condition, limit_s: float = 60.0) -> None:
    end = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < end, "the load did not make progress"
        time.sleep(0.05)
