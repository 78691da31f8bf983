"""Nothing lost: feedback posted by many threads at once, duplicates included, to a live service
with two gunicorn workers leaves exactly one row per distinct entry, and the rows survive a
restart (a new server on the same database file)."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from cds_service.storage.db import Database
from tests.robustness.conftest import start_live_server

THREADS = 16
POSTS_PER_THREAD = 12
DISTINCT = 60
SERVICE = "foot-drop-patient-view"


def distinct_entries() -> list[dict]:
    entries = []
    for i in range(DISTINCT):
        card = f"00000000-0000-4000-8000-{i:012d}"
        if i % 3 == 0:
            entries.append({"card": card, "outcome": "accepted",
                            "acceptedSuggestions": [{"id": f"s-{i}"}],
                            "outcomeTimestamp": "2026-11-20T11:00:00Z"})
        elif i % 3 == 1:
            entries.append({"card": card, "outcome": "overridden",
                            "overrideReason": {"reason": {"code": "not-applicable",
                                                          "system": "https://example.org/r"},
                                               "userComment": f"comment {i} ✓"},
                            "outcomeTimestamp": "2026-11-20T11:00:00.5Z"})
        else:  # same card, a second distinct outcome (a later override of the same card)
            entries.append({"card": f"00000000-0000-4000-8000-{i - 1:012d}",
                            "outcome": "overridden",
                            "outcomeTimestamp": "2026-11-20T11:05:00+01:00"})
    return entries


def plan(entries: list[dict]) -> list[list[list[dict]]]:
    """Per thread, the bodies it posts. Every entry is sent several times, by several threads,
    sometimes twice in one body, sometimes with its timestamp written differently."""
    rng = random.Random(20261120)
    per_thread: list[list[list[dict]]] = [[] for _ in range(THREADS)]
    for t in range(THREADS):
        for p in range(POSTS_PER_THREAD):
            # guarantee coverage: the first posts of all threads together send every entry
            first = entries[(t * POSTS_PER_THREAD + p) % DISTINCT]
            body = [first, *rng.sample(entries, rng.randint(0, 4))]
            if rng.random() < 0.3:
                body.append(dict(first))  # duplicate inside one post
            per_thread[t].append(body)
    return per_thread


def post_all(url: str, bodies: list[list[dict]], barrier: threading.Barrier) -> list[tuple]:
    session = requests.Session()
    barrier.wait(timeout=30)  # every thread starts together
    results = []
    for body in bodies:
        response = session.post(f"{url}/cds-services/{SERVICE}/feedback",
                                json={"feedback": body}, timeout=30)
        results.append((response.status_code, response.json()))
    session.close()
    return results


@pytest.mark.integration
def test_concurrent_duplicate_feedback_is_stored_once_and_survives_restart(tmp_path):
    entries = distinct_entries()
    bodies = plan(entries)
    server = start_live_server(tmp_path, workers=2, threads=4)
    try:
        barrier = threading.Barrier(THREADS)
        with ThreadPoolExecutor(THREADS) as pool:
            results = [r for batch in pool.map(lambda b: post_all(server.url, b, barrier), bodies)
                       for r in batch]
    finally:
        server.stop()

    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:3]
    assert sum(body["received"] for _, body in results) == sum(len(b) for t in bodies for b in t)
    # each distinct entry was stored by exactly one request, whichever worker got it
    assert sum(body["stored"] for _, body in results) == DISTINCT

    database = Database(server.database_url)
    rows = database.feedback_rows()
    database.dispose()
    assert len(rows) == DISTINCT
    assert len({r["entry_key"] for r in rows}) == DISTINCT
    assert {(r["card_uuid"], r["outcome"]) for r in rows} == {
        (e["card"], e["outcome"]) for e in entries}

    # restart on the same file: the rows are there, and re-sending everything stores nothing new
    restarted = start_live_server(tmp_path, workers=1, database_url=server.database_url)
    try:
        again = requests.post(f"{restarted.url}/cds-services/{SERVICE}/feedback",
                              json={"feedback": entries}, timeout=30)
        assert again.status_code == 200
        assert again.json() == {"received": DISTINCT, "stored": 0}
    finally:
        restarted.stop()
    database = Database(server.database_url)
    assert database.count_feedback() == DISTINCT
    database.dispose()
    assert "unhandled error" not in server.log() + restarted.log()
