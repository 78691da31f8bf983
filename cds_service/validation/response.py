"""Check every response against CDS Hooks 2.0 before it leaves: a bug becomes a logged 500
with an OperationOutcome, never a malformed card in a clinician's EHR."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

RESPONSE_SCHEMA = "cds-response.schema.json"


class ResponseInvalid(RuntimeError):
    pass


def inline_refs(schema: Any) -> Any:
    """The schema with every local ``{"$ref": "#/$defs/x"}`` replaced by the definition itself.

    Same meaning, but the validator no longer resolves a reference for every card, suggestion
    and coding it checks (that resolution was most of the check's cost). Raises ValueError for a
    recursive or non-local reference, which cannot be inlined.
    """
    defs = schema.get("$defs", {}) if isinstance(schema, Mapping) else {}

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, Mapping):
            ref = node.get("$ref")
            if isinstance(ref, str):
                name = ref.removeprefix("#/$defs/")
                if name == ref or name not in defs or name in seen or len(node) != 1:
                    raise ValueError(f"cannot inline $ref {ref!r}")
                return walk(defs[name], (*seen, name))
            return {k: walk(v, seen) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v, seen) for v in node]
        return node

    return walk(schema, ())


@cache
def response_schema() -> dict[str, Any]:
    text = resources.files("cds_service.validation").joinpath(f"schemas/{RESPONSE_SCHEMA}")
    schema: dict[str, Any] = json.loads(text.read_text())
    Draft202012Validator.check_schema(schema)
    return schema


@cache
def response_validator() -> Draft202012Validator:
    """Built once: the response schema with references inlined, format checks off (the default).
    Names the first error when a response is invalid."""
    schema = response_schema()
    try:
        return Draft202012Validator(inline_refs(schema))
    except ValueError:
        return Draft202012Validator(schema)


@cache
def _fast_is_valid() -> Callable[[Any], bool]:
    """The yes/no check every response goes through: ``jsonschema_rs`` (compiled, the same
    Draft 2020-12 semantics, ~100x faster) when it is installed, else the validator above."""
    try:
        import jsonschema_rs
    except ImportError:
        return response_validator().is_valid
    return jsonschema_rs.Draft202012Validator(response_schema()).is_valid


def find_empty_members(node: Any, path: str = "") -> list[str]:
    """CDS Hooks forbids null, "", [] and {} members (``cards: []`` is the one exception)."""
    found: list[str] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if value is None or value == "" or value == [] or value == {}:
                if here != "cards":
                    found.append(here)
            else:
                found.extend(find_empty_members(value, here))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(find_empty_members(value, f"{path}[{i}]"))
    return found


def has_empty_member(node: Any, top: bool = False) -> bool:
    """Whether ``find_empty_members`` would find anything (without building paths)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if value is None or value == "" or value == [] or value == {}:
                if not (top and key == "cards"):
                    return True
            elif isinstance(value, Mapping | list) and has_empty_member(value):
                return True
    elif isinstance(node, list):
        return any(isinstance(v, Mapping | list) and has_empty_member(v) for v in node)
    return False


def check_response(body: Mapping[str, Any]) -> None:
    if not _fast_is_valid()(body):
        errors = sorted(response_validator().iter_errors(body), key=str)
        first = errors[0] if errors else None
        where = ".".join(str(p) for p in first.absolute_path) if first else ""
        kind = first.validator if first else "schema"
        raise ResponseInvalid(f"response invalid at {where or 'top'}: {kind}")
    if has_empty_member(body, top=True):
        empty = find_empty_members(body)
        raise ResponseInvalid(f"response has empty members: {empty[:3]}")
