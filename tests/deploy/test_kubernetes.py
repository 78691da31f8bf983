"""deploy/kubernetes/ and the compose profile "scaled" checked against the code: probe paths
are real endpoints with the right meaning, env names are settings, ports match, secrets are
referenced and never written in (no cluster in CI)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cds_service.config import PROJECT_ROOT, Settings, env_table
from tests.deploy.test_compose import SERVICES, cds_args, environment

K8S = PROJECT_ROOT / "deploy" / "kubernetes"
HAPROXY_CFG = (PROJECT_ROOT / "deploy" / "haproxy" / "haproxy.cfg").read_text()
ENV_NAMES = {row[0] for row in env_table()}


def documents() -> dict[str, dict]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[doc["kind"]] = doc
    return found


DOCS = documents()
DEPLOYMENT = DOCS["Deployment"]
POD = DEPLOYMENT["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from cds_service import create_app

    tmp = tmp_path_factory.mktemp("k8s")
    return create_app({"database_url": f"sqlite:///{tmp / 'cds.sqlite3'}"}).test_client()


def test_every_manifest_is_listed_in_the_kustomization():
    kustomization = DOCS["Kustomization"]
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
            "ConfigMap"} <= set(DOCS)


def test_probes_are_liveness_on_healthz_and_readiness_on_readyz(client):
    assert CONTAINER["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert CONTAINER["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        path = CONTAINER[probe]["httpGet"]["path"]
        assert client.get(path).status_code == 200, path
        assert CONTAINER[probe]["httpGet"]["port"] == CONTAINER["ports"][0]["name"]


def test_the_command_serves_on_the_container_port():
    args = cds_args(CONTAINER["command"])
    assert args.command == "serve" and args.host == "0.0.0.0"
    assert args.port == CONTAINER["ports"][0]["containerPort"]
    service = DOCS["Service"]
    assert service["spec"]["ports"][0]["targetPort"] == CONTAINER["ports"][0]["name"]
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        selector = DOCS[kind]["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), kind
    assert DOCS["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == (
        DEPLOYMENT["metadata"]["name"])


def test_env_names_are_settings_and_secrets_are_references():
    values = {}
    for item in CONTAINER["env"]:
        name = item["name"]
        assert name in ENV_NAMES or name == "PROMETHEUS_MULTIPROC_DIR", name
        if "value" in item:
            values[name] = item["value"]
    database = next(i for i in CONTAINER["env"] if i["name"] == "CDS_DATABASE_URL")
    assert "secretKeyRef" in database["valueFrom"]  # never the URL (with its password) itself
    # PostgreSQL needs the pseudonym key, the same on every replica: a Secret, never a value
    key = next(i for i in CONTAINER["env"] if i["name"] == "CDS_PSEUDONYM_KEY")
    assert "secretKeyRef" in key["valueFrom"]
    settings = Settings.from_env(values)  # every value converts and passes the checks
    assert settings.auth == "required"
    # SIGTERM: gunicorn's grace ends before Kubernetes kills the pod
    assert POD["terminationGracePeriodSeconds"] > settings.graceful_timeout_seconds
    assert settings.graceful_timeout_seconds > settings.fhir_budget_seconds
    requests = CONTAINER["resources"]["requests"]
    assert requests["cpu"] and requests["memory"]


def test_trusted_issuers_come_from_the_configmap():
    issuers_path = next(i["value"] for i in CONTAINER["env"]
                        if i["name"] == "CDS_TRUSTED_ISSUERS_FILE")
    mount = next(m for m in CONTAINER["volumeMounts"]
                 if issuers_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in POD["volumes"] if v["name"] == mount["name"])
    configmap = DOCS["ConfigMap"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    filename = Path(issuers_path).name
    assert filename in configmap["data"]


def test_configmap_issuers_file_loads(tmp_path):
    from cds_service.auth import load_trusted_issuers

    path = tmp_path / "trusted-issuers.yaml"
    path.write_text(DOCS["ConfigMap"]["data"]["trusted-issuers.yaml"])
    assert load_trusted_issuers(path)


def test_compose_profile_runs_two_replicas_behind_haproxy():
    scaled, proxy = SERVICES["cds-scaled"], SERVICES["haproxy"]
    assert scaled["profiles"] == proxy["profiles"] == ["scaled"]
    assert scaled["deploy"]["replicas"] == 2
    args = cds_args(scaled["command"])
    assert args.command == "serve" and args.workers >= 2
    Settings.from_env(environment(scaled))
    for var in environment(scaled):
        if var.startswith("CDS_"):
            assert var in ENV_NAMES, var
    server = re.search(r"server-template \w+ (\d+) ([\w-]+):(\d+)", HAPROXY_CFG)
    assert server is not None
    assert (int(server.group(1)), server.group(2), int(server.group(3))) == (
        2, "cds-scaled", args.port)
    assert "option httpchk GET /readyz" in HAPROXY_CFG
    bind = re.search(r"bind :(\d+)", HAPROXY_CFG)
    assert bind is not None
    assert any(str(item).endswith(f":{bind.group(1)}") for item in proxy["ports"])
    assert "deploy/haproxy/haproxy.cfg" in proxy["volumes"][0]


def test_deployment_doc_names_what_it_must():
    text = (PROJECT_ROOT / "docs" / "deployment.md").read_text()
    for word in ("deploy/kubernetes", "/readyz", "/healthz", "migrate", "purge",
                 "CDS_RETENTION_DAYS", "CDS_GRACEFUL_TIMEOUT_SECONDS", "CDS_CONTROL_SOCKET",
                 "--profile scaled", "seen_jti", "issued_card", "feedback"):
        assert word in text, word
