"""docker-compose.yml and Dockerfile checked against the code (Docker is not available in CI)."""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from cds_service import __main__ as entry
from cds_service.config import PROJECT_ROOT, Settings, env_table
from cds_service.http import metrics

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()
ENV_NAMES = {row[0] for row in env_table()}


def cli_parser() -> argparse.ArgumentParser:
    """The parser ``python -m cds_service`` builds (same construction as __main__.main)."""
    return entry.build_parser(exit_on_error=False)


def cds_args(command: list[str] | str) -> argparse.Namespace:
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    assert argv[:3] == ["python", "-m", "cds_service"], argv
    try:
        return cli_parser().parse_args(argv[3:])
    except (argparse.ArgumentError, SystemExit) as exc:  # pragma: no cover - the failure message
        pytest.fail(f"{argv} does not parse: {exc}")


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def port_pairs(service: dict) -> list[tuple[int, int]]:
    pairs = []
    for item in service.get("ports") or []:
        host, _, container = str(item).rpartition(":")
        pairs.append((int(host), int(container)))
    return pairs


def test_services():
    assert set(SERVICES) == {"cds", "postgres", "hapi", "fixtures", "cds-scaled", "haproxy"}
    assert "pgdata" in COMPOSE["volumes"]


def test_cds_service_runs_serve_under_gunicorn():
    cds = SERVICES["cds"]
    args = cds_args(cds["command"])
    assert args.command == "serve" and not args.debug
    assert args.host == "0.0.0.0" and args.workers >= 2
    assert (8080, args.port) in port_pairs(cds)
    env = environment(cds)
    settings = Settings.from_env(env)  # every value converts
    entry.check_bind_allowed(settings, args.host)  # 0.0.0.0 needs CDS_AUTH set explicitly
    assert settings.cors_origins == ("*",)
    assert urlsplit(settings.public_base_url).port == 8080
    assert env["PROMETHEUS_MULTIPROC_DIR"] in cds.get("tmpfs", [])
    assert cds["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_every_cds_variable_is_a_real_setting():
    for name, service in SERVICES.items():
        for var in environment(service):
            if var.startswith("CDS_"):
                assert var in ENV_NAMES, f"{name}: {var} is not read by cds_service.config"
    assert metrics.MULTIPROC_ENV == "PROMETHEUS_MULTIPROC_DIR"


def test_database_url_points_at_the_postgres_service():
    url = urlsplit(environment(SERVICES["cds"])["CDS_DATABASE_URL"])
    pg = environment(SERVICES["postgres"])
    assert url.scheme == "postgresql+psycopg"
    assert (url.hostname, url.port or 5432) == ("postgres", 5432)
    assert (url.username, url.password, url.path.lstrip("/")) == (
        pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    assert SERVICES["postgres"]["healthcheck"]["test"]
    extras = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(dep.startswith("psycopg") for dep in extras["postgres"])


def test_fixture_loader_targets_hapi():
    job = SERVICES["fixtures"]
    args = cds_args(job["command"])
    assert args.command == "load-fixtures"
    target = urlsplit(args.fhir_server)
    assert (target.hostname, target.port, target.path) == ("hapi", 8080, "/fhir")
    assert args.wait > 0  # hapi has no healthcheck (distroless image): the job waits itself
    assert "hapi" in job["depends_on"]
    assert job.get("restart") == "no"
    assert job["image"] == SERVICES["cds"]["image"]
    assert 8080 in [c for _h, c in port_pairs(SERVICES["hapi"])]


def test_images_are_pinned():
    for name in ("postgres", "hapi"):
        image = SERVICES[name]["image"]
        _repo, _, tag = image.partition(":")
        assert tag and tag != "latest", f"{name}: pin a version, not {image!r}"
    assert SERVICES["hapi"]["image"].startswith("hapiproject/hapi:")
    assert environment(SERVICES["hapi"])["hapi.fhir.fhir_version"] == "R4"
    host_ports = [h for s in SERVICES.values() for h, _c in port_pairs(s)]
    assert len(host_ports) == len(set(host_ports))


def test_dockerfile():
    assert re.search(r"^FROM python:3\.11-slim\b", DOCKERFILE, re.MULTILINE)
    assert "'.[postgres]'" in DOCKERFILE
    assert re.search(r"^USER \S+", DOCKERFILE, re.MULTILINE), "do not run as root"
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY ") and not line.startswith("COPY --from="):
            for source in line.split()[1:-1]:
                if "*" not in source:
                    assert (PROJECT_ROOT / source).exists(), f"COPY {source}: no such path"
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.MULTILINE)
    assert cmd is not None
    assert cds_args(yaml.safe_load(cmd.group(1))).command == "serve"
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    for heavy in (".venv", ".git", "node_modules", "var"):
        assert heavy in ignored


def test_docs_cover_the_tools():
    text = Path(PROJECT_ROOT / "docs" / "tools.md").read_text()
    for word in ("evaluate", "fire", "load-fixtures", "feedback-report", "/preview", "/metrics",
                 "PROMETHEUS_MULTIPROC_DIR", "docker compose", "/cds-services"):
        assert word in text, word
