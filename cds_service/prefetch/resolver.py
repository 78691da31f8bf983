"""Resolve each prefetch key as CDS Hooks 2.0 says.

- present key: use it; ``null`` means the EHR has no such data (not a failure);
- an OperationOutcome value: the EHR could not fetch it, so it counts as missing;
- a value that cannot be what the template's query returns (not a Bundle for a search, not the
  resource type for a read): counted as missing too, never read as "no data", which could hide a
  red flag;
- missing key: fetch it from ``fhirServer`` by expanding our own template, with the bearer
  token the EHR sent; all missing keys are fetched concurrently within one deadline;
- a searchset the EHR sent with a ``next`` link (2.0 allows paged prefetch): the remaining pages
  are fetched from ``fhirServer`` like a missing key (same server only, same page cap).

Keys whose data cannot be obtained and whose failure mode is ``fail`` are reported; the HTTP layer
answers 412 naming them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urljoin, urlsplit

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


def _fits_template(template: str, value: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    """Could ``value`` be the answer to the template's query? A search returns a Bundle; a read
    ("Patient/{{context.patientId}}") returns that very resource (a Bundle of it is tolerated):
    a Patient with another id is another patient's record, never this one's."""
    resource_type = value.get("resourceType")
    if resource_type == "Bundle":
        entries = value.get("entry", [])
        if not isinstance(entries, list):
            return False
        # A search returns its own type, maybe with _include'd others: a Bundle with none of it
        # and something else (Observations under "conditions") answers another query, and one
        # with only an OperationOutcome is an error where the results belong. The scan stops at
        # the first resource of the wanted type, so a normal searchset costs one entry.
        wanted = template.split("?", 1)[0].split("/", 1)[0]
        seen: set[str] = set()
        for entry in entries:
            resource = entry.get("resource") if isinstance(entry, Mapping) else None
            if not isinstance(resource, Mapping):
                continue
            found = resource.get("resourceType")
            if found == wanted:
                return True
            seen.add(found if isinstance(found, str) else "?")
        return not seen or ("Patient" in seen and seen <= {"OperationOutcome", "Patient"})
    if "?" in template or "/" not in template:
        return False  # a search answered with something other than a Bundle
    try:
        expected_type, expected_id = expand(template, context).split("/", 1)
    except (UnresolvedToken, ValueError):
        return False
    return resource_type == expected_type and value.get("id") == unquote(expected_id)


def _next_link(value: Any) -> str | None:
    if not isinstance(value, Mapping) or value.get("resourceType") != "Bundle":
        return None
    links = value.get("link")
    for link in links if isinstance(links, list) else ():
        if (isinstance(link, Mapping) and link.get("relation") == "next"
                and isinstance(link.get("url"), str) and link["url"].strip()):
            return link["url"].strip()
    return None


def complete_pages(
    session: requests.Session,
    server: str,
    first_page: Mapping[str, Any],
    token: str | None,
    deadline: float,
    limits: FetchLimits,
) -> FetchResult:
    """Fetch the pages after ``first_page`` (a searchset the EHR sent) and merge them into one
    Bundle; the page cap counts the EHR's page. ``pages`` counts only the pages fetched here."""
    base = server.rstrip("/") + "/"
    next_url = urljoin(base, str(_next_link(first_page)))
    there, here = urlsplit(next_url), urlsplit(base)
    if (there.scheme, there.netloc) != (here.scheme, here.netloc) or not there.path.startswith(
        here.path
    ):
        raise FetchFailed("foreign-next-link")  # the access token goes to fhirServer only
    entries = first_page.get("entry")
    entries = list(entries) if isinstance(entries, list) else []
    if limits.max_pages <= 1:
        return FetchResult({"resourceType": "Bundle", "type": "searchset", "entry": entries},
                           0, True)
    rest = fetch(session, server, next_url, token, deadline,
                 FetchLimits(limits.max_pages - 1, limits.max_bytes))
    if not isinstance(rest.value, Mapping) or rest.value.get("resourceType") != "Bundle":
        raise FetchFailed("not-a-bundle")
    more = rest.value.get("entry")
    entries.extend(more if isinstance(more, list) else [])
    truncated = rest.truncated or _next_link(rest.value) is not None
    return FetchResult({"resourceType": "Bundle", "type": "searchset", "entry": entries},
                       rest.pages, truncated)


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
    malformed: set[str] = set()
    paged: dict[str, Mapping[str, Any]] = {}  # searchsets the EHR sent with a next link
    for spec in service.prefetch:
        if spec.key in request.prefetch:
            value = request.prefetch[spec.key]
            if value is None:
                result.values[spec.key] = None
                result.sources[spec.key] = "null"
                continue
            if isinstance(value, Mapping) and not _is_operation_outcome(value) and not (
                _fits_template(spec.template, value, request.context)
            ):
                malformed.add(spec.key)
            elif not _is_operation_outcome(value) and isinstance(value, Mapping):
                if _next_link(value) is not None:
                    paged[spec.key] = value
                    continue
                result.values[spec.key] = value
                result.sources[spec.key] = "prefetch"
                continue
        missing[spec.key] = spec.template

    if not missing and not paged:
        return result
    modes = {spec.key: spec.on_failure for spec in service.prefetch}

    def fail(key: str, reason: str) -> None:
        if key in malformed and reason == "no-fhir-server":
            reason = "malformed-prefetch"  # the more useful of the two to an integrator
        if key in paged:
            # The EHR sent the first page(s): reading them beats a 412 that would hide a red
            # flag already in hand. The gap is logged as a truncated key.
            result.values[key] = paged[key]
            result.sources[key] = "prefetch"
            result.truncated_keys.append(key)
            return
        target = result.failures if modes[key] == "fail" else result.omitted
        target.append(KeyFailure(key, reason))
        if modes[key] != "fail":
            result.sources[key] = "omitted"

    server = request.fhir_server
    if not server:
        for key in [*missing, *paged]:
            fail(key, "no-fhir-server")
        result.failures.sort(key=lambda f: f.key)
        return result
    if require_https and not server.startswith("https://"):
        for key in [*missing, *paged]:
            fail(key, "fhir-server-not-https")
        result.failures.sort(key=lambda f: f.key)
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
    for key, first_page in paged.items():
        futures[
            executor.submit(complete_pages, session, server, first_page, request.access_token,
                            deadline, limits)
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
        result.sources[key] = "prefetch" if key in paged else "fetched"
        result.fetched_pages += fetched.pages
        if fetched.truncated:
            result.truncated_keys.append(key)
    result.failures.sort(key=lambda f: f.key)
    return result
