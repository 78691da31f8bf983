"""Settings from CDS_* environment variables: parsing, defaults and refusal of unusable values."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds_service.config import Settings, SettingsError, env_table


def test_defaults_without_environment():
    settings = Settings.from_env({})
    assert settings.auth == "off" and not settings.auth_explicit
    assert settings.cors_origins == ("*",)
    assert settings.database_url.startswith("sqlite:///")
    assert settings.fhir_max_pages >= 1 and settings.fhir_budget_seconds > 0


def test_values_are_converted_from_strings():
    settings = Settings.from_env({
        "CDS_CORS_ORIGINS": "https://sandbox.cds-hooks.org, https://ehr.example.org",
        "CDS_FHIR_BUDGET_SECONDS": "2.5",
        "CDS_FHIR_MAX_PAGES": "3",
        "CDS_FHIR_REQUIRE_HTTPS": "yes",
        "CDS_VALIDATE_RESPONSES": "0",
        "CDS_CARDS_DIR": "/tmp/cards",
        "CDS_AUTH": " Required ",
        "CDS_LOG_LEVEL": "debug",
        "CDS_PUBLIC_BASE_URL": "https://cds.example.org/",
        "CDS_JWT_ALGORITHMS": "ES384",
    })
    assert settings.cors_origins == ("https://sandbox.cds-hooks.org", "https://ehr.example.org")
    assert settings.fhir_budget_seconds == 2.5 and settings.fhir_max_pages == 3
    assert settings.fhir_require_https is True and settings.validate_responses is False
    assert settings.cards_dir == Path("/tmp/cards")
    assert settings.auth == "required" and settings.auth_explicit
    assert settings.log_level == "DEBUG"
    assert settings.public_base_url == "https://cds.example.org"
    assert settings.jwt_algorithms == ("ES384",)


def test_empty_variables_keep_the_default():
    assert Settings.from_env({"CDS_CORS_ORIGINS": "  ", "CDS_FHIR_MAX_PAGES": ""}) == (
        Settings.from_env({}))


def test_cors_origin_with_a_trailing_slash_still_matches_browsers():
    settings = Settings.from_env({"CDS_CORS_ORIGINS": "https://sandbox.cds-hooks.org/"})
    assert settings.cors_origins == ("https://sandbox.cds-hooks.org",)


def test_auth_off_written_explicitly_is_remembered():
    assert Settings.from_env({"CDS_AUTH": "off"}).auth_explicit


@pytest.mark.parametrize("env", [
    {"CDS_AUTH": "maybe"},
    {"CDS_FHIR_REQUIRE_HTTPS": "sometimes"},
    {"CDS_FHIR_MAX_PAGES": "ten"},
    {"CDS_FHIR_BUDGET_SECONDS": "fast"},
    {"CDS_FHIR_BUDGET_SECONDS": "0"},
    {"CDS_MAX_BODY_MB": "-1"},
    {"CDS_FHIR_MAX_RESPONSE_MB": "0"},
    {"CDS_FHIR_MAX_PAGES": "0"},
    {"CDS_FHIR_MAX_WORKERS": "0"},
    {"CDS_PUBLIC_BASE_URL": "cds.example.org"},
    {"CDS_LOG_LEVEL": "verbose"},
], ids=lambda env: "-".join(f"{k}={v}" for k, v in env.items()))
def test_unusable_values_are_refused_at_start(env):
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_unknown_setting_names_are_refused():
    with pytest.raises(SettingsError, match="fhir_page_sise"):
        Settings.from_mapping({"fhir_page_sise": 10})


def test_replace_checks_again():
    with pytest.raises(SettingsError):
        Settings().replace(fhir_max_workers=0)


def test_every_environment_variable_is_prefixed_and_documented_once():
    rows = env_table()
    names = [name for name, _default, _field in rows]
    assert all(name.startswith("CDS_") for name in names)
    assert len(names) == len(set(names))
    assert ("CDS_CORS_ORIGINS", "*", "cors_origins") in rows


def test_the_app_refuses_an_unusable_setting(tmp_path):
    from cds_service import create_app

    with pytest.raises(SettingsError):
        create_app({"database_url": f"sqlite:///{tmp_path / 'x.sqlite3'}", "log_level": "loud"})


def test_production_settings():
    settings = Settings.from_env({"CDS_GRACEFUL_TIMEOUT_SECONDS": "25",
                                  "CDS_CONTROL_SOCKET": "/run/cds/a.ctl",
                                  "CDS_RETENTION_DAYS": "90", "CDS_PURGE_INTERVAL_SECONDS": "0"})
    assert (settings.graceful_timeout_seconds, settings.control_socket,
            settings.retention_days, settings.purge_interval_seconds) == (
        25, "/run/cds/a.ctl", 90, 0.0)
    assert Settings.from_env({}).control_socket == ""  # no gunicorn control socket by default


@pytest.mark.parametrize("environ", [
    {"CDS_GRACEFUL_TIMEOUT_SECONDS": "0"},
    {"CDS_RETENTION_DAYS": "0"},
    {"CDS_PURGE_INTERVAL_SECONDS": "-1"},
])
def test_unusable_production_settings_are_refused(environ):
    with pytest.raises(SettingsError):
        Settings.from_env(environ)
