"""openapi.yaml is a valid OpenAPI 3.1 document and describes every endpoint the app serves."""

from __future__ import annotations

import re

import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from cds_service.config import PROJECT_ROOT

OPENAPI = PROJECT_ROOT / "openapi.yaml"


def test_openapi_yaml_is_valid_openapi_3_1():
    spec, _ = read_from_filename(str(OPENAPI))
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_route_is_documented(app):
    documented = {
        (path, method.upper())
        for path, item in yaml.safe_load(OPENAPI.read_text())["paths"].items()
        for method in item if method in ("get", "post", "put", "delete", "patch")
    }
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        path = re.sub(r"<(?:\w+:)?service_id>", "{id}", rule.rule)
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method))
    assert served - documented == set(), "served but not in openapi.yaml"
    assert documented - served == set(), "in openapi.yaml but not served"


def test_service_errors_document_the_status_codes_the_service_uses():
    paths = yaml.safe_load(OPENAPI.read_text())["paths"]
    call = paths["/cds-services/{id}"]["post"]["responses"]
    assert {"200", "400", "401", "404", "405", "412", "413", "415"} <= set(call)
    feedback = paths["/cds-services/{id}/feedback"]["post"]["responses"]
    assert {"200", "400", "401", "404", "413", "415"} <= set(feedback)
