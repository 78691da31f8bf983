"""Settings: every value comes from a ``CDS_``-prefixed environment variable with a safe default.

Nothing here is read at import time; ``Settings.from_env()`` is called by the app factory so that
tests can pass their own mapping instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CARDS_DIR = PROJECT_ROOT / "cards"
DEFAULT_ISSUERS_FILE = PROJECT_ROOT / "config" / "trusted-issuers.yaml"
DEFAULT_SMART_APP_DIR = PROJECT_ROOT / "app" / "dist"

AuthMode = Literal["required", "off"]


class SettingsError(ValueError):
    """A setting has a value the service cannot run with."""


def _as_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"not a boolean: {raw!r}")


def _as_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. The ``env`` metadata names the environment variable of each field."""

    public_base_url: str = field(
        default="http://127.0.0.1:8080", metadata={"env": "CDS_PUBLIC_BASE_URL"}
    )
    auth: AuthMode = field(default="off", metadata={"env": "CDS_AUTH"})
    auth_explicit: bool = field(default=False, metadata={"env": None})
    trusted_issuers_file: Path = field(
        default=DEFAULT_ISSUERS_FILE, metadata={"env": "CDS_TRUSTED_ISSUERS_FILE"}
    )
    jwt_algorithms: tuple[str, ...] = field(
        default=("ES384", "RS384"), metadata={"env": "CDS_JWT_ALGORITHMS"}
    )
    jwt_leeway_seconds: int = field(default=60, metadata={"env": "CDS_JWT_LEEWAY_SECONDS"})
    jwt_max_lifetime_seconds: int = field(
        default=3600, metadata={"env": "CDS_JWT_MAX_LIFETIME_SECONDS"}
    )
    jwks_min_refresh_seconds: int = field(
        default=60, metadata={"env": "CDS_JWKS_MIN_REFRESH_SECONDS"}
    )
    database_url: str = field(default="", metadata={"env": "CDS_DATABASE_URL"})
    # Secret for the patient pseudonym (HMAC-SHA256) recorded with issued cards. Unset with
    # SQLite: a key file is created next to the database file; required with PostgreSQL.
    pseudonym_key: str = field(default="", repr=False, metadata={"env": "CDS_PSEUDONYM_KEY"})
    cors_origins: tuple[str, ...] = field(default=("*",), metadata={"env": "CDS_CORS_ORIGINS"})
    fhir_budget_seconds: float = field(default=4.0, metadata={"env": "CDS_FHIR_BUDGET_SECONDS"})
    fhir_max_pages: int = field(default=25, metadata={"env": "CDS_FHIR_MAX_PAGES"})
    fhir_max_response_mb: float = field(default=32.0, metadata={"env": "CDS_FHIR_MAX_RESPONSE_MB"})
    fhir_max_workers: int = field(default=16, metadata={"env": "CDS_FHIR_MAX_WORKERS"})
    fhir_require_https: bool = field(default=False, metadata={"env": "CDS_FHIR_REQUIRE_HTTPS"})
    max_body_mb: float = field(default=32.0, metadata={"env": "CDS_MAX_BODY_MB"})
    compute_budget_seconds: float = field(
        default=10.0, metadata={"env": "CDS_COMPUTE_BUDGET_SECONDS"}
    )
    client_read_timeout_seconds: float = field(
        default=15.0, metadata={"env": "CDS_CLIENT_READ_TIMEOUT_SECONDS"}
    )
    cards_dir: Path = field(default=DEFAULT_CARDS_DIR, metadata={"env": "CDS_CARDS_DIR"})
    record_issued_cards: bool = field(default=True, metadata={"env": "CDS_RECORD_ISSUED_CARDS"})
    validate_responses: bool = field(default=True, metadata={"env": "CDS_VALIDATE_RESPONSES"})
    log_level: str = field(default="INFO", metadata={"env": "CDS_LOG_LEVEL"})
    metrics_enabled: bool = field(default=True, metadata={"env": "CDS_METRICS"})
    preview_enabled: bool = field(default=True, metadata={"env": "CDS_PREVIEW"})
    # Production: several instances on one database (docs/deployment.md).
    graceful_timeout_seconds: int = field(
        default=20, metadata={"env": "CDS_GRACEFUL_TIMEOUT_SECONDS"}
    )
    control_socket: str = field(default="", metadata={"env": "CDS_CONTROL_SOCKET"})
    retention_days: int = field(default=365, metadata={"env": "CDS_RETENTION_DAYS"})
    purge_interval_seconds: float = field(
        default=3600.0, metadata={"env": "CDS_PURGE_INTERVAL_SECONDS"}
    )
    smart_app_enabled: bool = field(default=True, metadata={"env": "CDS_SMART_APP"})
    smart_app_dir: Path = field(default=DEFAULT_SMART_APP_DIR,
                                metadata={"env": "CDS_SMART_APP_DIR"})
    smart_client_id: str = field(default="foot-drop-timeline",
                                 metadata={"env": "CDS_SMART_CLIENT_ID"})
    # Where the app's browser code may connect besides the service itself: the EHR's FHIR
    # server and its token endpoint (CSP connect-src sources, space separated).
    smart_connect_src: str = field(default="https:", metadata={"env": "CDS_SMART_CONNECT_SRC"})
    # Which EHR pages may show the app in a frame (CSP frame-ancestors sources).
    smart_frame_ancestors: str = field(default="'self'",
                                       metadata={"env": "CDS_SMART_FRAME_ANCESTORS"})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata.get("env")
            if name and name in env and env[name].strip() != "":
                values[f.name] = _convert(f.name, f.type, env[name])
        if "auth" in values:
            values["auth_explicit"] = True
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise SettingsError(f"unknown settings: {sorted(unknown)}")
        settings = replace(cls(), **dict(values))
        return settings.checked()

    def checked(self) -> Settings:
        if self.auth not in ("required", "off"):
            raise SettingsError("CDS_AUTH must be 'required' or 'off'")
        if min(self.fhir_budget_seconds, self.max_body_mb, self.fhir_max_response_mb,
               self.compute_budget_seconds, self.client_read_timeout_seconds) <= 0:
            raise SettingsError("budgets and size limits must be positive")
        if self.graceful_timeout_seconds <= 0:
            raise SettingsError("CDS_GRACEFUL_TIMEOUT_SECONDS must be positive")
        if self.retention_days < 1:
            raise SettingsError("CDS_RETENTION_DAYS must be at least 1")
        if self.purge_interval_seconds < 0:
            raise SettingsError("CDS_PURGE_INTERVAL_SECONDS must be 0 (no purge thread) or more")
        if self.fhir_max_pages < 1 or self.fhir_max_workers < 1:
            raise SettingsError("CDS_FHIR_MAX_PAGES and CDS_FHIR_MAX_WORKERS must be at least 1")
        if not self.public_base_url.startswith(("http://", "https://")):
            raise SettingsError("CDS_PUBLIC_BASE_URL must be an absolute http(s) URL")
        for name, value in (("CDS_SMART_CONNECT_SRC", self.smart_connect_src),
                            ("CDS_SMART_FRAME_ANCESTORS", self.smart_frame_ancestors)):
            # One CSP directive's sources: a ";" or "," would start another directive or policy.
            if any(ch in str(value) for ch in ";,\r\n") or not str(value).strip():
                raise SettingsError(f"{name} must be CSP sources separated by spaces")
        log_level = str(self.log_level).strip().upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise SettingsError("CDS_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        updates: dict[str, Any] = {
            "public_base_url": self.public_base_url.rstrip("/"),
            "log_level": log_level,
            # Browsers send Origin without a trailing slash: "https://host/" would never match.
            "cors_origins": tuple(
                o.rstrip("/") for o in (_as_list(self.cors_origins)
                                        if isinstance(self.cors_origins, str)
                                        else self.cors_origins)
            ),
        }
        if not self.database_url:
            updates["database_url"] = f"sqlite:///{PROJECT_ROOT / 'var' / 'cds-service.sqlite3'}"
        return replace(self, **updates)

    def replace(self, **changes: Any) -> Settings:
        return replace(self, **changes).checked()


def _convert(name: str, annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    try:
        if "tuple" in kind:
            return _as_list(raw)
        if kind == "bool":
            return _as_bool(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if name == "auth":
            return raw.strip().lower()
        if name == "log_level":
            return raw.strip().upper()
        return raw.strip()
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from exc


def env_table() -> list[tuple[str, str, str]]:
    """(variable, default, field) rows, used to keep the README table honest."""
    defaults = Settings()
    rows = []
    for f in fields(Settings):
        env = f.metadata.get("env")
        if env:
            value = getattr(defaults, f.name)
            shown = ",".join(value) if isinstance(value, tuple) else str(value)
            rows.append((env, shown, f.name))
    return rows
