"""Per-process wiring: settings, knowledge, database, HTTP session, thread pool, verifier.

Threads and sockets do not survive a fork, so the pool and the session are created lazily in
the process that uses them (gunicorn workers), keyed by pid.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError
from urllib3.util.retry import Retry

from cds_service.clock import Clock
from cds_service.config import Settings
from cds_service.knowledge.loader import Knowledge
from cds_service.logs import log_event
from cds_service.pipeline import Pipeline
from cds_service.storage.db import Database

log = logging.getLogger("cds_service.purge")


@dataclass
class Runtime:
    settings: Settings
    knowledge: Knowledge
    database: Database
    clock: Clock
    verifier: Any | None = None
    session_factory: Any | None = None
    pseudonym_key: bytes | None = field(default=None, repr=False)
    _pid: int = -1
    _pipeline: Pipeline | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None or self._pid != os.getpid():
            with self._lock:
                if self._pipeline is None or self._pid != os.getpid():
                    session = (self.session_factory or new_session)(self.settings)
                    executor = ThreadPoolExecutor(
                        max_workers=fetch_workers(self.settings, self.knowledge),
                        thread_name_prefix="fhir",
                    )
                    tune_gc()
                    self._pipeline = Pipeline(self.settings, self.knowledge, self.clock,
                                              session, executor, self.database,
                                              pseudonym_key=self.pseudonym_key)
                    self._pid = os.getpid()
                    start_purge_thread(self)
        return self._pipeline


def start_purge_thread(runtime: Runtime) -> threading.Thread | None:
    """Purge expired rows every CDS_PURGE_INTERVAL_SECONDS in this worker process, outside any
    request. Every worker of every instance runs one; the deletes are idempotent, so they only
    cost a little repeated work. The first run waits a random part of the interval, so workers
    started together do not purge together."""
    interval = runtime.settings.purge_interval_seconds
    if interval <= 0:
        return None

    def loop() -> None:
        wait = random.uniform(0, interval)
        stop = threading.Event()
        while not stop.wait(wait):
            wait = interval
            purge_once(runtime)

    thread = threading.Thread(target=loop, name="purge", daemon=True)
    thread.start()
    return thread


def purge_once(runtime: Runtime) -> dict[str, int] | None:
    try:
        deleted = runtime.database.purge(runtime.clock().astimezone(UTC),
                                         timedelta(days=runtime.settings.retention_days))
    except Exception as exc:  # the database may be down: try again next interval
        log_event(log, "purge failed", logging.WARNING, error=type(exc).__name__)
        return None
    log_event(log, "purged expired rows", deleted=deleted)
    return deleted


def fetch_workers(settings: Settings, knowledge: Knowledge) -> int:
    """Threads for FHIR fallback fetches: the setting, but never fewer than one service's prefetch
    keys, so that the queries of one request all run at once (a request missing all 9 keys takes
    the time of its slowest query, not two rounds of queries)."""
    keys = max((len(s.prefetch) for s in knowledge.services.values()), default=1)
    return max(settings.fhir_max_workers, keys)


_gc_tuned = False


def tune_gc() -> None:
    """Once per process, when it starts serving: stop the cyclic garbage collector from
    re-scanning what start-up built (knowledge, compiled FHIR models: gc.freeze), and let it run
    after every 50,000 new container objects instead of every 700. Decoding a 10 MB prefetch
    creates about a million dicts and lists, none of them in reference cycles; with the default
    thresholds the collector scans the growing heap dozens of times meanwhile, which more than
    doubles the cost of the decode. Cycles are still collected, just less often."""
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


class StaleConnectionRetry(Retry):
    """Retry a GET once when its connection failed before any response byte arrived.

    A keep-alive connection the FHIR server has just closed (its idle timeout) fails as soon as
    the request is written: the server sends nothing, the connection resets or ends. That is
    not the server's answer, so the request goes again once on a new connection. Timeouts are
    not retried (the budget is spent already, and a slow server would only be asked twice),
    nor is anything once a response has started (``stream=True``: the body is read later,
    outside urllib3's retry loop), nor any method but GET, nor any status.
    """

    def increment(self, method: str | None = None, url: str | None = None,
                  response: Any = None, error: Exception | None = None,
                  _pool: Any = None, _stacktrace: Any = None) -> Retry:
        if (response is not None or error is None or method != "GET"
                or isinstance(error, (ReadTimeoutError, ConnectTimeoutError))):
            # what max_retries=0 does: the error surfaces as it always did
            return Retry(0, read=False).increment(method, url, response, error, _pool,
                                                  _stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)


def stale_connection_retry() -> Retry:
    # respect_retry_after_header off: urllib3 would otherwise retry a 503 (413, 429) that
    # carries Retry-After; a status is the server's answer and is never retried here.
    return StaleConnectionRetry(total=1, connect=1, read=1, status=0, other=0, redirect=False,
                                backoff_factor=0, raise_on_status=False,
                                respect_retry_after_header=False,
                                allowed_methods=frozenset({"GET"}))


def new_session(settings: Settings) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=16, pool_maxsize=max(16, settings.fhir_max_workers * 2),
                          max_retries=stale_connection_retry())
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "foot-drop-cds/0.1"
    session.trust_env = False  # no proxy settings or netrc credentials leak into EHR calls
    return session
