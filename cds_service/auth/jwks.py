"""Fetching and caching remote JWK Sets (the ``jku`` of trusted issuers).

* One cache entry per URL. Only URLs the verifier has already matched against an issuer's
  allowlist ever reach this module.
* A set is fetched when first needed, again when a token names a ``kid`` the cached set lacks,
  and again once the cached set is older than ``max_age_seconds`` (key revocation). All fetches
  of one URL, successful or not, are at least ``min_refresh_seconds`` apart: a stream of tokens
  with random kids cannot turn this service into a request amplifier.
* A fetch has a time budget, a size cap, refuses redirects and non-JSON responses, and never
  raises anything but AuthFailure("jwks_unavailable") / AuthFailure("unknown_kid").
* Thread-safe: a lock guards the table of entries, and a lock per URL serialises its fetches,
  so concurrent requests with the same new kid cause one fetch, not one each.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import requests

from cds_service.auth.errors import AuthFailure
from cds_service.auth.keys import JwkError, PublicJwk, parse_jwks

logger = logging.getLogger("cds_service.auth")

FETCH_TIMEOUT_SECONDS = 3.0
MAX_JWKS_BYTES = 256 * 1024
DEFAULT_MAX_AGE_SECONDS = 3600
_JSON_TYPES = ("application/json", "application/jwk-set+json")


class JwksFetchError(Exception):
    """Internal: one fetch failed. Never leaves this module."""


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    keys: tuple[PublicJwk, ...] | None = None
    fetched_at: datetime | None = None
    last_attempt: datetime | None = None


class JwksCache:
    def __init__(
        self,
        *,
        http: requests.Session,
        clock: Callable[[], datetime],
        min_refresh_seconds: float,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        timeout_seconds: float = FETCH_TIMEOUT_SECONDS,
        max_bytes: int = MAX_JWKS_BYTES,
    ) -> None:
        self._http = http
        self._clock = clock
        self._min_refresh = max(0.0, float(min_refresh_seconds))
        self._max_age = max(self._min_refresh, float(max_age_seconds))
        self._timeout = timeout_seconds
        self._max_bytes = max_bytes
        self._entries: dict[str, _Entry] = {}
        self._table_lock = threading.Lock()

    def keys_for(self, url: str, kid: str) -> tuple[PublicJwk, ...]:
        """The keys with this kid in the set at ``url``. Raises AuthFailure."""
        with self._table_lock:
            entry = self._entries.setdefault(url, _Entry())
        with entry.lock:
            now = self._clock()
            matches = _with_kid(entry.keys, kid)
            stale = entry.fetched_at is None or _seconds(entry.fetched_at, now) >= self._max_age
            if matches and not stale:
                return matches
            fetch_failed = False
            if self._may_fetch(entry, now):
                entry.last_attempt = now
                try:
                    entry.keys = self._fetch(url)
                    entry.fetched_at = now
                except JwksFetchError as exc:
                    fetch_failed = True
                    logger.warning(
                        "jwks fetch failed",
                        extra={
                            "fields": {
                                "jku": url,
                                "error": str(exc),
                                "kept_old_set": bool(entry.keys is not None),
                            }
                        },
                    )
            if entry.keys is None:
                raise AuthFailure("jwks_unavailable")
            matches = _with_kid(entry.keys, kid)
            if matches:
                return matches
            raise AuthFailure("jwks_unavailable" if fetch_failed else "unknown_kid")

    def _may_fetch(self, entry: _Entry, now: datetime) -> bool:
        if entry.last_attempt is None:
            return True
        elapsed = _seconds(entry.last_attempt, now)
        # A clock that jumped backwards must not freeze refreshes until it catches up.
        return elapsed >= self._min_refresh or elapsed < 0

    def _fetch(self, url: str) -> tuple[PublicJwk, ...]:
        started = time.monotonic()
        try:
            response = self._http.get(
                url,
                headers={"Accept": "application/jwk-set+json, application/json"},
                timeout=(self._timeout, self._timeout),
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as exc:
            raise JwksFetchError(type(exc).__name__) from None
        except Exception as exc:  # a misbehaving session or adapter must not escape
            raise JwksFetchError(type(exc).__name__) from None
        try:
            if response.status_code != 200:
                raise JwksFetchError(f"HTTP {response.status_code}")
            content_type = response.headers.get("Content-Type", "")
            media_type = content_type.split(";", 1)[0].strip().lower()
            if media_type and media_type not in _JSON_TYPES and not media_type.endswith("+json"):
                raise JwksFetchError(f"content type {media_type!r} is not JSON")
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
                raise JwksFetchError("response too large")
            body = bytearray()
            for chunk in response.iter_content(chunk_size=16384):
                body.extend(chunk)
                if len(body) > self._max_bytes:
                    raise JwksFetchError("response too large")
                if time.monotonic() - started > self._timeout:
                    raise JwksFetchError("timeout")
            try:
                document = json.loads(bytes(body).decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise JwksFetchError("body is not JSON") from None
            try:
                return parse_jwks(document, strict=False)
            except JwkError as exc:
                raise JwksFetchError(str(exc)) from None
        except JwksFetchError:
            raise
        except requests.RequestException as exc:
            raise JwksFetchError(type(exc).__name__) from None
        except Exception as exc:  # never let a fetch problem escape as anything else
            raise JwksFetchError(type(exc).__name__) from None
        finally:
            response.close()


def _with_kid(keys: tuple[PublicJwk, ...] | None, kid: str) -> tuple[PublicJwk, ...]:
    if not keys:
        return ()
    return tuple(k for k in keys if k.kid == kid)


def _seconds(earlier: datetime, later: datetime) -> float:
    return (later - earlier).total_seconds()
