"""Resolve each prefetch key as CDS Hooks 2.0 says.

- present key: use it; ``null`` means the EHR has no such data (not a failure);
- an OperationOutcome value: the EHR could not fetch it, so it counts as missing;
- missing key: fetch it from ``fhirServer`` by expanding our own template, with the bearer
  token the EHR sent; all missing keys are fetched concurrently within one deadline.

Keys whose data cannot be obtained and whose failure mode is ``fail`` are reported; the HTTP layer
answers 412 naming them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass, field
from typing import Any, Literal

import requests

from cds_service.knowledge.loader import ServiceSpec
from cds_service.prefetch.fhir_client import FetchFailed, FetchLimits, FetchResult, fetch
from cds_service.prefetch.templates import UnresolvedToken, expand
from cds_service.validation.request import HookRequest

Source = Literal["prefetch", "null", "fetched", "omitted"]


@dataclass(frozen=True)
class KeyFailure:
    key: str
    reason: str


@dataclass
class PrefetchResult:
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    failures: list[KeyFailure] = field(default_factory=list)
    omitted: list[KeyFailure] = field(default_factory=list)
    fetched_pages: int = 0
    truncated_keys: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.failures)


def _is_operation_outcome(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("resourceType") == "OperationOutcome"


def resolve_prefetch(
    service: ServiceSpec,
    request: HookRequest,
    *,
    session: requests.Session,
    executor: Executor,
    budget_seconds: float,
    limits: FetchLimits,
    require_https: bool = False,
) -> PrefetchResult:
    result = PrefetchResult()
    missing: dict[str, str] = {}
    for spec in service.prefetch:
        if spec.key in request.prefetch:
            value = request.prefetch[spec.key]
            if value is None:
                result.values[spec.key] = None
                result.sources[spec.key] = "null"
                continue
            if not _is_operation_outcome(value) and isinstance(value, Mapping):
                result.values[spec.key] = value
                result.sources[spec.key] = "prefetch"
                continue
        missing[spec.key] = spec.template

    if not missing:
        return result
    modes = {spec.key: spec.on_failure for spec in service.prefetch}

    def fail(key: str, reason: str) -> None:
        target = result.failures if modes[key] == "fail" else result.omitted
        target.append(KeyFailure(key, reason))
        if modes[key] != "fail":
            result.sources[key] = "omitted"

    server = request.fhir_server
    if not server:
        for key in missing:
            fail(key, "no-fhir-server")
        return result
    if require_https and not server.startswith("https://"):
        for key in missing:
            fail(key, "fhir-server-not-https")
        return result

    deadline = time.monotonic() + budget_seconds
    futures: dict[Future[FetchResult], str] = {}
    for key, template in missing.items():
        try:
            relative = expand(template, request.context)
        except UnresolvedToken:
            fail(key, "unresolved-token")
            continue
        futures[
            executor.submit(fetch, session, server, relative, request.access_token, deadline,
                            limits)
        ] = key
    done, not_done = wait(futures, timeout=max(0.0, deadline - time.monotonic()) + 0.05)
    for future in not_done:
        future.cancel()
        fail(futures[future], "timeout")
    for future in done:
        key = futures[future]
        try:
            fetched = future.result()
        except FetchFailed as exc:
            fail(key, exc.reason)
            continue
        except Exception:  # a bug in fetching must not become a 500 for the whole hook
            fail(key, "fetch-error")
            continue
        result.values[key] = fetched.value
        result.sources[key] = "fetched"
        result.fetched_pages += fetched.pages
        if fetched.truncated:
            result.truncated_keys.append(key)
    result.failures.sort(key=lambda f: f.key)
    return result
