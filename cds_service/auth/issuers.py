"""Trusted CDS clients (EHRs): which ``iss`` values we accept, and where their keys come from.

The file is YAML (``.yaml``/``.yml``) or JSON (``.json``)::

    issuers:
      - iss: https://ehr.example.org
        jku: [https://ehr.example.org/.well-known/jwks.json]   # allowed jku URLs (optional)
        jwks_file: keys/ehr-jwks.json                           # keys known in advance (optional)
        tenants: [tenant-a]                                     # optional
        enabled: true                                           # optional, default true

``jwks_file`` is relative to the directory of the issuers file. Anything unexpected fails loudly
with TrustedIssuersError at load time, so a typo never silently weakens the checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from cds_service.auth.keys import JwkError, PublicJwk, parse_jwks

_ENTRY_KEYS = frozenset({"iss", "jku", "jwks_file", "tenants", "enabled"})
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_JWKS_FILE_BYTES = 256 * 1024


class TrustedIssuersError(ValueError):
    """The trusted-issuers file (or a JWK Set file it names) is malformed."""


@dataclass(frozen=True)
class TrustedIssuer:
    """One CDS client we accept tokens from."""

    iss: str
    jku: tuple[str, ...] = ()
    jwks: tuple[PublicJwk, ...] | None = None  # keys from jwks_file, parsed at load time
    tenants: tuple[str, ...] = ()
    enabled: bool = True


def load_trusted_issuers(path: Path) -> list[TrustedIssuer]:
    """Read and validate the trusted-issuers file. Raises TrustedIssuersError."""
    path = Path(path)
    document = _read_document(path)
    if not isinstance(document, Mapping):
        raise TrustedIssuersError(f"{path}: the top level must be a mapping with 'issuers'")
    unknown = set(document) - {"issuers"}
    if unknown:
        raise TrustedIssuersError(f"{path}: unknown top-level keys {sorted(map(str, unknown))}")
    entries = document.get("issuers")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise TrustedIssuersError(f"{path}: 'issuers' must be a list")
    issuers: list[TrustedIssuer] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{path}: issuers[{index}]"
        issuer = _parse_entry(entry, where, path.parent)
        if issuer.iss in seen:
            raise TrustedIssuersError(f"{where}: iss {issuer.iss!r} is listed twice")
        seen.add(issuer.iss)
        issuers.append(issuer)
    return issuers


def _read_document(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise TrustedIssuersError(f"{path}: expected a .yaml, .yml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TrustedIssuersError(f"{path}: cannot read trusted issuers file ({exc})") from None
    try:
        return json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise TrustedIssuersError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from None


def _parse_entry(entry: Any, where: str, base_dir: Path) -> TrustedIssuer:
    if not isinstance(entry, Mapping):
        raise TrustedIssuersError(f"{where}: each issuer must be a mapping")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise TrustedIssuersError(
            f"{where}: unknown keys {sorted(map(str, unknown))}; allowed: {sorted(_ENTRY_KEYS)}"
        )
    iss = entry.get("iss")
    if not isinstance(iss, str) or not iss.strip() or iss != iss.strip():
        raise TrustedIssuersError(f"{where}: 'iss' must be a non-empty string without spaces")
    where = f"{where} ({iss})"

    jku = tuple(_string_list(entry.get("jku"), "jku", where))
    for url in jku:
        _check_jku(url, where)
    if len(set(jku)) != len(jku):
        raise TrustedIssuersError(f"{where}: 'jku' lists a URL twice")

    jwks: tuple[PublicJwk, ...] | None = None
    jwks_file = entry.get("jwks_file")
    if jwks_file is not None:
        if not isinstance(jwks_file, str) or not jwks_file:
            raise TrustedIssuersError(f"{where}: 'jwks_file' must be a path string")
        jwks = _load_jwks_file(base_dir / jwks_file, where)

    if not jku and jwks is None:
        raise TrustedIssuersError(f"{where}: give 'jku', 'jwks_file' or both (no key source)")

    tenants = tuple(_string_list(entry.get("tenants"), "tenants", where))
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise TrustedIssuersError(f"{where}: 'enabled' must be true or false")
    return TrustedIssuer(iss=iss, jku=jku, jwks=jwks, tenants=tenants, enabled=enabled)


def _string_list(value: Any, name: str, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TrustedIssuersError(f"{where}: '{name}' must be a list of non-empty strings")
    return list(value)


def _check_jku(url: str, where: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise TrustedIssuersError(f"{where}: jku {url!r} is not a valid URL") from None
    if not host or parts.username is not None or parts.password is not None or parts.fragment:
        raise TrustedIssuersError(
            f"{where}: jku {url!r} must be an absolute URL with a host, no credentials, no fragment"
        )
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and host.lower() in _LOOPBACK_HOSTS:
        return
    raise TrustedIssuersError(
        f"{where}: jku {url!r} must use https (http only for 127.0.0.1/localhost, for tests)"
    )


def _load_jwks_file(path: Path, where: str) -> tuple[PublicJwk, ...]:
    try:
        if path.stat().st_size > MAX_JWKS_FILE_BYTES:
            raise TrustedIssuersError(f"{where}: jwks_file {path} is larger than 256 KB")
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrustedIssuersError(f"{where}: jwks_file {path} does not exist") from None
    except OSError as exc:
        raise TrustedIssuersError(f"{where}: cannot read jwks_file {path} ({exc})") from None
    except ValueError as exc:
        raise TrustedIssuersError(f"{where}: jwks_file {path} is not JSON: {exc}") from None
    try:
        keys = parse_jwks(document, strict=True)
    except JwkError as exc:
        raise TrustedIssuersError(f"{where}: jwks_file {path}: {exc}") from None
    if not keys:
        raise TrustedIssuersError(f"{where}: jwks_file {path} holds no keys")
    return keys
