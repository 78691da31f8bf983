"""Validate hook requests and feedback against the JSON Schemas shipped in ``schemas/``.

Error messages name the member that failed and the rule it broke, never the value sent: request
values are patient data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError


class RequestError(Exception):
    """A request the service cannot act on; carries the HTTP status and a stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@cache
def validator(name: str) -> Draft202012Validator:
    text = resources.files("cds_service.validation").joinpath(f"schemas/{name}").read_text()
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def describe_error(error: ValidationError, prefix: str = "") -> str:
    path = ".".join(str(p) for p in [*([prefix] if prefix else []), *error.absolute_path])
    where = path or "request body"
    kind = error.validator
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "a member"
        return f"{where}: required member '{missing}' is missing"
    if kind == "dependentRequired":
        return f"{where}: fhirAuthorization needs fhirServer"
    if kind in {"type", "const", "enum"}:
        return f"{where}: wrong type or value ({kind})"
    if kind in {"pattern", "minLength", "maxLength", "minItems", "maxItems"}:
        return f"{where}: does not meet the '{kind}' rule"
    return f"{where}: invalid ({kind})"


def check(name: str, instance: Any, prefix: str = "") -> None:
    error = next(iter(sorted(validator(name).iter_errors(instance), key=_error_order)), None)
    if error is not None:
        raise RequestError(400, "invalid-request", describe_error(error, prefix))


def _error_order(error: ValidationError) -> tuple[int, int]:
    return (len(list(error.absolute_path)), 0 if error.validator == "required" else 1)


@dataclass(frozen=True)
class HookRequest:
    service_id: str
    hook: str
    hook_instance: str
    patient_id: str
    user_id: str | None
    encounter_id: str | None
    context: Mapping[str, Any]
    fhir_server: str | None = None
    access_token: str | None = field(default=None, repr=False)
    prefetch: Mapping[str, Any] = field(default_factory=dict, repr=False)
    selections: tuple[str, ...] = ()
    draft_orders: Mapping[str, Any] | None = field(default=None, repr=False)


CONTEXT_SCHEMAS = {
    "patient-view": "context-patient-view.schema.json",
    "order-select": "context-order-select.schema.json",
    "order-sign": "context-order-sign.schema.json",
}


def parse_hook_request(service_id: str, service_hook: str, body: Any) -> HookRequest:
    if not isinstance(body, Mapping):
        raise RequestError(400, "invalid-request", "request body: must be a JSON object")
    check("hook-request.schema.json", body)
    if body["hook"] != service_hook:
        raise RequestError(
            400, "hook-mismatch",
            f"hook: this service answers '{service_hook}', not the hook that was sent",
        )
    context = body["context"]
    check(CONTEXT_SCHEMAS[service_hook], context, prefix="context")
    auth = body.get("fhirAuthorization") or {}
    return HookRequest(
        service_id=service_id,
        hook=body["hook"],
        hook_instance=body["hookInstance"],
        patient_id=context["patientId"],
        user_id=context.get("userId"),
        encounter_id=context.get("encounterId"),
        context=context,
        fhir_server=body.get("fhirServer"),
        access_token=auth.get("access_token"),
        prefetch=body.get("prefetch") or {},
        selections=tuple(context.get("selections") or ()),
        draft_orders=context.get("draftOrders"),
    )
