"""Fetch FHIR data from the EHR's server within a hard per-request deadline.

Bodies are streamed and the deadline is checked between chunks, and each socket read may block
only for what is left of the budget, so a server that drips bytes or stalls mid-body cannot hold a
worker past the deadline. ``next`` links are followed only on the same server (the access token
never goes anywhere else), loops are detected, and pages and bytes are capped. Compressed bodies
(gzip/deflate, which ``requests`` asks for) are decoded chunk by chunk, and the byte cap counts
decoded bytes, so a compression bomb stops at the cap.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from cds_service.fhir.selective import MalformedJSON, decode_fhir_json


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
    complete = False  # the whole body was read: the connection can serve the next request
    try:
        status = response.status_code
        if status in (401, 403):
            raise FetchFailed("unauthorized")
        if status >= 500:
            raise FetchFailed("server-error")
        declared = _declared_length(response)
        if declared is not None and declared > max_bytes:
            raise FetchFailed("too-large")  # no need to read what will be refused
        chunks: list[bytes] = []
        size = 0
        raw = response.raw
        while not complete:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchFailed("timeout")
            _limit_socket_wait(raw, remaining)
            try:
                # read1: whatever one socket read gives (a drip cannot make it wait for 64 KB);
                # decode_content: gzip/deflate bodies are decoded, at most 64 KB per call.
                chunk = raw.read1(65536, decode_content=True)
            except Exception as exc:  # urllib3 read timeouts, protocol and decoding errors
                raise FetchFailed("timeout" if "timed out" in str(exc) else "unreachable") from exc
            if not chunk:
                complete = True
                break
            size += len(chunk)
            if size > max_bytes:
                raise FetchFailed("too-large")
            chunks.append(chunk)
        if status == 404:
            return status, None, size
        if status >= 300:
            raise FetchFailed(f"http-{status}")
        try:  # a searchset as skeletons: most of a chart is never built (fhir/selective.py)
            return status, decode_fhir_json(b"".join(chunks)), size
        except MalformedJSON as exc:
            raise FetchFailed("invalid-json") from exc
    finally:
        if complete:
            response.raw.release_conn()  # keep-alive: the next page or key reuses it
        else:
            response.close()  # abandoned mid-body: drop the connection, the server sees it close


def _declared_length(response: requests.Response) -> int | None:
    """Content-Length of an uncompressed body (a compressed one says nothing about its size)."""
    if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return None
    try:
        return int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None


def _limit_socket_wait(raw: Any, seconds: float) -> None:
    """Let the next socket read block for at most ``seconds``.

    The read timeout given to ``requests`` applies to each socket read from the moment it starts,
    so a read started just before the deadline could otherwise block for a whole timeout past it.
    """
    connection = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed: the read will say so
        sock.settimeout(max(seconds, 0.001))


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
