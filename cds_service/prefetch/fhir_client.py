"""Fetch FHIR data from the EHR's server within a hard per-request deadline.

Bodies are streamed and the deadline is checked between chunks, so a server that drips bytes
cannot hold a worker past the budget; ``next`` links are followed only on the same server (the
access token never goes anywhere else), loops are detected, and pages and bytes are capped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson
import requests


class FetchFailed(Exception):
    """The data could not be obtained; ``reason`` is a stable code for the 412 body and logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class FetchLimits:
    max_pages: int
    max_bytes: int


@dataclass(frozen=True)
class FetchResult:
    value: Any  # a resource, a searchset Bundle (pages merged), or None when a read found nothing
    pages: int
    truncated: bool


def _same_server(base: str, url: str) -> bool:
    a, b = urlsplit(base), urlsplit(url)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc) and b.path.startswith(
        a.path.rstrip("/") + "/"
    )


def _read_json(
    session: requests.Session, url: str, token: str | None, deadline: float, max_bytes: int
) -> tuple[int, Any, int]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchFailed("timeout")
    headers = {"Accept": "application/fhir+json, application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = session.get(
            url, headers=headers, timeout=(min(remaining, 3.0), min(remaining, 5.0)),
            stream=True, allow_redirects=False,
        )
    except requests.Timeout as exc:
        raise FetchFailed("timeout") from exc
    except requests.RequestException as exc:
        raise FetchFailed("unreachable") from exc
    try:
        status = response.status_code
        if status in (401, 403):
            raise FetchFailed("unauthorized")
        if status >= 500:
            raise FetchFailed("server-error")
        chunks: list[bytes] = []
        size = 0
        raw = response.raw
        while True:
            if time.monotonic() > deadline:
                raise FetchFailed("timeout")
            try:
                chunk = raw.read1(65536) if hasattr(raw, "read1") else raw.read(65536)
            except Exception as exc:  # urllib3 read timeouts and protocol errors
                raise FetchFailed("timeout" if "timed out" in str(exc) else "unreachable") from exc
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise FetchFailed("too-large")
            chunks.append(chunk)
        if status == 404:
            return status, None, size
        if status >= 300:
            raise FetchFailed(f"http-{status}")
        try:
            return status, orjson.loads(b"".join(chunks)), size
        except orjson.JSONDecodeError as exc:
            raise FetchFailed("invalid-json") from exc
    finally:
        response.close()


def fetch(
    session: requests.Session,
    base_url: str,
    relative: str,
    token: str | None,
    deadline: float,
    limits: FetchLimits,
) -> FetchResult:
    base = base_url.rstrip("/") + "/"
    url = urljoin(base, relative)
    is_search = "?" in relative or "/" not in relative.strip("/")
    status, body, used = _read_json(session, url, token, deadline, limits.max_bytes)
    if status == 404:
        if is_search:
            raise FetchFailed("http-404")
        return FetchResult(None, 1, False)  # a read of something that does not exist: no data
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise FetchFailed("not-a-resource")
    if body["resourceType"] == "OperationOutcome":
        raise FetchFailed("operation-outcome")
    if not is_search:
        return FetchResult(body, 1, False)
    if body["resourceType"] != "Bundle":
        raise FetchFailed("not-a-bundle")
    entries = list(body.get("entry") or [])
    seen = {url}
    pages, truncated = 1, False
    next_url = _next_link(body)
    while next_url:
        if pages >= limits.max_pages:
            truncated = True
            break
        absolute = urljoin(url, next_url)
        if absolute in seen:
            break  # a loop: what we have is the whole result
        if not _same_server(base, absolute):
            raise FetchFailed("foreign-next-link")
        seen.add(absolute)
        _, page, size = _read_json(session, absolute, token, deadline, limits.max_bytes - used)
        if not isinstance(page, dict) or page.get("resourceType") != "Bundle":
            raise FetchFailed("not-a-bundle")
        used += size
        entries.extend(page.get("entry") or [])
        pages += 1
        next_url = _next_link(page)
    merged = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    return FetchResult(merged, pages, truncated)


def _next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None
